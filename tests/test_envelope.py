"""The public header of a sealed message (protocol-v1 section 4)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ghostline.protocol.envelope import (
    HEADER_LEN,
    Envelope,
    read_envelope,
    sealed_length,
    tags_offset,
)


def test_the_header_is_42_bytes_big_endian_in_section_4_order() -> None:
    env = Envelope(1, 1, bytes(range(16)), 0x0102, 0x0304, 5, 6, 7)
    assert env.pack() == (
        b"\x01\x01" + bytes(range(16)) + b"\x01\x02\x03\x04" + (5).to_bytes(8, "big")
        + (6).to_bytes(8, "big") + (7).to_bytes(4, "big")
    )  # fmt: skip
    assert len(env.pack()) == HEADER_LEN == 42


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
def test_read_envelope_reads_back_what_pack_wrote(env: Envelope, tail: bytes) -> None:
    assert read_envelope(env.pack() + tail) == env
    assert read_envelope(memoryview(env.pack())) == env


def test_sealed_length_counts_header_ciphertext_and_one_tag_per_recipient() -> None:
    assert sealed_length(1, 2) == 42 + 1 + 16
    assert sealed_length(100, 255) == 42 + 100 + 16 * 254
    env = Envelope(1, 1, bytes(16), 0, 3, 0, 0, 10)
    assert env.sealed_len == 42 + 10 + 32 and tags_offset(env) == 52


def test_read_envelope_refuses_fewer_than_42_bytes() -> None:
    with pytest.raises(ValueError, match="at least 42"):
        read_envelope(bytes(41))
