"""The asyncio client: connects a `Member` (the durable core) to a relay and presence server.

The parts, each with its own module:

- `session.py`: one connection (the stream, its frames, the join handshake);
- `outbox.py`: what is sealed goes out on every connection until it is ACCEPTED;
- `inbox.py`: what is delivered is opened and recorded before it is reported; the cursor;
- `relayport.py`: the relay port once joined (its frames, pings, holes);
- `presence.py`: who is online;
- `durable.py`: the one worker thread every commit of the member runs in, in order, so
  that the event loop never waits on a disk;
- `giving.py`: automatic giving of pad (format 2), when asked for (`auto_give`);
- `events.py`: what comes out of `Client.events`.

This module holds them together: the client's state (`ClientState`, moved only along
`MOVES`), reconnecting with exponential backoff and full jitter, failing over among the
relay addresses it was given, and following the presence port when it can (messaging
works without it). The backoff starts again from its base only after a connection did
something useful (a message opened or accepted, or it stayed up `stable_after` seconds),
so a relay that drops every connection at once is not hammered. It checks every number
a relay sends before it reaches SQLite or arithmetic; an unexpected error ends in a
visible state (a reconnect saying why, or a stop with `failure` set), never in a
silently dead task. What retrying cannot fix (a TLS certificate that does not match, a
proxy that wants a password, a broken state database; a roster mismatch, a bad
signature, a refused handshake or publish once the same refusal came on FATAL_AFTER
fresh connections in a row: one ERROR frame injected on a path without TLS costs a
reconnect, not the session) stops the client (`FAILED`) and is kept in `failure`. The
apps turn errors into what a person reads (wording/hints.py).

It stays one file, a little over 400 lines: what is left is the one state machine (its
moves, the reconnect loop and the refusal count that drive them) and the public calls
that wait on it; split, one transition would have to be followed across two files.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..errors import (
    GhostlineError,
    InternalError,
    LocalError,
    ProtocolError,
    RelayRefused,
    RelayUnreachable,
)
from ..protocol import payload as payload_mod
from ..protocol.frames import (
    REASON_HANDSHAKE_TIMEOUT,
    REASON_TLS_ONLY,
    ErrorCode,
    Hello,
    Port,
    Welcome,
)
from . import relayport
from .durable import Durable
from .events import ConnectionChanged, Event, MessageReceived, RelayError, RelayFailing
from .giving import Giver
from .inbox import Inbox, Resume
from .outbox import Outbox, OutQueue
from .presence import Presence
from .session import (
    Backoff,
    ClosedAtOnce,
    Session,
    unexpected,
)
from .state import MOVES, ClientState
from .transport import RelayAddress, TlsExpected, TlsOptions, TransportError, speaks_tls

if TYPE_CHECKING:
    from ..state.member import Gift, Member, OutboxEntry

# Refusals that the same request would meet again: stop instead of retrying, once the
# same one came FATAL_AFTER times in a row on fresh connections (with no progress
# between). Not on its first: without TLS anyone on the path can inject an ERROR frame.
FATAL_CODES = frozenset(
    {
        ErrorCode.BAD_HANDSHAKE,
        ErrorCode.ROSTER_MISMATCH,
        ErrorCode.BAD_SIGNATURE,
        ErrorCode.BAD_PUBLISH,
    }
)
FATAL_AFTER = 3
# Refusals in a row (with no progress between) after which RelayFailing is emitted.
REPEATED_REFUSALS = 3
# A connection that stayed up this long was useful, whatever it carried.
STABLE_AFTER = 10.0


class Client:
    """A member's live link to the relay. See the module docstring for its guarantees.

    `presence_port` overrides every relay's presence port (default: its port + 1);
    `presence=False` does not connect to the presence port at all. `receive=False` makes
    a send-only client (`ghostline send`): it asks the relay for no stored messages and
    ignores live ones, so it never consumes what another process of the same member
    (a running `listen`) is there to show. See inbox.py for `receive_limit` and
    `gap_wait`.
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
        stable_after: float = STABLE_AFTER,
        clock: Callable[[], float] = time.time,
        auto_give: bool = False,
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
        self.connect_timeout = connect_timeout
        self.stable_after = stable_after
        self.clock = clock
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.state = ClientState.IDLE
        self.failure: GhostlineError | None = None  # why it FAILED
        self.last_error: GhostlineError | None = None
        self.connections = 0  # relay-port connections that reached WELCOME
        self.durable = Durable()
        self.outbox = Outbox(member, self.durable, self._emit)
        self.inbox = Inbox(
            member, self.durable, self._emit,
            receive=receive, receive_limit=receive_limit, gap_wait=gap_wait,
        )  # fmt: skip
        self.presence = Presence(
            member.header.n, self._emit, Backoff(backoff_base, max(backoff_cap, 10.0))
        )
        self.giver = Giver(member, self.durable, self.outbox, self._emit) if auto_give else None
        self._backoff = Backoff(backoff_base, backoff_cap)
        self._signer = Ed25519PrivateKey.from_private_bytes(member.header.signing_key)
        self._relay_index = 0
        self._changed: asyncio.Future[None] | None = None  # resolved at the next move
        self._tasks: list[asyncio.Task[None]] = []
        self._refusals: list[RelayRefused] = []  # in a row, with no progress between

    # -- public API ----------------------------------------------------------------

    @property
    def relay(self) -> RelayAddress:
        """The relay address in use, or the next one to try."""
        return self.relays[self._relay_index % len(self.relays)]

    @property
    def connected(self) -> bool:
        return self.state is ClientState.CONNECTED

    @property
    def ever_connected(self) -> bool:
        return self.connections > 0

    @property
    def online(self) -> frozenset[int]:
        return self.presence.online

    async def start(self) -> None:
        """Start connecting in the background (returns at once; watch `events`)."""
        if self._tasks:
            return
        self.failure = None
        self._move(ClientState.CONNECTING, str(self.relay), None, "")
        self._tasks.append(
            asyncio.create_task(self._guarded(self._relay_loop), name="ghostline-relay")
        )
        if self.follow_presence:
            self._tasks.append(
                asyncio.create_task(self._guarded(self._follow_presence), name="ghostline-presence")
            )
        if self.giver is not None:
            self._tasks.append(
                asyncio.create_task(self._guarded(self.giver.run), name="ghostline-giving")
            )

    async def stop(self) -> None:
        """Close the connections and let the member's queued work finish. The member
        stays open (its owner closes it)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.durable.run(_nothing)  # every commit asked for is done
        if self.state not in (ClientState.IDLE, ClientState.STOPPED, ClientState.FAILED):
            self._move(ClientState.STOPPED, str(self.relay), None, "stopped")

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait for an authenticated relay connection; raises the failure if one stops us."""
        async with asyncio.timeout(timeout):
            while self.state is not ClientState.CONNECTED:
                if self.state is ClientState.FAILED and self.failure is not None:
                    raise self.failure
                await self._next_move()

    async def send(self, payload: bytes) -> OutboxEntry:
        """Seal `payload` durably and queue it. Returns after the seal, before ACCEPTED.

        Raises PadExhaustedError (nothing consumed) when the pad cannot hold it.
        """
        (entry,) = await self.outbox.seal([payload])
        return entry

    async def send_many(self, payloads: Sequence[bytes]) -> list[OutboxEntry]:
        """Seal every payload in ONE durable transaction (`Member.seal_many`), then queue
        them in order. Returns after the commit, before ACCEPTED: one commit (one fsync)
        for the whole group, as a file's chunks go. All or nothing: PadExhaustedError
        seals none of them."""
        if not payloads:
            return []
        return await self.outbox.seal(list(payloads))

    async def give(self, to: int, size: int) -> Gift:
        """Give `size` bytes of unused pad to member `to` (format 2, `Member.give`): the
        range leaves this member's pad durably and the grant is sealed and queued like
        a message. Returns after the seal, before ACCEPTED."""
        return await self.durable.run(
            self.member.give, to, size, then=lambda gift: self.outbox.queue([gift.entry])
        )

    async def send_text(self, text: str) -> OutboxEntry:
        return await self.send(payload_mod.encode_text(text, int(self.clock())))

    async def wait_accepted(self, counter: int, timeout: float | None = None) -> int:
        """Wait until the relay has ACCEPTED our message `counter`; returns its seq."""
        if counter not in self.outbox.accepted and self.failure is not None:
            raise self.failure
        return await self.outbox.wait_accepted(counter, timeout)

    async def pending_counters(self) -> list[int]:
        """The counters of our messages the relay has not ACCEPTED yet."""
        return await self.durable.run(self.member.pending_counters)

    async def accepted_seq(self, counter: int) -> int | None:
        """The seq the relay gave our message `counter`, if it was ACCEPTED."""
        return await self.durable.run(self.member.accepted_seq, counter)

    # -- the state ---------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        self.events.put_nowait(event)
        if self.giver is not None and isinstance(event, MessageReceived):
            self.giver.poke()  # the sender's figures changed, and perhaps extents

    def _move(self, state: ClientState, relay: str, retry_in: float | None, detail: str) -> None:
        if state not in MOVES[self.state]:
            raise InternalError(f"the client cannot go from {self.state.value} to {state.value}")
        self.state = state
        self._emit(ConnectionChanged(state.shown, relay, retry_in, detail))
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)
        self._changed = None

    async def _next_move(self) -> None:
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._changed)

    def _fail(self, err: GhostlineError, relay: str) -> None:
        """Stop for good on `err`: whoever waits is told."""
        self.last_error = self.failure = err
        self.outbox.fail(err)
        self._move(ClientState.FAILED, relay, None, str(err))

    async def _follow_presence(self) -> None:
        await self.presence.run(self)

    async def _guarded(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Run a background loop; whatever escapes it stops the client visibly."""
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the loops catch what they expect: this is a bug
            err = exc if isinstance(exc, GhostlineError) else unexpected(exc)
            if self.state is not ClientState.FAILED:
                self._fail(err, str(self.relay))

    # -- the relay port ------------------------------------------------------------

    async def _relay_loop(self) -> None:
        while True:
            addr = self.relay
            failover = True
            try:
                await self._relay_session(addr)
                detail = "the relay closed the connection"
            except asyncio.CancelledError:
                raise
            except Resume as err:
                detail, failover = str(err), False
            except RelayRefused as err:
                if err.reason == REASON_TLS_ONLY and self.tls is None:  # it said so in plain
                    self._fail(TlsExpected(f"{addr} speaks TLS"), str(addr))
                    return
                self.last_error = err
                self._emit(RelayError(err.code, err.reason))
                if self._count_refusal(err):
                    self._fail(err, str(addr))
                    return
                detail = str(err)
            except ClosedAtOnce as err:
                if self.tls is None and await speaks_tls(
                    addr.host, addr.port, proxy=self.proxy, timeout=self.connect_timeout
                ):
                    self._fail(TlsExpected(f"{addr} speaks TLS"), str(addr))
                    return
                detail = str(err)
                self.last_error = RelayUnreachable(f"{addr}: {detail}")
            except TransportError as err:
                self.last_error = err
                if err.fatal:
                    self._fail(err, str(addr))
                    return
                detail = str(err)
            except (ProtocolError, ConnectionError, TimeoutError, OSError) as err:
                detail = str(err) or type(err).__name__
                if isinstance(err, GhostlineError):
                    self.last_error = err
                else:
                    self.last_error = RelayUnreachable(f"{addr}: {detail}")
            except LocalError as err:  # the state database or the kit: retrying cannot help
                self._fail(err, str(addr))
                return
            except Exception as exc:  # noqa: BLE001 - a reconnect that says why beats a dead task
                self.last_error = unexpected(exc)
                detail = self.last_error.message
            if failover and len(self.relays) > 1:
                self._relay_index += 1  # fail over to the next relay
            delay = self._backoff.next_delay()
            self._move(ClientState.RECONNECTING, str(self.relay), delay, detail)
            await asyncio.sleep(delay)
            self._move(ClientState.RECONNECTING, str(self.relay), None, "")

    def _count_refusal(self, err: RelayRefused) -> bool:
        """Count a refusal in a run of the same code; True when it must stop the client."""
        if self._refusals and self._refusals[-1].code != err.code:
            self._refusals = []
        self._refusals.append(err)
        times = len(self._refusals)
        fatal = err.code in FATAL_CODES and err.reason != REASON_HANDSHAKE_TIMEOUT
        if fatal:
            return times >= FATAL_AFTER
        if times == REPEATED_REFUSALS:
            self._emit(RelayFailing(err.code, err.reason, REPEATED_REFUSALS))
        return False

    def _progress(self) -> None:
        """The relay did its job once: a run of refusals is over."""
        self._refusals = []

    async def _relay_session(self, addr: RelayAddress) -> None:
        asked = await self.inbox.resumption()
        session, welcome = await self.join(addr, Port.RELAY, asked.after)
        queue = OutQueue()
        joined_at = asyncio.get_running_loop().time()
        opened, accepted = self.inbox.opened, len(self.outbox.accepted)
        try:
            rx = await self.inbox.enter(str(addr), welcome, asked)
            waiting = await self.outbox.begin(queue)
            if self.giver is not None and self.receive:
                self.giver.head = welcome.head
                self.giver.poke()
            self.connections += 1
            self.last_error = None
            detail = (
                f"resuming after seq {asked.cursor.upto} (relay head {welcome.head})"
                if asked.cursor is not None
                else f"relay head {welcome.head}"
            )
            if waiting:
                detail += f", sending {waiting} from the outbox"
            self._move(ClientState.CONNECTED, str(addr), None, detail)
            await relayport.serve(
                session, rx, queue, self.inbox, self.outbox,
                ping_interval=self.ping_interval, progress=self._progress,
            )  # fmt: skip
        finally:
            self.outbox.end(queue)
            await session.close()
            lasted = asyncio.get_running_loop().time() - joined_at
            if (
                self.inbox.opened > opened
                or len(self.outbox.accepted) > accepted
                or lasted >= self.stable_after
            ):
                self._backoff.reset()

    # -- joining -------------------------------------------------------------------

    async def join(
        self, addr: RelayAddress, port: Port, resume_after: int = 0
    ) -> tuple[Session, Welcome]:
        """A new session with `addr`'s relay or presence port, joined to the room."""
        number = addr.port if port == Port.RELAY else self.presence_port or addr.presence
        session = await Session.open(
            addr, number, tls=self.tls, proxy=self.proxy, timeout=self.connect_timeout
        )
        try:
            header = self.member.header
            roster = tuple(m.verify_key for m in header.members)
            hello = Hello(header.pad_id, header.self_index, roster, resume_after)
            welcome = await session.join(port, hello, self._signer.sign, self.connect_timeout)
        except BaseException:
            await session.close()
            raise
        return session, welcome

    @property
    def running(self) -> bool:
        """Started, and neither stopped nor failed."""
        return self.state not in (ClientState.IDLE, ClientState.STOPPED, ClientState.FAILED)


def _nothing() -> None:
    """Nothing, done in the durable worker: when it returns, so has what was before it."""
