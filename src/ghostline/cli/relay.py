"""`ghostline relay`: run the blind relay and presence servers in one process (and,
as sub-commands, what an operator does beside it: `cli/relayops.py`).

At start the relay raises its file-descriptor limit as far as the system lets it and
says so in one line when that is still below what `--max-connections` needs. SIGHUP
reloads the TLS certificate and key (new connections use them); SIGTERM stops.

Blind: this module imports no pad, key or state code (tests/relay/test_blindness.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import resource
import signal
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from ..errors import UsageError
from ..paths import default_relay_store
from ..protocol.frames import MAX_HELLO_FRAME
from ..relay.backend import Backend
from ..relay.config import DAY, RelayLimits, Retention
from ..relay.logfmt import log_event
from ..relay.server import RelayServer
from ..relay.sqlite_store import SqliteBackend
from ..relay.statushttp import StatusServer
from ..relay.storefile import StoreDamaged, StoreLayoutError, StoreLocked, StoreUnavailable
from ..tlspin import certificate_pin
from .params import seconds, whole
from .relayops import new_store_id, restore, status, store_refusal

_D = RelayLimits()
_R = Retention()
# Descriptors the relay needs beside one per connection: listening sockets, the store's
# files and its three connections, NATS, the metrics port, refused TLS connections.
FD_SPARE = 64
GC_YOUNG = 50_000  # new objects between young collections (Python's default: 700)
log = logging.getLogger("ghostline.relay")


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        level = record.levelname.lower()
        return f"ts={stamp} level={level} {record.getMessage()}"


_PORT = click.IntRange(0, 65535)


F = TypeVar("F", bound=Callable[..., Any])


def _limit(
    name: str, kind: click.ParamType, default: float, help: str | None = None
) -> Callable[[F], F]:
    """An option for one of the relay's limits, its default shown."""
    return click.option(name, type=kind, default=default, show_default=True, help=help)


