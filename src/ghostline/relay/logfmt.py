"""One structured log line per event: `event=NAME key=value ...` (never payload bytes)."""

from __future__ import annotations

import json
import logging


def _value(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' ="\n\\'):
        return json.dumps(text)
    return text


def log_event(
    logger: logging.Logger, event: str, *, level: int = logging.INFO, **fields: object
) -> None:
    if logger.isEnabledFor(level):
        parts = [f"event={event}"]
        parts += [f"{key}={_value(value)}" for key, value in fields.items() if value is not None]
        logger.log(level, " ".join(parts))


class LogLimiter:
    """At most `burst` lines at once and `rate` lines per second for each key (a cause);
    the lines it holds back are counted, and the count goes out with the next line of
    that key, or from `overdue` once the key has a line to spare again.

    Pure: the caller passes the time. The number of keys is capped (`max_keys`): past
    it, every new key shares one, so no input can make the table grow.
    """

    OTHER = "other"

    def __init__(self, rate: float = 2.0, burst: int = 10, max_keys: int = 256) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._keys: dict[str, list[float]] = {}  # key -> [tokens, stamp, held back]

    def allow(self, key: str, now: float) -> int | None:
        """None: do not log this line. Otherwise log it, with this many held back before."""
        entry = self._entry(key, now)
        if entry[0] < 1.0:
            entry[2] += 1
            return None
        entry[0] -= 1.0
        held, entry[2] = int(entry[2]), 0
        return held

    def overdue(self, now: float) -> list[tuple[str, int]]:
        """(key, held back) for each key that holds lines back and may log one now; the
        caller logs one summary line each. Keys with nothing to say are forgotten."""
        out: list[tuple[str, int]] = []
        for key in list(self._keys):
            entry = self._entry(key, now)
            if entry[2] and entry[0] >= 1.0:
                entry[0] -= 1.0
                out.append((key, int(entry[2])))
                entry[2] = 0
            elif not entry[2] and entry[0] >= self.burst:
                del self._keys[key]
        return out

    def _entry(self, key: str, now: float) -> list[float]:
        entry = self._keys.get(key)
        if entry is None:
            if len(self._keys) >= self.max_keys and key != self.OTHER:
                return self._entry(self.OTHER, now)
            entry = self._keys[key] = [self.burst, now, 0]
            return entry
        entry[0] = min(self.burst, entry[0] + (now - entry[1]) * self.rate)
        entry[1] = now
        return entry
