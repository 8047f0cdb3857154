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
