"""Relay and presence frames (docs/PROTOCOL.md section 8): the sans-IO decoder and body codecs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ghostline.errors import ProtocolError
from ghostline.protocol.frames import (
    DEFAULT_MAX_FRAME,
    DELIVER_HEAD_LEN,
    ErrorCode,
    Frame,
    FrameDecoder,
    FrameSplitter,
    FrameType,
    Hello,
    Port,
    Welcome,
    decode_accepted,
    decode_deliver,
    decode_error,
    decode_member,
    decode_presence,
    deliver_head,
    deliver_seq,
    encode_accepted,
    encode_deliver,
    encode_error,
    encode_frame,
    encode_member,
    encode_presence,
    join_statement,
)

U64 = st.integers(0, 2**64 - 1)
U16 = st.integers(0, 2**16 - 1)


def one_frame(raw: bytes) -> Frame:
    frames = FrameDecoder().feed(raw)
    assert len(frames) == 1
    return frames[0]


def hello(n: int = 3, member: int = 1, resume_after: int = 7) -> Hello:
    return Hello(bytes(range(16)), member, tuple(bytes([i]) * 32 for i in range(n)), resume_after)


# --- framing -------------------------------------------------------------------------


def test_a_frame_is_length_type_body() -> None:
    assert encode_frame(FrameType.PING, b"hi") == b"\x00\x00\x00\x03\x04hi"
    assert encode_frame(FrameType.WELCOME) == b"\x00\x00\x00\x01\x82"


def test_frames_fed_one_byte_at_a_time_come_out_whole() -> None:
    raw = encode_frame(FrameType.PUBLISH, b"abc") + encode_frame(FrameType.PING)
    decoder = FrameDecoder()
    out: list[Frame] = []
    for i in range(len(raw)):
        got = decoder.feed(raw[i : i + 1])
        out += got
        if i < 7:
            assert got == []
    assert out == [Frame(FrameType.PUBLISH, b"abc"), Frame(FrameType.PING, b"")]
    assert decoder.buffered == 0


def test_many_frames_in_one_feed_come_out_in_order_and_a_tail_waits() -> None:
    frames = [Frame(FrameType.DELIVER, bytes([i]) * i) for i in range(50)]
    raw = b"".join(encode_frame(f.type, f.body) for f in frames)
    decoder = FrameDecoder()
    assert decoder.feed(raw + b"\x00\x00\x00\x05\x04ab") == frames
    assert decoder.buffered == 7
    assert decoder.feed(b"cd") == [Frame(FrameType.PING, b"abcd")]


def test_an_oversize_length_is_refused_before_its_body_is_buffered() -> None:
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError) as caught:
        decoder.feed((DEFAULT_MAX_FRAME + 1).to_bytes(4, "big"))
    assert caught.value.code == ErrorCode.TOO_LARGE == 2
    small = FrameDecoder(max_frame=10)
    assert small.feed(encode_frame(FrameType.PING, bytes(9))) == [Frame(FrameType.PING, bytes(9))]
    with pytest.raises(ProtocolError) as caught:
        small.feed(encode_frame(FrameType.PING, bytes(10))[:4])
    assert caught.value.code == ErrorCode.TOO_LARGE


def test_the_largest_allowed_frame_is_accepted() -> None:
    body = bytes(DEFAULT_MAX_FRAME - 1)
    assert FrameDecoder().feed(encode_frame(FrameType.PUBLISH, body)) == [
        Frame(FrameType.PUBLISH, body)
    ]


def test_a_zero_length_frame_is_malformed() -> None:
    with pytest.raises(ProtocolError) as caught:
        FrameDecoder().feed(b"\x00\x00\x00\x00")
    assert caught.value.code == ErrorCode.MALFORMED == 1


@settings(max_examples=60, deadline=None)
@given(
    frames=st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=300)), max_size=10),
    cuts=st.lists(st.integers(0, 4000), max_size=8),
)
def test_any_split_of_a_stream_yields_the_same_frames(
    frames: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    raw = b"".join(encode_frame(t, b) for t, b in frames)
    points = sorted({c % (len(raw) + 1) for c in cuts} | {0, len(raw)})
    decoder = FrameDecoder()
    out: list[Frame] = []
    for a, b in zip(points, points[1:], strict=False):
        out += decoder.feed(raw[a:b])
    assert out == [Frame(t, b) for t, b in frames]


def test_the_splitter_checks_every_prefix_before_any_frame_is_handled() -> None:
    # A good frame followed by a bad length in the same read: the read is refused as a
    # whole (the relay answers before handling the good one).
    splitter = FrameSplitter(max_frame=100)
    good = encode_frame(FrameType.PUBLISH, b"abc")
    with pytest.raises(ProtocolError) as caught:
        splitter.feed(good + (101).to_bytes(4, "big"))
    assert caught.value.code == ErrorCode.TOO_LARGE


def test_the_splitter_says_where_the_whole_frames_end_and_hands_them_out() -> None:
    splitter = FrameSplitter()
    one, two = encode_frame(FrameType.HELLO, b"h"), encode_frame(FrameType.PING, b"p")
    stop = splitter.feed(one + two + two[:3])
    assert stop == len(one + two) and bytes(splitter.buffer[:stop]) == one + two
    assert splitter.pop() == Frame(FrameType.HELLO, b"h")  # one at a time: the handshake
    stop = splitter.feed(b"")  # what is left, checked again
    assert splitter.take(stop) == [Frame(FrameType.PING, b"p")]
    assert splitter.pop() is None and splitter.buffered == 3
    assert splitter.take(splitter.feed(two[3:])) == [Frame(FrameType.PING, b"p")]


# --- handshake -----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    room=st.binary(min_size=16, max_size=16),
    n=st.integers(2, 255),
    data=st.data(),
    resume_after=U64,
)
def test_hello_round_trips(room: bytes, n: int, data: st.DataObject, resume_after: int) -> None:
    member = data.draw(st.integers(0, n - 1))
    roster = tuple(bytes([i % 256]) * 32 for i in range(n))
    msg = Hello(room, member, roster, resume_after)
    body = msg.encode()
    assert len(body) == 16 + 2 + 2 + 32 * n + 8
    assert Hello.decode(body) == msg
    assert one_frame(encode_frame(FrameType.HELLO, body)).body == body


@pytest.mark.parametrize(
    "body",
    [
        b"",
        bytes(19),
        hello().encode()[:-1],
        hello().encode() + b"\x00",
        hello(n=1, member=0).encode(),
        hello(n=256, member=0).encode(),
        hello(n=3, member=3).encode(),
    ],
    ids=["empty", "short_head", "one_short", "one_long", "n_1", "n_256", "member_n"],
)
def test_malformed_hello_is_a_bad_handshake(body: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        Hello.decode(body)
    assert caught.value.code == ErrorCode.BAD_HANDSHAKE


def test_the_join_statement_binds_port_room_member_and_nonce() -> None:
    room, nonce = bytes(range(16)), b"\xaa" * 32
    statement = join_statement(Port.PRESENCE, room, 258, nonce)
    assert statement == b"ghostline-join-v1" + b"\x02" + room + b"\x01\x02" + nonce
    assert join_statement(Port.RELAY, room, 258, nonce)[17] == 0x01


# --- bodies --------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(seq=U64, counter=U64, sealed=st.binary(max_size=200), member=U16)
def test_fixed_bodies_round_trip(seq: int, counter: int, sealed: bytes, member: int) -> None:
    deliver = one_frame(encode_deliver(seq, sealed))
    assert deliver.type == FrameType.DELIVER and decode_deliver(deliver.body) == (seq, sealed)
    head = deliver_head(seq, len(sealed))
    assert len(head) == DELIVER_HEAD_LEN and head + sealed == encode_deliver(seq, sealed)
    assert deliver_seq(head) == seq
    accepted = one_frame(encode_accepted(seq, counter))
    assert accepted.type == FrameType.ACCEPTED
    assert decode_accepted(accepted.body) == (seq, counter)
    online = one_frame(encode_member(FrameType.ONLINE, member))
    assert online.type == FrameType.ONLINE and decode_member(online.body) == member


@settings(max_examples=60, deadline=None)
@given(members=st.lists(U16, max_size=300), code=U16, reason=st.text(max_size=100))
def test_presence_and_error_round_trip(members: list[int], code: int, reason: str) -> None:
    presence = one_frame(encode_presence(members))
    assert presence.type == FrameType.PRESENCE
    assert decode_presence(presence.body) == tuple(members)
    error = one_frame(encode_error(code, reason))
    assert error.type == FrameType.ERROR and decode_error(error.body) == (code, reason)


@pytest.mark.parametrize(
    "decode, body",
    [
        (decode_deliver, bytes(7)),
        (decode_accepted, bytes(15)),
        (decode_accepted, bytes(17)),
        (decode_member, bytes(1)),
        (decode_member, bytes(3)),
        (decode_presence, b"\x00"),
        (decode_presence, b"\x00\x02\x00\x01"),
        (decode_presence, b"\x00\x01\x00\x01\x00"),
    ],
)
def test_malformed_bodies_are_malformed_frames(decode, body: bytes) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError) as caught:
        decode(body)
    assert caught.value.code == ErrorCode.MALFORMED


def test_a_malformed_error_frame_still_decodes_to_something_showable() -> None:
    assert decode_error(b"\x00") == (ErrorCode.MALFORMED, "malformed ERROR frame")
    assert decode_error(b"\x00\x06\xff") == (6, "\ufffd")


def test_frame_type_and_error_code_numbers_match_the_protocol() -> None:
    assert {t.name: t.value for t in FrameType} == {
        "HELLO": 0x01, "PROVE": 0x02, "PUBLISH": 0x03, "PING": 0x04,
        "CHALLENGE": 0x81, "WELCOME": 0x82, "DELIVER": 0x83, "ACCEPTED": 0x84,
        "PONG": 0x85, "ERROR": 0x8F, "PRESENCE": 0x90, "ONLINE": 0x91, "OFFLINE": 0x92,
    }  # fmt: skip
    assert [c.value for c in ErrorCode] == list(range(1, 10))
    assert DEFAULT_MAX_FRAME == 1024 * 1024 + 256


def test_welcome_carries_the_head_and_the_store_id() -> None:
    store_id = bytes(range(16))
    frame = Welcome(7, store_id).encode()
    assert frame == b"\x00\x00\x00\x19\x82" + (7).to_bytes(8, "big") + store_id
    assert Welcome.decode(frame[5:]) == Welcome(7, store_id)


def test_a_welcome_of_the_wrong_length_is_a_bad_handshake() -> None:
    for body in (bytes(8), bytes(23), bytes(25)):
        with pytest.raises(ProtocolError) as caught:
            Welcome.decode(body)
        assert caught.value.code == ErrorCode.BAD_HANDSHAKE
