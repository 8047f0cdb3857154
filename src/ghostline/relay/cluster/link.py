"""The node's one NATS connection, and how the cluster waits out a NATS hiccup.

Every other part of the cluster talks to NATS through a `Link`. At start it tries every
URL of `--cluster` every 0.5 s until one answers, forever, saying so once when it
starts waiting and again every `WAITING_REPORT` seconds (`on_waiting`), not once per
try; the relay does not serve meanwhile. Once connected, it reconnects forever
(every 0.5 s, over every URL of `--cluster`); while it is down, or while a stream has no
leader (a nats-server died and JetStream elects another, which takes 4 to 9 s), work
that needs JetStream waits and retries (`retry`) for up to `STALL_LIMIT` seconds before
it fails with `StorageUnavailable` (the relay then answers ERROR 9). A wait is logged
once when it starts (`cluster_stalled`) and once when it ends (`cluster_resumed`),
not once per try. While something waits, a stream's leader election (JetStream's
advisory) ends its unanswered requests at once, to be tried again on the new leader
rather than up to `ACK_TIMEOUT` later (`racing`; nats-py's key-value calls too).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError, ServiceUnavailableError
from nats.protocol.command import pub_cmd

from ...errors import LocalError
from ..logfmt import log_event
from ..metrics import Metrics
from ..stopping import stop

log = logging.getLogger("ghostline.relay")
T = TypeVar("T")

STALL_LIMIT = 12.0  # seconds work waits for NATS or a stream leader before it fails
RETRY_WAIT = 0.1  # seconds between tries while waiting
ACK_TIMEOUT = 2.0  # seconds one JetStream request may take before it is tried again
RECONNECT_WAIT = 0.5
WAITING_REPORT = 30.0  # seconds between "still waiting for NATS" lines at start
DEFAULT_MAX_PAYLOAD = 1024 * 1024  # nats-server's default
SERVER_BUSY = 503  # JetStream: no leader (yet), or the JetStream layer is not ready
NO_RESPONDERS = "503"  # the Status header nats-server answers a request nobody hears with

ELECTIONS = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.*"  # JetStream's advisory subjects

Raw = tuple[int, dict[str, str], bytes]  # (stream seq, headers, body) of a stored message


class StorageUnavailable(LocalError):
    """The cluster's storage (NATS JetStream) cannot be reached right now: retry later."""


class LeaderElected(nats.errors.TimeoutError):
    """Given up unanswered, its stream having a new leader: try it again now."""


