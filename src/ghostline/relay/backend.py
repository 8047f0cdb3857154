"""The storage and fan-out seam between the relay's connections and where rooms live.

The relay's room hub (`rooms.RoomHub`) talks to exactly one `Backend`. A single node
uses `sqlite_store.SqliteBackend`; a cluster backend (NATS JetStream) implements the
same methods and additionally calls back into the hub (`RelayHub`) when a message or
a presence change arrives from ANOTHER node.

Rules every backend keeps:

- `append` is durable when it returns: the relay sends ACCEPTED and DELIVERs only
  after it. Sequence numbers are per room, 1, 2, 3, ... with no gap, and a
  `(sender, counter)` the room already holds comes back with its stored seq and
  `duplicate=True` (it is not stored or fanned out again).
- `read_after` returns stored messages in seq order; retention only ever removes a
  room's oldest messages, so what is stored is a contiguous range ending at `head`.
- Nothing here sees pads or keys: messages are opaque sealed bytes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from ..errors import LocalError
from ..protocol.envelope import MAX_MEMBERS, MIN_MEMBERS
from ..protocol.frames import VERIFY_KEY_LEN
from .metrics import Metrics

Roster = tuple[bytes, ...]  # n Ed25519 verify keys, 32 bytes each, roster order


def roster_problem(blob: object) -> str | None:
    """What makes a stored roster (read back from a file or from NATS) unusable, or None:
    it must be 2 to 255 verify keys, end to end."""
    if (
        not isinstance(blob, bytes)
        or len(blob) % VERIFY_KEY_LEN
        or not MIN_MEMBERS <= len(blob) // VERIFY_KEY_LEN <= MAX_MEMBERS
    ):
        return "a roster of the wrong type or length"
    return None


def split_roster(blob: bytes) -> Roster:
    """The keys of a stored roster that `roster_problem` passed."""
    return tuple(blob[i : i + VERIFY_KEY_LEN] for i in range(0, len(blob), VERIFY_KEY_LEN))


class RoomLimitReached(LocalError):
    """The relay already serves as many rooms as it is allowed to."""


class RosterDamaged(LocalError):
    """A room's roster as stored is not one (damaged); its joins are refused."""

    def __init__(self, room: bytes, problem: str) -> None:
        super().__init__(f"the stored roster of room {room.hex()} is damaged: {problem}")


# Publish, StoredMessage and Appended are immutable records made once per message on
# the relay's hot path: NamedTuples, which are built in half the time of frozen dataclasses.


class Publish(NamedTuple):
    """One PUBLISH the relay checked (header only) and wants stored."""

    room: bytes
    sender: int
    counter: int
    sealed: bytes


class StoredMessage(NamedTuple):
    seq: int
    sealed: bytes


class Appended(NamedTuple):
    """The outcome of storing one `Publish`: its seq, and whether it was already held.

    `preceded_by` (cluster only): messages another node stored in the same room just
    before this one (seqs between the room's previous DELIVER here and `seq`); the hub
    delivers them, in order, right before this message, so every connection still
    gets the room in seq order.
    """

    seq: int
    duplicate: bool
    preceded_by: tuple[StoredMessage, ...] = ()


class RelayHub(Protocol):
    """What a backend may call on the relay (from the relay's event loop)."""

    def on_remote_messages(self, room: bytes, messages: Sequence[StoredMessage]) -> None:
        """Messages another node appended to `room`, in seq order, to fan out here."""

    def on_presence(self, room: bytes, online_elsewhere: frozenset[int]) -> None:
        """The members of `room` online through OTHER nodes changed to this set."""


class Backend(ABC):
    """Where rooms, rosters and messages live. All methods run on the relay's loop."""

    #: 16 random bytes made when the store was created and kept for its life (the same
    #: on every node of a cluster); WELCOME carries it. Set by `open`.
    store_id: bytes = b""

    #: What the relay counts (set by the server before `open`; a backend adds its own).
    metrics: Metrics

    def problem(self) -> str | None:
        """Why the store cannot take writes right now (None: it can), for /health."""
        return None

    async def open(self, hub: RelayHub) -> None:  # noqa: B027 - optional hook
        """Start; `hub` receives messages and presence from other nodes (cluster only)."""

    @abstractmethod
    async def close(self) -> None:
        """Finish what was accepted for storing, then release everything."""

    @abstractmethod
    async def roster(self, room: bytes) -> Roster | None:
        """The roster `room` is registered with, or None when the relay does not know it.
        Registers nothing (a HELLO is checked against it before its PROVE)."""

    @abstractmethod
    async def bind_roster(self, room: bytes, roster: Roster, *, max_rooms: int) -> Roster:
        """Register `roster` for an unknown room, or return the room's bound roster, and
        hold the room for one connection until `release`. Called only once that
        connection proved it holds a key of `roster` (its PROVE verified).

        The caller compares; raises RoomLimitReached when `room` is new and the relay
        already holds `max_rooms` rooms.
        """

    def release(self, room: bytes) -> None:  # noqa: B027 - optional hook
        """One connection that bound `room` is done with it (and with its publishes). A
        backend may then remove a room that nobody holds and that has nothing stored."""

    @abstractmethod
    async def append(self, batch: Sequence[Publish]) -> list[Appended]:
        """Store a batch durably (one commit); one `Appended` per item, in order."""

    @abstractmethod
    async def read_after(
        self, room: bytes, after: int, *, limit: int = 256, max_bytes: int = 4 * 2**20
    ) -> list[StoredMessage]:
        """Stored messages with seq > after, oldest first: a page of at most `limit`
        messages, stopping once `max_bytes` are reached (always at least one)."""

    @abstractmethod
    async def head(self, room: bytes) -> int:
        """The newest seq of `room` (0 when it has none)."""

    @abstractmethod
    async def expire(self, now: float) -> int:
        """Apply the age limit of retention; returns how many messages were removed.
        (Count and byte limits are applied inside `append`.)"""

    async def set_presence(self, room: bytes, member: int, online: bool) -> None:  # noqa: B027
        """`member` came online (first relay-port connection here) or went offline
        (last one closed) on THIS node. A cluster backend tells the other nodes."""
