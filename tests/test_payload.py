"""Payloads (docs/PROTOCOL.md section 7): text, file header, file chunk;
and the file transfer's use of them (ghostline.files): reassembly in any order,
splitting, and safe file names."""

from __future__ import annotations

import dataclasses
import hashlib
import random
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ghostline.errors import PayloadError, RemoteError
from ghostline.files import FileAssembly, safe_file_name, split_file
from ghostline.protocol.envelope import HEADER_LEN, TAG_LEN
from ghostline.protocol.frames import DEFAULT_MAX_FRAME
from ghostline.protocol.payload import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    FileChunk,
    FileHeader,
    Kind,
    TextPayload,
    decode,
    encode_text,
)

TID = bytes.fromhex("0102030405060708")
T = 1735689600


def header_for(data: bytes, chunk_size: int = 4, name: str = "f.bin") -> FileHeader:
    header, _ = split_file(data, chunk_size, transfer_id=TID, sent_at=T, name=name)
    return header


def chunks_for(data: bytes, chunk_size: int = 4) -> list[FileChunk]:
    _, chunks = split_file(data, chunk_size, transfer_id=TID, sent_at=T, name="f.bin")
    return list(chunks)


# --- encoding ------------------------------------------------------------------------


def test_text_payload_has_kind_time_and_utf8_body() -> None:
    raw = encode_text("hé", T)
    assert raw == b"\x01" + T.to_bytes(4, "big") + "hé".encode()
    assert decode(raw) == TextPayload("hé", T)


def test_file_header_layout_is_byte_exact() -> None:
    digest = hashlib.sha256(b"abcdefghij").digest()
    header = FileHeader(TID, 10, 4, 3, digest, "a.txt", T)
    raw = header.encode()
    assert raw == (
        b"\x02" + T.to_bytes(4, "big") + TID + (10).to_bytes(8, "big") + (4).to_bytes(4, "big")
        + (3).to_bytes(4, "big") + digest + b"a.txt"
    )  # fmt: skip
    assert decode(raw) == header


