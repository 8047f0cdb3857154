"""A message this member sealed, as the outbox holds it (kept apart from member.py so
that the facade's mixins can name it without importing the facade)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OutboxEntry:
    counter: int
    offset: int
    length: int
    sealed: bytes
    seq: int | None
