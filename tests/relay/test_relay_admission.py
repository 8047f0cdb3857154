"""What anyone can do to the relay before and around their handshake (review findings):
frames before the PROVE are capped at the largest HELLO, an IPv6 /64 counts as one
address, the joins and leaves of one address are limited in the log, and a client
refused because the relay is full is told so, over TLS too."""

from __future__ import annotations

import asyncio
import re
import ssl
import struct
import time
from pathlib import Path

import pytest
from relaytest_client import Group, RawClient, RelayError, joined

from ghostline.errors import RelayRefused
from ghostline.protocol.envelope import sealed_length
from ghostline.protocol.frames import MAX_HELLO_FRAME, ErrorCode, FrameType, Hello, encode_frame
from ghostline.relay.admission import Admission, source_of
from ghostline.relay.config import RelayLimits
from ghostline.relay.logfmt import LogLimiter
from ghostline.wording.hints import failure_hint
from helpers import self_signed_certificate
from waiting import until, wait_until


async def test_a_frame_before_the_prove_may_not_be_larger_than_the_largest_hello(relay):
    client = await RawClient.connect(relay.relay_port)
    # The length prefix of a 1 MiB "HELLO" alone: refused before its body is buffered.
    await client.send_raw(struct.pack(">I", 1 << 20) + b"\x01")
    reason = await client.expect_error(ErrorCode.TOO_LARGE)
    assert str(MAX_HELLO_FRAME) in reason

    # The largest HELLO there is (255 members) still passes...
    big = Group(255)
    member = await joined(relay.relay_port, big, 254)
    # ...and once WELCOME came, frames up to --max-frame do.
    body = bytes(relay.limits.max_frame - 1 - sealed_length(0, big.n))
    await member.publish(big.sealed(254, 0, body))
    seq, counter = await member.accepted()
    assert (seq, counter) == (1, 0)
    await member.close()


async def test_an_unauthenticated_connection_is_not_read_past_a_few_kib(make_relay):
    relay = await make_relay()
    backend = relay.backend
    store_answers = asyncio.Event()
    lookup = backend.roster

    async def slow_roster(room: bytes):  # the store is slow to say whether it knows the room
        await store_answers.wait()
        return await lookup(room)

    backend.roster = slow_roster  # type: ignore[method-assign]
    group = Group(2)
    client = await RawClient.connect(relay.relay_port)
    hello = encode_frame(FrameType.HELLO, Hello(group.room, 0, group.roster, 0).encode())
    pings = encode_frame(FrameType.PING, bytes(64)) * 40_000  # 2.7 MB behind the HELLO
    client.writer.write(hello + pings)
    (conn,) = relay.connections
    await until(lambda: conn._early_paused, what="the connection no longer read")
    # not read past the mark (by more than one read of asyncio's, 256 KiB)
    assert conn.splitter.buffered < 2 * (4 + MAX_HELLO_FRAME) + 256 * 1024
    store_answers.set()
    await client.expect(FrameType.CHALLENGE)
    await client.expect_error(ErrorCode.BAD_HANDSHAKE)  # a PING where the PROVE belongs


def test_ipv6_addresses_count_by_their_64_prefix():
    assert source_of("2001:db8:1:2::1") == source_of("2001:db8:1:2:ffff:ffff:ffff:ffff")
    assert source_of("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert source_of("2001:db8:1:3::1") != source_of("2001:db8:1:2::1")
    assert source_of("::ffff:10.0.0.5") == "10.0.0.5"  # an IPv4 client on a dual-stack port
    assert source_of("10.0.0.5") == "10.0.0.5"
    assert source_of("fe80::1%eth0") == "fe80::/64"


class _Conn:
    def __init__(self, address: str) -> None:
        self.address = address
        self.source = source_of(address)


def test_one_ipv6_64_cannot_take_more_than_its_share_of_connections():
    admission: Admission[_Conn] = Admission(
        RelayLimits(max_connections_per_address=64), time.monotonic
    )
    refusals = [admission.admit(_Conn(f"2001:db8:1:2::{i:x}")) for i in range(1, 70)]
    assert refusals[:64] == [None] * 64
    assert refusals[64:] == ["relay full: too many connections from your address"] * 5
    assert admission.admit(_Conn("2001:db8:1:3::1")) is None  # the next /64 is another
    assert admission.admit_early("2001:db8:1:2::abcd") is not None  # before TLS too


def test_the_joins_and_leaves_of_one_address_are_limited_in_the_log_and_counted(
    relay_process, tmp_path
):
    cycles = 150
    limits = LogLimiter()
    relay = relay_process(tmp_path / "relay.sqlite")
    group = Group(2)

    async def join_and_leave() -> None:
        for _ in range(cycles):
            client = await joined(relay.relay_port, group, 0)
            await client.close()

    start = time.monotonic()
    asyncio.run(join_and_leave())
    told = re.compile(r"event=(joined|disconnect) .*member=0")
    held = re.compile(r"suppressed=(\d+)")
    summary = re.compile(r'event=suppressed lines="(joined|disconnect) 127\.0\.0\.1" count=(\d+)')

    def counted(event: str) -> int:
        lines = list(relay.stderr_lines)
        shown = [line for line in lines if (m := told.search(line)) and m.group(1) == event]
        return (
            len(shown)
            + sum(int(m.group(1)) for line in shown if (m := held.search(line)))
            + sum(int(m.group(2)) for line in lines
                  if (m := summary.search(line)) and m.group(1) == event)
        )  # fmt: skip

    wait_until(lambda: counted("joined") == cycles and counted("disconnect") == cycles,
               timeout=30, what="every join and leave counted")  # fmt: skip
    elapsed = time.monotonic() - start
    lines = list(relay.stderr_lines)
    for event in ("joined", "disconnect"):
        shown = sum(1 for line in lines if f"event={event} " in line and "member=0" in line)
        assert shown <= limits.burst + limits.rate * elapsed + 1, (event, shown, elapsed)
    assert sum(1 for line in lines if "event=joined " in line) < cycles / 3


async def test_a_tls_relay_that_is_full_says_so_and_the_client_says_it_is_full(
    make_relay, tmp_path: Path
):
    cert, key, _ = self_signed_certificate(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    relay = await make_relay(ssl_context=server_ctx, max_connections_per_address=1)
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    holder = await joined(relay.relay_port, Group(2), 0, tls=ctx)
    with pytest.raises(RelayError) as refused:
        await joined(relay.relay_port, Group(2), 1, tls=ctx)
    assert refused.value.code == ErrorCode.RELAY_FULL
    assert refused.value.reason == "relay full: too many connections from your address"
    hint = failure_hint(RelayRefused(refused.value.code, refused.value.reason))
    assert hint is not None and "at its limit" in hint
    await holder.close()