@click.group(invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=_PORT, default=8080, show_default=True, help="Relay port (0: any free port)."
)
@click.option(
    "--presence-port", type=_PORT, default=8081, show_default=True, help="Presence port (0: any)."
)
@click.option(
    "--store",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SQLite file for stored messages [default: relay.sqlite in the data directory].",
)
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None)
@_limit("--max-frame", whole(MAX_HELLO_FRAME), _D.max_frame, "Bytes per frame.")
@_limit("--max-connections", whole(), _D.max_connections)
@_limit("--max-connections-per-address", whole(), _D.max_connections_per_address)
@_limit("--max-rooms", whole(), _D.max_rooms)
@_limit(
    "--new-room-burst", whole(), _D.new_room_burst, "New rooms one address may register at once."
)
@_limit(
    "--new-rooms-per-hour", seconds(open_min=False), _D.new_room_rate * 3600,
    "New rooms one address may register per hour, after the burst.",
)  # fmt: skip
@_limit("--publish-rate", seconds(), _D.publish_rate, "Per connection, /s.")
@_limit("--publish-burst", whole(), _D.publish_burst)
@_limit("--send-buffer", whole(MAX_HELLO_FRAME), _D.send_buffer, "Bytes per connection.")
@_limit("--idle-timeout", seconds(), _D.idle_timeout, "Seconds.")
@_limit("--handshake-timeout", seconds(), _D.handshake_timeout, "Seconds.")
@_limit("--retain-messages", whole(), _R.max_messages, "Per room.")
@_limit("--retain-bytes", whole(), _R.max_bytes, "Per room.")
@_limit("--retain-days", seconds(), _R.max_age / DAY, "Per room.")
@click.option(
    "--cluster",
    default=None,
    metavar="URL[,URL...]",
    help="Cluster mode: share rooms through NATS JetStream at these servers (nats:// or tls://)"
    " instead of --store.",
)
@click.option("--node-name", default=None, help="This node's name in the cluster (unique).")
@click.option(
    "--cluster-replicas",
    type=whole(1, 5),
    default=1,
    show_default=True,
    help="JetStream replicas (3 on 3 servers).",
)
@click.option(
    "--cluster-streams",
    type=int,
    default=None,
    help="JetStream streams of a new cluster (fixed once created) [default: 8].",
)
@click.option(
    "--metrics-port", type=_PORT, default=None,
    help="Serve GET /health and /metrics (Prometheus) over HTTP on this port (0: any free"
    " port) [default: off].",
)  # fmt: skip
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True,
    help="Address for --metrics-port (keep it private: it is for your monitoring).",
)  # fmt: skip
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))  # fmt: skip
@click.pass_context
def relay(
    ctx: click.Context,
    host: str,
    port: int,
    presence_port: int,
    store: Path | None,
    tls_cert: str | None,
    tls_key: str | None,
    max_frame: int,
    max_connections: int,
    max_connections_per_address: int,
    max_rooms: int,
    new_room_burst: int,
    new_rooms_per_hour: float,
    publish_rate: float,
    publish_burst: int,
    send_buffer: int,
    idle_timeout: float,
    handshake_timeout: float,
    retain_messages: int,
    retain_bytes: int,
    retain_days: float,
    cluster: str | None,
    node_name: str | None,
    cluster_replicas: int,
    cluster_streams: int | None,
    metrics_port: int | None,
    metrics_host: str,
    log_level: str,
) -> None:
    """Run the blind relay (store-and-forward) and presence servers; or, with a command
    after the options, one of the operator's commands below."""
    if ctx.invoked_subcommand is not None:
        return
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    if max_frame < 64 or send_buffer < max_frame:
        raise UsageError("--max-frame must be at least 64 and --send-buffer at least --max-frame")
    certificate = None
    if tls_cert is not None and tls_key is not None:
        certificate = Certificate(Path(tls_cert), Path(tls_key))
        try:
            certificate.load()
        except (OSError, ssl.SSLError, ValueError) as err:
            raise UsageError(f"cannot load the TLS certificate or key: {err}") from err
    limits = RelayLimits(
        max_frame=max_frame,
        max_connections=max_connections,
        max_connections_per_address=max_connections_per_address,
        max_rooms=max_rooms,
        new_room_burst=new_room_burst,
        new_room_rate=new_rooms_per_hour / 3600,
        publish_rate=publish_rate,
        publish_burst=publish_burst,
        send_buffer=send_buffer,
        idle_timeout=idle_timeout,
        handshake_timeout=handshake_timeout,
        retention=Retention(retain_messages, retain_bytes, retain_days * DAY),
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    logger = logging.getLogger("ghostline.relay")
    logger.addHandler(handler)
    logger.setLevel(log_level.upper())
    logger.propagate = False
    backend: Backend
    if cluster is not None:
        from .cluster import cluster_backend

        backend, where = cluster_backend(
            cluster, node_name, cluster_replicas, cluster_streams, limits.retention
        )
    else:
        path = store or default_relay_store()
        backend, where = SqliteBackend(path, limits.retention), f"store {path}"
    fd_limit = raise_fd_limit()
    metrics = None if metrics_port is None else (metrics_host, metrics_port)
    serving = _Serving(host, port, presence_port, backend, where, limits, certificate, metrics)
    asyncio.run(_serve(serving, fd_limit))


relay.add_command(status)
relay.add_command(new_store_id)
relay.add_command(restore)


@dataclass
class Certificate:
    """The relay's TLS certificate and key, loaded at start and again on SIGHUP."""

    cert: Path
    key: Path
    context: ssl.SSLContext | None = None
    pin: str = ""

    def load(self) -> None:
        """Load both files (again); the old context stays if they cannot be loaded."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        pin = _certificate_pin(self.cert)
        self.context, self.pin = context, pin


def raise_fd_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; returns the
    soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def fd_needed(limits: RelayLimits) -> int:
    return limits.max_connections + FD_SPARE


def _certificate_pin(cert: Path) -> str:
    """What clients give `--tls-pin`: the SHA-256 of the (first) certificate's DER bytes."""
    text = cert.read_text("ascii", "replace")
    end = "-----END CERTIFICATE-----"
    start = text.find("-----BEGIN CERTIFICATE-----")
    if start < 0 or end not in text[start:]:
        raise ValueError(f"{cert} holds no PEM certificate")
    der = ssl.PEM_cert_to_DER_cert(text[start : text.index(end, start) + len(end)])
    return certificate_pin(der)


@dataclass(frozen=True)
class _Serving:
    host: str
    port: int
    presence_port: int
    backend: Backend
    where: str  # "store PATH" or "cluster URLS node NAME"
    limits: RelayLimits
    certificate: Certificate | None
    metrics: tuple[str, int] | None  # (host, port) of /health and /metrics


def _say(line: str) -> None:
    print(f"ghostline relay: {line}", file=sys.stderr, flush=True)


async def _serve(opts: _Serving, fd_limit: int) -> None:
    tls = opts.certificate
    server = RelayServer(opts.backend, opts.limits, ssl_context=tls.context if tls else None)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # A cluster node may wait for NATS before it serves: SIGTERM ends the wait too.
    starting = asyncio.ensure_future(server.start(opts.host, opts.port, opts.presence_port))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await starting
        with contextlib.suppress(Exception):
            await opts.backend.close()
        _say("stopped (it never served)")
        return
    try:
        relay_port, presence_bound = starting.result()
    except (StoreLocked, StoreDamaged, StoreLayoutError, StoreUnavailable) as err:
        raise store_refusal(err) from err
    except OSError as err:
        with contextlib.suppress(Exception):
            await server.backend.close()
        raise UsageError(f"cannot listen on {opts.host}: {err.strerror or err}") from err
    status_server = None
    if opts.metrics is not None:
        status_server = StatusServer(server.problem, server.metrics_text)
        try:
            metrics_port = await status_server.start(*opts.metrics)
        except OSError as err:
            await server.close()
            raise UsageError(
                f"cannot serve --metrics-port on {opts.metrics[0]}: {err.strerror or err}"
            ) from err

    shown = f"[{opts.host}]" if ":" in opts.host else opts.host
    scheme = " (TLS)" if tls is not None else ""
    _say(f"relay listening on {shown}:{relay_port}{scheme}")
    _say(f"presence listening on {shown}:{presence_bound}{scheme}")
    _say(opts.where)
    if tls is not None:
        _say(f"TLS certificate pin (for --tls-pin): {tls.pin}")
    if status_server is not None and opts.metrics is not None:
        where = f"[{opts.metrics[0]}]" if ":" in opts.metrics[0] else opts.metrics[0]
        _say(f"health and metrics on http://{where}:{metrics_port}/health and /metrics")
    needed = fd_needed(opts.limits)
    if fd_limit < needed:
        _say(
            f"warning: this process may open only {fd_limit} files, fewer than the {needed}"
            f" that --max-connections {opts.limits.max_connections} needs (one per"
            f" connection and {FD_SPARE} more): raise its limit (LimitNOFILE= in the"
            " systemd unit, or ulimit -n) or lower --max-connections"
        )
    loop.add_signal_handler(signal.SIGHUP, lambda: _reload(server, tls))
    _tune_gc()
    await stop.wait()
    _say("shutting down")
    if status_server is not None:
        status_server.close()
    await server.close()
    _say("stopped")


def _tune_gc() -> None:
    """Fewer cyclic garbage collections: the relay makes a few short-lived tuples per
    message, nearly all freed by reference counting, and at Python's default (a young
    collection every 700 new objects) it spent about 5% of its CPU on collections that
    found nothing. What lives from start on is frozen out of every collection."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, older, oldest)


def _reload(server: RelayServer, tls: Certificate | None) -> None:
    """SIGHUP: load the certificate and key again; new connections use them."""
    if tls is None:
        log_event(log, "tls_reload_skipped", reason="no --tls-cert")
        return
    try:
        tls.load()
    except (OSError, ssl.SSLError, ValueError) as err:
        log_event(
            log, "tls_reload_failed", level=logging.ERROR, cert=tls.cert, error=str(err),
            action="still serving the certificate loaded before",
        )  # fmt: skip
        return
    assert tls.context is not None
    server.set_ssl_context(tls.context)
    log_event(log, "tls_reloaded", cert=tls.cert, pin=tls.pin)
