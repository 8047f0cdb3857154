"""What each port does once a connection has joined its room.

The relay port replays the room from the client's cursor, then delivers live, and takes
PUBLISHes: its hot path (`RelayConnection.on_data`) walks a read of whole good PUBLISHes
once, checking each length prefix and PUBLISH header there, and slices out each sealed
message; any other read goes through the `FrameSplitter` (every length prefix checked
first) and `on_frames`, which checks each PUBLISH by the rules of `rules.py`. The
presence port sends who is online, then every change (`rooms.py`).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import ProtocolError
from ..protocol.envelope import HEADER_LEN, sealed_length
from ..protocol.frames import (
    FRAME_HEAD,
    FRAME_LENGTH,
    PUBLISH_HEAD,
    ErrorCode,
    Frame,
    FrameType,
    Hello,
    Port,
    encode_deliver,
    encode_presence,
)
from ..protocol.rules import check_publish_at, publish_prefixes
from .backend import Publish
from .connection import Connection, Relay
from .ratelimit import TokenBucket

_PUBLISH = int(FrameType.PUBLISH)
# A NamedTuple made without the Python-level __new__ it gets from namedtuple(): on the
# hot path, once per message.
_new_publish = tuple.__new__


class RelayConnection(Connection):
    port = Port.RELAY
    port_name = "relay"

    def __init__(self, server: Relay, *, plain_on_tls: bool = False) -> None:
        super().__init__(server, plain_on_tls=plain_on_tls)
        self.inflight = 0
        self.replaying = False
        self._live: list[tuple[int, bytes]] = []
        self._live_bytes = 0
        self._prefixes: tuple[bytes, ...] = ()  # what a PUBLISH of this member starts with
        self._overhead = 0  # sealed length minus ciphertext length
        self._bucket = TokenBucket(
            server.limits.publish_rate, server.limits.publish_burst, server.now()
        )

    def admitted(self) -> None:
        self._prefixes = publish_prefixes(self.room, self.member, self.n)
        self._overhead = sealed_length(0, self.n)

    async def welcome(self, hello: Hello) -> None:
        backend = self.server.backend
        # Join for live delivery first, buffering, then replay the store, then flush
        # the buffer past what was replayed: no gap and no duplicate at the seam.
        self.replaying = True
        self.open = True
        self.hub.join_relay(self)
        head = await backend.head(self.room)
        self.handshake.welcome(head, backend.store_id)
        self.send(self.handshake.data_to_send())
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
            self.server.metrics.replayed += len(page)
            after = page[-1].seq
            await self.drained()
        live, self._live, self._live_bytes = self._live, [], 0
        self.replaying = False
        self.send(b"".join([frame for seq, frame in live if seq > after]))

    def on_data(self, data: bytes, now: float) -> bool:
        # The hot path when nothing is buffered and `data` is whole PUBLISHes of this
        # member that pass at once (see on_frames), and perhaps the start of one more
        # frame: one walk over `data` itself, which checks each length prefix as the
        # splitter's walk would, and no copy of it (each sealed message is sliced out of
        # it). Anything else, a PUBLISH that fails, another frame, a bad prefix, the
        # rate limit, is left to the splitter and on_frames, from the start and exactly.
        splitter = self.splitter
        if splitter.buffer:
            return False
        room, member = self.room, self.member
        identities, overhead, max_frame = self._prefixes, self._overhead, splitter.max_frame
        allowed = self._bucket.whole(now)
        unpack_publish, unpack_length = PUBLISH_HEAD.unpack_from, FRAME_LENGTH.unpack_from
        end = len(data)
        last_head = end - PUBLISH_HEAD.size  # a PUBLISH head from here on is all in data
        publishes: list[Publish] = []
        add = publishes.append
        pos = 0
        while pos < end:
            if pos > last_head:  # too short for a PUBLISH that passes: a frame's start?
                if end - pos >= 4:
                    (size,) = unpack_length(data, pos)
                    if not 0 < size <= max_frame or end - pos - 4 >= size:
                        return False  # a bad prefix, or a whole (short) frame
                break
            size, kind, identity, counter, _, length = unpack_publish(data, pos)
            after = pos + 4 + size  # where this frame ends
            if after > end:  # a frame's start, its header all here
                if size > max_frame:
                    return False
                break
            if not (
                kind == _PUBLISH
                and HEADER_LEN < size <= max_frame  # the unpacked header is its own
                and identity in identities
                and length
                and length + overhead == size - 1
            ):
                return False
            add(_new_publish(Publish, (room, member, counter, data[pos + 5 : after])))
            pos = after
        if len(publishes) > allowed:  # the rate limit: on_frames refuses at the first over
            return False
        if pos < end:
            splitter.buffer += memoryview(data)[pos:]
        if publishes:
            self._bucket.spend(len(publishes))
            self.hub.submit_many(self, publishes)
        if self.inflight > self.limits.max_inflight and self.transport is not None:
            self.transport.pause_reading()
        return True

    def on_frames(self, stop: int, now: float) -> None:
        # The hot path: no object per frame but the Publish and its sealed bytes, copied
        # once out of a copy of the frames, and one unpack per frame: its N, its type and,
        # for a PUBLISH, its header. A header inside the frame that starts with one of
        # this connection's identities (version, suite, room, member, n) and whose length
        # matches passes every rule of check_publish_at; anything else goes through it
        # for the exact refusal. Publishes before a refusal are submitted, as if each had
        # been read alone.
        buf = self.splitter.buffer
        with memoryview(buf) as view:
            data = bytes(view[:stop])  # sliced below: one copy per message, not two
        room, member, n = self.room, self.member, self.n
        identities, overhead = self._prefixes, self._overhead
        bucket = self._bucket
        allowed = bucket.whole(now)
        unpack_publish, unpack_frame = PUBLISH_HEAD.unpack_from, FRAME_HEAD.unpack_from
        last_head = stop - PUBLISH_HEAD.size  # a PUBLISH head from here on is all in data
        publishes: list[Publish] = []
        add = publishes.append
        pos = 0
        try:
            while pos < stop:
                if pos <= last_head:
                    size, kind, identity, counter, _, length = unpack_publish(data, pos)
                else:  # too near the end for a whole header: not a PUBLISH that passes
                    size, kind = unpack_frame(data, pos)
                    identity, counter, length = b"", 0, 0
                end = pos + 4 + size
                if kind == _PUBLISH:
                    if len(publishes) == allowed:
                        self.fail(ErrorCode.RATE_LIMITED, "publish rate limit exceeded")
                        return
                    body = pos + 5
                    if not (
                        size > HEADER_LEN  # the unpacked header is this frame's own
                        and identity in identities
                        and length
                        and length + overhead == size - 1
                    ):
                        counter = check_publish_at(data, body, size - 1, room, member, n)
                    add(_new_publish(Publish, (room, member, counter, data[body:end])))
                elif not self.on_common(Frame(kind, data[pos + 5 : end])):
                    return
                pos = end
        except ProtocolError as err:
            self.fail(err.code, err.message)
            return
        finally:
            del buf[:pos]
            if publishes:
                bucket.spend(len(publishes))
                self.hub.submit_many(self, publishes)
        if self.inflight > self.limits.max_inflight and self.transport is not None:
            self.transport.pause_reading()

    def buffer_live(self, frames: Iterable[tuple[int, bytes]]) -> None:
        for seq, frame in frames:
            self._live.append((seq, frame))
            self._live_bytes += len(frame)
        if self._live_bytes > self.limits.send_buffer:
            self.fail(ErrorCode.RELAY_FULL, "send buffer full: resume later")

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


class PresenceConnection(Connection):
    port = Port.PRESENCE
    port_name = "presence"

    async def welcome(self, hello: Hello) -> None:
        backend = self.server.backend
        head = await backend.head(self.room)
        self.open = True
        online = self.hub.join_presence(self)
        self.handshake.welcome(head, backend.store_id)
        self.send(self.handshake.data_to_send() + encode_presence(sorted(online)))

    def left(self, was_open: bool) -> None:
        if self.member >= 0:
            self.hub.leave_presence(self)