_TRANSIENT = (  # (besides JetStream's "no leader yet")
    StorageUnavailable, asyncio.TimeoutError, nats.errors.TimeoutError,
    nats.errors.NoRespondersError, nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionClosedError, nats.errors.StaleConnectionError, NoStreamResponseError,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    servers: tuple[str, ...]
    node: str
    replicas: int = 1  # JetStream replicas of every stream and bucket (3 on 3 servers)
    streams: int | None = None  # streams of a NEW cluster (None: the default)
    tls: Any = None  # ssl.SSLContext for tls:// servers with a private CA


def transient(err: BaseException) -> bool:
    """Whether `err` is NATS being briefly unavailable (worth waiting for)."""
    if isinstance(err, APIError):  # (nats-py's key-value errors leave out `code`)
        return isinstance(err, ServiceUnavailableError) or getattr(err, "code", None) == SERVER_BUSY
    return isinstance(err, _TRANSIENT)


class Link:
    def __init__(
        self,
        config: ClusterConfig,
        on_reconnect: Callable[[], Awaitable[None]],
        on_slow: Callable[[], None],
    ) -> None:
        self.config = config
        self.node = config.node
        self._on_reconnect = on_reconnect
        self._on_slow = on_slow
        self.nc: NatsClient | None = None
        self.js: JetStreamContext | None = None
        self.closing = False
        self.metrics = Metrics()  # the server's, once the backend opens
        # Called while the first connection is not made yet: (what went wrong, seconds
        # waited so far), once at first and every WAITING_REPORT seconds. Default: a log
        # line (`nats_waiting`); the CLI says it in words.
        self.on_waiting: Callable[[str, float], None] = self._log_waiting
        self._connected_once = False
        self._waiting_since = 0.0
        self._waiting_said = -WAITING_REPORT
        self._stalled: dict[str, float] = {}  # what is waiting -> since when
        self._inbox = ""  # `request`'s reply subjects: this, then a token
        self._asked: dict[str, asyncio.Future[Msg]] = {}  # token -> its request's answer
        self._tokens = itertools.count()
        self._replies: Subscription | None = None
        self._elected: dict[str, asyncio.Event] = {}  # stream -> set at its next election

    async def connect(self) -> None:
        """Connect to one of the servers, waiting for as long as it takes."""
        self._waiting_since = time.monotonic()
        try:
            self.nc = await nats.connect(
                servers=list(self.config.servers),
                name=f"ghostline-relay {self.node}",
                max_reconnect_attempts=-1,
                reconnect_time_wait=RECONNECT_WAIT,
                connect_timeout=2,
                allow_reconnect=True,
                tls=self.config.tls,
                disconnected_cb=self._disconnected,
                reconnected_cb=self._reconnected,
                error_cb=self._error,
                closed_cb=self._closed,
            )
        except Exception as err:
            raise StorageUnavailable(
                f"cannot reach NATS at {','.join(self.config.servers)}: {err}"
            ) from err
        self.js = self.nc.jetstream(timeout=ACK_TIMEOUT)
        self._inbox = self.nc.new_inbox() + "."
        self._replies = await self.nc.subscribe(self._inbox + "*", cb=self._on_reply)
        await self.nc.subscribe(ELECTIONS, cb=self._on_elected)
        self._connected_once = True

    def _log_waiting(self, error: str, waited: float) -> None:
        log_event(
            log, "nats_waiting", level=logging.WARNING, node=self.node,
            servers=",".join(self.config.servers), waited=f"{waited:.0f}", error=error,
        )  # fmt: skip

    @property
    def server_has_jetstream(self) -> bool:
        """Whether the server this node is connected to said it runs JetStream."""
        info = getattr(self.nc, "_server_info", None) or {}
        return bool(info.get("jetstream"))

    @property
    def server_url(self) -> str:
        nc = self.nc
        url = nc.connected_url if nc is not None else None
        return f"{url.scheme}://{url.netloc}" if url is not None else ",".join(self.config.servers)

    async def close(self) -> None:
        self.closing = True
        nc, self.nc = self.nc, None
        if nc is None:
            return
        try:
            await nc.close()
        except Exception as err:  # closing anyway: say why it was not clean
            log_event(log, "nats_close_failed", level=logging.WARNING, error=repr(err))
        # nats-py's reconnect loop can lose a cancellation inside asyncio.wait_for and go
        # on forever (the process would never exit): cancel it until done (5 s at most).
        task = getattr(nc, "_reconnection_task", None)
        if task is not None:
            await stop(task, tries=50)

    def connected(self) -> tuple[NatsClient, JetStreamContext]:
        nc, js = self.nc, self.js
        if nc is None or js is None or not nc.is_connected:
            raise StorageUnavailable("storage unavailable (NATS unreachable), retry later")
        return nc, js

    @property
    def max_payload(self) -> int:
        """The largest message NATS takes (its `max_payload`, as of the last connect)."""
        return self.nc.max_payload if self.nc is not None else DEFAULT_MAX_PAYLOAD

    @property
    def up(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    # --- waiting out NATS ----------------------------------------------------------------

    async def retry(self, what: str, op: Callable[[], Awaitable[T]], deadline: float) -> T:
        """`op()`, tried again while NATS or a stream leader is briefly unavailable,
        until `deadline` (time.monotonic)."""
        while True:
            try:
                result = await op()
            except Exception as err:
                if self.closing or not transient(err) or time.monotonic() >= deadline:
                    if not transient(err):  # NATS answered, with a refusal: the wait is over
                        self.resumed(what)
                        raise
                    self.metrics.jetstream_trouble("failed")
                    self._stalled.pop(what, None)  # given up: a later wait is a new one
                    if isinstance(err, StorageUnavailable):
                        raise
                    raise StorageUnavailable(f"{what}: NATS did not answer ({err!r})") from err
                self.stalled(what, err)
                await asyncio.sleep(RETRY_WAIT)
                continue
            self.resumed(what)
            return result

    def stalled(self, what: str, err: BaseException) -> None:
        """Log that `what` waits for NATS (once, until `resumed`)."""
        if what not in self._stalled:
            self._stalled[what] = time.monotonic()
            self.metrics.jetstream_trouble("stalled")
            log_event(
                log, "cluster_stalled", level=logging.WARNING, node=self.node, waiting=what,
                error=type(err).__name__,
            )  # fmt: skip

    def resumed(self, what: str) -> None:
        since = self._stalled.pop(what, None)
        if since is not None:
            log_event(
                log, "cluster_resumed", node=self.node, waiting=what,
                waited=f"{time.monotonic() - since:.1f}",
            )  # fmt: skip

    # --- requests a node waits on, sent at once ------------------------------------------
    #
    # nats-py's publish only queues a message: its flusher task writes the queue on a
    # later turn of the event loop, which batches a busy node's writes but costs a turn
    # on every hop of a forward (the request, then the owner's answer). Its `request`
    # hands the answer over through a wait_for, one more turn. Forwards and their answers
    # (one per commit and owner) use these instead: written to the socket at once, in
    # order after whatever the client had queued (exactly what its flusher would write
    # next), and the answer resolved straight from this connection's reply
    # subscription. They use nats-py internals (`_pending`, `_transport`), pinned in
    # pyproject.toml; the forwarding tests fail if those change.

    async def request(self, subject: str, payload: bytes, timeout: float) -> Msg:
        """One request, written at once; its answer, or nats' TimeoutError or
        NoRespondersError as `nc.request` raises them."""
        nc, _ = self.connected()
        token = str(next(self._tokens))
        answer: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._asked[token] = answer
        try:
            _queue(nc, subject, payload, self._inbox + token)
            _flush(nc)
            async with asyncio.timeout(timeout):
                msg = await answer
        except TimeoutError:
            raise nats.errors.TimeoutError from None
        finally:
            self._asked.pop(token, None)
        if msg.headers and msg.headers.get("Status") == NO_RESPONDERS and not msg.data:
            raise nats.errors.NoRespondersError
        return msg

    def publish_now(self, subject: str, payload: bytes) -> None:
        """Publish `payload` (an answer someone waits for), written to the socket at once;
        while NATS is away, kept like any publish and sent once reconnected."""
        nc = self.nc
        if nc is None or nc.is_closed:
            raise StorageUnavailable("NATS is closed")
        _queue(nc, subject, payload, "")
        if nc.is_connected:
            _flush(nc)

    async def _on_reply(self, msg: Msg) -> None:
        answer = self._asked.pop(msg.subject[len(self._inbox) :], None)
        if answer is not None and not answer.done():
            answer.set_result(msg)

    # --- JetStream requests --------------------------------------------------------------

    async def js_request(
        self, stream: str, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> Msg:
        """A JetStream request to `stream` (nats-py's, up to ACK_TIMEOUT), `racing` it."""
        nc, _ = self.connected()
        return await self.racing(
            stream, nc.request(subject, payload, timeout=ACK_TIMEOUT, headers=headers)
        )

    async def racing(self, stream: str, asking: Awaitable[T]) -> T:
        """`asking` (a request to `stream`), or LeaderElected if, while something waits
        (`stalled`), `stream` gets a leader first; while nothing waits, just `asking`."""
        if not self._stalled:
            return await asking
        answer = asyncio.ensure_future(asking)
        event = self._elected.setdefault(stream, asyncio.Event())
        elected = asyncio.ensure_future(event.wait())
        try:
            done, _ = await asyncio.wait((answer, elected), return_when=asyncio.FIRST_COMPLETED)
        finally:
            elected.cancel()
            answer.cancel()  # (if not done: its late answer is dropped by nats-py)
        if answer not in done:
            raise LeaderElected
        return answer.result()

    async def _on_elected(self, msg: Msg) -> None:
        event = self._elected.pop(msg.subject[len(ELECTIONS) - 1 :], None)
        if event is not None:  # (later requests wait on a new one)
            event.set()

    async def direct(self, stream: str, request: dict[str, Any]) -> Raw | None:
        """The message one JetStream direct-get request names (None: there is none). Any
        replica answers, so use it only where a slightly stale answer is safe."""
        subject = f"$JS.API.DIRECT.GET.{stream}"
        msg = await self.js_request(stream, subject, json.dumps(request).encode())
        return _raw(msg.headers, msg.data)

    async def api(self, subject: str, request: dict[str, Any]) -> dict[str, Any]:
        """One JetStream API request (`$JS.API.` + subject, `STREAM.<verb>.<stream>`);
        raises its APIError."""
        stream = subject.rsplit(".", 1)[-1]
        reply = await self.js_request(stream, "$JS.API." + subject, json.dumps(request).encode())
        resp: dict[str, Any] = json.loads(reply.data)
        if "error" in resp:
            raise APIError.from_error(resp["error"])
        return resp

    # --- connection events ---------------------------------------------------------------

    async def _disconnected(self) -> None:
        if not self.closing and self._connected_once:
            self.metrics.jetstream_trouble("disconnected")
            log_event(log, "nats_disconnected", level=logging.WARNING, node=self.node)

    async def _reconnected(self) -> None:
        nc = self.nc
        url = nc.connected_url.netloc if nc is not None and nc.connected_url else ""
        log_event(log, "nats_reconnected", node=self.node, server=url)
        await self._on_reconnect()

    async def _error(self, err: Exception) -> None:
        if self.closing:
            return
        if not self._connected_once:  # still at start: said every WAITING_REPORT s
            now = time.monotonic()
            if now - self._waiting_said >= WAITING_REPORT:
                self._waiting_said = now
                self.on_waiting(_why(err), now - self._waiting_since)
            return
        self.metrics.jetstream_trouble("nats_error")
        log_event(log, "nats_error", level=logging.WARNING, node=self.node, error=repr(err))
        if "slow consumer" in str(err).lower():
            self._on_slow()

    async def _closed(self) -> None:
        if not self.closing:
            log_event(log, "nats_closed", level=logging.ERROR, node=self.node)


def _queue(nc: NatsClient, subject: str, payload: bytes, reply: str) -> None:
    """Add a message to what nats-py writes next (as its publish does)."""
    if len(payload) > nc.max_payload:
        raise nats.errors.MaxPayloadError
    command = pub_cmd(subject, reply, payload)
    nc._pending.append(command)
    nc._pending_data_size += len(command)


def _flush(nc: NatsClient) -> None:
    """Write what nats-py holds now, as its flusher task would on a later turn."""
    transport = nc._transport
    assert transport is not None  # connected
    pending = nc._pending
    nc._pending, nc._pending_data_size = [], 0
    transport.writelines(pending)


def _why(err: BaseException) -> str:
    if isinstance(err, OSError) and err.errno:
        return os.strerror(err.errno).lower()  # not asyncio's "Connect call failed (...)"
    if isinstance(err, asyncio.TimeoutError | nats.errors.TimeoutError):
        return "no answer within 2 s"
    return str(err).strip() or type(err).__name__


def _raw(headers: dict[str, str] | None, data: bytes) -> Raw | None:
    """A direct-get answer as (stream seq, headers, body); None when nothing matched;
    StorageUnavailable for any other status."""
    fields = {str(k): v for k, v in (headers or {}).items()}
    status = fields.get("Status")
    if status is not None and not data:
        if status in ("204", "404"):
            return None
        raise StorageUnavailable(f"JetStream direct get failed: status {status}")
    return int(fields["Nats-Sequence"]), fields, data
