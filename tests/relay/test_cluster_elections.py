"""A request to a stream that lost its leader goes unanswered until ACK_TIMEOUT. While the
node waits for a stream (`Link.stalled`), JetStream's advisory that the stream has a
leader again ends that stream's requests under way at once (LeaderElected, retried like
an unanswered request), so a failover costs the election, not the election plus up to
ACK_TIMEOUT. With a real nats-server: a subscriber that never answers stands in for the
stream with no leader, and the test publishes the advisory nats-server would."""

# ruff: noqa: F811 - pytest fixtures imported from clusterkit are test parameters

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import pytest
from clusterkit import nats_server, needs_nats, synced  # noqa: F401 - a fixture

from ghostline.relay import RelayLimits, RelayServer, Retention
from ghostline.relay.cluster import NatsBackend
from ghostline.relay.cluster.layout import ROOMS_KV_STREAM
from ghostline.relay.cluster.link import ClusterConfig, LeaderElected, Link, StorageUnavailable
from waiting import until

pytestmark = needs_nats

ELECTED = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED."


async def nothing() -> None:
    pass


@pytest.fixture
async def link(nats_server) -> AsyncIterator[Link]:
    link = Link(ClusterConfig((nats_server.url,), "a"), nothing, lambda: None)
    await link.connect()
    yield link
    await link.close()


@pytest.fixture
async def unanswered(nats_server) -> AsyncIterator[tuple[nats.NATS, list[str]]]:
    """Another client: it takes `leaderless.>` requests and never answers them."""
    nc = await nats.connect(nats_server.url)
    heard: list[str] = []

    async def hear(msg) -> None:
        heard.append(msg.subject)

    await nc.subscribe("leaderless.>", cb=hear)
    await synced(nc)
    yield nc, heard
    await nc.close()


async def test_while_waiting_an_election_ends_that_streams_requests_at_once(link, unanswered):
    nc, heard = unanswered
    link.stalled("stream S-1", TimeoutError())
    to_s1 = asyncio.ensure_future(link.js_request("S-1", "leaderless.s1", b"chunk"))
    to_s2 = asyncio.ensure_future(link.js_request("S-2", "leaderless.s2", b"chunk"))
    await until(lambda: len(heard) == 2, what="both requests under way")
    await nc.publish(ELECTED + "S-1", b"{}")
    with pytest.raises(LeaderElected):
        await to_s1
    assert not to_s2.done()  # another stream's election would end it, not this one
    await nc.publish(ELECTED + "S-2", b"{}")
    with pytest.raises(LeaderElected):
        await to_s2


async def test_an_election_is_no_timeout_and_ends_nothing_while_nothing_waits(
    link, unanswered, monkeypatch
):
    nc, heard = unanswered
    monkeypatch.setattr("ghostline.relay.cluster.link.ACK_TIMEOUT", 0.5)
    asking = asyncio.ensure_future(link.js_request("S-1", "leaderless.s1", b"chunk"))
    await until(lambda: heard, what="the request under way")
    await nc.publish(ELECTED + "S-1", b"{}")
    with pytest.raises(nats.errors.TimeoutError) as timed_out:
        await asking  # (after ACK_TIMEOUT)
    assert not isinstance(timed_out.value, LeaderElected)


async def test_a_request_answered_while_waiting_is_answered(link, nats_server):
    nc = await nats.connect(nats_server.url)

    async def answer(msg) -> None:
        await msg.respond(b"stored")

    await nc.subscribe("answered.>", cb=answer)
    await synced(nc)
    link.stalled("stream S-1", TimeoutError())
    reply = await link.js_request("S-1", "answered.s1", b"chunk")
    assert reply.data == b"stored"
    await nc.close()


async def test_while_waiting_an_election_also_ends_a_key_value_call_of_its_stream(
    nats_server, monkeypatch
):
    """The registry's rosters live in a key-value bucket, which nats-py reads and writes
    itself: its calls race the bucket's stream election too (`Link.racing`)."""
    backend = NatsBackend(ClusterConfig((nats_server.url,), "here"), Retention())
    server = RelayServer(backend, RelayLimits())
    await server.start("127.0.0.1", 0, 0)
    try:
        kv = backend.registry._rosters_kv
        unanswered = asyncio.Event()
        real_get = kv.get

        async def first_never_answered(key: str, *args: object, **kwargs: object) -> object:
            monkeypatch.setattr(kv, "get", real_get)  # the next try reaches NATS
            unanswered.set()
            await asyncio.Event().wait()  # no answer, and no timeout: only the election
            raise AssertionError("unreachable")

        monkeypatch.setattr(kv, "get", first_never_answered)
        backend.link.stalled("stream S-1", TimeoutError())
        looking = asyncio.ensure_future(backend.roster(bytes(16)))
        await until(unanswered.is_set, what="the roster's look-up under way")
        assert not looking.done()
        nc = await nats.connect(nats_server.url)
        await nc.publish(ELECTED + ROOMS_KV_STREAM, b"{}")
        await nc.close()
        assert await until(looking.done, what="the look-up tried again and answered")
        assert looking.result() is None  # no such room, as NATS says
    finally:
        await server.close()


def failing(*errors: Exception) -> Callable[[], Awaitable[str]]:
    """An op that raises `errors` one per try, then answers."""
    left = list(errors)

    async def op() -> str:
        if left:
            raise left.pop(0)
        return "answered"

    return op


def logged(caplog: pytest.LogCaptureFixture, event: str, what: str) -> int:
    """How many `event` lines about `what` were logged (the test sets INFO)."""
    return sum(
        f"event={event}" in r.getMessage() and what in r.getMessage() for r in caplog.records
    )


async def test_a_wait_that_nats_ends_with_a_refusal_is_over_and_elections_end_nothing(
    link, unanswered, monkeypatch, caplog
):
    caplog.set_level(logging.INFO, "ghostline.relay")
    nc, heard = unanswered
    refusal = ValueError("refused")  # (not a hiccup: a RosterDamaged, a full relay)
    with pytest.raises(ValueError):
        await link.retry("a roster", failing(TimeoutError(), refusal), time.monotonic() + 10)
    assert logged(caplog, "cluster_stalled", "a roster") == 1
    assert logged(caplog, "cluster_resumed", "a roster") == 1  # the wait is over
    monkeypatch.setattr("ghostline.relay.cluster.link.ACK_TIMEOUT", 0.5)
    asking = asyncio.ensure_future(link.js_request("S-1", "leaderless.s1", b"chunk"))
    await until(lambda: heard, what="the request under way")
    await nc.publish(ELECTED + "S-1", b"{}")
    with pytest.raises(nats.errors.TimeoutError) as timed_out:
        await asking  # nothing waits any more: no race, the request's own timeout
    assert not isinstance(timed_out.value, LeaderElected)


async def test_a_wait_given_up_at_its_deadline_is_over_and_the_next_is_logged_anew(link, caplog):
    caplog.set_level(logging.INFO, "ghostline.relay")
    with pytest.raises(StorageUnavailable):
        await link.retry("a roster", failing(*[TimeoutError()] * 1000), time.monotonic() + 0.3)
    assert await link.retry("a roster", failing(TimeoutError()), time.monotonic() + 10) == (
        "answered"
    )
    assert logged(caplog, "cluster_stalled", "a roster") == 2  # the second is a new wait
    assert logged(caplog, "cluster_resumed", "a roster") == 1
