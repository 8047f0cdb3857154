"""Rooms in the cluster: their rosters, kept for good, and which rooms are live.

As on a single node, a room is live while a connection holds it (from its verified
PROVE until it closed and its publishes were answered), on any node, or while it holds a
message; `--max-rooms` counts live rooms. A room nobody holds and that holds nothing is
retired: it stops counting, but its roster stays in `ghostline-rooms` for good (so when
its group comes back it takes its old roster, and nobody can claim its id with another)
and its stream keeps its numbering (a room emptied by age keeps a marker chunk).

Live rooms are the messages of stream `ghostline-live-rooms`, one per room (subject
`ghostline.live-room.<room hex>`, at most one message each), so the stream's message
count is the number of live rooms. A node that starts holding a room writes the room's
message again, which gives it a new stream seq. Which nodes hold a room travels in their
presence snapshots (presence.py). The room's keeper retires it when no node holds it and
it holds nothing, by deleting its message BY THAT SEQ: a hold written since makes the
delete fail, so a retirement never undoes a hold written before it. A hold written
before the keeper looked, on a node whose snapshot had not reached the keeper yet, can
still be retired; the snapshot then shows the keeper a held room that is not live, and
the keeper makes it live again (a room may so go uncounted for as long as a snapshot
takes). The keeper is chosen by rendezvous hashing over all live nodes, whoever holds
the room (`Ownership.keeps`), not as the room's writer is (among the nodes holding it):
the hold that raced with a retirement would otherwise move the room to its holder, and
the node that retired it would no longer be the one to make it live again. Rooms held
by a node that died are retired once it is gone (8 s), and a node that starts retires,
once every node's snapshot is in, the rooms it keeps that nobody holds and that hold
nothing (what a node killed while alone held).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from ..backend import RoomLimitReached, Roster, RosterDamaged, roster_problem, split_roster
from ..logfmt import log_event
from .layout import LIVE_ROOM_SUBJECT, LIVE_ROOMS_STREAM, ROOMS_KV_STREAM
from .link import STALL_LIMIT, Link, StorageUnavailable
from .paging import Reader
from .presence import DEAD_AFTER, HEARTBEAT, Presence

log = logging.getLogger("ghostline.relay")
T = TypeVar("T")

NO_MESSAGE = 10057  # JetStream err_code: the message to delete is not there (any more)
SWEEP_AFTER = DEAD_AFTER + HEARTBEAT  # seconds after start: every node's snapshot is in
CLOSE_WAIT = 2.0  # seconds a stopping node gives the retirements under way


class Registry:
    def __init__(
        self,
        link: Link,
        rosters: KeyValue,
        reader: Reader,
        presence: Presence,
        keeps: Callable[[bytes], bool],
    ) -> None:
        self.link = link
        self.reader = reader
        self.presence = presence
        self.closing = False
        self._rosters_kv = rosters
        self._keeps = keeps  # whether this node retires a room
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rosters: dict[bytes, Roster] = {}  # rosters are never changed: cached
        self._holds: dict[bytes, int] = {}  # per room: connections holding it here
        self._ready: set[bytes] = set()  # rooms held here that this node made live
        presence.on_held = self.on_held

    # --- joining and leaving ---------------------------------------------------------------

    async def roster(self, room: bytes) -> Roster | None:
        bound = self._rosters.get(room)
        if bound is not None:
            return bound

        async def look_up() -> Roster | None:
            self.link.connected()
            try:
                entry = await self.link.racing(ROOMS_KV_STREAM, self._rosters_kv.get(room.hex()))
            except KeyNotFoundError:
                return None
            return _checked_roster(room, entry.value)

        found = await self._waiting("a room's roster", look_up)
        if found is not None:
            self._rosters[room] = found
        return found

    async def bind(self, room: bytes, roster: Roster, max_rooms: int) -> Roster:
        # held from here on (a retirement here sees it), released if the bind fails
        self._holds[room] = self._holds.get(room, 0) + 1
        try:
            if room not in self._ready:
                bound = await self._waiting(
                    "a room's roster", lambda: self._hold(room, roster, max_rooms)
                )
                self._rosters[room] = bound
                self._ready.add(room)
                self.presence.hold(room, True)
            return self._rosters[room]
        except BaseException:
            self.release(room)
            raise

    async def _hold(self, room: bytes, roster: Roster, max_rooms: int) -> Roster:
        """Register the room if it is new, and write that this node holds it."""
        _, js = self.link.connected()
        if await self._live_seq(room) is None:  # retired or new: it counts from now on
            live = (
                await self.link.racing(LIVE_ROOMS_STREAM, js.stream_info(LIVE_ROOMS_STREAM))
            ).state.messages
            if live >= max_rooms:
                raise RoomLimitReached()
        bound = self._rosters.get(room) or await self._register(room, roster)
        await self._mark_live(room)
        return bound

    async def _register(self, room: bytes, roster: Roster) -> Roster:
        """The room's roster: the one it was registered with, or `roster` for a new room."""
        kv, key, racing = self._rosters_kv, room.hex(), self.link.racing
        try:
            entry = await racing(ROOMS_KV_STREAM, kv.get(key))
        except KeyNotFoundError:
            try:
                await racing(ROOMS_KV_STREAM, kv.create(key, b"".join(roster)))
                return roster
            except (KeyWrongLastSequenceError, KeyNotFoundError):
                # Another connection registered it first; the read of its roster (here,
                # or the one inside nats-py's create) may reach a replica that has not
                # caught up yet, and then comes up empty: wait and look again.
                try:
                    entry = await racing(ROOMS_KV_STREAM, kv.get(key))
                except KeyNotFoundError:
                    raise StorageUnavailable("a room's roster is being registered") from None
        return _checked_roster(room, entry.value)

    def release(self, room: bytes) -> None:
        """One connection here is done with the room (see Backend.release)."""
        count = self._holds.get(room, 0) - 1
        if count > 0:
            self._holds[room] = count
            return
        self._holds.pop(room, None)
        self._ready.discard(room)
        if self.closing:
            return  # the goodbye snapshot tells the owners
        self.presence.hold(room, False)
        if self._keeps(room) and not self.presence.held_elsewhere(room):
            self._start(self.retire(room))

    def _start(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Let the retirements under way finish (for CLOSE_WAIT at most)."""
        self.closing = True
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=CLOSE_WAIT)
        for task in list(self._tasks):
            task.cancel()

    # --- live rooms ------------------------------------------------------------------------

    def held(self, room: bytes) -> bool:
        return self.held_here(room) or self.presence.held_elsewhere(room)

    def held_here(self, room: bytes) -> bool:
        """Whether a connection of this node holds the room (bind .. release)."""
        return room in self._holds

    def on_held(self, rooms: set[bytes]) -> None:
        """Other nodes started or stopped holding these rooms (or went away)."""
        if self.closing:
            return
        for room in rooms:
            if not self._keeps(room):
                continue
            if self.held(room):
                if room not in self._ready:  # a retirement may have raced with the hold
                    self._start(self._keep_live(room))
            else:
                self._start(self.retire(room))

    async def retire(self, room: bytes) -> bool:
        """Retire the room if nobody holds it and it holds nothing; whether it was."""
        try:
            seq = await self._live_seq(room)
            if seq is None or self.held(room) or await self._holds_messages(room):
                return False
            if self.held(room):  # (a hold may have come while the room was read)
                return False
            await self.link.api(
                f"STREAM.MSG.DELETE.{LIVE_ROOMS_STREAM}", {"seq": seq, "no_erase": True}
            )
        except APIError as err:
            if err.err_code != NO_MESSAGE:  # else: held again meanwhile (or retired)
                log_event(log, "cluster_retire_failed", level=logging.WARNING,
                          room=room.hex(), error=repr(err))  # fmt: skip
            return False
        except Exception as err:  # the next release or sweep tries again
            log_event(log, "cluster_retire_failed", level=logging.WARNING, room=room.hex(),
                      error=repr(err))  # fmt: skip
            return False
        log_event(log, "cluster_room_retired", level=logging.DEBUG, room=room.hex())
        return True

    async def _keep_live(self, room: bytes) -> None:
        try:
            if await self._live_seq(room) is None and self.held(room):
                await self._mark_live(room)
        except Exception as err:  # the next hold of the room makes it live
            log_event(log, "cluster_retire_failed", level=logging.WARNING, room=room.hex(),
                      error=repr(err))  # fmt: skip

    async def sweep(self) -> int:
        """Once every node's snapshot is in after start: retire the live rooms this node
        keeps that nobody holds and that hold nothing; returns how many."""
        await asyncio.sleep(SWEEP_AFTER)
        _, js = self.link.connected()
        info = await js.stream_info(LIVE_ROOMS_STREAM, subjects_filter=_subject(None))
        retired = 0
        for subject in info.state.subjects or {}:
            room = _room_of(subject)
            if room is not None and self._keeps(room) and not self.held(room):
                retired += await self.retire(room)
        return retired

    async def _live_seq(self, room: bytes) -> int | None:
        """The stream seq of the room's live message (None: not live)."""
        found = await self.link.direct(LIVE_ROOMS_STREAM, {"last_by_subj": _subject(room)})
        return found[0] if found is not None else None

    async def _mark_live(self, room: bytes) -> None:
        _, js = self.link.connected()
        await self.link.racing(
            LIVE_ROOMS_STREAM, js.publish(_subject(room), b"", stream=LIVE_ROOMS_STREAM)
        )

    async def _holds_messages(self, room: bytes) -> bool:
        last = await self.reader.get(room)
        return last is not None and last.chunk.count > 0

    async def _waiting(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """`op()`, waiting out NATS or a stream leader being briefly away as writes do
        (up to STALL_LIMIT): a member joining during a hiccup is only delayed."""
        return await self.link.retry(what, op, time.monotonic() + STALL_LIMIT)


def _subject(room: bytes | None) -> str:
    """The subject of a room's live message (None: of every room's)."""
    return LIVE_ROOM_SUBJECT + (room.hex() if room is not None else "*")


def _room_of(subject: str) -> bytes | None:
    try:
        room = bytes.fromhex(subject.rsplit(".", 1)[1])
    except (IndexError, ValueError):
        return None
    return room if len(room) == 16 else None


def _checked_roster(room: bytes, value: bytes | None) -> Roster:
    """The roster NATS holds for `room`, checked first (RosterDamaged): whoever can
    write the bucket can put anything there."""
    if not isinstance(value, bytes):  # (an entry with no value)
        raise RosterDamaged(room, "no roster")
    problem = roster_problem(value)
    if problem is not None:
        raise RosterDamaged(room, problem)
    return split_roster(value)
