"""Cluster-wide presence, and which nodes are alive.

Each node publishes a full snapshot of its online members on `ghostline.presence.<node>`
on every change and every `HEARTBEAT` seconds; an empty message is a goodbye. A member
is online while some node's latest snapshot lists it. A snapshot also lists the rooms
the node holds (registry.py) with nobody online in them, with no members. A node not heard from for
`DEAD_AFTER` seconds is gone (checked every second): its members go offline within
DEAD_AFTER + 1 s, and it stops being chosen as an owner (ownership.py). A node that
starts asks the others for their snapshots on `ghostline.presence-sync`.

Snapshot body: u8 1, then per room held: 16-byte room, u16 count, count x u16 member.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg

from ..backend import RelayHub
from ..logfmt import log_event
from .layout import PRESENCE_SUBJECT, SYNC_SUBJECT
from .link import Link

log = logging.getLogger("ghostline.relay")

HEARTBEAT = 2.0  # seconds between presence snapshots of a node
DEAD_AFTER = 8.0  # a node not heard from for this long is gone (its members offline)
_U16 = struct.Struct(">H")
_ROOM_LEN = 16


@dataclass(slots=True)
class _Node:
    seen: float
    rooms: dict[bytes, frozenset[int]]


class Presence:
    def __init__(self, link: Link, spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        self.link = link
        self.node = link.node
        self.hub: RelayHub | None = None
        self.closing = False
        self._spawn = spawn
        self._local: dict[bytes, set[int]] = {}  # members online through this node
        self._held: set[bytes] = set()  # rooms connections hold through this node
        # Called with the rooms other nodes started or stopped holding (registry.py).
        self.on_held: Callable[[set[bytes]], None] = lambda rooms: None
        self._nodes: dict[str, _Node] = {}  # other nodes' latest snapshots
        self._snapshot_due = False

    @property
    def nodes(self) -> list[str]:
        """The other nodes alive, as far as this node knows."""
        return list(self._nodes)

    @property
    def local_rooms(self) -> set[bytes]:
        return set(self._local)

    def change(self, room: bytes, member: int, online: bool) -> None:
        members = self._local.get(room)
        if online:
            if members is None:
                members = self._local[room] = set()
            members.add(member)
        elif members is not None:
            members.discard(member)
            if not members:
                del self._local[room]
        self.schedule_snapshot()

    def hold(self, room: bytes, held: bool) -> None:
        """This node holds `room` (a connection here bound it), or no longer does."""
        if held:
            self._held.add(room)
        else:
            self._held.discard(room)
        self.schedule_snapshot()

    def holds(self, node: str, room: bytes) -> bool:
        """Whether `node` holds `room`: this node as its next snapshot says, another as
        its latest snapshot said."""
        if node == self.node:
            return room in self._held or room in self._local
        other = self._nodes.get(node)
        return other is not None and room in other.rooms

    def held_elsewhere(self, room: bytes) -> bool:
        """Whether another node's latest snapshot lists `room`."""
        return any(room in other.rooms for other in self._nodes.values())

    def schedule_snapshot(self) -> None:
        if not self._snapshot_due:
            self._snapshot_due = True
            asyncio.get_running_loop().call_soon(lambda: self._spawn(self._send_snapshot()))

    async def _send_snapshot(self) -> None:
        self._snapshot_due = False
        if not self.link.up or self.closing:
            return
        parts = [b"\x01"]
        local = self._local
        for room in self._held | local.keys():
            members = local.get(room, ())
            parts.append(room + _U16.pack(len(members)))
            parts.extend(_U16.pack(m) for m in sorted(members))
        await self.publish(PRESENCE_SUBJECT + self.node, b"".join(parts))

    async def publish(self, subject: str, data: bytes) -> None:
        try:
            nc, _ = self.link.connected()
            await nc.publish(subject, data)
        except Exception as err:  # the reconnect (or the next heartbeat) sends again
            log_event(log, "cluster_presence_unsent", level=logging.DEBUG, error=repr(err))

    async def hello(self) -> None:
        """Ask every node for its snapshot (this node just started or reconnected)."""
        await self.publish(SYNC_SUBJECT, self.node.encode())

    async def goodbye(self) -> None:
        await self.publish(PRESENCE_SUBJECT + self.node, b"")

    def reconnected(self) -> None:
        now = time.monotonic()
        for other in self._nodes.values():
            other.seen = now  # nobody could send while we could not hear: start afresh
        self.schedule_snapshot()

    async def on_sync(self, msg: Msg) -> None:
        if msg.data.decode(errors="replace") != self.node:
            self.schedule_snapshot()

    async def on_snapshot(self, msg: Msg) -> None:
        node = msg.subject[len(PRESENCE_SUBJECT) :]
        if node == self.node:
            return
        rooms = parse_snapshot(msg.data)
        if rooms is None and msg.data:
            log_event(log, "cluster_presence_damaged", level=logging.WARNING, node=node)
            return
        before = self._nodes.get(node)
        if rooms is None:  # goodbye
            if self._nodes.pop(node, None) is not None:
                log_event(log, "cluster_node_left", node=node)
        else:
            if before is None:
                log_event(log, "cluster_node_joined", node=node)
            self._nodes[node] = _Node(time.monotonic(), rooms)
        old = before.rooms if before is not None else {}
        new = rooms or {}
        none: frozenset[int] = frozenset()
        self._announce({r for r in old.keys() | new.keys() if old.get(r, none) != new.get(r, none)})
        if old.keys() != new.keys():
            self.on_held(set(old.keys() ^ new.keys()))

    def _announce(self, rooms: set[bytes]) -> None:
        if self.hub is None:
            return
        for room in rooms:
            online: set[int] = set()
            for other in self._nodes.values():
                online |= other.rooms.get(room, frozenset())
            self.hub.on_presence(room, frozenset(online))

    async def heartbeat(self) -> None:
        last = 0.0
        while True:
            await asyncio.sleep(1.0)
            if not self.link.up:
                continue
            now = time.monotonic()
            for name in [n for n, s in self._nodes.items() if now - s.seen > DEAD_AFTER]:
                gone = self._nodes.pop(name)
                log_event(log, "cluster_node_gone", level=logging.WARNING, node=name)
                self._announce(set(gone.rooms))
                self.on_held(set(gone.rooms))
            if now - last >= HEARTBEAT:
                last = now
                self.schedule_snapshot()


def parse_snapshot(data: bytes) -> dict[bytes, frozenset[int]] | None:
    """The rooms a snapshot holds, each with its members online (maybe none); None for a
    goodbye or a damaged one."""
    if not data or data[0] != 1:
        return None
    rooms: dict[bytes, frozenset[int]] = {}
    pos = 1
    while pos < len(data):
        if pos + _ROOM_LEN + _U16.size > len(data):
            return None
        room = data[pos : pos + _ROOM_LEN]
        (count,) = _U16.unpack_from(data, pos + _ROOM_LEN)
        pos += _ROOM_LEN + _U16.size
        if pos + 2 * count > len(data):
            return None
        members = struct.unpack_from(f">{count}H", data, pos)
        pos += 2 * count
        rooms[room] = frozenset(members)
    return rooms
