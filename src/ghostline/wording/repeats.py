"""Which status lines are worth showing again (`Repeats`), for `listen`, the chat app
and the web page."""

from __future__ import annotations

import time
from collections.abc import Callable

# A status line that says again what one said this recently is left out (and counted).
REPEAT_AFTER = 60.0


class Repeats:
    """Which status lines are worth showing: one that says what a line shown less than
    `every` seconds ago said (the same `key`) is left out and counted, and shown again,
    with that count, once `every` has passed. So a relay that fails every connection the
    same way (a reconnect every few seconds) fills no screen. `useful()` (a message came
    or was accepted) lets every line be shown again."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, every: float = REPEAT_AFTER
    ) -> None:
        self.clock = clock
        self.every = every
        self._shown: dict[str, tuple[float, int]] = {}  # key -> (when shown, left out since)

    def line(self, key: str, text: str) -> str | None:
        """`text` to show now, or None to leave it out."""
        now = self.clock()
        last = self._shown.get(key)
        if last is not None and now - last[0] < self.every:
            self._shown[key] = (last[0], last[1] + 1)
            return None
        self._shown[key] = (now, 0)
        if last is None or not last[1]:
            return text
        again = "once more" if last[1] == 1 else f"{last[1]} more times"
        return f"{text} (this came {again} in the last {now - last[0]:.0f} s)"

    def useful(self) -> None:
        self._shown.clear()
