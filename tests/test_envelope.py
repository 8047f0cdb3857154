"""The public header of a sealed message (docs/PROTOCOL.md section 4)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ghostline.protocol.envelope import (
    HEADER_LEN,
    IDENTITY_LEN,
    Envelope,
    header_after,
    pack_header,
    pack_identity,
    read_envelope,
    sealed_length,
    unpack_header,
)

SECTION_4 = (
    b"\x01\x01" + bytes(range(16)) + b"\x01\x02\x03\x04" + (5).to_bytes(8, "big")
    + (6).to_bytes(8, "big") + (7).to_bytes(4, "big")
)  # fmt: skip


def test_the_header_is_42_bytes_big_endian_in_section_4_order() -> None:
    assert pack_header(bytes(range(16)), 0x0102, 0x0304, 5, 6, 7) == SECTION_4
    assert len(SECTION_4) == HEADER_LEN == 42
    suite_2 = pack_header(bytes(range(16)), 0x0102, 0x0304, 5, 6, 7, version=2, suite=2)
    assert suite_2 == b"\x02\x02" + SECTION_4[2:]


def test_the_identity_is_the_first_five_fields_and_the_position_the_last_three() -> None:
    identity = pack_identity(bytes(range(16)), 0x0102, 0x0304)
    assert len(identity) == IDENTITY_LEN == 22 and SECTION_4.startswith(identity)
    assert pack_identity(bytes(range(16)), 0x0102, 0x0304, 2, 2) == b"\x02\x02" + identity[2:]
    framed = b"xyz" + SECTION_4
    assert unpack_header(framed, 3) == tuple(read_envelope(SECTION_4))


def test_a_header_after_a_frame_head_is_read_in_one_unpack_as_identity_and_position() -> None:
    head = struct.Struct(">IB")
    both = header_after(head)
    assert both.size == head.size + HEADER_LEN
    framed = head.pack(43, 3) + SECTION_4
    identity = pack_identity(bytes(range(16)), 0x0102, 0x0304)
    assert both.unpack_from(framed) == (43, 3, identity, 5, 6, 7)
    with pytest.raises(ValueError):
        header_after(struct.Struct("<IB"))  # the header is big-endian


FIELDS = st.builds(
    Envelope,
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(min_size=16, max_size=16),
    st.integers(0, 2**16 - 1),
    st.integers(0, 2**16 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**32 - 1),
)


@settings(max_examples=50, deadline=None)
@given(env=FIELDS, tail=st.binary(max_size=20))
def test_read_envelope_reads_back_what_pack_header_wrote(env: Envelope, tail: bytes) -> None:
    header = pack_header(**env._asdict())
    assert read_envelope(header + tail) == env
    assert read_envelope(memoryview(header)) == env


def test_sealed_length_counts_header_ciphertext_and_one_tag_per_recipient() -> None:
    assert sealed_length(1, 2) == 42 + 1 + 16
    assert sealed_length(100, 255) == 42 + 100 + 16 * 254


def test_read_envelope_refuses_fewer_than_42_bytes() -> None:
    with pytest.raises(ValueError, match="at least 42"):
        read_envelope(bytes(41))