def test_file_chunk_layout_is_byte_exact() -> None:
    chunk = FileChunk(TID, 7, b"data", T)
    assert chunk.encode() == b"\x03" + T.to_bytes(4, "big") + TID + (7).to_bytes(4, "big") + b"data"
    assert decode(chunk.encode()) == chunk


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(),
    sent_at=st.integers(0, 2**32 - 1),
    data=st.binary(min_size=1, max_size=300),
    index=st.integers(0, 2**32 - 1),
    total=st.integers(0, 2**40),
    chunk_size=st.integers(1, MAX_CHUNK_SIZE),
)
def test_every_kind_round_trips(
    text: str, sent_at: int, data: bytes, index: int, total: int, chunk_size: int
) -> None:
    count = -(-total // chunk_size)
    assume(count < 2**32)
    digest = hashlib.sha256(data).digest()
    for obj in (
        TextPayload(text, sent_at),
        FileChunk(TID, index, data, sent_at),
        FileHeader(TID, total, chunk_size, count, digest, text, sent_at),
    ):
        assert decode(obj.encode()) == obj


@pytest.mark.parametrize(
    "raw, words",
    [
        (b"", "shorter than"),
        (b"\x01\x00\x00\x00", "shorter than"),
        (b"\x00" + bytes(4) + b"x", "unknown payload kind 0x00"),
        (b"\x04" + bytes(4), "unknown payload kind 0x04"),
        (b"\xff" + bytes(4) + b"x", "unknown payload kind 0xff"),
        (b"\x01" + bytes(4) + b"\xff\xfe", "not valid UTF-8"),
        (b"\x02" + bytes(4) + bytes(55), "needs at least 56"),
        (b"\x03" + bytes(4) + bytes(12), "needs more than 12"),
    ],
)
def test_malformed_payloads_raise_a_remote_payload_error(raw: bytes, words: str) -> None:
    with pytest.raises(PayloadError, match=words) as caught:
        decode(raw)
    assert isinstance(caught.value, RemoteError)


def test_a_file_header_whose_chunk_count_disagrees_is_a_payload_error() -> None:
    good = FileHeader(TID, 10, 4, 3, bytes(32), "a", T).encode()
    bad_count = good[:25] + (4).to_bytes(4, "big") + good[29:]
    with pytest.raises(PayloadError, match="make 3 chunks, not 4"):
        decode(bad_count)
    zero_chunk_size = good[:21] + bytes(4) + good[25:]
    with pytest.raises(PayloadError, match="chunk size 0"):
        decode(zero_chunk_size)
    bad_name = good[:61] + b"\xc3"
    with pytest.raises(PayloadError, match="file name is not valid UTF-8"):
        decode(bad_name)


def test_encoding_refuses_values_that_do_not_fit() -> None:
    with pytest.raises(ValueError):
        TextPayload("x", 2**32)
    with pytest.raises(ValueError):
        TextPayload("x", -1)
    with pytest.raises(ValueError):
        FileChunk(TID, 0, b"", T)
    with pytest.raises(ValueError):
        FileChunk(b"short", 0, b"x", T)
    with pytest.raises(ValueError):
        FileHeader(TID, 10, MAX_CHUNK_SIZE + 1, 1, bytes(32), "a", T)


def test_kinds_have_their_protocol_numbers() -> None:
    assert (Kind.TEXT, Kind.FILE_HEADER, Kind.FILE_CHUNK) == (1, 2, 3)


def test_a_sealed_max_size_chunk_fits_the_relays_frame_for_255_members() -> None:
    chunk = FileChunk(TID, 0, bytes(MAX_CHUNK_SIZE), T).encode()
    frame = 4 + 1 + 8 + HEADER_LEN + len(chunk) + TAG_LEN * 254  # length, type, seq
    assert frame - 4 <= DEFAULT_MAX_FRAME
    default = 1 + 8 + HEADER_LEN + 17 + DEFAULT_CHUNK_SIZE + TAG_LEN * 254
    assert default == 69668 < DEFAULT_MAX_FRAME // 10


# --- splitting -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 8, 13])
def test_split_file_makes_consistent_chunks(size: int) -> None:
    data = bytes(range(size))
    header, chunks = split_file(data, 4, transfer_id=TID, sent_at=T, name="x")
    parts = list(chunks)
    assert header.total_size == size and header.chunk_count == len(parts) == -(-size // 4)
    assert header.sha256 == hashlib.sha256(data).digest()
    assert b"".join(c.data for c in parts) == data
    assert [c.index for c in parts] == list(range(len(parts)))
    assert all(len(c.data) == header.chunk_len(c.index) for c in parts)


def test_split_file_reads_a_path_and_names_it_after_the_file(tmp_path: Path) -> None:
    path = tmp_path / "report.pdf"
    data = random.Random(1).randbytes(10_000)
    path.write_bytes(data)
    header, chunks = split_file(path, 4096, transfer_id=TID, sent_at=T)
    assert header.name == "report.pdf" and header.total_size == 10_000
    assert b"".join(c.data for c in chunks) == data


def test_split_file_needs_a_name_for_bytes_and_a_valid_chunk_size() -> None:
    with pytest.raises(ValueError):
        split_file(b"abc", transfer_id=TID, sent_at=T)
    with pytest.raises(ValueError):
        split_file(b"abc", 0, transfer_id=TID, sent_at=T, name="x")


# --- reassembly ----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=200),
    chunk_size=st.integers(1, 32),
    order_seed=st.integers(0, 2**32),
    header_at=st.integers(0, 1000),
)
def test_a_file_reassembles_from_parts_in_any_order_with_duplicates(
    data: bytes, chunk_size: int, order_seed: int, header_at: int
) -> None:
    header, chunks = split_file(data, chunk_size, transfer_id=TID, sent_at=T, name="x")
    parts: list[FileHeader | FileChunk] = list(chunks)
    rng = random.Random(order_seed)
    parts += rng.sample(parts, k=len(parts) // 2)  # some exact duplicates
    rng.shuffle(parts)
    parts.insert(header_at % (len(parts) + 1), header)
    assembly = FileAssembly(TID)
    results = [assembly.add(p) for p in parts]
    finished = [r for r in results if r is not None]
    assert finished == [data]
    assert assembly.done and assembly.received == assembly.total == len(data)
    first_seen = {id(p): parts.index(p) for p in parts}  # index of first equal part
    assert results.index(data) == max(first_seen.values())


def test_progress_counts_distinct_bytes_received() -> None:
    data = b"0123456789"
    parts = chunks_for(data)
    assembly = FileAssembly(TID)
    assert (assembly.received, assembly.total, assembly.missing()) == (0, None, [])
    assert assembly.add(parts[2]) is None
    assert assembly.add(parts[2]) is None
    assert assembly.received == 2
    assert assembly.add(header_for(data)) is None
    assert (assembly.received, assembly.total, assembly.missing()) == (2, 10, [0, 1])
    assert assembly.add(parts[0]) is None
    assert assembly.add(parts[1]) == data
    assert assembly.add(parts[1]) is None  # a duplicate after completion is ignored


def test_an_empty_file_completes_on_its_header() -> None:
    assert FileAssembly(TID).add(header_for(b"")) == b""


def test_a_chunk_that_differs_from_one_already_received_is_rejected() -> None:
    data = b"0123456789"
    assembly = FileAssembly(TID)
    assembly.add(header_for(data))
    assembly.add(FileChunk(TID, 0, b"0123", T))
    with pytest.raises(PayloadError, match="differs"):
        assembly.add(FileChunk(TID, 0, b"0124", T))
    assert assembly.received == 4
    assembly.add(FileChunk(TID, 1, b"4567", T))
    assert assembly.add(FileChunk(TID, 2, b"89", T)) == data
    with pytest.raises(PayloadError, match="differs"):
        assembly.add(FileChunk(TID, 2, b"88", T))


@pytest.mark.parametrize(
    "chunk, words",
    [
        (FileChunk(TID, 3, b"xx", T), "past the file"),
        (FileChunk(TID, 0, b"012", T), "header says 4"),
        (FileChunk(TID, 2, b"890", T), "header says 2"),
        (FileChunk(b"otherid!", 0, b"0123", T), "another file transfer"),
    ],
)
def test_chunks_inconsistent_with_the_header_are_rejected(chunk: FileChunk, words: str) -> None:
    assembly = FileAssembly(TID)
    assembly.add(header_for(b"0123456789"))
    with pytest.raises(PayloadError, match=words):
        assembly.add(chunk)
    assert assembly.received == 0


def test_a_header_inconsistent_with_early_chunks_is_rejected_and_not_adopted() -> None:
    assembly = FileAssembly(TID)
    assembly.add(FileChunk(TID, 5, b"0123", T))
    with pytest.raises(PayloadError, match="past the file"):
        assembly.add(header_for(b"0123456789"))
    assert assembly.header is None


def test_a_second_different_header_is_rejected_and_a_repeated_one_ignored() -> None:
    assembly = FileAssembly(TID)
    header = header_for(b"0123456789")
    assembly.add(header)
    assert assembly.add(dataclasses.replace(header, sent_at=T + 9)) is None
    with pytest.raises(PayloadError, match="different header"):
        assembly.add(header_for(b"0123456789", name="other.bin"))


def test_a_file_whose_hash_does_not_match_is_never_returned() -> None:
    data = b"0123456789"
    lying = FileHeader(TID, 10, 4, 3, hashlib.sha256(b"something else").digest(), "f", T)
    assembly = FileAssembly(TID)
    assembly.add(lying)
    for chunk in chunks_for(data):
        if chunk.index < 2:
            assert assembly.add(chunk) is None
        else:
            with pytest.raises(PayloadError, match="SHA-256"):
                assembly.add(chunk)
    assert assembly.failed and not assembly.done
    with pytest.raises(PayloadError, match="already failed"):
        assembly.add(chunks_for(data)[0])


def test_a_file_over_the_size_limit_is_refused() -> None:
    assembly = FileAssembly(TID, max_size=9)
    with pytest.raises(PayloadError, match="limit"):
        assembly.add(header_for(b"0123456789"))
    early = FileAssembly(TID, max_size=6)
    early.add(FileChunk(TID, 0, b"0123", T))
    with pytest.raises(PayloadError, match="limit"):
        early.add(FileChunk(TID, 1, b"4567", T))


# --- file names ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, safe",
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\x\\evil.exe", "evil.exe"),
        ("/abs/path/", "file"),
        ("..", "file"),
        ("", "file"),
        (".bashrc", "bashrc"),
        ("a\x00b\x1bc.txt", "abc.txt"),
        ("tab\there\n.txt", "tab here .txt"),
        ("\xa0\u3000", "file"),
        ("innocent\u202eexe.txt", "innocentexe.txt"),
        ('what?<>:"|*.txt', "what_______.txt"),
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        ("  spaced name .  ", "spaced name"),
        ("café.txt", "café.txt"),
    ],
)
def test_safe_file_name_keeps_only_a_harmless_bare_name(name: str, safe: str) -> None:
    assert safe_file_name(name) == safe


def test_safe_file_name_caps_length_and_keeps_the_extension() -> None:
    safe = safe_file_name("é" * 300 + ".tar")
    assert safe.endswith(".tar") and len(safe.encode()) <= 200
    assert safe_file_name("x" * 500) == "x" * 200


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_safe_file_name_never_returns_a_path_or_a_dot_name(name: str) -> None:
    safe = safe_file_name(name)
    assert safe and "/" not in safe and "\\" not in safe and "\x00" not in safe
    assert not safe.startswith(".") and safe not in (".", "..")
    assert len(safe.encode()) <= 200
    assert all(ch.isprintable() or ch == " " for ch in safe)
