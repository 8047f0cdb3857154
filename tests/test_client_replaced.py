"""A hop without TLS between a member and a real relay replaces the DELIVER at one seq,
keeping the seq: with a copy of an older genuine message, or with junk that names the
receiving member as its sender. The real message there must never be skipped silently:
the frame is shown as rejected, settles nothing, and the seq is asked for again; if it
never comes, it is reported missing."""

# ruff: noqa: F811 - the relay fixture imported from test_client is a test parameter

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ghostline.client import (
    AlreadyReceived,
    MessageRejected,
    MessagesMissing,
)
from ghostline.protocol.envelope import pack_header
from ghostline.protocol.frames import Frame, FrameType, encode_deliver
from ghostline.state.member import Member
from helpers import opened_members
from test_client import (  # noqa: F401 - relay: a fixture
    Relay,
    client_for,
    events_until,
    relay,
    send_accepted,
    shown,
    texts,
    through_proxy,
)
from waiting import until


@pytest.fixture
def members(tmp_path: Path) -> Iterator[list[Member]]:
    with opened_members(tmp_path / "kits", 3, seed="replaced") as opened:
        yield opened


def seq_of(frame: Frame) -> int:
    return int.from_bytes(frame.body[:8], "big")


async def test_a_copy_of_an_older_message_put_at_a_seq_is_rejected_and_the_real_one_fetched(
    members: list[Member], relay: Relay
) -> None:
    # mitm.py: the DELIVER at seq 2 is replaced by the sealed bytes of seq 1, once.
    seen: dict[int, bytes] = {}
    replaced: list[int] = []

    def replace_seq_2_once(direction: str, frame: Frame) -> bytes | None:
        if direction != "down" or frame.type != FrameType.DELIVER:
            return None
        seq = seq_of(frame)
        seen.setdefault(seq, frame.body[8:])
        if seq == 2 and not replaced:
            replaced.append(seq)
            return encode_deliver(2, seen[1])
        return None

    async with through_proxy(relay, replace_seq_2_once) as (via, _):
        bob = client_for(members[1], via, gap_wait=0.2)
        alice = client_for(members[0], relay.address)
        async with alice, bob:
            await bob.wait_connected(5)
            for text in ("one", "two", "three"):
                await send_accepted(alice, text)
            events = await events_until(bob, lambda seen: len(shown(seen)) == 3)
            assert shown(events) == ["one", "three", "two"]
            rejected = [e for e in events if isinstance(e, MessageRejected)]
            assert [(e.seq, e.rule) for e in rejected] == [(2, "replayed_counter")]
            assert "holds as seq 1, replayed at seq 2" in rejected[0].reason
            await until(lambda: members[1].relay_cursor == 3, what="the cursor over seq 2")
        assert replaced == [2]


async def test_a_copy_of_an_older_message_at_every_attempt_is_reported_missing(
    members: list[Member], relay: Relay
) -> None:
    seen: dict[int, bytes] = {}

    def replace_seq_2(direction: str, frame: Frame) -> bytes | None:
        if direction != "down" or frame.type != FrameType.DELIVER:
            return None
        seq = seq_of(frame)
        seen.setdefault(seq, frame.body[8:])
        return encode_deliver(2, seen[1]) if seq == 2 else None

    async with through_proxy(relay, replace_seq_2) as (via, _):
        bob = client_for(members[1], via, gap_wait=0.2)
        alice = client_for(members[0], relay.address)
        async with alice, bob:
            await bob.wait_connected(5)
            for text in ("one", "two", "three"):
                await send_accepted(alice, text)
            events = await events_until(
                bob, lambda seen: any(isinstance(e, MessagesMissing) for e in seen)
            )
            assert shown(events) == ["one", "three"]
            missing = [e for e in events if isinstance(e, MessagesMissing)]
            assert [(e.first, e.last) for e in missing] == [(2, 2)]
            assert {(e.seq, e.rule) for e in events if isinstance(e, MessageRejected)} == {
                (2, "replayed_counter")
            }
            assert not any(isinstance(e, AlreadyReceived) and e.seq == 2 for e in events)
            await send_accepted(alice, "four")
            assert await texts(bob, 1) == ["four"]


async def test_junk_naming_the_receiver_as_sender_is_rejected_not_taken_as_its_echo(
    members: list[Member], relay: Relay
) -> None:
    # mitm2.py: junk whose header names bob himself, counter 0 (a counter he used), at
    # seq 2. It needs only pad_id, n and bob's index, all in his HELLO in clear.
    bob_member = members[1]
    h = bob_member.header

    def junk_at_seq_2(direction: str, frame: Frame) -> bytes | None:
        if direction != "down" or frame.type != FrameType.DELIVER or seq_of(frame) != 2:
            return None
        junk = pack_header(h.pad_id, h.self_index, h.n, 0, 0, 20)
        return encode_deliver(2, junk + os.urandom(20 + 16 * (h.n - 1)))

    async with through_proxy(relay, junk_at_seq_2) as (via, _):
        bob = client_for(bob_member, via, gap_wait=0.2)
        alice = client_for(members[0], relay.address)
        async with alice, bob:
            await bob.wait_connected(5)
            assert await send_accepted(bob, "from bob") == 1  # bob's counter 0
            for text in ("one", "two"):
                await send_accepted(alice, text)
            events = await events_until(
                bob, lambda seen: any(isinstance(e, MessagesMissing) for e in seen)
            )
            assert shown(events) == ["two"]
            rejected = [e for e in events if isinstance(e, MessageRejected)]
            assert rejected and {(e.seq, e.rule) for e in rejected} == {(2, "own_message")}
            assert "not the message it sealed" in rejected[0].reason
            missing = [e for e in events if isinstance(e, MessagesMissing)]
            assert [(e.first, e.last) for e in missing] == [(2, 2)]
