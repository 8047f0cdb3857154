"""Small records the member facade (member.py) and its mixins share, kept apart so that
the mixins can name them without importing the facade: a message this member sealed, as
the outbox holds it, and the erasures waiting for a commit to be recorded."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class OutboxEntry:
    counter: int
    offset: int
    length: int
    sealed: bytes
    seq: int | None


@dataclass
class PendingErasure:
    """Erased in the kit, not yet recorded: written with the next commit."""

    own: list[int] = field(default_factory=list)  # own counters
    received: list[tuple[int, int]] = field(default_factory=list)  # (sender, counter)
