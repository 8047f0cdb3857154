"""The operator's commands beside a running relay: `ghostline relay status`, and, with
the relay stopped, `ghostline relay new-store-id` and `ghostline relay restore`.

Blind like `cli/relay.py`: it imports no pad, key or state code.
"""

from __future__ import annotations

import asyncio
import http.client
import re
from pathlib import Path

import click

from ..errors import LocalError
from ..paths import default_relay_store
from ..relay.storefile import StoreDamaged, StoreLayoutError, StoreLocked, StoreUnavailable

StoreRefusal = StoreLocked | StoreDamaged | StoreLayoutError | StoreUnavailable
_STORE_ERRORS = (StoreLocked, StoreDamaged, StoreLayoutError, StoreUnavailable)
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_NEW_ID_EFFECT = (
    "members see another store when they next connect, read it from its first message"
    " and skip what they already have"
)


def store_refusal(err: StoreRefusal) -> LocalError:
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
            f"the relay store {err.path} is damaged ({detail}): restore it from a backup"
            " (ghostline relay restore), or move it (with its -wal and -shm files) aside to"
            " start an empty store; members notice the new store and resume from its start"
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


# --- status ------------------------------------------------------------------------------


@click.command()
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), required=True,
              help="The relay's --metrics-port.")  # fmt: skip
def status(metrics_host: str, metrics_port: int) -> None:
    """Say whether a running relay is healthy, and what it is doing (from its
    --metrics-port). Exit status 0: healthy; 1: not (or not reachable)."""
    shown = f"[{metrics_host}]" if ":" in metrics_host else metrics_host
    where = f"http://{shown}:{metrics_port}"
    health_code, health = _get(metrics_host, metrics_port, "/health", where)
    _, text = _get(metrics_host, metrics_port, "/metrics", where)
    samples = parse_metrics(text)

    def total(name: str, **match: str) -> float:
        return sum(
            value
            for sample, labels, value in samples
            if sample == name and all(labels.get(k) == v for k, v in match.items())
        )

    g = "ghostline_relay_"
    state = "healthy" if health_code == 200 else f"NOT healthy: {health.strip()}"
    lines = [
        f"relay at {where}: {state}",
        f"connections: {total(g + 'connections', port='relay'):.0f} relay"
        f" ({total(g + 'members', port='relay'):.0f} joined),"
        f" {total(g + 'connections', port='presence'):.0f} presence;"
        f" limit {total(g + 'max_connections'):.0f}",
        f"rooms with a connection: {total(g + 'rooms'):.0f}",
        f"messages: {total(g + 'publishes_total'):.0f} published,"
        f" {total(g + 'stored_total'):.0f} stored, {total(g + 'duplicates_total'):.0f}"
        f" duplicates, {total(g + 'deliveries_total'):.0f} delivered live,"
        f" {total(g + 'replayed_total'):.0f} replayed",
    ]
    commits = total(g + "store_seconds_count")
    if commits:
        mean = total(g + "store_seconds_sum") / commits * 1000
        lines.append(f"store: {commits:.0f} commits, {mean:.1f} ms each on average,"
                     f" {total(g + 'store_failures_total'):.0f} failed")  # fmt: skip
    refusals = [(lb, v) for s, lb, v in samples if s == g + "refusals_total" and v]
    if refusals:
        top = sorted(refusals, key=lambda r: -r[1])[:5]
        lines.append(
            f"refusals: {sum(v for _, v in refusals):.0f}; most: "
            + "; ".join(f"{v:.0f} x ERROR {lb.get('code')} {lb.get('cause')!r}" for lb, v in top)
        )
    trouble = [(lb.get("kind", "?"), v) for s, lb, v in samples
               if s == g + "jetstream_errors_total" and v]  # fmt: skip
    if any(s == g + "nats_connected" for s, _, _ in samples):
        up = "connected" if total(g + "nats_connected") else "NOT connected"
        counts = ", ".join(f"{v:.0f} {k}" for k, v in trouble) or "no trouble"
        lines.append(f"NATS: {up}; {counts}")
    rss = total("process_resident_memory_bytes")
    if rss:
        lines.append(
            f"process: {rss / 2**20:.1f} MiB resident, {total('process_open_fds'):.0f} open"
            f" files of {total('process_max_fds'):.0f}"
        )
    click.echo("\n".join(lines))
    if health_code != 200:
        raise SystemExit(1)


def _get(host: str, port: int, path: str, where: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read(1 << 22).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as err:
        detail = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise LocalError(
            f"cannot read the relay's status at {where}: {detail}; is the relay running"
            " with --metrics-port on that port?"
        ) from err
    finally:
        conn.close()


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """The samples of a Prometheus text page: (name, labels, value)."""
    out = []
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if line.startswith("#") or match is None:
            continue
        name, labels, value = match.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        out.append((name, dict(_LABEL.findall(labels or "")), number))
    return out


# --- a new store id, restoring ---------------------------------------------------------


@click.command("new-store-id")
@click.option("--store", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The relay's store [default: relay.sqlite in the data directory].")  # fmt: skip
@click.option("--cluster", default=None, metavar="URL[,URL...]",
              help="Renew the store id of the cluster at these NATS servers instead.")  # fmt: skip
def new_store_id(store: Path | None, cluster: str | None) -> None:
    """Give a stopped relay's store (or a stopped cluster) a new store id, after its
    messages were restored from a backup by other means (see `restore`)."""
    from ..relay.storeadmin import renew_store_id

    if cluster is not None:
        old, new = _renew_cluster(cluster)
        click.echo(f"the cluster at {cluster} has a new store id ({new.hex()}, was"
                   f" {old.hex()}): {_NEW_ID_EFFECT}")  # fmt: skip
        return
    path = store or default_relay_store()
    try:
        done = renew_store_id(path)
    except _STORE_ERRORS as err:
        raise store_refusal(err) from err
    click.echo(f"the relay store {path} has a new store id ({done.new_id.hex()}, was"
               f" {done.old_id.hex()}): {_NEW_ID_EFFECT}")  # fmt: skip


def _renew_cluster(urls: str) -> tuple[bytes, bytes]:
    from ..relay.cluster.admin import NodesRunning, renew_cluster_store_id
    from .cluster import cluster_config

    config = cluster_config(urls, "ghostline-admin", 1, None)
    try:
        return asyncio.run(renew_cluster_store_id(config))
    except NodesRunning as err:
        raise LocalError(
            f"{err}: stop every relay node of the cluster first (a running node keeps the"
            " store id it read at start)"
        ) from err


@click.command()
@click.argument("backup", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--store", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The relay's store [default: relay.sqlite in the data directory].")  # fmt: skip
def restore(backup: Path, store: Path | None) -> None:
    """Restore the relay store from BACKUP (a copy made with `sqlite3 STORE ".backup
    BACKUP"`), with a new store id, the relay stopped. The store it replaces is moved
    aside, not deleted."""
    from ..relay.storeadmin import restore_store

    path = store or default_relay_store()
    try:
        done = restore_store(backup, path)
    except _STORE_ERRORS as err:
        if getattr(err, "path", None) == backup:
            raise LocalError(
                f"cannot restore from {backup}: {err}; restore from another backup"
            ) from err
        raise store_refusal(err) from err
    aside = f"; the store it replaced is at {done.set_aside}" if done.set_aside else ""
    click.echo(f"restored {backup} to {path} with a new store id ({done.new_id.hex()}){aside}:"
               f" {_NEW_ID_EFFECT}")  # fmt: skip
