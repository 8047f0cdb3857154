"""Kit sets: layout (docs/PROTOCOL.md sections 2-3), creation safety, and corrupt-kit errors."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ghostline.errors import EntropyError, KitDamagedError, KitError, KitExistsError
from ghostline.pad import kitset as kitset_module
from ghostline.pad.kit import Kit
from ghostline.pad.kitset import create_kit_set
from ghostline.protocol import kitformat
from ghostline.protocol.kitformat import verify_key_of

NAMES = ["alice", "bob", "carol"]
PAD_ID = bytes(range(16))
CREATED = "2025-01-01T00:00:00Z"
SEEDS = [bytes([i + 1]) * 32 for i in range(3)]


def counting_stream() -> tuple[Callable[[int], bytes], list[int], bytearray]:
    """A random_bytes whose output is predictable, recording each request's size."""
    requests: list[int] = []
    produced = bytearray()

    def random_bytes(k: int) -> bytes:
        requests.append(k)
        start = len(produced)
        chunk = bytes((start + i) * 7 % 251 for i in range(k))
        produced.extend(chunk)
        return chunk

    return random_bytes, requests, produced


def read_prefix(path: Path) -> tuple[int, dict[str, Any], int]:
    """(H, header object, base) read straight from the bytes, per docs/PROTOCOL.md section 2."""
    raw = path.read_bytes()
    assert raw[:8] == b"GHSTKIT1"
    (header_len,) = struct.unpack(">I", raw[8:12])
    header = json.loads(raw[12 : 12 + header_len].decode("utf-8"))
    base = -(-(12 + header_len) // 4096) * 4096
    assert raw[12 + header_len : base] == bytes(base - 12 - header_len)
    return header_len, header, base


def test_created_kits_follow_the_protocol_layout_byte_for_byte(tmp_path: Path) -> None:
    random_bytes, _, stream = counting_stream()
    n, slice_len, auth_keys = 3, 1000, 20
    paths = create_kit_set(
        tmp_path,
        NAMES,
        slice_len=slice_len,
        auth_keys=auth_keys,
        group="friends",
        random_bytes=random_bytes,
        entropy="test stream",
        chunk_size=777,  # odd, so chunks straddle every region boundary
        signing_seeds=SEEDS,
        pad_id=PAD_ID,
        created=CREATED,
    )
    assert paths == [tmp_path / f"{name}.ghostkit" for name in NAMES]
    region = auth_keys * 32
    pad_len = n * slice_len
    # Generation order: the group pad, then pair s -> r regions with s, then r, increasing.
    pairs = [(s, r) for s in range(n) for r in range(n) if s != r]
    assert len(stream) == pad_len + len(pairs) * region
    pair_bytes = {
        pair: bytes(stream[pad_len + i * region : pad_len + (i + 1) * region])
        for i, pair in enumerate(pairs)
    }
    for me, path in enumerate(paths):
        _, header, base = read_prefix(path)
        raw = path.read_bytes()
        assert len(raw) == base + n * slice_len + 2 * (n - 1) * auth_keys * 32
        assert raw[base : base + pad_len] == stream[:pad_len]
        expected_keys = b"".join(pair_bytes[(me, r)] for r in range(n) if r != me)
        expected_keys += b"".join(pair_bytes[(s, me)] for s in range(n) if s != me)
        assert raw[base + pad_len :] == expected_keys
        assert header["self"] == me
        assert header["signing_key"] == SEEDS[me].hex()


def test_each_kit_opens_and_agrees_with_the_others(kit_set: Callable[..., list[Path]]) -> None:
    paths = kit_set(NAMES, slice_len=5000, auth_keys=50, chunk_size=1024)
    kits = [Kit.open(p, writable=False) for p in paths]
    try:
        n = len(kits)
        pads = {bytes(k.region(k.layout.base, k.layout.pad_len)) for k in kits}
        assert len(pads) == 1, "the group pad is identical in every kit"
        for s in range(n):
            for r in range(n):
                if s == r:
                    continue
                for j in (0, 1, 49):
                    assert kits[s].outbound_key(r, j) == kits[r].inbound_key(s, j)
        for s in range(n):
            assert kits[s].key_stream(s, 0, 5000) == kits[(s + 1) % n].key_stream(s, 0, 5000)
    finally:
        for k in kits:
            k.close()


def test_kit_files_are_private_and_carry_every_header_field(
    kit_set: Callable[..., list[Path]],
) -> None:
    paths = kit_set(NAMES, slice_len=64, auth_keys=2, group="friends", entropy="os.urandom")
    headers = [read_prefix(p)[1] for p in paths]
    pad_ids = {h["pad_id"] for h in headers}
    assert len(pad_ids) == 1 and re.fullmatch(r"[0-9a-f]{32}", pad_ids.pop())
    for me, (path, header) in enumerate(zip(paths, headers, strict=True)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert list(header) == [
            "format",
            "suite",
            "pad_id",
            "group",
            "created",
            "members",
            "self",
            "signing_key",
            "slice_len",
            "auth_keys",
            "entropy",
        ]
        assert header["format"] == 1
        assert header["suite"] == "ghostline-otp-poly1305-v1"
        assert header["group"] == "friends"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", header["created"])
        assert [m["name"] for m in header["members"]] == NAMES
        assert header["members"] == headers[0]["members"]
        assert header["self"] == me
        verify_key = bytes.fromhex(header["members"][me]["verify_key"])
        assert verify_key_of(bytes.fromhex(header["signing_key"])) == verify_key
        assert (header["slice_len"], header["auth_keys"]) == (64, 2)
        assert header["entropy"] == "os.urandom"


def test_the_same_random_stream_makes_the_same_kits_whatever_the_chunk_size(
    tmp_path: Path,
) -> None:
    contents = []
    for chunk in (1, 333, 1 << 22):
        random_bytes, requests, _ = counting_stream()
        (tmp_path / str(chunk)).mkdir()
        paths = create_kit_set(
            tmp_path / str(chunk),
            NAMES,
            slice_len=300,
            auth_keys=5,
            group="",
            random_bytes=random_bytes,
            entropy="x",
            signing_seeds=SEEDS,
            chunk_size=chunk,
            pad_id=PAD_ID,
            created=CREATED,
        )
        assert max(requests) <= chunk
        contents.append([p.read_bytes() for p in paths])
    assert contents[0] == contents[1] == contents[2]


def test_key_regions_larger_than_a_chunk_are_streamed_not_refused(tmp_path: Path) -> None:
    random_bytes, requests, _ = counting_stream()
    # 4096 keys = 128 KiB per pair, 32 times the chunk: the old code refused > 1 chunk.
    paths = create_kit_set(
        tmp_path,
        ["a", "b"],
        slice_len=10,
        auth_keys=4096,
        group="",
        random_bytes=random_bytes,
        entropy="x",
        chunk_size=4096,
    )
    assert max(requests) == 4096
    with Kit.open(paths[0], writable=False) as a, Kit.open(paths[1], writable=False) as b:
        assert a.outbound_key(1, 4095) == b.inbound_key(0, 4095)
        assert b.outbound_key(0, 4095) == a.inbound_key(1, 4095)


def test_existing_kit_file_is_never_overwritten(
    kit_set: Callable[..., list[Path]], tmp_path: Path
) -> None:
    out = tmp_path / "kits"
    out.mkdir()
    (out / "bob.ghostkit").write_bytes(b"precious")
    with pytest.raises(KitExistsError, match="bob.ghostkit already exists"):
        kit_set(NAMES, out=out)
    assert (out / "bob.ghostkit").read_bytes() == b"precious"
    assert sorted(p.name for p in out.iterdir()) == ["bob.ghostkit"]


def test_a_file_appearing_during_creation_is_not_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Defeat the early existence check so that O_EXCL is what refuses the file.
    monkeypatch.setattr(kitset_module.os.path, "lexists", lambda _path: False)
    (tmp_path / "carol.ghostkit").write_bytes(b"precious")
    with pytest.raises(KitExistsError, match="carol.ghostkit"):
        create_kit_set(
            tmp_path, NAMES, slice_len=8, auth_keys=1, group="", random_bytes=os.urandom, entropy=""
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["carol.ghostkit"]
    assert (tmp_path / "carol.ghostkit").read_bytes() == b"precious"


@pytest.mark.parametrize("fmt", [1, 2])
@pytest.mark.parametrize("failure", [EntropyError("source broke"), KeyboardInterrupt()])
def test_a_failure_midway_leaves_no_kit_file_behind(
    tmp_path: Path, failure: BaseException, fmt: int
) -> None:
    drawn = 0

    def failing(k: int) -> bytes:
        nonlocal drawn
        drawn += k
        if drawn > 5000:  # inside the pair regions, after the pad was written
            raise failure
        return os.urandom(k)

    with pytest.raises(type(failure)):
        create_kit_set(
            tmp_path,
            NAMES,
            slice_len=1000,
            auth_keys=100,
            group="",
            random_bytes=failing,
            entropy="",
            chunk_size=512,
            format=fmt,
        )
    assert list(tmp_path.iterdir()) == []


def test_a_write_error_is_raised_and_leaves_no_kit_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = kitset_module._pwrite_all
    calls = 0

    def disk_fills(fd: int, data: bytes, at: int) -> None:
        nonlocal calls
        calls += 1
        if calls > 10:
            raise OSError(28, "No space left on device")
        real(fd, data, at)

    monkeypatch.setattr(kitset_module, "_pwrite_all", disk_fills)
    with pytest.raises(OSError, match="No space left"):
        create_kit_set(
            tmp_path,
            NAMES,
            slice_len=10_000,
            auth_keys=100,
            group="",
            random_bytes=os.urandom,
            entropy="",
            chunk_size=256,
        )
    assert list(tmp_path.iterdir()) == []


def test_a_source_giving_the_wrong_number_of_bytes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KitError, match="gave 3 bytes, not 8"):
        create_kit_set(
            tmp_path,
            ["a", "b"],
            slice_len=4,
            auth_keys=1,
            group="",
            random_bytes=lambda k: b"abc",
            entropy="",
        )
    assert list(tmp_path.iterdir()) == []


# --- corrupt kits --------------------------------------------------------------------


@pytest.fixture
def kit_path(kit_set: Callable[..., list[Path]]) -> Path:
    return kit_set(NAMES, slice_len=100, auth_keys=4)[0]


def rewrite_header(path: Path, new_header: bytes) -> None:
    """Replace the header with `new_header`, keeping the pad regions after it."""
    header_len, _, base = read_prefix(path)
    body = path.read_bytes()[base:]
    path.write_bytes(kitformat.encode_prefix(new_header) + body)


def edit_header(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    header = read_prefix(path)[1]
    edit(header)
    rewrite_header(path, json.dumps(header).encode())


@pytest.mark.parametrize("magic", [b"GHSTKIT3", b"GHSTKIT0", b"\x00" * 8, b"PK\x03\x04abcd"])
def test_a_kit_with_bad_magic_is_refused(kit_path: Path, magic: bytes) -> None:
    raw = bytearray(kit_path.read_bytes())
    raw[:8] = magic
    kit_path.write_bytes(raw)
    with pytest.raises(KitError, match="bad magic"):
        Kit.open(kit_path)


def test_a_format_1_kit_given_the_format_2_magic_is_refused_as_damaged(kit_path: Path) -> None:
    # Its header bytes then stand where format 2 expects the checksum to cover them.
    raw = bytearray(kit_path.read_bytes())
    raw[:8] = b"GHSTKIT2"
    kit_path.write_bytes(raw)
    with pytest.raises(KitDamagedError, match="damaged"):
        Kit.open(kit_path)


@pytest.mark.parametrize("keep", [0, 5, 11, 40])
def test_a_kit_truncated_inside_its_header_is_refused(kit_path: Path, keep: int) -> None:
    kit_path.write_bytes(kit_path.read_bytes()[:keep])
    with pytest.raises(KitError, match="truncated"):
        Kit.open(kit_path)


@pytest.mark.parametrize("change", [-1, +1, -32])
def test_a_kit_of_the_wrong_length_is_refused(kit_path: Path, change: int) -> None:
    raw = kit_path.read_bytes()
    kit_path.write_bytes(raw[:change] if change < 0 else raw + bytes(change))
    with pytest.raises(KitError, match="truncated or wrong length"):
        Kit.open(kit_path)


@pytest.mark.parametrize("key", ["pad_id", "members", "signing_key", "entropy", "suite"])
def test_a_kit_header_missing_a_key_is_refused(kit_path: Path, key: str) -> None:
    edit_header(kit_path, lambda h: h.pop(key))
    with pytest.raises(KitError, match=f"lacks {key}"):
        Kit.open(kit_path)


@pytest.mark.parametrize(
    ("key", "value", "complaint"),
    [
        ("pad_id", "zz" * 16, "pad_id must be 32 lowercase hex"),
        ("pad_id", "AB" * 16, "pad_id must be 32 lowercase hex"),
        ("format", 2, "the header says format 2 but the file is a format-1 kit"),
        ("format", True, "the header says format True but the file is a format-1 kit"),
        ("format", 1.0, "the header says format 1.0 but the file is a format-1 kit"),
        ("suite", "rot13", "suite 'rot13' is not supported"),
        ("self", 3, "not a member index"),
        ("slice_len", -1, "slice_len must be a non-negative integer"),
        ("auth_keys", True, "auth_keys must be a non-negative integer"),
        ("members", [], "members must be a list of 2 to 255"),
        ("group", 7, "group must be a string"),
    ],
)
def test_a_kit_header_with_a_bad_value_is_refused(
    kit_path: Path, key: str, value: object, complaint: str
) -> None:
    edit_header(kit_path, lambda h: h.__setitem__(key, value))
    with pytest.raises(KitError, match=re.escape(complaint)):
        Kit.open(kit_path)


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe{}", b"[1, 2]"])
def test_a_kit_header_that_is_not_a_json_object_is_refused(kit_path: Path, raw: bytes) -> None:
    rewrite_header(kit_path, raw)
    with pytest.raises(KitError, match="header is not"):
        Kit.open(kit_path)


def test_a_kit_whose_signing_key_does_not_match_its_verify_key_is_refused(
    kit_path: Path,
) -> None:
    def swap(header: dict[str, Any]) -> None:
        header["signing_key"] = SEEDS[2].hex()

    edit_header(kit_path, swap)
    with pytest.raises(KitError, match="signing key does not match"):
        Kit.open(kit_path)


def test_a_kit_appears_under_its_name_only_when_complete(tmp_path: Path) -> None:
    seen: list[list[str]] = []

    def watching(k: int) -> bytes:
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        return os.urandom(k)

    create_kit_set(
        tmp_path, ["a", "b"], slice_len=100, auth_keys=2, group="", random_bytes=watching,
        entropy="", chunk_size=64,
    )  # fmt: skip
    for names in seen:
        assert len(names) == 2
        assert all(re.fullmatch(r"\.[ab]\.ghostkit\.partial-[0-9a-f]{16}", n) for n in names)
    assert kit_names(tmp_path) == ["a.ghostkit", "b.ghostkit"]


def test_kits_are_moved_into_place_where_hard_links_are_not_supported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(kitset_module.os, "link", no_links)
    paths = create_kit_set(
        tmp_path, NAMES, slice_len=3000, auth_keys=7, group="", random_bytes=os.urandom,
        entropy="", chunk_size=1000,
    )  # fmt: skip
    assert kit_names(tmp_path) == [p.name for p in paths]
    kits = [Kit.open(p, writable=False) for p in paths]
    assert kits[0].outbound_key(2, 6) == kits[2].inbound_key(0, 6)
    assert kits[1].key_stream(0, 0, 3000) == kits[2].key_stream(0, 0, 3000)
    assert stat.S_IMODE(paths[0].stat().st_mode) == 0o600
    for k in kits:
        k.close()


def kit_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())
