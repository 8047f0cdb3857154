"""A malformed kit of either format raises KitError, never anything else (issue 9 item 12).

Kits are built with headers nothing would write: wrong types, missing keys, absurd
sizes, JSON nested thousands deep, numbers past Python's digit limit, truncated files.
Format-2 headers are given a matching checksum, so that the parser behind the checksum
is what is tested (a mismatching checksum is refused before parsing: test_kit_v2.py).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ghostline.cli import main
from ghostline.errors import KitError
from ghostline.pad.kit import Kit
from ghostline.protocol.kitformat import encode_prefix

FORMATS = (1, 2)


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[dict[str, Any], bytes]]:
    """Per format: a valid header object and the kit's bytes after its prefix."""
    from helpers import make_kit_set

    out = {}
    for fmt in FORMATS:
        paths = make_kit_set(
            tmp_path_factory.mktemp(f"f{fmt}"),
            ["alice", "bob"],
            slice_len=64,
            auth_keys=2,
            seed=f"malformed-{fmt}",
            format=fmt,
        )
        raw = paths[0].read_bytes()
        (h,) = struct.unpack_from(">I", raw, 8)
        with Kit.open(paths[0], writable=False) as kit:
            base = kit.layout.base
        out[fmt] = (json.loads(raw[12 : 12 + h]), raw[base:])
    return out


def write_kit(path: Path, fmt: int, header: bytes, body: bytes) -> Path:
    path.write_bytes(encode_prefix(header, fmt) + body)
    return path


def opens_or_refuses(path: Path, fmt: int) -> None:
    """Kit.open either succeeds with a header that holds together, or raises KitError:
    any other exception fails the test."""
    try:
        kit = Kit.open(path, writable=False)
    except KitError as err:
        assert str(err).startswith(str(path)), err  # names the kit
        assert len(str(err)) < 400  # one line, not a dump of the header
        return
    with kit:
        header = kit.header
        assert header.format == fmt  # the prefix's format
        assert 0 <= header.self_index < header.n and len(header.signing_key) == 32
        assert all(len(m.verify_key) == 32 for m in header.members)


DEEP = b"[" * 100_000 + b"]" * 100_000

