"""What the cluster keeps in NATS, by name, and how a node finds or makes it.

- Streams `GHOSTLINE-0` .. `GHOSTLINE-<N-1>` (N fixed when the cluster is created, kept
  in the cluster bucket under `streams`). A room lives in stream
  blake2b(room id) mod N; stream k holds subjects `ghostline.room.<k>.<room hex>` (the
  room's chunks, see chunks.py; republished once stored to `ghostline.live.<room hex>`,
  which only the nodes hosting the room take, see hosting.py)
  and `ghostline.late.<k>.<room hex>.<sender>.<counter>` (receipts of messages stored
  out of their sender's counter order, see dedupe.py). Streams commit in parallel, and on
  a NATS cluster their leaders are spread over the servers.
- KV bucket `ghostline-rooms`: room hex -> roster (created once, never changed, kept
  for good).
- Stream `ghostline-live-rooms`: one message per live room, subject
  `ghostline.live-room.<room hex>` (registry.py); its message count is what
  `--max-rooms` counts.
- KV bucket `ghostline-cluster`: facts about the cluster itself, each created once by
  the first node that finds none: `streams` (the stream count) and then `store-id` (the
  16 random bytes WELCOME carries, the same on every node).
- Core subjects: `ghostline.presence.<node>` and `ghostline.presence-sync` (presence.py),
  `ghostline.append.<node>` (appends forwarded to a room's owner, ownership.py) and
  `ghostline.alive.<node>` (whether a node is still there, ownership.py).

A NATS that holds the one-stream layout of earlier versions (stream `GHOSTLINE`, or a
store id without a stream count) is refused with `ClusterLayoutError`: it is not
migrated. A NATS that cannot hold the cluster at all (no JetStream; fewer servers than
`--cluster-replicas`) is refused with `ClusterSetupError`, in one sentence saying what
to change, rather than waited for: waiting would not help.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from dataclasses import dataclass

import nats
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, KeyValueConfig, RePublish, StorageType, StreamConfig
from nats.js.errors import APIError, BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.errors import NotFoundError as JsNotFoundError
from nats.js.kv import KeyValue

from ...errors import LocalError
from ...protocol.frames import STORE_ID_LEN
from ..config import Retention
from ..logfmt import log_event
from .link import ACK_TIMEOUT, STALL_LIMIT, ClusterConfig, Link, StorageUnavailable, transient

log = logging.getLogger("ghostline.relay")

STREAM_PREFIX = "GHOSTLINE-"
OLD_STREAM = "GHOSTLINE"  # the one-stream layout of earlier versions
ROOM_SUBJECT = "ghostline.room."
LATE_SUBJECT = "ghostline.late."
LIVE_SUBJECT = "ghostline.live."
PRESENCE_SUBJECT = "ghostline.presence."
SYNC_SUBJECT = "ghostline.presence-sync"
APPEND_SUBJECT = "ghostline.append."
ALIVE_SUBJECT = "ghostline.alive."
ROOMS_BUCKET = "ghostline-rooms"
ROOMS_KV_STREAM = "KV_" + ROOMS_BUCKET  # JetStream keeps a bucket in stream KV_<bucket>
LIVE_ROOMS_STREAM = "ghostline-live-rooms"
LIVE_ROOM_SUBJECT = "ghostline.live-room."
CLUSTER_BUCKET = "ghostline-cluster"
STORE_ID_KEY = "store-id"
STREAMS_KEY = "streams"
DEFAULT_STREAMS = 8
MAX_STREAMS = 64
STREAM_NAME_IN_USE = 10058  # JetStream err_code
REPLICAS_NOT_CLUSTERED = 10074  # "replicas > 1 not supported in non-clustered mode"
INSUFFICIENT_RESOURCES = 10023  # e.g. more replicas than servers


class ClusterLayoutError(LocalError):
    """What NATS holds is not a cluster this relay can use."""


class ClusterSetupError(LocalError):
    """NATS cannot hold the cluster as configured (no JetStream, too few servers)."""


@dataclass(frozen=True, slots=True)
class Layout:
    streams: int
    store_id: bytes

    def stream_of(self, room: bytes) -> int:
        """The stream that holds `room` (stable: the count never changes)."""
        digest = hashlib.blake2b(room, digest_size=8).digest()
        return int.from_bytes(digest, "big") % self.streams

    def stream(self, room: bytes) -> str:
        return stream_name(self.stream_of(room))

    def room_subject(self, room: bytes) -> str:
        return f"{ROOM_SUBJECT}{self.stream_of(room)}.{room.hex()}"

    def late_prefix(self, room: bytes) -> str:
        """`ghostline.late.<k>.<room hex>.`: + `<sender>.<counter>` names one receipt."""
        return f"{LATE_SUBJECT}{self.stream_of(room)}.{room.hex()}."

    def names(self) -> list[str]:
        return [stream_name(k) for k in range(self.streams)]


def stream_name(k: int) -> str:
    return f"{STREAM_PREFIX}{k}"


def room_of(live_subject: str) -> bytes | None:
    """The room of a `ghostline.live.<room hex>` subject (None if it names none)."""
    text = live_subject[len(LIVE_SUBJECT) :]
    if len(text) != 32:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


async def open_layout(link: Link, retention: Retention) -> tuple[Layout, KeyValue]:
    """Find the cluster's layout in NATS, or make it; returns it and the rosters bucket.
    Waits (up to STALL_LIMIT) while JetStream is not ready yet (a NATS cluster electing
    its leaders)."""
    deadline = time.monotonic() + STALL_LIMIT
    try:
        return await link.retry("JetStream", lambda: _open(link, retention), deadline)
    except APIError as err:
        if transient(err):
            raise
        raise _refused(link, err) from err


def _refused(link: Link, err: APIError) -> ClusterSetupError:
    """JetStream's refusal to make a stream or bucket, as what the operator must change."""
    replicas = link.config.replicas
    said = err.description or str(err)
    if err.err_code == REPLICAS_NOT_CLUSTERED:
        return ClusterSetupError(
            f"--cluster-replicas {replicas} needs a NATS cluster of at least {replicas}"
            f" servers, but NATS at {link.server_url} is a single server ({said}): use"
            " --cluster-replicas 1, or cluster the nats-servers (docs/DEPLOYMENT.md)"
        )
    if err.err_code == INSUFFICIENT_RESOURCES:
        return ClusterSetupError(
            f"NATS at {link.server_url} cannot make the cluster's streams ({said}): with"
            f" --cluster-replicas {replicas} it needs {replicas} servers with JetStream and"
            " room in their JetStream limits (max_file_store)"
        )
    return ClusterSetupError(
        f"NATS at {link.server_url} refused to make the cluster's streams ({said},"
        f" JetStream error {err.err_code}): check --cluster-replicas and the servers'"
        " JetStream configuration"
    )


