"""One TCP connection to the relay or the presence port: the only code here that touches
a socket (through its asyncio transport), and the adapter around the sans-IO parts.

Every read is fed to a `frames.FrameSplitter`. Until WELCOME, frames go one at a time to
a `handshake.RelayHandshake`, which decides; this adapter does the I/O between its steps
(looking up and binding the room, drawing the nonce). Frames that come early wait in the
splitter's buffer, and once the connection is open the port's own handler takes them in
order (`ports.py`).

Until its PROVE verified, a connection is anyone's: its frames are capped at
`frames.MAX_HELLO_FRAME` (the largest HELLO), not `--max-frame`, and it is not read
while more than `_EARLY_BUFFER` bytes wait, so that a crowd of connections that never
finish their handshake cannot make the relay buffer a megabyte each.

Backpressure: a connection whose outgoing buffer passes the high-water mark stops being
read (its own publishes wait); one whose buffer passes `RelayLimits.send_buffer` is
closed with ERROR 8 and resumes from its cursor when it reconnects. Nobody else waits.

It stays one file, a little over 400 lines: a connection's life (read, handshake,
join, send, close) is one state, and its steps read best beside each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import ssl
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, cast

from ..errors import ProtocolError
from ..protocol.frames import (
    MAX_HELLO_FRAME,
    MAX_PING,
    NONCE_LEN,
    REASON_HANDSHAKE_TIMEOUT,
    REASON_NOT_TLS,
    REASON_TLS_ONLY,
    ErrorCode,
    Frame,
    FrameSplitter,
    FrameType,
    Hello,
    Port,
    encode_error,
    encode_frame,
)
from ..protocol.handshake import JoinRequested, RelayHandshake
from .admission import Admission, cause, source_of
from .backend import Backend, RoomLimitReached
from .config import RelayLimits
from .logfmt import log_event
from .metrics import Metrics
from .rooms import RoomHub

log = logging.getLogger("ghostline.relay")

_ids = itertools.count(1)
_HIGH_WATER = 256 * 1024
_CLOSE_GRACE = 2.0  # seconds a refused connection gets to read its ERROR frame
_TLS_START = b"\x16\x03"  # a TLS handshake record: never a HELLO's length (369 MB)
# Bytes an unauthenticated connection may have waiting before it is no longer read:
# a whole HELLO and a PROVE, with room to spare.
_EARLY_BUFFER = 2 * (4 + MAX_HELLO_FRAME)


class Relay(Protocol):
    """What a connection uses of the relay server (`server.RelayServer`)."""

    backend: Backend
    limits: RelayLimits
    hub: RoomHub
    admission: Admission[Connection]
    metrics: Metrics
    ssl_context: ssl.SSLContext | None
    now: Callable[[], float]


class Connection(asyncio.Protocol):
    """What both ports share: admission, the handshake, sending and refusing."""

    port: Port = Port.RELAY
    port_name = "relay"

    def __init__(self, server: Relay, *, plain_on_tls: bool = False) -> None:
        self.server = server
        self.hub = server.hub
        self.limits = server.limits
        self.id = next(_ids)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.address = "?"
        self.source = "?"  # what the per-address limits count (admission.source_of)
        # --max-frame applies once the PROVE verified (see _next_handshake_frame)
        self.splitter = FrameSplitter(min(server.limits.max_frame, MAX_HELLO_FRAME))
        self.handshake = RelayHandshake(self.port)
        self.open = False  # joined: the port's own frames are handled
        self.closing = False
        self.room = b""
        self.member = -1
        self.n = 0
        self.last_rx = 0.0
        self._step: asyncio.Task[None] | None = None  # the handshake's I/O under way
        self._timer: asyncio.TimerHandle | None = None
        self._drained: asyncio.Future[None] | None = None
        self._writing_paused = False
        self._early_paused = False  # not read: too much came before the PROVE verified
        self._plain_on_tls = plain_on_tls  # plain bytes came to a TLS port
        self._sniff: bytes | None = None if server.ssl_context else b""  # first bytes
        self._held = b""  # the room bound in the backend for this connection
        self._lost = False

    # --- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.address = str(peer[0])
            self.source = source_of(self.address)
            self.peer = f"{peer[0]}:{peer[1]}"
        self.transport.set_write_buffer_limits(high=_HIGH_WATER)
        loop = asyncio.get_running_loop()
        self.last_rx = loop.time()
        refusal = self.server.admission.admit(self)
        self.server.admission.log(
            "connect", "connect", conn=self.id, port=self.port_name, peer=self.peer
        )
        if refusal is not None:
            self.fail(ErrorCode.RELAY_FULL, refusal)
            return
        if self._plain_on_tls:
            self.fail(ErrorCode.BAD_HANDSHAKE, REASON_TLS_ONLY)
            return
        self._timer = loop.call_later(self.limits.handshake_timeout, self._handshake_expired)

    def data_received(self, data: bytes) -> None:
        if self.closing or (self._sniff is not None and self.tls_client(data)):
            return
        now = self.last_rx = self.server.now()
        if self.open and self.on_data(data, now):
            return
        try:
            stop = self.splitter.feed(data)
        except ProtocolError as err:
            self.fail(err.code, err.message)
            return
        if self.open:
            self.on_frames(stop, now)
            return
        if stop:
            self._next_handshake_frame()
        if self.splitter.buffered > _EARLY_BUFFER and not self.closing and not self.open:
            self._early_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def tls_client(self, data: bytes) -> bool:
        """Whether a plain port's first bytes are a TLS ClientHello (refused, saying so)."""
        assert self._sniff is not None
        head = self._sniff + data[: 2 - len(self._sniff)]
        if len(head) < 2:
            self._sniff = head
            return False
        self._sniff = None
        if head != _TLS_START:
            return False
        self.fail(ErrorCode.BAD_HANDSHAKE, REASON_NOT_TLS)
        return True

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        was_open = self.open
        self.open = False
        self.closing = True
        if self._timer is not None:
            self._timer.cancel()
        if self._step is not None and not self._step.done():
            self._step.cancel()
        if self._drained is not None and not self._drained.done():
            self._drained.cancel()
        self.left(was_open)
        self._lost = True
        self.release_room()
        self.server.admission.forget(self)
        # within the log's limits: a member's per address (anyone can make a room of
        # their own keys and join and leave it in a loop), the others' together
        key = f"disconnect {self.source}" if self.member >= 0 else "disconnect"
        self.server.admission.log(
            key, "disconnect", conn=self.id,
            port=self.port_name, peer=self.peer, room=self.room.hex() or None,
            member=self.member if self.member >= 0 else None, error=exc,
        )  # fmt: skip

    def busy(self) -> bool:
        """Whether publishes of this connection still wait for their commit."""
        return False

    def release_room(self) -> None:
        """Once closed and done with its publishes, let go of the room it bound."""
        if self._held and self._lost and not self.busy():
            room, self._held = self._held, b""
            self.server.backend.release(room)

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self.transport is not None and not self.closing:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self.maybe_resume_reading()

    def maybe_resume_reading(self) -> None:
        if self._early_paused and (self.open or self.splitter.buffered <= _EARLY_BUFFER):
            self._early_paused = False
        if (
            self.transport is not None
            and not self.closing
            and not self._writing_paused
            and not self._early_paused
        ):
            self.transport.resume_reading()

    # --- sending and refusing --------------------------------------------------------

    def send(self, data: bytes) -> None:
        transport = self.transport
        if self.closing or transport is None or not data:
            return
        transport.write(data)
        if transport.get_write_buffer_size() > self.limits.send_buffer:
            self.fail(ErrorCode.RELAY_FULL, "send buffer full: resume later")

    async def drained(self) -> None:
        """Wait while the outgoing buffer is above the high-water mark."""
        while self._writing_paused and not self.closing:
            self._drained = asyncio.get_running_loop().create_future()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drained

    def fail(self, code: int, reason: str) -> None:
        """Answer with ERROR `code`, then close (forcibly if it cannot be read in time)."""
        if self.closing or self.transport is None:
            return
        kind = cause(reason)
        self.server.metrics.refused(int(code), kind)
        self.server.admission.log(
            f"refused code={int(code)} reason={kind}", "refused",
            level=logging.WARNING,
            conn=self.id, port=self.port_name, peer=self.peer, room=self.room.hex() or None,
            member=self.member if self.member >= 0 else None, code=int(code), reason=reason,
        )  # fmt: skip
        self.closing = True
        transport = self.transport
        # A connection stuck behind a full buffer would never read this frame: drop what
        # is queued for it first (it resumes from its cursor anyway).
        if transport.get_write_buffer_size() > self.limits.send_buffer:
            transport.abort()
            return
        transport.write(encode_error(code, reason))
        transport.close()
        asyncio.get_running_loop().call_later(_CLOSE_GRACE, transport.abort)

    def _handshake_expired(self) -> None:
        if self.open:
            return
        if self._step is not None and not self._step.done():
            # the relay's own step (its store: a cluster waiting out NATS) is what is
            # late, not the client: a refusal it may retry, not ERROR 3
            self.fail(ErrorCode.INTERNAL, "the relay's store did not answer in time")
            return
        self.fail(ErrorCode.BAD_HANDSHAKE, REASON_HANDSHAKE_TIMEOUT)

    def check_idle(self, now: float) -> None:
        if self.open and now - self.last_rx > self.limits.idle_timeout:
            self.fail(ErrorCode.RELAY_FULL, "idle timeout: send PING to stay connected")

    # --- the handshake: RelayHandshake decides, this does its I/O ----------------------

    def _next_handshake_frame(self) -> None:
        """Give the handshake the client's next frame, if it waits for one."""
        handshake = self.handshake
        if self.closing or not handshake.expects_frame:
            return  # the relay's own step is under way; the frame waits for it
        frame = self.splitter.pop()
        if frame is None:
            return
        try:
            event = handshake.receive(frame)
        except ProtocolError as err:
            self.fail(err.code, err.message)
            return
        if isinstance(event, JoinRequested):
            self._spawn(self._challenge(event.hello))
        else:  # a key of the roster is proven: its frames may be as large as any
            self.splitter.max_frame = self.limits.max_frame
            self._spawn(self._join(event.hello))
        if self._early_paused:
            self.maybe_resume_reading()

    def _spawn(self, step: Coroutine[Any, Any, None]) -> None:
        self._step = asyncio.ensure_future(self._guarded(step))

    async def _guarded(self, step: Coroutine[Any, Any, None]) -> None:
        try:
            await step
        except ProtocolError as err:
            self.fail(err.code, err.message)
        except asyncio.CancelledError:
            pass
        except Exception as err:
            log_event(log, "internal_error", level=logging.ERROR, conn=self.id, error=repr(err))
            self.fail(ErrorCode.INTERNAL, "internal error")

    async def _challenge(self, hello: Hello) -> None:
        """HELLO came: check it against the room's roster if the room is known, then
        CHALLENGE. Nothing is registered yet."""
        known = await self.server.backend.roster(hello.room)
        if self.closing:
            return
        self.handshake.challenge(os.urandom(NONCE_LEN), known)
        self.send(self.handshake.data_to_send())
        self._next_handshake_frame()  # its PROVE may be here already

    async def _join(self, hello: Hello) -> None:
        """PROVE verified: only now, with a key of the roster proven, may a new room be
        registered. Then the port's welcome, then whatever the client sent meanwhile."""
        if self.closing:
            return
        # A room unknown at HELLO that another member registered since is not new; one
        # that other joins are registering right now costs them one token in all.
        admission = self.server.admission
        new = not self.handshake.room_known and await self.server.backend.roster(hello.room) is None
        if new and not admission.start_new_room(self.source, hello.room):
            raise ProtocolError(
                ErrorCode.RELAY_FULL,
                "relay full: too many new rooms from your address; try again later",
            )
        try:
            bound = await self.server.backend.bind_roster(
                hello.room, hello.roster, max_rooms=self.limits.max_rooms
            )
        except RoomLimitReached as err:
            raise ProtocolError(ErrorCode.RELAY_FULL, "relay full: too many rooms") from err
        finally:
            if new:
                admission.end_new_room(hello.room)
        self._held = hello.room
        self.release_room()  # at once, if the connection was lost meanwhile
        self.handshake.admit(bound)
        if self.closing:
            return
        self.room, self.member, self.n = hello.room, hello.member, len(hello.roster)
        self.admitted()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.server.admission.log(
            f"joined {self.source}", "joined", conn=self.id, port=self.port_name,
            peer=self.peer, room=self.room.hex(), member=self.member,
            resume_after=hello.resume_after,
        )  # fmt: skip
        await self.welcome(hello)
        if self.closing:
            return
        if self._early_paused:
            self.maybe_resume_reading()
        stop = self.splitter.feed(b"")
        if stop:
            self.on_frames(stop, self.server.now())

    # --- per port --------------------------------------------------------------------

    def admitted(self) -> None:
        """The room holds this connection's roster; `room`, `member` and `n` are set."""

    async def welcome(self, hello: Hello) -> None:
        """Join the room, send WELCOME (`handshake.welcome`) and what follows it."""
        raise NotImplementedError

    def on_data(self, data: bytes, now: float) -> bool:
        """Handle `data` (the connection is open) and say True, or change nothing and
        say False: the splitter and `on_frames` then handle it."""
        return False

    def on_frames(self, stop: int, now: float) -> None:
        """Handle the whole frames in `splitter.buffer[:stop]` (the connection is open)."""
        for frame in self.splitter.take(stop):
            if not self.on_common(frame):
                return

    def on_common(self, frame: Frame) -> bool:
        if frame.type == FrameType.PING:
            if len(frame.body) > MAX_PING:
                self.fail(ErrorCode.MALFORMED, "PING longer than 64 bytes")
                return False
            self.send(encode_frame(FrameType.PONG, frame.body))
            return True
        self.fail(ErrorCode.MALFORMED, f"unexpected frame type 0x{frame.type:02x}")
        return False

    def left(self, was_open: bool) -> None:
        pass
