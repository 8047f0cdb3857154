"""The cluster's pure parts: chunk, batch and forward codecs, the retention floor, the
presence snapshot parser, the room-to-stream mapping and the check of a stored roster.
Bytes from NATS are hostile until checked: every damaged input raises the codec's own
error, nothing else."""

from __future__ import annotations

import os

import pytest

from ghostline.relay.backend import Appended, Publish, RosterDamaged, StoredMessage
from ghostline.relay.cluster import chunks, forward, items
from ghostline.relay.cluster.chunks import ChunkError, Floor
from ghostline.relay.cluster.forward import ForwardError, Reply
from ghostline.relay.cluster.items import Items, ItemsError
from ghostline.relay.cluster.layout import Layout, room_of
from ghostline.relay.cluster.presence import parse_snapshot
from ghostline.relay.cluster.registry import _checked_roster
from ghostline.relay.config import Retention

ROOM = bytes(range(16))


def _publishes(sizes: list[int], sender: int = 1, counter: int = 10) -> list[Publish]:
    return [Publish(ROOM, sender, counter + i, os.urandom(n)) for i, n in enumerate(sizes)]


def test_a_chunk_decodes_to_what_was_built():
    pubs = _publishes([50, 0, 300])
    body, built = chunks.build(12, 1000, {1: 12, 0: 3}, Items.of(pubs), b"w" * 8, "node-a")
    got = chunks.decode(body)
    assert (got.last, got.total, got.tops, got.write_id) == (12, 1000, {1: 12, 0: 3}, b"w" * 8)
    assert got.messages() == built.messages()
    assert (got.first, got.last, got.count, got.node) == (10, 12, 3, "node-a")
    assert got.messages() == [StoredMessage(10 + i, p.sealed) for i, p in enumerate(pubs)]
    assert got.messages(after=11) == [StoredMessage(12, pubs[2].sealed)]
    assert got.totals_before() == [650, 700, 700]
    assert got.find(1, 11) == 11 and got.find(1, 13) is None and got.find(0, 10) is None
    assert chunks.peek_last(body) == 12


def test_a_marker_chunk_holds_a_head_and_no_messages():
    body, _ = chunks.build(40, 5000, {2: 7}, chunks.EMPTY, b"m" * 8, "b")
    marker = chunks.decode(body)
    assert (marker.count, marker.first, marker.last, marker.messages()) == (0, 41, 40, [])
    assert marker.tops == {2: 7}


