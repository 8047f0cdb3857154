"""`ghostline relay`: run the blind relay and presence servers in one process.

Blind: this module imports no pad, key or state code (tests/relay/test_blindness.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
import ssl
import sys
from pathlib import Path

import click

from ..errors import LocalError, UsageError
from ..paths import default_relay_store
from ..protocol.frames import MAX_HELLO_FRAME
from ..relay.backend import Backend
from ..relay.config import DAY, RelayLimits, Retention
from ..relay.server import RelayServer
from ..relay.sqlite_store import SqliteBackend
from ..relay.storefile import StoreDamaged, StoreLayoutError, StoreLocked, StoreUnavailable
from .params import seconds, whole

StoreRefusal = StoreLocked | StoreDamaged | StoreLayoutError | StoreUnavailable

_D = RelayLimits()
_R = Retention()


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
        level = record.levelname.lower()
        return f"ts={stamp}.{int(record.msecs):03d} level={level} {record.getMessage()}"


_PORT = click.IntRange(0, 65535)


@click.command()
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
@click.option(
    "--max-frame", type=whole(MAX_HELLO_FRAME), default=_D.max_frame, show_default=True,
    help="Bytes per frame.",
)  # fmt: skip
@click.option("--max-connections", type=whole(), default=_D.max_connections, show_default=True)
@click.option(
    "--max-connections-per-address", type=whole(), default=_D.max_connections_per_address,
    show_default=True,
)  # fmt: skip
@click.option("--max-rooms", type=whole(), default=_D.max_rooms, show_default=True)
@click.option(
    "--new-room-burst",
    type=whole(),
    default=_D.new_room_burst,
    show_default=True,
    help="New rooms one address may register at once.",
)
@click.option(
    "--new-rooms-per-hour", type=seconds(open_min=False), default=_D.new_room_rate * 3600,
    show_default=True,
    help="New rooms one address may register per hour, after the burst.",
)  # fmt: skip
@click.option(
    "--publish-rate",
    type=seconds(),
    default=_D.publish_rate,
    show_default=True,
    help="Per connection, /s.",
)
@click.option("--publish-burst", type=whole(), default=_D.publish_burst, show_default=True)
@click.option(
    "--send-buffer",
    type=whole(MAX_HELLO_FRAME),
    default=_D.send_buffer,
    show_default=True,
    help="Bytes per connection.",
)
@click.option(
    "--idle-timeout", type=seconds(), default=_D.idle_timeout, show_default=True,
    help="Seconds.",
)  # fmt: skip
@click.option(
    "--handshake-timeout",
    type=seconds(),
    default=_D.handshake_timeout,
    show_default=True,
    help="Seconds.",
)
@click.option(
    "--retain-messages", type=whole(), default=_R.max_messages, show_default=True,
    help="Per room.",
)  # fmt: skip
@click.option(
    "--retain-bytes", type=whole(), default=_R.max_bytes, show_default=True, help="Per room."
)
@click.option(
    "--retain-days", type=seconds(), default=_R.max_age / DAY, show_default=True,
    help="Per room.",
)  # fmt: skip
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
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))  # fmt: skip
def relay(
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
    log_level: str,
) -> None:
    """Run the blind relay (store-and-forward) and presence servers."""
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    if max_frame < 64 or send_buffer < max_frame:
        raise UsageError("--max-frame must be at least 64 and --send-buffer at least --max-frame")
    ssl_context = None
    pin = None
    if tls_cert is not None and tls_key is not None:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ssl_context.load_cert_chain(tls_cert, tls_key)
            pin = _certificate_pin(Path(tls_cert))
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
    asyncio.run(_serve(host, port, presence_port, backend, where, limits, ssl_context, pin))


def _certificate_pin(cert: Path) -> str:
    """What clients give `--tls-pin`: the SHA-256 of the (first) certificate's DER bytes."""
    text = cert.read_text("ascii", "replace")
    end = "-----END CERTIFICATE-----"
    start = text.find("-----BEGIN CERTIFICATE-----")
    if start < 0 or end not in text[start:]:
        raise ValueError(f"{cert} holds no PEM certificate")
    der = ssl.PEM_cert_to_DER_cert(text[start : text.index(end, start) + len(end)])
    return hashlib.sha256(der).hexdigest()


def _store_refusal(err: StoreRefusal) -> LocalError:
    """One line: which store, what is wrong with it, what to do."""
    if isinstance(err, StoreUnavailable):
        return LocalError(
            f"cannot open the relay store {err.path}: {err.detail}; check that its directory"
            " can be created and written by this user, or give --store another file"
        )
    if isinstance(err, StoreLocked):
        holder = f"relay process {err.pid}" if err.pid else "another relay process"
        return LocalError(
            f"the relay store {err.path} is in use by {holder}: stop that relay first,"
            " or give this one another --store"
        )
    if isinstance(err, StoreDamaged):
        detail = " ".join(err.detail.split())[:200]
        return LocalError(
            f"the relay store {err.path} is damaged ({detail}): restore it from a backup,"
            " or move it (with its -wal and -shm files) aside to start an empty store;"
            " members notice the new store and resume from its start"
        )
    if err.found == 0:
        return LocalError(f"{err.path} is not a GhostLine relay store: give --store another file")
    if err.found > err.expected:
        return LocalError(
            f"the relay store {err.path} has layout {err.found}, written by a newer relay:"
            " run that version, or give --store another file"
        )
    return LocalError(
        f"the relay store {err.path} has layout {err.found}, from an earlier development"
        f" version; this relay reads only layout {err.expected}: move it aside to start an"
        " empty store"
    )


async def _serve(
    host: str,
    port: int,
    presence_port: int,
    backend: Backend,
    where: str,
    limits: RelayLimits,
    ssl_context: ssl.SSLContext | None,
    pin: str | None,
) -> None:
    server = RelayServer(backend, limits, ssl_context=ssl_context)
    try:
        relay_port, presence_bound = await server.start(host, port, presence_port)
    except (StoreLocked, StoreDamaged, StoreLayoutError, StoreUnavailable) as err:
        raise _store_refusal(err) from err
    except OSError as err:
        with contextlib.suppress(Exception):
            await server.backend.close()
        raise UsageError(f"cannot listen on {host}: {err.strerror or err}") from err

    shown = f"[{host}]" if ":" in host else host
    scheme = " (TLS)" if ssl_context is not None else ""
    print(f"ghostline relay: relay listening on {shown}:{relay_port}{scheme}", file=sys.stderr)
    print(
        f"ghostline relay: presence listening on {shown}:{presence_bound}{scheme}", file=sys.stderr
    )
    print(f"ghostline relay: {where}", file=sys.stderr, flush=True)
    if pin is not None:
        print(
            f"ghostline relay: TLS certificate pin (for --tls-pin): {pin}",
            file=sys.stderr,
            flush=True,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("ghostline relay: shutting down", file=sys.stderr, flush=True)
    await server.close()
    print("ghostline relay: stopped", file=sys.stderr, flush=True)
