"""Who is online, as the presence port tells it (docs/PROTOCOL.md section 8): a PRESENCE
list after WELCOME, then ONLINE and OFFLINE as members come and go. Every member index
is checked against the roster before it is believed. The client follows the presence
port while it runs, reconnecting with its own backoff, which starts again from its base
only after a connection that stayed up `stable_after` seconds; messaging works without
it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from ..errors import ProtocolError, RemoteError
from ..protocol.frames import ErrorCode, FrameType, Port, Welcome, decode_member, decode_presence
from .events import ConnectionChanged, Event, PresenceChanged
from .session import Backoff, Session, refused_or_unexpected, unexpected
from .state import ClientState
from .transport import RelayAddress


class Host(Protocol):
    """What presence uses of the client (`client.Client`)."""

    presence_port: int | None
    state: ClientState
    stable_after: float

    @property
    def relay(self) -> RelayAddress:
        """The relay in use, or the next one to try."""

    @property
    def running(self) -> bool: ...

    async def join(
        self, addr: RelayAddress, port: Port, resume_after: int = 0
    ) -> tuple[Session, Welcome]: ...


class Presence:
    def __init__(self, n: int, emit: Callable[[Event], None], backoff: Backoff) -> None:
        self.n = n  # the group's size
        self._emit = emit
        self._backoff = backoff
        self.online: frozenset[int] = frozenset()

    async def run(self, client: Host) -> None:
        """Follow the presence port of the client's relay while the client runs."""
        while client.running:
            addr = client.relay
            port = client.presence_port if client.presence_port is not None else addr.presence
            where = f"{addr.host}:{port}"
            try:
                session, _ = await client.join(addr, Port.PRESENCE)
                joined_at = asyncio.get_running_loop().time()
                try:
                    shown = client.state.shown
                    self._emit(
                        ConnectionChanged(shown, where, None, "presence connected", "presence")
                    )
                    await self.follow(session)
                finally:
                    await session.close()
                    if asyncio.get_running_loop().time() - joined_at >= client.stable_after:
                        self._backoff.reset()
            except asyncio.CancelledError:
                raise
            except (RemoteError, ConnectionError, TimeoutError, OSError) as err:
                detail = f"presence unavailable: {err}"
            except Exception as exc:  # noqa: BLE001 - retried, and said, rather than a dead task
                detail = f"presence unavailable: {unexpected(exc)}"
            if not client.running:
                self.set(frozenset())
                return
            delay = self._backoff.next_delay()
            # Say that presence is down before emptying `online`, so a listener can tell
            # "we no longer know who is online" from "everyone went offline".
            shown = client.state.shown
            self._emit(ConnectionChanged(shown, where, delay, detail, channel="presence"))
            self.set(frozenset())
            await asyncio.sleep(delay)

    async def follow(self, session: Session) -> None:
        """Read a joined presence session until it ends (raises why it ended)."""
        while True:
            frame = await session.read()
            if frame.type == FrameType.PRESENCE:
                self.set(self._members(decode_presence(frame.body)))
            elif frame.type == FrameType.ONLINE:
                self.set(self.online | self._members((decode_member(frame.body),)))
            elif frame.type == FrameType.OFFLINE:
                self.set(self.online - self._members((decode_member(frame.body),)))
            elif frame.type != FrameType.PONG:
                raise refused_or_unexpected(frame, "presence frame")

    def set(self, online: frozenset[int]) -> None:
        if online == self.online:
            return
        joined, left = online - self.online, self.online - online
        self.online = online
        self._emit(PresenceChanged(online, joined, left))

    def _members(self, indexes: Sequence[int]) -> frozenset[int]:
        for i in indexes:
            if i >= self.n:
                raise ProtocolError(
                    ErrorCode.MALFORMED, f"presence names member {i} in a group of {self.n}"
                )
        return frozenset(indexes)
