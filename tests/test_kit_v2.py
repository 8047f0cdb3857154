"""Format-2 kits (docs/PROTOCOL.md sections 11-12 and 15): layout byte for byte, the
header checksum, hash keys and masks, and the grant journal."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ghostline.errors import ErasedKeyError, JournalFullError, KitDamagedError, KitError
from ghostline.pad.kit import Kit
from ghostline.pad.kitset import create_kit_set, kit_set_random_len
from ghostline.protocol.grants import JOURNAL_SLOTS, GrantRange
from ghostline.protocol.kitformat import encode_prefix
from helpers import flip

NAMES = ["alice", "bob", "carol"]
PAD_ID = bytes(range(16))
CREATED = "2025-01-01T00:00:00Z"
SEEDS = [bytes([i + 1]) * 32 for i in range(3)]


def counting_stream() -> tuple[Callable[[int], bytes], bytearray]:
    produced = bytearray()

    def random_bytes(k: int) -> bytes:
        start = len(produced)
        chunk = bytes((start + i) * 7 % 251 + 1 for i in range(k))  # never a zero run
        produced.extend(chunk)
        return chunk

    return random_bytes, produced


def read_prefix_v2(raw: bytes) -> tuple[int, dict[str, Any], int]:
    """(H, header, base) straight from the bytes, per section 11, checksum included."""
    assert raw[:8] == b"GHSTKIT2"
    (h,) = struct.unpack(">I", raw[8:12])
    assert raw[12 + h : 44 + h] == hashlib.sha256(raw[: 12 + h]).digest()
    base = -(-(44 + h) // 4096) * 4096
    assert raw[44 + h : base] == bytes(base - 44 - h)
    return h, json.loads(raw[12 : 12 + h].decode("utf-8")), base


def make_v2(out: Path, **kwargs: Any) -> list[Path]:
    args: dict[str, Any] = dict(
        slice_len=1000, auth_keys=20, group="friends", entropy="test stream",
        signing_seeds=SEEDS, pad_id=PAD_ID, created=CREATED, format=2, length_step=24,
    )  # fmt: skip
    if "random_bytes" not in kwargs:
        kwargs["random_bytes"] = os.urandom
    out.mkdir(parents=True, exist_ok=True)
    return create_kit_set(out, NAMES, **(args | kwargs))


def test_created_format_2_kits_follow_the_layout_byte_for_byte(tmp_path: Path) -> None:
    random_bytes, stream = counting_stream()
    n, e, k = 3, 1000, 20
    paths = make_v2(tmp_path, random_bytes=random_bytes, chunk_size=777)
    region = 16 + 16 * k
    pad_len = n * e
    # Generation order: the group pad, then pair s -> r regions (R, then the masks),
    # s then r increasing; the journal is not drawn.
    pairs = [(s, r) for s in range(n) for r in range(n) if s != r]
    assert len(stream) == pad_len + len(pairs) * region == kit_set_random_len(n, e, k, 2)
    pair_bytes = {
        pair: bytes(stream[pad_len + i * region : pad_len + (i + 1) * region])
        for i, pair in enumerate(pairs)
    }
    for me, path in enumerate(paths):
        raw = path.read_bytes()
        _, header, base = read_prefix_v2(raw)
        assert len(raw) == base + pad_len + 2 * (n - 1) * region + 4096
        assert raw[base : base + pad_len] == stream[:pad_len]
        expected = b"".join(pair_bytes[(me, r)] for r in range(n) if r != me)
        expected += b"".join(pair_bytes[(s, me)] for s in range(n) if s != me)
        assert raw[base + pad_len : -4096] == expected
        assert raw[-4096:] == bytes(4096)  # an empty grant journal
        assert list(header) == [
            "format", "suite", "pad_id", "group", "created", "members", "self",
            "signing_key", "slice_len", "auth_keys", "entropy", "length_step",
        ]  # fmt: skip
        assert (header["format"], header["suite"]) == (2, "ghostline-otp-poly1305-v2")
        assert (header["self"], header["length_step"]) == (me, 24)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_format_2_kits_open_and_agree_on_hash_keys_masks_and_pad(tmp_path: Path) -> None:
    kits = [Kit.open(p, writable=False) for p in make_v2(tmp_path, chunk_size=1000)]
    try:
        for kit in kits:
            assert (kit.format, kit.header.length_step) == (2, 24)
        pads = {kit.pad_bytes(0, 3000) for kit in kits}
        assert len(pads) == 1
        for s, kit in enumerate(kits):
            for j in (0, 1, 19):
                keys = kit.outbound_tag_keys(j)
                recipients = [r for r in range(3) if r != s]
                assert keys == [kits[r].inbound_tag_key(s, j) for r in recipients]
                for key, r in zip(keys, recipients, strict=True):
                    region = kits[r].layout.inbound_region(s)
                    raw = bytes(kits[r].region(region, 16 + 16 * 20))
                    assert key == raw[:16] + raw[16 + 16 * j : 32 + 16 * j]  # R || S_j
        every_key = {key for kit in kits for key in kit.outbound_tag_keys(0)}
        assert len(every_key) == 6  # each ordered pair has its own
    finally:
        for kit in kits:
            kit.close()


def test_the_same_stream_makes_the_same_format_2_kits_whatever_the_chunk_size(
    tmp_path: Path,
) -> None:
    contents = []
    for chunk in (1, 333, 1 << 22):
        random_bytes, _ = counting_stream()
        paths = make_v2(tmp_path / str(chunk), random_bytes=random_bytes, chunk_size=chunk)
        contents.append([p.read_bytes() for p in paths])
    assert contents[0] == contents[1] == contents[2]


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"length_step": 0}, "length step must be 1 to 4096"),
        ({"length_step": 4097}, "length step must be 1 to 4096"),
        ({"format": 1, "length_step": 32}, "take no length step"),
        ({"format": 3}, "format 3 does not exist"),
    ],
)
def test_kit_sets_with_an_impossible_format_or_step_are_not_made(
    tmp_path: Path, kwargs: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(KitError, match=complaint):
        make_v2(tmp_path / "kits", **kwargs)
    assert list((tmp_path / "kits").iterdir()) == []


def test_a_format_2_kit_defaults_to_a_length_step_of_32(tmp_path: Path) -> None:
    path = make_v2(tmp_path, length_step=None)[0]
    with Kit.open(path) as kit:
        assert kit.header.length_step == 32


# --- the header checksum -------------------------------------------------------------


@pytest.fixture
def kit_path(tmp_path: Path) -> Path:
    return make_v2(tmp_path / "kits", slice_len=100, auth_keys=4)[0]


def test_every_flipped_bit_of_a_format_2_header_or_checksum_is_refused_as_damaged(
    kit_path: Path,
) -> None:
    good = kit_path.read_bytes()
    (h,) = struct.unpack_from(">I", good, 8)
    for at in range(12, 44 + h):
        kit_path.write_bytes(flip(good, at, 1 << (at % 8)))
        with pytest.raises(KitDamagedError) as caught:
            Kit.open(kit_path)
        assert str(caught.value).startswith(f"{kit_path}: this kit is damaged"), at
    kit_path.write_bytes(good)
    Kit.open(kit_path).close()


def test_a_flipped_hex_digit_of_pad_id_is_refused_not_sent_to_another_room(
    kit_path: Path,
) -> None:
    raw = kit_path.read_bytes()
    at = raw.index(b'"pad_id":"') + len(b'"pad_id":"')
    digit = raw[at : at + 1]
    kit_path.write_bytes(raw[:at] + (b"1" if digit != b"1" else b"2") + raw[at + 1 :])
    with pytest.raises(KitDamagedError, match="damaged"):
        Kit.open(kit_path)


def test_the_checksum_is_checked_before_any_header_field_is_used(kit_path: Path) -> None:
    raw = kit_path.read_bytes()
    (h,) = struct.unpack_from(">I", raw, 8)
    body = raw[4096:]
    # A header that is not even JSON, with a stale checksum: "damaged", not "not JSON".
    garbage = b"[" * 3000
    kit_path.write_bytes(
        raw[:8] + struct.pack(">I", len(garbage)) + garbage + raw[12 + h : 44 + h]
        + bytes(4096 - 44 - len(garbage)) + body
    )  # fmt: skip
    with pytest.raises(KitDamagedError):
        Kit.open(kit_path)
    # The same header with a matching checksum is parsed, and refused for what it is.
    kit_path.write_bytes(encode_prefix(garbage, 2) + body)
    with pytest.raises(KitError, match="not valid UTF-8 JSON") as caught:
        Kit.open(kit_path)
    assert not isinstance(caught.value, KitDamagedError)


def test_a_kit_whose_header_says_another_format_than_its_magic_is_refused(
    kit_path: Path,
) -> None:
    raw = kit_path.read_bytes()
    (h,) = struct.unpack_from(">I", raw, 8)
    header = json.loads(raw[12 : 12 + h])
    header["format"] = 1
    kit_path.write_bytes(encode_prefix(json.dumps(header).encode(), 2) + raw[4096:])
    with pytest.raises(KitError, match="says format 1 but the file is a format-2 kit"):
        Kit.open(kit_path)


def test_a_damaged_pad_region_is_not_a_damaged_kit(kit_path: Path) -> None:
    # Only the header is checksummed: pad damage shows up as messages that fail their
    # tags (test_seal2.py), not at open.
    raw = kit_path.read_bytes()
    at = 4096 + 5
    kit_path.write_bytes(flip(raw, at))
    with Kit.open(kit_path) as kit:
        assert kit.layout.base <= at < kit.layout.base + kit.header.pad_len  # in the pad
        assert bytes(kit.region(at, 1)) == bytes([raw[at] ^ 1])  # read as it is on disk


# --- masks and erasure -----------------------------------------------------------------


def test_an_erased_mask_or_hash_key_reads_as_erased_on_both_sides(tmp_path: Path) -> None:
    a, b, c = (Kit.open(p) for p in make_v2(tmp_path, auth_keys=4))
    try:
        a.erase_outbound_masks(1)
        with pytest.raises(ErasedKeyError):
            a.outbound_tag_keys(1)
        assert a.is_outbound_mask_erased(1, 1) and a.is_outbound_mask_erased(2, 1)
        assert len(a.outbound_tag_keys(2)) == 2  # only that message's masks went
        b.erase_inbound_mask(0, 1)
        assert b.is_inbound_mask_erased(0, 1) and not c.is_inbound_mask_erased(0, 1)
        with pytest.raises(ErasedKeyError):
            b.inbound_tag_key(0, 1)
        c.inbound_tag_key(0, 1)
        a.erase_outbound_hash_keys()
        with pytest.raises(ErasedKeyError):
            a.outbound_tag_keys(3)
        c.erase_inbound_hash_key(0)
        with pytest.raises(ErasedKeyError):
            c.inbound_tag_key(0, 3)
        c.inbound_tag_key(1, 3)  # another pair's R is untouched
        a.erase_pad(10, 5)
        assert a.pad_bytes(8, 9) == b.pad_bytes(8, 2) + bytes(5) + b.pad_bytes(15, 2)
    finally:
        for kit in (a, b, c):
            kit.close()


def test_format_1_erasers_refuse_a_format_2_kit_and_the_reverse(
    tmp_path: Path, kit_set: Callable[..., list[Path]]
) -> None:
    with Kit.open(make_v2(tmp_path / "v2")[0]) as v2, Kit.open(kit_set()[0]) as v1:
        for erase in (
            lambda: v2.erase_outbound_keys(0),
            lambda: v2.erase_inbound_key(1, 0),
            lambda: v2.erase_key_stream(0, 0, 1),
            lambda: v1.erase_outbound_masks(0),
            lambda: v1.erase_inbound_mask(1, 0),
            lambda: v1.erase_outbound_hash_keys(),
            lambda: v1.erase_inbound_hash_key(1),
            lambda: v1.journal(),
        ):
            with pytest.raises(ValueError, match="format"):
                erase()


# --- the grant journal -----------------------------------------------------------------


def test_journal_records_are_appended_in_order_and_survive_reopening(kit_path: Path) -> None:
    records = [GrantRange(1, 150, 200), GrantRange(2, 10, 11), GrantRange(0, 250, 300)]
    with Kit.open(kit_path) as kit:
        assert kit.journal() == []
        for record in records:
            kit.append_journal(record)
        journal_at = kit.layout.journal_offset
    raw = kit_path.read_bytes()
    assert raw[journal_at : journal_at + 54] == b"".join(struct.pack(">HQQ", *r) for r in records)
    assert raw[journal_at + 54 :] == bytes(4096 - 54)
    with Kit.open(kit_path, writable=False) as kit:
        assert kit.journal() == records


def test_a_full_journal_refuses_record_228_and_keeps_the_227(kit_path: Path) -> None:
    with Kit.open(kit_path) as kit:
        for i in range(JOURNAL_SLOTS):
            kit.append_journal(GrantRange(1, i, i + 1))
        before = kit_path.read_bytes()
        with pytest.raises(JournalFullError, match="full"):
            kit.append_journal(GrantRange(1, 250, 251))
        assert kit_path.read_bytes() == before
        assert len(kit.journal()) == 227
    assert JOURNAL_SLOTS == 227


@pytest.mark.parametrize(
    "record",
    [GrantRange(3, 0, 1), GrantRange(1, 5, 5), GrantRange(1, 6, 5), GrantRange(1, 299, 301)],
)
def test_a_record_that_is_no_grant_of_this_group_is_not_journaled(
    kit_path: Path, record: GrantRange
) -> None:
    with Kit.open(kit_path) as kit:
        with pytest.raises(ValueError):
            kit.append_journal(record)
        assert kit.journal() == []


@pytest.mark.parametrize(
    ("slot", "record"),
    [(0, struct.pack(">HQQ", 9, 0, 1)), (0, struct.pack(">HQQ", 1, 7, 3)), (1, b"\x01" * 18)],
)
def test_a_journal_with_an_impossible_record_reads_as_a_damaged_kit(
    kit_path: Path, slot: int, record: bytes
) -> None:
    with Kit.open(kit_path) as kit:
        at = kit.layout.journal_offset
    raw = bytearray(kit_path.read_bytes())
    raw[at + 18 * slot : at + 18 * slot + 18] = record  # slot 1 after an empty slot 0
    kit_path.write_bytes(raw)
    with Kit.open(kit_path) as kit, pytest.raises(KitDamagedError, match="journal is damaged"):
        kit.journal()