RAW_HEADERS: list[bytes] = [
    DEEP,
    b'{"format": ' + DEEP + b"}",
    b'{"a": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001,
    b"9" * 5000,  # past int's 4300-digit limit: ValueError, not JSONDecodeError
    b'{"format": ' + b"9" * 5000 + b"}",
    b"",
    b"null",
    b"[]",
    b'"a string"',
    b"\xff\xfe{}",
    b'{"format": 1e999}',
    b'{"format": NaN}',
    b"{\x00}",
    b'{"format": 1, "format": 2}',
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("raw", RAW_HEADERS, ids=range(len(RAW_HEADERS)))
def test_a_header_that_is_not_a_kit_header_is_refused_with_a_kit_error(
    tmp_path: Path, valid: dict[int, tuple[dict[str, Any], bytes]], fmt: int, raw: bytes
) -> None:
    path = write_kit(tmp_path / "k.ghostkit", fmt, raw, valid[fmt][1])
    with pytest.raises(KitError):
        Kit.open(path)


def _set(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda h: h.__setitem__(key, value)


def _member(field: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda h: h["members"][0].__setitem__(field, value)


EDITS: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("slice_len huge", _set("slice_len", 1 << 62)),
    ("slice_len 2^64 squared", _set("slice_len", 1 << 128)),
    ("auth_keys huge", _set("auth_keys", 1 << 62)),
    ("slice_len zero", _set("slice_len", 0)),
    ("slice_len float", _set("slice_len", 64.0)),
    ("slice_len string", _set("slice_len", "64")),
    ("auth_keys null", _set("auth_keys", None)),
    ("self negative", _set("self", -1)),
    ("self huge", _set("self", 1 << 70)),
    ("self list", _set("self", [0])),
    ("members 256", _set("members", [{"name": "x", "verify_key": "00" * 32}] * 256)),
    ("members a dict", _set("members", {"name": "x"})),
    ("members of strings", _set("members", ["alice", "bob"])),
    ("member name a number", _member("name", 7)),
    ("member key short", _member("verify_key", "00" * 31)),
    ("member key missing", lambda h: h["members"][0].pop("verify_key")),
    ("member key upper hex", _member("verify_key", "AB" * 32)),
    ("pad_id short", _set("pad_id", "00" * 15)),
    ("pad_id a number", _set("pad_id", 0)),
    ("signing_key not hex", _set("signing_key", "zz" * 32)),
    ("signing_key other member", _set("signing_key", "11" * 32)),
    ("suite null", _set("suite", None)),
    ("format 3", _set("format", 3)),
    ("format string", _set("format", "1")),
    ("group a list", _set("group", ["x"])),
    ("created a number", _set("created", 0)),
    ("entropy null", _set("entropy", None)),
    ("every key missing", lambda h: h.clear()),
    ("lone surrogate in a name", _member("name", "\ud800")),
]
EDITS_V2: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("length_step missing", lambda h: h.pop("length_step")),
    ("length_step zero", _set("length_step", 0)),
    ("length_step 4097", _set("length_step", 4097)),
    ("length_step true", _set("length_step", True)),
    ("length_step float", _set("length_step", 32.0)),
    ("length_step huge", _set("length_step", 1 << 80)),
]
CASES = [(fmt, name, edit) for fmt in FORMATS for name, edit in EDITS] + [
    (2, name, edit) for name, edit in EDITS_V2
]


@pytest.mark.parametrize(("fmt", "name", "edit"), CASES, ids=[f"{f}-{n}" for f, n, _ in CASES])
def test_a_header_with_wrong_types_or_absurd_values_is_refused_with_a_kit_error(
    tmp_path: Path,
    valid: dict[int, tuple[dict[str, Any], bytes]],
    fmt: int,
    name: str,
    edit: Callable[[dict[str, Any]], None],
) -> None:
    header = json.loads(json.dumps(valid[fmt][0]))
    edit(header)
    path = write_kit(tmp_path / "k.ghostkit", fmt, json.dumps(header).encode(), valid[fmt][1])
    with pytest.raises(KitError):
        Kit.open(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_kit_truncated_anywhere_is_refused_with_a_kit_error(
    tmp_path: Path, valid: dict[int, tuple[dict[str, Any], bytes]], fmt: int
) -> None:
    header = json.dumps(valid[fmt][0]).encode()
    whole = encode_prefix(header, fmt) + valid[fmt][1]
    h_end = 12 + len(header)
    path = tmp_path / "k.ghostkit"
    for keep in sorted({0, 1, 7, 8, 11, 12, 13, h_end - 1, h_end, h_end + 31, h_end + 32,
                        4096, len(whole) - 4097, len(whole) - 1}):  # fmt: skip
        path.write_bytes(whole[:keep])
        with pytest.raises(KitError):
            Kit.open(path)
    path.write_bytes(whole)
    Kit.open(path).close()  # the untruncated file is fine: the cuts were the fault


def test_a_header_length_past_any_real_header_is_refused_before_reading_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "k.ghostkit"
    for magic in (b"GHSTKIT1", b"GHSTKIT2"):
        path.write_bytes(magic + struct.pack(">I", 0xFFFFFFFF) + b"{}")
        with pytest.raises(KitError, match="implausible"):
            Kit.open(path)


FUZZ_KEYS = [
    "format", "suite", "pad_id", "group", "created", "members", "self",
    "signing_key", "slice_len", "auth_keys", "entropy", "length_step", "extra",
]  # fmt: skip
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 70), max_value=1 << 70)
    | st.floats(allow_nan=True)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    fmt=st.sampled_from(FORMATS),
    changes=st.dictionaries(
        st.sampled_from(FUZZ_KEYS),
        JSON,
        min_size=1,
        max_size=4,
    ),
    drops=st.sets(st.sampled_from(["format", "members", "self", "length_step", "pad_id"])),
)
def test_any_mangled_header_opens_or_is_refused_with_a_kit_error(
    tmp_path_factory: pytest.TempPathFactory,
    valid: dict[int, tuple[dict[str, Any], bytes]],
    fmt: int,
    changes: dict[str, Any],
    drops: set[str],
) -> None:
    header = {**valid[fmt][0], **changes}
    for key in drops:
        header.pop(key, None)
    raw = json.dumps(header).encode("utf-8", "surrogatepass")
    path = write_kit(tmp_path_factory.mktemp("fuzz") / "k.ghostkit", fmt, raw, valid[fmt][1])
    opens_or_refuses(path, fmt)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(fmt=st.sampled_from(FORMATS), raw=st.binary(max_size=300))
def test_any_bytes_as_a_header_are_refused_with_a_kit_error(
    tmp_path_factory: pytest.TempPathFactory,
    valid: dict[int, tuple[dict[str, Any], bytes]],
    fmt: int,
    raw: bytes,
) -> None:
    path = write_kit(tmp_path_factory.mktemp("fuzz") / "k.ghostkit", fmt, raw, valid[fmt][1])
    opens_or_refuses(path, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("command", [("pad", "info"), ("history",)])
def test_a_malformed_kit_is_one_line_and_exit_1_at_the_command_line(
    tmp_path: Path,
    valid: dict[int, tuple[dict[str, Any], bytes]],
    capsys: pytest.CaptureFixture[str],
    fmt: int,
    command: tuple[str, ...],
) -> None:
    path = write_kit(tmp_path / "k.ghostkit", fmt, DEEP, valid[fmt][1])
    with pytest.raises(SystemExit) as exited:
        main([*command, str(path)])
    out, err = capsys.readouterr()
    assert exited.value.code == 1 and out == ""
    assert err.splitlines() == [
        f"ghostline: error: {path}: the header is not valid UTF-8 JSON (nested too deeply)"
    ]