def test_every_cut_or_bit_flip_of_a_chunk_is_refused_or_decodes_within_its_bounds(rng):
    body, _ = chunks.build(9, 900, {1: 9}, Items.of(_publishes([20, 30], counter=8)), bytes(8), "n")
    for cut in range(len(body)):
        with pytest.raises(ChunkError):
            chunks.decode(body[:cut])
    for _ in range(500):
        damaged = bytearray(body)
        damaged[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
        try:
            chunk = chunks.decode(bytes(damaged))
        except ChunkError:
            continue
        assert sum(chunk.items.sizes) == len(chunk.items.data) <= chunk.total
        assert chunk.count <= chunk.last


def test_a_batch_whose_count_outruns_its_bytes_is_refused_before_it_is_read():
    encoded = items.encode(Items.of(_publishes([5])))
    with pytest.raises(ItemsError):
        items.decode(b"\xff\xff\xff\xff" + encoded[4:])


def test_parts_and_joins_of_a_batch_keep_every_message_in_order():
    batch = Items.of(_publishes([3, 0, 7, 1]))
    again = items.join([batch.part(0, 1), batch.part(1, 3), batch.part(3, 4)])
    assert again.senders == batch.senders and again.counters == batch.counters
    assert again.sizes == batch.sizes and again.data == batch.data
    assert [batch.sealed(i) for i in range(4)] == [m.sealed for m in batch.messages(1)]


def test_a_forward_carries_each_room_and_its_messages():
    other = bytes(range(16, 32))
    first, second = _publishes([10, 20]), _publishes([5])
    data = forward.encode_request([(ROOM, Items.of(first)), (other, Items.of(second))])
    (room, got), (room2, got2) = forward.decode_request(data)
    assert room == ROOM and got.messages(1) == [
        StoredMessage(1 + i, p.sealed) for i, p in enumerate(first)
    ]
    assert room2 == other and got2.messages(7) == [StoredMessage(7, second[0].sealed)]
    for bad in (
        b"",
        bytes([1]) + data[1:],  # the one-room version of earlier releases
        data[:-1],
        data + b"\x00",
        bytes([2, 0, 0]),  # no rooms
        bytes([2, 0, 1]) + ROOM + (5).to_bytes(4, "big") + bytes(5),  # items that do not add up
        bytes([2, 0, 1]) + ROOM + (4).to_bytes(4, "big") + bytes(4),  # a room without messages
        bytes([2, 0, 1]) + ROOM + (2**32 - 1).to_bytes(4, "big") + data,  # runs past the end
    ):
        with pytest.raises(ForwardError):
            forward.decode_request(bad)


def _two_room_request() -> bytes:
    shares = [(ROOM, Items.of(_publishes([10, 0, 20]))), (bytes(16), Items.of(_publishes([5])))]
    return forward.encode_request(shares)


def test_every_cut_of_a_forward_is_refused():
    data = _two_room_request()
    for cut in range(len(data)):
        with pytest.raises(ForwardError):
            forward.decode_request(data[:cut])


def test_a_damaged_forward_is_refused_or_decodes_to_exactly_its_own_bytes(rng):
    data = _two_room_request()
    for _ in range(2000):
        damaged = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            damaged[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        garbage = rng.randbytes(rng.randrange(64))
        for bad in (bytes(damaged), bytes([forward.VERSION]) + garbage):
            try:
                shares = forward.decode_request(bad)
            except ForwardError:
                continue
            assert forward.encode_request(shares) == bad  # within its own bounds, nothing else
            assert all(len(items) for _, items in shares)


def test_an_owner_answers_each_room_of_a_forward_in_order():
    replies = [forward.encode_stored([Appended(7, False)]), forward.encode_closing()]
    data = forward.encode_replies(replies)
    assert forward.decode_replies(data, 2) == replies
    for bad, expected in (
        (data, 3),
        (data, 1),
        (data + b"\x00", 2),
        (forward.encode_replies([]), 1),
    ):
        with pytest.raises(ForwardError):
            forward.decode_replies(bad, expected)
    for cut in range(len(data)):
        with pytest.raises(ForwardError):
            forward.decode_replies(data[:cut], 2)


def test_a_damaged_owner_answer_is_refused_or_holds_exactly_its_replies(rng):
    data = forward.encode_replies([forward.encode_stored([Appended(3, False)]), b"\x02"])
    for _ in range(2000):
        damaged = bytearray(data)
        damaged[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        try:
            replies = forward.decode_replies(bytes(damaged), 2)
        except ForwardError:
            continue
        assert forward.encode_replies(replies) == bytes(damaged)


def test_an_owner_answers_a_run_when_all_is_new_and_a_list_otherwise():
    run = forward.encode_stored([Appended(7, False), Appended(8, False)])
    assert run == bytes([Reply.STORED_RUN]) + (7).to_bytes(8, "big")
    assert forward.decode_reply(run, 2)[:2] == (Reply.STORED_RUN, [(7, False, ()), (8, False, ())])
    mixed = forward.encode_stored([Appended(3, True), Appended(9, False)])
    assert forward.decode_reply(mixed, 2)[1] == [Appended(3, True), Appended(9, False)]
    assert forward.decode_reply(forward.encode_failed("disk full"), 5)[2] == "disk full"
    assert forward.decode_reply(forward.encode_closing(), 5)[0] is Reply.CLOSING


@pytest.mark.parametrize(
    "reply",
    [
        b"",
        b"\x09",
        bytes([Reply.STORED]) + (1).to_bytes(8, "big") + b"\x00",  # one result for two
        bytes([Reply.STORED]) + bytes(9) * 2,  # seq 0
        bytes([Reply.STORED]) + ((1).to_bytes(8, "big") + b"\x02") * 2,  # flag 2
        bytes([Reply.STORED_RUN]) + bytes(8),  # seq 0
        bytes([Reply.STORED_RUN]) + (2**63 - 1).to_bytes(8, "big"),  # runs past the limit
        bytes([Reply.STORED_RUN]) + bytes(7),
    ],
)
def test_a_malformed_owner_reply_is_refused(reply):
    with pytest.raises(ForwardError):
        forward.decode_reply(reply, 2)


def test_the_retention_floor_keeps_the_newest_by_count_and_bytes_and_always_the_head():
    floor = Floor.of(100, 10_000, Retention(max_messages=10, max_bytes=500))
    assert floor.holds(91, 9_600) and not floor.holds(90, 9_600)  # count: 91..100
    assert not floor.holds(95, 9_499) and floor.holds(95, 9_500)  # bytes: the last 500
    assert floor.holds(100, 0)  # the newest stays whatever its size
    body, _ = chunks.build(
        100, 10_000, {}, Items.of(_publishes([300, 200, 100], counter=0)), bytes(8), "n"
    )
    held = floor.held(chunks.decode(body))
    assert [m.seq for m in held] == [99, 100]  # 98 starts 600 bytes before the end


def test_snapshots_parse_and_a_cut_one_is_refused():
    room2 = bytes(16)
    first = ROOM + (2).to_bytes(2, "big") + b"\x00\x01\x00\x02"
    data = b"\x01" + first + room2 + bytes(2)
    # a room held with nobody online in it (a presence watcher's) is listed empty
    assert parse_snapshot(data) == {ROOM: frozenset({1, 2}), room2: frozenset()}
    assert parse_snapshot(b"") is None  # a goodbye
    whole_records = {1, 1 + len(first), len(data)}
    for cut in range(1, len(data)):
        parsed = parse_snapshot(data[:cut])
        assert (parsed is not None) == (cut in whole_records), cut


def test_a_room_always_maps_to_the_same_stream_and_rooms_spread_over_all(rng):
    layout = Layout(8, bytes(16))
    assert layout.stream_of(bytes(16)) == Layout(8, rng.randbytes(16)).stream_of(bytes(16)) == 6
    counts = [0] * 8
    for _ in range(800):
        counts[layout.stream_of(rng.randbytes(16))] += 1
    assert min(counts) > 50
    assert layout.room_subject(ROOM) == f"ghostline.room.{layout.stream_of(ROOM)}.{ROOM.hex()}"
    assert room_of(f"ghostline.live.{ROOM.hex()}") == ROOM
    assert room_of("ghostline.live.zz") is None and room_of("ghostline.live." + "g" * 32) is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (None, "no roster"),  # an entry with no value
        (b"", "a roster of the wrong type or length"),
        (b"k" * 32, "a roster of the wrong type or length"),  # one member
        (b"k" * 33, "a roster of the wrong type or length"),  # no whole number of keys
        (b"k" * 32 * 256, "a roster of the wrong type or length"),  # above 255 members
    ],
)
def test_a_roster_read_back_from_nats_that_is_no_roster_raises_what_is_wrong(value, problem):
    with pytest.raises(RosterDamaged, match=f"{ROOM.hex()} is damaged: {problem}"):
        _checked_roster(ROOM, value)


def test_a_roster_read_back_from_nats_is_cut_into_its_verify_keys():
    keys = tuple(bytes([i]) * 32 for i in range(255))
    assert _checked_roster(ROOM, b"".join(keys)) == keys
    assert _checked_roster(ROOM, b"".join(keys[:2])) == keys[:2]
