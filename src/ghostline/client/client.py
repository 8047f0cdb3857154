"""The asyncio client: connects a `Member` (the durable core) to a relay and presence server.

What it does, in the order that keeps it safe (protocol-v1 sections 5, 6 and 8):

- Sends only bytes already in the durable outbox: `send()` returns after `Member.seal`
  has committed, and every (re)connection sends `Member.pending()` again, byte for byte,
  until each is ACCEPTED (`Member.mark_accepted`). Nothing is ever re-sealed; the relay
  answers a repeated (sender, counter) with the seq it already stored.
- Resumes after `Member.relay_state()`, the relay cursor of the relay's store (protocol-v2
  section 8; `relaycursor`): a WELCOME naming another store restarts from seq 0, and
  (sender, counter) refuses what was already accepted, quietly (`AlreadyReceived`).
  Every DELIVER goes through `Member.receive`, which records the message (and the
  cursor) durably before the event is emitted. The cursor moves only over a contiguous
  run of seqs; a hole is asked for again, and reported (`MessagesMissing`) when it
  never fills.
- Checks every number a relay sends before it reaches SQLite or arithmetic; an
  unexpected error ends in a visible state (a reconnect saying why, or a stop with
  `failure` set), never in a silently dead task.
- Reconnects with exponential backoff and full jitter, failing over among the relay
  addresses it was given; pings to stay alive and to notice a silent relay.
- Follows the presence port when it can; messaging works without it.

Everything it observes comes out of `events`, an `asyncio.Queue` of the frozen
dataclasses below. What retrying cannot fix (a roster mismatch, a bad signature, a TLS
certificate that does not match, a proxy that wants a password, a broken state
database) stops the client and is kept in `failure`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..errors import (
    GhostlineError,
    InternalError,
    LocalError,
    PadExhaustedError,
    PayloadError,
    ProtocolError,
    RejectedMessage,
    RelayRefused,
    RelayUnreachable,
    RemoteError,
)
from ..pad.seal import Rule
from ..protocol import payload as payload_mod
from ..protocol.frames import (
    MAX_PING,
    NONCE_LEN,
    REASON_TLS_ONLY,
    ErrorCode,
    Frame,
    FrameDecoder,
    FrameType,
    Hello,
    Port,
    Welcome,
    decode_accepted,
    decode_deliver,
    decode_error,
    decode_member,
    decode_presence,
    encode_frame,
    join_statement,
)
from ..protocol.relaycursor import SEQ_LIMIT, GapWatch, Lost, Refetch, SeqGuard
from ..state.padlevel import PadLeft
from .transport import (
    RelayAddress,
    TlsExpected,
    TlsOptions,
    TransportError,
    looks_like_tls,
    open_stream,
    speaks_tls,
)

if TYPE_CHECKING:
    from ..state.member import Member, OutboxEntry, Received

__all__ = [
    "AlreadyReceived",
    "Client",
    "ConnectionChanged",
    "Event",
    "MessageAccepted",
    "MessageReceived",
    "MessageRejected",
    "MessagesMissing",
    "PadExhausted",
    "PadLow",
    "PresenceChanged",
    "RelayError",
    "RelayFailing",
    "RelayAddress",
    "StoreChanged",
    "TlsOptions",
    "refusal",
]

# Refusals that the same request would meet again: stop instead of retrying.
FATAL_CODES = frozenset(
    {
        ErrorCode.BAD_HANDSHAKE,
        ErrorCode.ROSTER_MISMATCH,
        ErrorCode.BAD_SIGNATURE,
        ErrorCode.BAD_PUBLISH,
    }
)
_HINTS = {
    ErrorCode.ROSTER_MISMATCH: (
        "the relay knows this room with another member list: is this kit from the same kit set?"
    ),
    ErrorCode.BAD_SIGNATURE: (
        "the relay did not accept this kit's signature: the kit may be damaged or not from "
        "this kit set."
    ),
    ErrorCode.BAD_HANDSHAKE: (
        "the relay did not accept the handshake: is it a GhostLine relay speaking protocol v1?"
    ),
    ErrorCode.BAD_PUBLISH: (
        "the relay refused a message from the outbox: is the kit from the same kit set?"
    ),
    ErrorCode.RELAY_FULL: "the relay is at its limit; try again later or another relay.",
    ErrorCode.RATE_LIMITED: "too many messages too fast; GhostLine will retry.",
}
# resume_after for a send-only client: past any seq (and within SQLite's signed 64 bits).
_NOTHING_STORED = SEQ_LIMIT - 1
# Refusals in a row (with no progress between) after which RelayFailing is emitted.
REPEATED_REFUSALS = 3


def refusal(code: int, reason: str) -> RelayRefused:
    """The RelayRefused error for an ERROR frame, with the hint a person needs."""
    try:
        hint = _HINTS.get(ErrorCode(code))
    except ValueError:
        hint = None
    return RelayRefused(code, reason, hint=hint)


# --- events ----------------------------------------------------------------------


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
    """At most padlevel.LOW_FRACTION of this member's pad (bytes or keys) is left."""

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
    """A delivered message repeats one already accepted (same sender and counter): the
    relay sent it again (its store changed, or it resent after a reconnect). Refused,
    as section 6 says, but nothing to worry about: it was shown when it first came."""

    seq: int


