"""What the client observes, as it comes out of `Client.events`: frozen dataclasses,
named as nouns. The apps turn them into what a person reads (cli/, tui/, web/)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..protocol import payload as payload_mod

if TYPE_CHECKING:
    from ..state.member import Received


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A message opened and recorded durably. `payload_obj` is None when malformed."""

    received: Received
    payload_obj: payload_mod.Payload | None


@dataclass(frozen=True, slots=True)
class MessageRejected:
    """A delivered message broke a rule of protocol-v1 section 6; nothing was consumed."""

    seq: int
    rule: str
    reason: str


@dataclass(frozen=True, slots=True)
class MessageAccepted:
    """The relay stored one of our messages durably as `seq`."""

    counter: int
    seq: int


@dataclass(frozen=True, slots=True)
class PresenceChanged:
    """Who is online now (member indexes), and who just came or went."""

    online: frozenset[int]
    joined: frozenset[int] = frozenset()
    left: frozenset[int] = frozenset()


ConnectionState = Literal["connecting", "connected", "reconnecting", "stopped"]


@dataclass(frozen=True, slots=True)
class ConnectionChanged:
    """The relay connection's state (`channel="relay"`) or the presence one's."""

    state: ConnectionState
    relay: str
    retry_in: float | None
    detail: str
    channel: Literal["relay", "presence"] = "relay"


@dataclass(frozen=True, slots=True)
class PadLow:
    """At most usage.LOW_FRACTION of this member's pad (bytes or keys) is left."""

    fraction_left: float


@dataclass(frozen=True, slots=True)
class PadExhausted:
    """This member cannot seal another message."""


@dataclass(frozen=True, slots=True)
class RelayError:
    """The relay sent an ERROR frame."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class AlreadyReceived:
    """A delivered message is a byte-for-byte copy of one already accepted, where the
    relay holds it: the relay sent it again (it resent after a reconnect, or its store
    changed). Not opened again, as section 6 says, and nothing to worry about: it was
    shown when it first came, and its seq is settled. (A copy at another seq, or with
    other bytes, is a MessageRejected.)"""

    seq: int


@dataclass(frozen=True, slots=True)
class StoreChanged:
    """The relay's store is not the one the cursor was for: it names another store (a
    new or replaced one, or another relay that shares nothing), or, `went_back`, it
    names the same store but lost messages this member had read (its head is below the
    cursor, or another message is at the anchor's seq: restored from a backup, or
    replaced under the same id). The client reads it again from its first seq; what it
    already has is settled quietly, and messages the old store held that it had not yet
    received are not in this one."""

    relay: str
    old_cursor: int  # where the cursor stood in the old store
    went_back: bool = False


@dataclass(frozen=True, slots=True)
class MessagesMissing:
    """Relay seqs `first`..`last` never came, though later ones did, even when asked
    for again: the relay no longer has them (retention) or withheld them, or the
    network dropped them. The cursor steps over them."""

    first: int
    last: int
    relay: str


@dataclass(frozen=True, slots=True)
class RelayFailing:
    """The relay refused `times` times in a row (same `code`) and the client is still
    retrying: it has a problem of its own; sealed messages wait in the outbox."""

    code: int
    reason: str
    times: int


Event = (
    MessageReceived
    | MessageRejected
    | MessageAccepted
    | AlreadyReceived
    | MessagesMissing
    | StoreChanged
    | PresenceChanged
    | ConnectionChanged
    | PadLow
    | PadExhausted
    | RelayError
    | RelayFailing
)


def missing(lost: list[tuple[int, int]], relay: str) -> list[MessagesMissing]:
    """One MessagesMissing per (first, last) run of seqs given up."""
    return [MessagesMissing(first, last, relay) for first, last in lost]
