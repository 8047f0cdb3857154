"""Lines for the client's events about the relay: its message store went back or was
replaced, seqs that never arrived, a relay that keeps failing. `listen` and the chat app
show them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..display import quote
from ..protocol.frames import ErrorCode

if TYPE_CHECKING:
    from ..client import MessagesMissing, RelayFailing, StoreChanged


def store_changed_line(event: StoreChanged) -> str:
    if event.went_back:
        return (
            f"the relay {event.relay} no longer holds the messages you read (up to seq "
            f"{event.old_cursor}): its message store went back to an earlier state (restored "
            "from a backup?) or was replaced. Reading it again from its first message; "
            "messages you already have are not shown twice. Messages stored after that "
            "earlier state that you had not received are not on this relay any more."
        )
    return (
        f"the relay {event.relay} has another message store than before (a new or replaced "
        "store, or another relay): reading it from its first message; messages you already "
        "have are not shown twice. Messages the old store held that you had not received "
        "are not in this one: they reach you only from a relay that still has the old store."
    )


def messages_missing_line(event: MessagesMissing) -> str:
    which = (
        f"seq {event.first}" if event.first == event.last else f"seqs {event.first}-{event.last}"
    )
    return (
        f"warning: relay {which} never arrived, though later ones did, even when asked for "
        "again: the relay no longer has them (retention) or withheld them, or the network "
        "dropped them. Messages may be missing there."
    )


def relay_failing_line(event: RelayFailing) -> str:
    if event.code == ErrorCode.INTERNAL:
        what = f"the relay failed with an internal error {event.times} times in a row"
    else:
        what = f"the relay refused {event.times} times in a row"
    if event.code in (ErrorCode.RELAY_FULL, ErrorCode.RATE_LIMITED):
        why = "it is full or busy; it may take this member once others leave"
    else:
        why = "it has a problem its operator must fix"
    return (
        f"warning: {what} ({quote(event.reason)}): {why}. "
        "Your messages stay in the outbox; GhostLine keeps trying."
    )