async def _check_jetstream(link: Link) -> None:
    """Refuse a NATS without JetStream at once: no server answers JetStream's API, and
    the one this node reached says it does not run it."""
    nc, _ = link.connected()
    try:
        await nc.request("$JS.API.INFO", b"", timeout=ACK_TIMEOUT)
    except nats.errors.NoRespondersError:
        if not link.server_has_jetstream:
            raise ClusterSetupError(
                f"NATS at {link.server_url} does not run JetStream, where the cluster keeps"
                " its rooms: start nats-server with -js (or a jetstream { store_dir: ... }"
                " block in its configuration)"
            ) from None
        raise


async def _open(link: Link, retention: Retention) -> tuple[Layout, KeyValue]:
    await _check_jetstream(link)
    _, js = link.connected()
    config = link.config
    try:
        await js.stream_info(OLD_STREAM)
    except JsNotFoundError:
        pass
    else:
        raise _old_layout()
    facts = await js.create_key_value(_bucket(CLUSTER_BUCKET, config))
    streams = await _stream_count(facts, config)
    store_id = await _store_id(facts)
    layout = Layout(streams, store_id)
    for k in range(streams):
        await _ensure_stream(link, k, retention)
    rooms = await js.create_key_value(_bucket(ROOMS_BUCKET, config))
    await _add_or_update(
        js,
        StreamConfig(
            name=LIVE_ROOMS_STREAM,
            subjects=[LIVE_ROOM_SUBJECT + "*"],
            storage=StorageType.FILE,
            num_replicas=config.replicas,
            max_msgs_per_subject=1,  # a room's new message replaces its old one
            discard=DiscardPolicy.OLD,
            allow_direct=True,
        ),
    )
    return layout, rooms


def _bucket(name: str, config: ClusterConfig) -> KeyValueConfig:
    return KeyValueConfig(
        bucket=name, history=1, storage=StorageType.FILE, replicas=config.replicas
    )


async def _read(kv: KeyValue, key: str) -> bytes | None:
    try:
        return (await kv.get(key)).value or b""
    except KeyNotFoundError:
        return None