@dataclass(frozen=True, slots=True)
class StoreChanged:
    """The relay named another store than the one the cursor was for (a new or
    replaced store, or another relay that shares nothing): the client catches up from
    its first seq, and refuses quietly what it already has."""

    relay: str
    old_cursor: int  # where the cursor stood in the old store


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


class _Resume(Exception):
    """End this connection and open another to the same relay (not a failover)."""


# --- one connection ----------------------------------------------------------------


class _Connection:
    """Frames over one stream. Only this class and `transport` touch the socket."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        addr: RelayAddress,
        *,
        tls: bool,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.addr = addr
        self.tls = tls
        self.decoder = FrameDecoder()
        self.frames: deque[Frame] = deque()
        self.outq: deque[OutboxEntry] = deque()
        self.wake = asyncio.Event()
        self.last_rx = 0.0  # loop time of the last frame received
        self.got_bytes = False
        # Set at WELCOME: the store the seqs belong to, the guard against seqs the
        # relay cannot have assigned, and the watch over holes in the seqs.
        self.store_id: bytes | None = None
        self.guard = SeqGuard(0)
        self.gaps: GapWatch | None = None
        # The highest counter queued from `Member.pending()` when this connection began:
        # a send_many that committed before then must not queue its entries twice.
        self.pending_upto = -1

    async def read(self) -> Frame:
        while not self.frames:
            data = await self.reader.read(1 << 16)
            if not data:
                if not self.got_bytes:
                    raise _ClosedAtOnce(f"{self.addr} closed the connection before answering")
                raise ConnectionError("the relay closed the connection")
            if not self.got_bytes and not self.tls and looks_like_tls(data):
                raise TlsExpected(f"{self.addr} answered with TLS")
            self.got_bytes = True
            self.frames.extend(self.decoder.feed(data))
        return self.frames.popleft()

    def write(self, frame: bytes) -> None:
        self.writer.write(frame)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)


class _ClosedAtOnce(ConnectionError):
    """The relay closed the connection before sending a byte (a TLS relay does that to
    a plain client)."""


@dataclass
class _Backoff:
    base: float
    cap: float
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        """Exponential backoff with jitter: half fixed, half random, so retries spread out."""
        ceiling = min(self.cap, self.base * (2**self.attempt))
        self.attempt += 1
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.attempt = 0


# --- the client --------------------------------------------------------------------


class Client:
    """A member's live link to the relay. See the module docstring for its guarantees.

    `presence_port` overrides every relay's presence port (default: its port + 1);
    `presence=False` does not connect to the presence port at all. `receive=False` makes
    a send-only client (`ghostline send`): it asks the relay for no stored messages and
    ignores live ones, so it never consumes what another process of the same member
    (a running `listen`) is there to show.
    """

    def __init__(
        self,
        member: Member,
        relays: Sequence[RelayAddress],
        *,
        presence_port: int | None = None,
        tls: TlsOptions | None = None,
        proxy: str | None = None,
        ping_interval: float = 20.0,
        presence: bool = True,
        receive: bool = True,
        receive_limit: int | None = None,
        backoff_base: float = 0.25,
        backoff_cap: float = 5.0,
        connect_timeout: float = 10.0,
        gap_wait: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not relays:
            raise ValueError("a Client needs at least one relay address")
        self.member = member
        self.relays = list(relays)
        self.presence_port = presence_port
        self.tls = tls
        self.proxy = proxy
        self.ping_interval = ping_interval
        self.follow_presence = presence
        self.receive = receive
        # After this many opened messages, later DELIVERs are left unprocessed (cursor
        # unmoved) so that `listen --count N` never consumes a message it will not show.
        self.receive_limit = receive_limit
        self._received_count = 0
        self.connect_timeout = connect_timeout
        # How long a hole in the relay seqs may stay open before it is asked for again
        # on a fresh connection, and then before it is reported as lost.
        self.gap_wait = gap_wait
        self.clock = clock
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.failure: GhostlineError | None = None
        self.last_error: GhostlineError | None = None
        self.online: frozenset[int] = frozenset()
        self.state: ConnectionState = "stopped"
        self._backoff = _Backoff(backoff_base, backoff_cap)
        self._presence_backoff = _Backoff(backoff_base, max(backoff_cap, 10.0))
        self._signer = Ed25519PrivateKey.from_private_bytes(member.header.signing_key)
        self._relay_index = 0
        self._conn: _Connection | None = None
        self._connected = asyncio.Event()
        self._ever_connected = False
        self._tasks: list[asyncio.Task[None]] = []
        self._waiters: dict[int, list[asyncio.Future[int]]] = {}
        self._accepted: dict[int, int] = {}
        self._pad_low_reported = False
        self._stopping = False
        self._refusals: list[RelayRefused] = []  # in a row, with no progress between

    # -- public API ----------------------------------------------------------------

    @property
    def relay(self) -> RelayAddress:
        """The relay address in use, or the next one to try."""
        return self.relays[self._relay_index % len(self.relays)]

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def ever_connected(self) -> bool:
        return self._ever_connected

    async def start(self) -> None:
        """Start connecting in the background (returns at once; watch `events`)."""
        if self._tasks:
            return
        self._stopping = False
        self._tasks.append(
            asyncio.create_task(self._guarded(self._relay_loop), name="ghostline-relay")
        )
        if self.follow_presence:
            self._tasks.append(
                asyncio.create_task(self._guarded(self._presence_loop), name="ghostline-presence")
            )

    async def stop(self) -> None:
        """Close the connections. The member stays open (its owner closes it)."""
        self._stopping = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.state != "stopped":
            self._set_state("stopped", str(self.relay), None, "stopped")

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait for an authenticated relay connection; raises the failure if one stops us."""
        async with asyncio.timeout(timeout):
            while not self._connected.is_set():
                if self.failure is not None:
                    raise self.failure
                waiter = asyncio.ensure_future(self._connected.wait())
                try:
                    await asyncio.wait({waiter}, timeout=0.2)
                finally:
                    waiter.cancel()

    async def send(self, payload: bytes) -> OutboxEntry:
        """Seal `payload` durably and queue it. Returns after the seal, before ACCEPTED.

        Raises PadExhaustedError (nothing consumed) when the pad cannot hold it.
        """
        try:
            entry = self.member.seal(payload)
        except PadExhaustedError:
            self._emit(PadExhausted())
            raise
        self._check_pad(entry)
        if self._conn is not None:
            self._conn.outq.append(entry)
            self._conn.wake.set()
        return entry

    async def send_many(self, payloads: Sequence[bytes]) -> list[OutboxEntry]:
        """Seal every payload in ONE durable transaction (`Member.seal_many`), then queue
        them in order. Returns after the commit, before ACCEPTED.

        One commit (one fsync) for the whole group: a file's chunks go through here in
        groups. The sealing runs in a worker thread so the event loop (and a chat
        screen) keeps moving. All or nothing: PadExhaustedError seals none of them.
        """
        if not payloads:
            return []
        try:
            entries = await asyncio.to_thread(self.member.seal_many, list(payloads))
        except PadExhaustedError:
            self._emit(PadExhausted())
            raise
        self._check_pad(entries[-1])
        conn = self._conn
        if conn is not None:
            # A connection made while we sealed may already hold these from pending().
            conn.outq.extend(e for e in entries if e.counter > conn.pending_upto)
            conn.wake.set()
        return entries

    async def send_text(self, text: str) -> OutboxEntry:
        return await self.send(payload_mod.encode_text(text, int(self.clock())))

    async def wait_accepted(self, counter: int, timeout: float | None = None) -> int:
        """Wait until the relay has ACCEPTED our message `counter`; returns its seq."""
        if counter in self._accepted:
            return self._accepted[counter]
        if self.failure is not None:
            raise self.failure
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        self._waiters.setdefault(counter, []).append(fut)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        finally:
            waiters = self._waiters.get(counter, [])
            if fut in waiters:
                waiters.remove(fut)
                if not waiters:
                    del self._waiters[counter]

    def pending_counters(self) -> list[int]:
        return [e.counter for e in self.member.pending()]

    # -- internals: events ---------------------------------------------------------

    def _emit(self, event: Event) -> None:
        self.events.put_nowait(event)

    def _set_state(
        self, state: ConnectionState, relay: str, retry_in: float | None, detail: str
    ) -> None:
        self.state = state
        self._emit(ConnectionChanged(state, relay, retry_in, detail))

    def _check_pad(self, entry: OutboxEntry) -> None:
        header = self.member.header
        keys_left = header.auth_keys - (entry.counter + 1)
        bytes_left = header.slice_len - (entry.offset + entry.length)
        pad = PadLeft(max(0, bytes_left), header.slice_len, max(0, keys_left), header.auth_keys)
        if pad.level == "exhausted":
            self._emit(PadExhausted())
        elif pad.level != "ok" and not self._pad_low_reported:
            self._pad_low_reported = True
            self._emit(PadLow(pad.fraction_left))

    async def _guarded(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Run a background loop; whatever escapes it stops the client visibly."""
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the loops catch what they expect: this is a bug
            err = exc if isinstance(exc, GhostlineError) else _internal(exc)
            self.last_error = err
            self._fail(err)
            self._set_state("stopped", str(self.relay), None, str(err))

    def _fail(self, err: GhostlineError) -> None:
        self.failure = err
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(err)

    # -- internals: relay port -----------------------------------------------------

    async def _relay_loop(self) -> None:
        first = True
        while not self._stopping:
            addr = self.relay
            self._set_state("connecting" if first else "reconnecting", str(addr), None, "")
            first = False
            failover = True
            try:
                await self._relay_session(addr)
                detail = "the relay closed the connection"
            except asyncio.CancelledError:
                raise
            except _Resume as err:
                detail, failover = str(err), False
            except RelayRefused as err:
                if err.reason == REASON_TLS_ONLY and self.tls is None:  # it said so in plain
                    self._stop_on(TlsExpected(f"{addr} speaks TLS"), addr)
                    return
                self.last_error = err
                self._emit(RelayError(err.code, err.reason))
                if err.code in FATAL_CODES:
                    self._stop_on(err, addr)
                    return
                self._count_refusal(err)
                detail = str(err)
            except _ClosedAtOnce as err:
                if self.tls is None and await speaks_tls(
                    addr.host, addr.port, proxy=self.proxy, timeout=self.connect_timeout
                ):
                    self._stop_on(TlsExpected(f"{addr} speaks TLS"), addr)
                    return
                detail = str(err)
                self.last_error = RelayUnreachable(f"{addr}: {detail}")
            except TransportError as err:
                self.last_error = err
                if err.fatal:
                    self._stop_on(err, addr)
                    return
                detail = str(err)
            except (ProtocolError, ConnectionError, TimeoutError, OSError) as err:
                detail = str(err) or type(err).__name__
                if isinstance(err, GhostlineError):
                    self.last_error = err
                else:
                    self.last_error = RelayUnreachable(f"{addr}: {detail}")
            except LocalError as err:  # the state database or the kit: retrying cannot help
                self._stop_on(err, addr)
                return
            except Exception as exc:  # noqa: BLE001 - a reconnect that says why beats a dead task
                self.last_error = _internal(exc)
                detail = self.last_error.message
            if self._stopping:
                return
            if failover and len(self.relays) > 1:
                self._relay_index += 1  # fail over to the next relay
            delay = self._backoff.next_delay()
            self._set_state("reconnecting", str(self.relay), delay, detail)
            await asyncio.sleep(delay)

    def _stop_on(self, err: GhostlineError, addr: RelayAddress) -> None:
        self.last_error = err
        self._fail(err)
        self._set_state("stopped", str(addr), None, str(err))

    def _count_refusal(self, err: RelayRefused) -> None:
        if self._refusals and self._refusals[-1].code != err.code:
            self._refusals = []
        self._refusals.append(err)
        if len(self._refusals) == REPEATED_REFUSALS:
            self._emit(RelayFailing(err.code, err.reason, REPEATED_REFUSALS))

    def _progress(self) -> None:
        """The relay did its job once: a run of refusals is over."""
        self._refusals = []

    async def _relay_session(self, addr: RelayAddress) -> None:
        reader, writer = await open_stream(
            addr.host, addr.port, tls=self.tls, proxy=self.proxy, timeout=self.connect_timeout
        )
        conn = _Connection(reader, writer, addr, tls=self.tls is not None)
        try:
            asked = self.member.relay_state().upto if self.receive else _NOTHING_STORED
            welcome = await self._handshake(conn, Port.RELAY, asked)
            if self.receive:
                self._enter_store(addr, welcome, asked)
                conn.store_id = welcome.store_id
                conn.guard = SeqGuard(max(welcome.head, asked))
                conn.gaps = GapWatch(self.gap_wait, welcome.head, self.member.relay_state())
            else:
                conn.guard = SeqGuard(welcome.head)
            # From here on, everything sealed goes to conn.outq via send(); what was sealed
            # before is in pending(). Set both in one step so nothing is missed.
            pending = self.member.pending()
            conn.outq.extend(pending)
            conn.pending_upto = pending[-1].counter if pending else -1
            conn.wake.set()
            self._conn = conn
            self._connected.set()
            self._ever_connected = True
            self._backoff.reset()
            self.last_error = None
            waiting = len(conn.outq)
            detail = (
                f"resuming after seq {asked} (relay head {welcome.head})"
                if self.receive
                else f"relay head {welcome.head}"
            )
            if waiting:
                detail += f", sending {waiting} from the outbox"
            self._set_state("connected", str(addr), None, detail)
            loops = [self._read_loop(conn), self._write_loop(conn), self._ping_loop(conn)]
            if self.receive:
                loops.append(self._gap_loop(conn))
            await _first_failure(*loops)
        finally:
            if self._conn is conn:
                self._conn = None
                self._connected.clear()
            await conn.close()

    def _enter_store(self, addr: RelayAddress, welcome: Welcome, asked: int) -> None:
        """Take the cursor of the store WELCOME names (protocol-v2 section 8). A store
        other than the cursor's restarts from 0: if we asked for more, the relay skips
        seqs 1..asked, so connect again."""
        before = self.member.enter_relay_store(welcome.store_id)
        if before.store_id not in (None, welcome.store_id):
            self._emit(StoreChanged(str(addr), before.upto))
            if asked > 0:
                raise _Resume("the relay's store changed: catching up from its first message")

    async def _handshake(self, conn: _Connection, port: Port, resume_after: int) -> Welcome:
        header = self.member.header
        hello = Hello(
            header.pad_id,
            header.self_index,
            tuple(m.verify_key for m in header.members),
            resume_after,
        )
        async with asyncio.timeout(self.connect_timeout):
            conn.write(encode_frame(FrameType.HELLO, hello.encode()))
            frame = await _expect(conn, FrameType.CHALLENGE)
            if len(frame.body) != NONCE_LEN:
                raise ProtocolError(ErrorCode.BAD_HANDSHAKE, "CHALLENGE must carry 32 bytes")
            statement = join_statement(port, header.pad_id, header.self_index, frame.body)
            conn.write(encode_frame(FrameType.PROVE, self._signer.sign(statement)))
            frame = await _expect(conn, FrameType.WELCOME)
            welcome = Welcome.decode(frame.body)
            if welcome.head >= SEQ_LIMIT:
                raise ProtocolError(
                    ErrorCode.BAD_HANDSHAKE, f"WELCOME names head {welcome.head}, which no room has"
                )
            return welcome

    async def _read_loop(self, conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        while True:
            frame = await conn.read()
            conn.last_rx = loop.time()
            kind = frame.type
            if kind == FrameType.DELIVER:
                seq, sealed = decode_deliver(frame.body)
                conn.guard.check(seq)
                self._progress()
                if self.receive:
                    self._on_deliver(conn, seq, sealed)
            elif kind == FrameType.ACCEPTED:
                seq, counter = decode_accepted(frame.body)
                conn.guard.check(seq)
                if counter >= self.member.header.auth_keys:
                    raise ProtocolError(
                        ErrorCode.MALFORMED,
                        f"the relay accepted message {counter}, which this kit cannot have sent",
                    )
                self._progress()
                self._on_accepted(conn, counter, seq)
            elif kind == FrameType.PONG:
                self._progress()
            elif kind == FrameType.ERROR:
                raise refusal(*decode_error(frame.body))
            else:
                raise ProtocolError(ErrorCode.MALFORMED, f"unexpected frame type 0x{kind:02x}")

    def _on_deliver(self, conn: _Connection, seq: int, sealed: bytes) -> None:
        member = self.member
        if self.receive_limit is not None and self._received_count >= self.receive_limit:
            return
        # receive() commits the message and the cursor before we report anything; a
        # rejected frame writes nothing. Seqs already settled are opened all the same:
        # a reordered frame must not be dropped as "already processed".
        try:
            received = member.receive(seq, sealed, store_id=conn.store_id)
        except RejectedMessage as err:
            if err.rule == Rule.REPLAYED_COUNTER:
                self._emit(AlreadyReceived(seq))
            else:
                self._emit(MessageRejected(seq, err.rule, err.message))
            return
        finally:
            self._report_lost(conn, member.take_lost())
        if received is None:  # our own message, echoed on resume
            return
        try:
            obj: payload_mod.Payload | None = payload_mod.decode(received.payload)
        except PayloadError:
            obj = None
        self._received_count += 1
        self._emit(MessageReceived(received, obj))

    def _on_accepted(self, conn: _Connection, counter: int, seq: int) -> None:
        if counter in self._accepted:
            return
        self.member.mark_accepted(counter, seq, store_id=conn.store_id, settle=self.receive)
        self._report_lost(conn, self.member.take_lost())
        self._accepted[counter] = seq
        for fut in self._waiters.pop(counter, []):
            if not fut.done():
                fut.set_result(seq)
        self._emit(MessageAccepted(counter, seq))

    def _report_lost(self, conn: _Connection, lost: list[tuple[int, int]]) -> None:
        for first, last in lost:
            self._emit(MessagesMissing(first, last, str(conn.addr)))

    async def _gap_loop(self, conn: _Connection) -> None:
        """Ask again for seqs that stay missing, then report and step over them."""
        assert conn.gaps is not None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(0.01, self.gap_wait / 4))
            if self.receive_limit is not None and self._received_count >= self.receive_limit:
                continue  # what is left unprocessed on purpose is no hole
            verdict = conn.gaps.check(self.member.relay_state(), loop.time())
            if isinstance(verdict, Refetch):
                raise _Resume(
                    f"relay seqs {verdict.first}-{verdict.last} are missing: asking again"
                )
            if isinstance(verdict, Lost):
                self.member.advance_cursor(verdict.last, store_id=conn.store_id)
                self._report_lost(conn, [(verdict.first, verdict.last)])

    async def _write_loop(self, conn: _Connection) -> None:
        while True:
            while conn.outq:
                entry = conn.outq.popleft()
                if entry.counter not in self._accepted:
                    conn.write(encode_frame(FrameType.PUBLISH, entry.sealed))
            await conn.writer.drain()
            await conn.wake.wait()
            conn.wake.clear()

    async def _ping_loop(self, conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        conn.last_rx = loop.time()
        while True:
            await asyncio.sleep(self.ping_interval)
            silent = loop.time() - conn.last_rx
            if silent > 2.5 * self.ping_interval:
                raise ConnectionError(f"the relay has been silent for {silent:.0f} s")
            conn.write(encode_frame(FrameType.PING, os.urandom(8)[:MAX_PING]))

    # -- internals: presence port --------------------------------------------------

    async def _presence_loop(self) -> None:
        while not self._stopping and self.failure is None:
            addr = self.relay
            port = self.presence_port if self.presence_port is not None else addr.presence
            where = f"{addr.host}:{port}"
            try:
                await self._presence_session(addr, port)
                detail = "presence: the server closed the connection"
            except asyncio.CancelledError:
                raise
            except (RemoteError, ConnectionError, TimeoutError, OSError) as err:
                detail = f"presence unavailable: {err}"
            except Exception as exc:  # noqa: BLE001 - retried, and said, rather than a dead task
                detail = f"presence unavailable: {_internal(exc)}"
            if self._stopping or self.failure is not None:
                self._set_online(frozenset())
                return
            delay = self._presence_backoff.next_delay()
            # Say that presence is down before emptying `online`, so a listener can tell
            # "we no longer know who is online" from "everyone went offline".
            self._emit(ConnectionChanged(self.state, where, delay, detail, channel="presence"))
            self._set_online(frozenset())
            await asyncio.sleep(delay)

    async def _presence_session(self, addr: RelayAddress, port: int) -> None:
        reader, writer = await open_stream(
            addr.host, port, tls=self.tls, proxy=self.proxy, timeout=self.connect_timeout
        )
        conn = _Connection(reader, writer, addr, tls=self.tls is not None)
        try:
            await self._handshake(conn, Port.PRESENCE, 0)
            self._presence_backoff.reset()
            self._emit(
                ConnectionChanged(
                    self.state, f"{addr.host}:{port}", None, "presence connected", "presence"
                )
            )
            while True:
                frame = await conn.read()
                if frame.type == FrameType.PRESENCE:
                    self._set_online(self._members(decode_presence(frame.body)))
                elif frame.type == FrameType.ONLINE:
                    self._set_online(self.online | self._members((decode_member(frame.body),)))
                elif frame.type == FrameType.OFFLINE:
                    self._set_online(self.online - self._members((decode_member(frame.body),)))
                elif frame.type == FrameType.ERROR:
                    raise refusal(*decode_error(frame.body))
                elif frame.type != FrameType.PONG:
                    raise ProtocolError(
                        ErrorCode.MALFORMED, f"unexpected presence frame 0x{frame.type:02x}"
                    )
        finally:
            await conn.close()

    def _members(self, indexes: Sequence[int]) -> frozenset[int]:
        """Member indexes from the presence server, each checked against the roster."""
        n = self.member.header.n
        for i in indexes:
            if i >= n:
                raise ProtocolError(
                    ErrorCode.MALFORMED, f"presence names member {i} in a group of {n}"
                )
        return frozenset(indexes)

    def _set_online(self, online: frozenset[int]) -> None:
        if online == self.online:
            return
        joined, left = online - self.online, self.online - online
        self.online = online
        self._emit(PresenceChanged(online, joined, left))


def _internal(exc: BaseException) -> InternalError:
    """An unexpected exception, as an error a person can read and report."""
    return InternalError(f"unexpected error: {type(exc).__name__}: {exc}")


async def _expect(conn: _Connection, kind: FrameType) -> Frame:
    frame = await conn.read()
    if frame.type == FrameType.ERROR:
        raise refusal(*decode_error(frame.body))
    if frame.type != kind:
        raise ProtocolError(
            ErrorCode.BAD_HANDSHAKE, f"expected {kind.name}, got frame type 0x{frame.type:02x}"
        )
    return frame


async def _first_failure(*coros: Awaitable[None]) -> None:
    """Run coroutines together until one ends; cancel the rest; re-raise its error."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
