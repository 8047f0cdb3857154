"""The client's events that are only a sentence (a rejected message, a relay's
refusal, a relay store that changed, relay seqs missing, a relay failing again and
again), as the chat app and the web page add them to the conversation."""

from __future__ import annotations

from typing import Literal

from ..client import MessageRejected, MessagesMissing, RelayError, RelayFailing, StoreChanged
from .padtalk import rejection_note
from .relaylines import messages_missing_line, relay_failing_line, store_changed_line


def event_sentence(event: object) -> tuple[Literal["warning", "notice"], str] | None:
    """What both chat apps add to the conversation for a client event that is only a
    sentence (a rejected message, a refusal, a relay store that changed, relay seqs
    missing or refused again and again); None for every other event."""
    if isinstance(event, MessageRejected):
        return "warning", rejected_text(event.seq, event.rule, event.reason)
    if isinstance(event, RelayError):
        return "warning", refused_text(event.reason, event.code)
    if isinstance(event, StoreChanged):
        return "notice", store_changed_line(event)
    if isinstance(event, MessagesMissing):
        return "warning", messages_missing_line(event)
    if isinstance(event, RelayFailing):
        return "warning", relay_failing_line(event)
    return None


def rejected_text(seq: int, rule: str, reason: str) -> str:
    note = rejection_note(rule)
    return (
        f"rejected a message (relay seq {seq}): {reason} [rule: {rule}]. "
        "It was not shown and used none of your pad." + (f" {note}" if note else "")
    )


def refused_text(reason: str, code: int) -> str:
    return f"the relay refused: {reason} (code {code})"