async def _stream_count(kv: KeyValue, config: ClusterConfig) -> int:
    """The stream count: kept in the bucket before the store id, so a store id without
    it can only come from the one-stream layout."""
    stored = await _read(kv, STREAMS_KEY)
    if stored is None:
        if await _read(kv, STORE_ID_KEY) is not None:
            raise _old_layout()
        wanted = config.streams or DEFAULT_STREAMS
        with contextlib.suppress(KeyWrongLastSequenceError):  # else another node was first
            await kv.create(STREAMS_KEY, str(wanted).encode())
        stored = await _read(kv, STREAMS_KEY) or b""
    try:
        count = int(stored)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_STREAMS:
        raise StorageUnavailable(f"the cluster's stream count in NATS is damaged ({stored!r})")
    if config.streams is not None and config.streams != count:
        raise ClusterLayoutError(
            f"this cluster has {count} streams (fixed when it was created), "
            f"not the {config.streams} --cluster-streams asks for"
        )
    return count


async def _store_id(kv: KeyValue) -> bytes:
    with contextlib.suppress(KeyWrongLastSequenceError):  # else another node made it first
        await kv.create(STORE_ID_KEY, os.urandom(STORE_ID_LEN))
    value = await _read(kv, STORE_ID_KEY) or b""
    if len(value) != STORE_ID_LEN:
        raise StorageUnavailable(f"the cluster's store id in NATS is damaged ({value!r})")
    return bytes(value)


def _old_layout() -> ClusterLayoutError:
    return ClusterLayoutError(
        f"NATS holds a one-stream cluster of an earlier GhostLine (stream {OLD_STREAM}), "
        "which this relay cannot use: remove it (docs/DEPLOYMENT.md) or use another NATS"
    )


async def _ensure_stream(link: Link, k: int, retention: Retention) -> None:
    _, js = link.connected()
    config = StreamConfig(
        name=stream_name(k),
        subjects=[f"{ROOM_SUBJECT}{k}.*", f"{LATE_SUBJECT}{k}.>"],
        storage=StorageType.FILE,
        num_replicas=link.config.replicas,
        # a backstop only: a room's count limit is exact on reads (chunks.Floor) and
        # applied by retention.py; every chunk holds at least one message but a marker
        max_msgs_per_subject=retention.max_messages + 1,
        discard=DiscardPolicy.OLD,
        allow_direct=True,
        republish=RePublish(src=f"{ROOM_SUBJECT}{k}.*", dest=LIVE_SUBJECT + "{{wildcard(1)}}"),
    )
    await _add_or_update(js, config)


async def _add_or_update(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except BadRequestError as err:
        if err.err_code != STREAM_NAME_IN_USE:
            raise
        await js.update_stream(config)


async def leaders(link: Link, layout: Layout) -> dict[str, str]:
    """Each stream's leader (the NATS server it commits on), by stream name."""
    _, js = link.connected()
    out = {}
    for name in layout.names():
        info = await js.stream_info(name)
        cluster = info.cluster
        out[name] = (cluster.leader if cluster is not None else None) or "?"
    return out


async def spread_leaders(link: Link, layout: Layout) -> None:
    """Ask JetStream to move stream leaders off any server that leads more than its
    share (ceil(streams / servers)), to the server leading the fewest: JetStream elects
    leaders without regard to each other, and a server that came back leads nothing."""
    if link.config.replicas < 2:
        return
    _, js = link.connected()
    placement: dict[str, str] = {}
    servers: set[str] = set()
    for name in layout.names():
        cluster = (await js.stream_info(name)).cluster
        if cluster is None or not cluster.leader:
            return  # an election is on: leave it be
        placement[name] = cluster.leader
        servers |= {cluster.leader, *(p.name for p in cluster.replicas or [] if p.name)}
    share = -(-layout.streams // len(servers))
    led = {server: 0 for server in sorted(servers)}
    for leader in placement.values():
        led[leader] += 1
    for name, leader in placement.items():
        target = min(led, key=lambda s: led[s])
        if led[leader] <= share or led[target] >= share:
            continue
        try:
            await link.api(f"STREAM.LEADER.STEPDOWN.{name}", {"placement": {"preferred": target}})
        except Exception as err:  # placement is an optimisation: the stream still works
            log_event(log, "cluster_leader_not_moved", stream=name, error=repr(err))
            continue
        led[leader] -= 1
        led[target] += 1


def log_placement(node: str, layout: Layout, placement: dict[str, str]) -> None:
    """One line saying where each stream's leader is."""
    log_event(
        log, "cluster_streams", node=node, streams=layout.streams,
        servers=len(set(placement.values())),
        leaders=",".join(f"{name}@{server}" for name, server in placement.items()),
    )  # fmt: skip
