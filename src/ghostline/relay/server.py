"""The relay and presence servers: the only module here that touches sockets.

Each TCP connection is an `asyncio.Protocol`. Every read is fed to a sans-IO
`wire.FrameDecoder`; all complete frames of one read are handled together, and what a
connection is owed after a group commit goes out in one write (see `rooms.py`).

Backpressure: a connection whose outgoing buffer passes the high-water mark stops being
read (its own publishes wait); one whose buffer passes `RelayLimits.send_buffer` is
closed with ERROR 8 and resumes from its cursor when it reconnects. Nobody else waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import ssl
import struct
import time
from collections.abc import Iterable
from typing import cast

from ..errors import ProtocolError
from ..protocol.envelope import HEADER_LEN, sealed_length
from ..protocol.frames import (
    MAX_PING,
    NONCE_LEN,
    REASON_NOT_TLS,
    REASON_TLS_ONLY,
    ErrorCode,
    Frame,
    FrameDecoder,
    FrameType,
    Hello,
    Port,
    Welcome,
    encode_deliver,
    encode_error,
    encode_frame,
    encode_presence,
)
from .admission import Admission, cause
from .backend import Backend, Publish, RoomLimitReached
from .checks import (
    TokenBucket,
    check_publish,
    check_publish_at,
    check_roster,
    publish_prefix,
    verify_prove,
)
from .config import RelayLimits
from .listen import TlsListener
from .logfmt import log_event
from .rooms import RoomHub

log = logging.getLogger("ghostline.relay")

_ids = itertools.count(1)
_HIGH_WATER = 256 * 1024
_LEN = struct.Struct(">I")
_CLOSE_GRACE = 2.0  # seconds a refused connection gets to read its ERROR frame
_PUBLISH = int(FrameType.PUBLISH)
_PREFIX_LEN = 22  # version, suite, pad_id, sender, n: the same in every PUBLISH of a member
_COUNTER_LENGTH = struct.Struct(">Q8xI")  # counter, (offset), length: the rest of the header
_TLS_START = b"\x16\x03"  # a TLS handshake record: never a HELLO's length (369 MB)


class _Connection(asyncio.Protocol):
    port: Port = Port.RELAY
    port_name = "relay"

    def __init__(self, server: RelayServer, *, plain_on_tls: bool = False) -> None:
        self.server = server
        self.hub = server.hub
        self.limits = server.limits
        self.id = next(_ids)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.address = "?"
        self.decoder = FrameDecoder(server.limits.max_frame)
        self.open = False  # authenticated, after WELCOME was queued
        self.closing = False
        self.room = b""
        self.member = -1
        self.n = 0
        self.last_rx = 0.0
        self._prefix = b""  # what every PUBLISH header of this member starts with
        self._overhead = 0  # sealed length minus ciphertext length
        self._backlog: list[Frame] = []
        self._wakeup: asyncio.Future[None] | None = None
        self._handshake: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._drained: asyncio.Future[None] | None = None
        self._writing_paused = False
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
        self.last_rx = self.server.now()
        try:
            frames = self.decoder.feed(data)
        except ProtocolError as err:
            self.fail(err.code, err.message)
            return
        if not frames:
            return
        if self.open:
            self.on_frames(frames)
            return
        self._backlog.extend(frames)
        if self._handshake is None:
            self._handshake = asyncio.ensure_future(self._run_handshake())
        elif self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

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
        if self._handshake is not None and not self._handshake.done():
            self._handshake.cancel()
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.cancel()
        if self._drained is not None and not self._drained.done():
            self._drained.cancel()
        self.left(was_open)
        self._lost = True
        self.release_room()
        self.server.admission.forget(self)
        # a member's every disconnect is logged; others within the log's limits
        self.server.admission.log(
            None if self.member >= 0 else "disconnect", "disconnect", conn=self.id,
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
        if self.transport is not None and not self.closing and not self._writing_paused:
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
        self.server.admission.log(
            f"refused code={int(code)} reason={cause(reason)}", "refused",
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
        if not self.open:
            self.fail(ErrorCode.BAD_HANDSHAKE, "handshake did not finish in time")

    def check_idle(self, now: float) -> None:
        if self.open and now - self.last_rx > self.limits.idle_timeout:
            self.fail(ErrorCode.RELAY_FULL, "idle timeout: send PING to stay connected")

    # --- handshake -------------------------------------------------------------------

    async def _next_frame(self) -> Frame:
        while not self._backlog:
            self._wakeup = asyncio.get_running_loop().create_future()
            await self._wakeup
            self._wakeup = None
        return self._backlog.pop(0)

    async def _run_handshake(self) -> None:
        try:
            frame = await self._next_frame()
            if frame.type != FrameType.HELLO:
                raise ProtocolError(ErrorCode.BAD_HANDSHAKE, "expected HELLO")
            hello = Hello.decode(frame.body)
            backend = self.server.backend
            known = await backend.roster(hello.room)
            if known is not None:
                check_roster(hello, known)
            nonce = os.urandom(NONCE_LEN)
            self.send(encode_frame(FrameType.CHALLENGE, nonce))
            frame = await self._next_frame()
            if frame.type != FrameType.PROVE:
                raise ProtocolError(ErrorCode.BAD_HANDSHAKE, "expected PROVE")
            verify_prove(self.port, hello, nonce, frame.body)
            if self.closing:
                return
            # Only now, with a key of the roster proven, may a new room be registered.
            if known is None and not self.server.admission.take_room_token(self.address):
                raise ProtocolError(
                    ErrorCode.RELAY_FULL,
                    "relay full: too many new rooms from your address; try again later",
                )
            try:
                bound = await backend.bind_roster(
                    hello.room, hello.roster, max_rooms=self.limits.max_rooms
                )
            except RoomLimitReached as err:
                raise ProtocolError(ErrorCode.RELAY_FULL, "relay full: too many rooms") from err
            self._held = hello.room
            self.release_room()  # at once, if the connection was lost meanwhile
            check_roster(hello, bound)
            if self.closing:
                return
            self.room, self.member, self.n = hello.room, hello.member, len(hello.roster)
            self._prefix = publish_prefix(self.room, self.member, self.n)
            self._overhead = sealed_length(0, self.n)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            log_event(
                log, "joined", conn=self.id, port=self.port_name, peer=self.peer,
                room=self.room.hex(), member=self.member, resume_after=hello.resume_after,
            )  # fmt: skip
            await self.welcome(hello)
            if self.closing:
                return
            backlog, self._backlog = self._backlog, []
            if backlog:
                self.on_frames(backlog)
        except ProtocolError as err:
            self.fail(err.code, err.message)
        except asyncio.CancelledError:
            pass
        except Exception as err:
            log_event(log, "internal_error", level=logging.ERROR, conn=self.id, error=repr(err))
            self.fail(ErrorCode.INTERNAL, "internal error")

    # --- per port --------------------------------------------------------------------

    async def welcome(self, hello: Hello) -> None:
        raise NotImplementedError

    def on_frames(self, frames: list[Frame]) -> None:
        for frame in frames:
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


class RelayConnection(_Connection):
    port = Port.RELAY
    port_name = "relay"

    def __init__(self, server: RelayServer, *, plain_on_tls: bool = False) -> None:
        super().__init__(server, plain_on_tls=plain_on_tls)
        self.inflight = 0
        self.replaying = False
        self._live: list[tuple[int, bytes]] = []
        self._live_bytes = 0
        self._rx = bytearray()
        self._bucket = TokenBucket(
            server.limits.publish_rate, server.limits.publish_burst, server.now()
        )

    async def welcome(self, hello: Hello) -> None:
        backend = self.server.backend
        # Join for live delivery first, buffering, then replay the store, then flush
        # the buffer past what was replayed: no gap and no duplicate at the seam.
        self.replaying = True
        self.open = True
        self.hub.join_relay(self)
        head = await backend.head(self.room)
        self.send(Welcome(head, backend.store_id).encode())
        # resume_after is any u64 (a send-only client asks for nothing stored with
        # 2^63-1); past the head there is nothing to replay. The replay stops at the
        # head: what is stored later comes live, so this member's own publishes are
        # answered by ACCEPTED alone, never also replayed to it.
        after = min(hello.resume_after, head)
        while not self.closing and after < head:
            page = await backend.read_after(self.room, after)
            page = [m for m in page if m.seq <= head]
            if not page or self.closing:
                break
            self.send(b"".join([encode_deliver(m.seq, m.sealed) for m in page]))
            after = page[-1].seq
            await self.drained()
        live, self._live, self._live_bytes = self._live, [], 0
        self.replaying = False
        self.send(b"".join([frame for seq, frame in live if seq > after]))

    def data_received(self, data: bytes) -> None:
        # The hot path: the frames are split here rather than by FrameDecoder, and a
        # PUBLISH is checked in the receive buffer and copied once. Same refusals, in
        # the same order: a bad length anywhere in this read refuses before any of it
        # is handled.
        if self.closing or (self._sniff is not None and self.tls_client(data)):
            return
        now = self.last_rx = self.server.now()
        buf = self._rx
        buf += data
        end = len(buf)
        max_frame = self.limits.max_frame
        stop = 0
        while end - stop >= 4:
            (size,) = _LEN.unpack_from(buf, stop)
            if size == 0:
                self.fail(ErrorCode.MALFORMED, "empty frame (length 0)")
                return
            if size > max_frame:
                self.fail(
                    ErrorCode.TOO_LARGE, f"frame of {size} bytes exceeds the {max_frame} limit"
                )
                return
            if end - stop - 4 < size:
                break
            stop += 4 + size
        if not stop:
            return
        if not self.open:
            pos = 0
            while pos < stop:
                (size,) = _LEN.unpack_from(buf, pos)
                self._backlog.append(Frame(buf[pos + 4], bytes(buf[pos + 5 : pos + 4 + size])))
                pos += 4 + size
            del buf[:stop]
            if self._handshake is None:
                self._handshake = asyncio.ensure_future(self._run_handshake())
            elif self._wakeup is not None and not self._wakeup.done():
                self._wakeup.set_result(None)
            return
        room, member, n = self.room, self.member, self.n
        # A header that starts with this connection's prefix (version, suite, room,
        # member, n) and whose length matches passes every check of check_publish_at;
        # anything else goes through it for the exact refusal.
        prefix, overhead = self._prefix, self._overhead
        take = self._bucket.take
        unpack_len = _LEN.unpack_from
        unpack_tail = _COUNTER_LENGTH.unpack_from
        publishes: list[Publish] = []
        pos = 0
        try:
            while pos < stop:
                (size,) = unpack_len(buf, pos)
                if buf[pos + 4] == _PUBLISH:
                    if not take(now):
                        self.fail(ErrorCode.RATE_LIMITED, "publish rate limit exceeded")
                        return
                    body = pos + 5
                    if size > HEADER_LEN and buf.startswith(prefix, body):
                        counter, length = unpack_tail(buf, body + _PREFIX_LEN)
                        if not length or length + overhead != size - 1:
                            check_publish_at(buf, body, size - 1, room, member, n)  # raises
                    else:
                        counter = check_publish_at(buf, body, size - 1, room, member, n)
                    publishes.append(
                        Publish(room, member, counter, bytes(buf[body : pos + 4 + size]))
                    )
                elif not self.on_common(Frame(buf[pos + 4], bytes(buf[pos + 5 : pos + 4 + size]))):
                    return
                pos += 4 + size
        except ProtocolError as err:
            self.fail(err.code, err.message)
            return
        finally:
            del buf[:pos]
            if publishes:  # (those before a refusal too, as if each was submitted alone)
                self.hub.submit_many(self, publishes)
        if self.inflight > self.limits.max_inflight and self.transport is not None:
            self.transport.pause_reading()

    def buffer_live(self, frames: Iterable[tuple[int, bytes]]) -> None:
        for seq, frame in frames:
            self._live.append((seq, frame))
            self._live_bytes += len(frame)
        if self._live_bytes > self.limits.send_buffer:
            self.fail(ErrorCode.RELAY_FULL, "send buffer full: resume later")

    def on_frames(self, frames: list[Frame]) -> None:
        now = self.server.now()
        for frame in frames:
            if frame.type == FrameType.PUBLISH:
                if not self._bucket.take(now):
                    self.fail(ErrorCode.RATE_LIMITED, "publish rate limit exceeded")
                    return
                try:
                    publish = check_publish(frame.body, self.room, self.member, self.n)
                except ProtocolError as err:
                    self.fail(err.code, err.message)
                    return
                self.hub.submit(self, publish)
            elif not self.on_common(frame):
                return
        if self.inflight > self.limits.max_inflight and self.transport is not None:
            self.transport.pause_reading()

    def after_commit(self) -> None:
        """Called once per commit that held publishes of this connection (stored or not)."""
        if self.inflight <= self.limits.max_inflight // 2:
            self.maybe_resume_reading()
        if self._lost:
            self.release_room()

    def busy(self) -> bool:
        return self.inflight > 0

    def left(self, was_open: bool) -> None:
        if self.member >= 0:
            self.hub.leave_relay(self)


class PresenceConnection(_Connection):
    port = Port.PRESENCE
    port_name = "presence"

    async def welcome(self, hello: Hello) -> None:
        backend = self.server.backend
        head = await backend.head(self.room)
        self.open = True
        online = self.hub.join_presence(self)
        self.send(Welcome(head, backend.store_id).encode() + encode_presence(sorted(online)))

    def left(self, was_open: bool) -> None:
        if self.member >= 0:
            self.hub.leave_presence(self)


class RelayServer:
    """Both servers of one relay process, sharing one backend and one room hub."""

    def __init__(
        self,
        backend: Backend,
        limits: RelayLimits | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.backend = backend
        self.limits = limits or RelayLimits()
        self.ssl_context = ssl_context
        self.hub = RoomHub(backend)
        self.admission: Admission[_Connection] = Admission(self.limits, lambda: self.now())
        self._servers: list[asyncio.Server] = []
        self._tls: list[TlsListener] = []
        self._sweeper: asyncio.Task[None] | None = None
        self.relay_port = 0
        self.presence_port = 0
        self.now = time.monotonic

    async def start(
        self, host: str = "127.0.0.1", relay_port: int = 8080, presence_port: int = 8081
    ) -> tuple[int, int]:
        """Open the store, bind both ports; returns the ports actually bound."""
        await self.backend.open(self.hub)
        loop = asyncio.get_running_loop()
        self.now = loop.time
        try:
            if self.ssl_context is None:
                relay = await loop.create_server(
                    lambda: RelayConnection(self), host, relay_port, backlog=1024
                )
                self._servers.append(relay)
                presence = await loop.create_server(
                    lambda: PresenceConnection(self), host, presence_port
                )
                self._servers.append(presence)
                self.relay_port = relay.sockets[0].getsockname()[1]
                self.presence_port = presence.sockets[0].getsockname()[1]
            else:
                for kind, port in (
                    (RelayConnection, relay_port),
                    (PresenceConnection, presence_port),
                ):
                    listener = TlsListener(
                        self.admission, kind.port_name, self.ssl_context,
                        lambda plain, kind=kind: kind(self, plain_on_tls=plain),  # type: ignore[misc]
                        self.limits.handshake_timeout,
                    )  # fmt: skip
                    await listener.start(host, port)
                    self._tls.append(listener)
                self.relay_port, self.presence_port = self._tls[0].port, self._tls[1].port
        except BaseException:
            for server in self._servers:
                server.close()
            for listener in self._tls:
                listener.close()
            raise
        self._sweeper = asyncio.ensure_future(self._sweep())
        return self.relay_port, self.presence_port

    @property
    def connections(self) -> set[_Connection]:
        return self.admission.connections

    async def _sweep(self) -> None:
        limits = self.limits
        interval = max(0.05, min(1.0, limits.idle_timeout / 4))
        next_expiry = 0.0
        while True:
            await asyncio.sleep(interval)
            now = self.now()
            for conn in list(self.connections):
                conn.check_idle(now)
            self.admission.sweep()
            if now >= next_expiry:
                next_expiry = now + min(60.0, max(1.0, limits.retention.max_age / 10))
                try:
                    removed = await self.backend.expire(time.time())
                except Exception as err:
                    log_event(log, "expire_failed", level=logging.ERROR, error=repr(err))
                else:
                    if removed:
                        log_event(log, "expired", messages=removed)

    async def close(self) -> None:
        """Stop accepting, store and answer what was accepted, close every connection."""
        for server in self._servers:
            server.close()
        for listener in self._tls:
            listener.close()
        for conn in list(self.connections):
            if conn.transport is not None and not conn.closing:
                conn.transport.pause_reading()
        await self.hub.drain()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for conn in list(self.connections):
            conn.closing = True
            if conn.transport is not None:
                conn.transport.close()
        deadline = time.monotonic() + 2.0
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        await self.backend.close()
