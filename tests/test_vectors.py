"""The committed format-1 vectors (tests/vectors/) agree with the implementation;
the generator reproduces every vector file (v2's are checked in test_vectors_v2.py)."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.poly1305 import Poly1305

from ghostline.errors import RejectedMessage
from ghostline.pad.kit import Kit
from ghostline.pad.seal import open_sealed, seal_with_kit
from ghostline.protocol.payload import FileChunk, FileHeader, TextPayload, decode
from ghostline.protocol.rules import Rule
from helpers import MemoryAcceptedLog

VECTORS = Path(__file__).parent / "vectors"
KIT_SET = json.loads((VECTORS / "kit-set.json").read_text())
SEALED = json.loads((VECTORS / "sealed.json").read_text())["vectors"]
REJECTED_FILE = json.loads((VECTORS / "rejected.json").read_text())
REJECTED = REJECTED_FILE["vectors"]
KITS = KIT_SET["kits"]


def kit_file(tmp_path: Path, member: int) -> Path:
    path = tmp_path / f"member{member}.ghostkit"
    path.write_bytes(bytes.fromhex(KITS[member]["file_hex"]))
    return path


def accepted_log(vector: dict[str, Any]) -> MemoryAcceptedLog:
    return MemoryAcceptedLog(
        (a["sender"], a["counter"], a["offset"], a["offset"] + a["length"])
        for a in vector["accepted"]
    )


# --- kit-set.json, checked against docs/PROTOCOL.md sections 2-3 directly ------------------


def independent_layout(raw: bytes) -> dict[str, Any]:
    """Section 2-3 arithmetic written out again, not using KitLayout."""
    assert raw[:8] == b"GHSTKIT1"
    (h,) = struct.unpack(">I", raw[8:12])
    header = json.loads(raw[12 : 12 + h].decode("utf-8"))
    base = (12 + h + 4095) // 4096 * 4096
    n, e, k, me = len(header["members"]), header["slice_len"], header["auth_keys"], header["self"]
    others = [i for i in range(n) if i != me]
    keys_start = base + n * e
    return {
        "header": header,
        "header_len": h,
        "base": base,
        "file_len": base + n * e + 2 * (n - 1) * k * 32,
        "slices": [(base + s * e, base + (s + 1) * e) for s in range(n)],
        "outbound": {r: keys_start + i * k * 32 for i, r in enumerate(others)},
        "inbound": {s: keys_start + (n - 1 + i) * k * 32 for i, s in enumerate(others)},
        "region_len": k * 32,
    }


@pytest.mark.parametrize("member", range(len(KITS)))
def test_kit_file_bytes_follow_the_section_3_layout(member: int) -> None:
    entry = KITS[member]
    raw = bytes.fromhex(entry["file_hex"])
    lay = independent_layout(raw)
    assert len(raw) == lay["file_len"] == entry["file_len"]
    assert lay["header"] == entry["header"]
    assert list(lay["header"]) == [
        "format", "suite", "pad_id", "group", "created", "members", "self",
        "signing_key", "slice_len", "auth_keys", "entropy",
    ]  # fmt: skip
    assert lay["header"]["self"] == entry["member"] == member
    assert lay["header_len"] == entry["header_len"] and lay["base"] == entry["base"]
    assert raw[12 + lay["header_len"] : lay["base"]] == bytes(lay["base"] - 12 - lay["header_len"])
    regions = entry["regions"]
    assert regions["group_pad"] == {
        "start": lay["base"],
        "length": len(KITS) * KIT_SET["slice_len"],
    }
    assert {o["recipient"]: o["start"] for o in regions["outbound"]} == lay["outbound"]
    assert {i["sender"]: i["start"] for i in regions["inbound"]} == lay["inbound"]
    assert all(o["length"] == lay["region_len"] for o in regions["outbound"] + regions["inbound"])


def test_kit_set_shares_the_group_pad_and_pairs_their_key_regions() -> None:
    raws = [bytes.fromhex(k["file_hex"]) for k in KITS]
    lays = [independent_layout(r) for r in raws]
    pads = {
        r[lay["slices"][0][0] : lay["slices"][-1][1]] for r, lay in zip(raws, lays, strict=True)
    }
    assert len(pads) == 1
    size = lays[0]["region_len"]
    for s, (raw_s, lay_s) in enumerate(zip(raws, lays, strict=True)):
        for r, at in lay_s["outbound"].items():
            inbound_at = lays[r]["inbound"][s]
            assert raw_s[at : at + size] == raws[r][inbound_at : inbound_at + size]
    regions = {
        raws[s][lay["outbound"][r] : lay["outbound"][r] + size]
        for s, lay in enumerate(lays)
        for r in lay["outbound"]
    }
    assert len(regions) == len(KITS) * (len(KITS) - 1)  # every pair has its own keys


@pytest.mark.parametrize("member", range(len(KITS)))
def test_kit_files_open_with_the_declared_header(tmp_path: Path, member: int) -> None:
    with Kit.open(kit_file(tmp_path, member)) as kit:
        header = KITS[member]["header"]
        assert kit.pad_id.hex() == header["pad_id"] == KIT_SET["pad_id"]
        assert kit.n == KIT_SET["n"] and kit.self_index == member
        assert kit.layout.base == KITS[member]["base"]
        assert kit.header.slice_len == KIT_SET["slice_len"]
        assert kit.header.auth_keys == KIT_SET["auth_keys"]


# --- sealed.json ---------------------------------------------------------------------


def independent_seal(vector: dict[str, Any]) -> bytes:
    """Section 4 from the kit bytes alone: header, XOR, one Poly1305 tag per recipient."""
    s, j, o = vector["sender"], vector["counter"], vector["offset"]
    raw = bytes.fromhex(KITS[s]["file_hex"])
    lay = independent_layout(raw)
    plain = bytes.fromhex(vector["plaintext"])
    start = lay["slices"][s][0] + o
    stream = raw[start : start + len(plain)]
    assert stream.hex() == vector["key_stream"]
    ciphertext = bytes(p ^ k for p, k in zip(plain, stream, strict=True))
    pad_id = bytes.fromhex(KIT_SET["pad_id"])
    head = struct.pack(">BB16sHHQQI", 1, 1, pad_id, s, KIT_SET["n"], j, o, len(plain))
    authenticated = head + ciphertext
    tags = b""
    for r, at in sorted(lay["outbound"].items()):
        key = raw[at + 32 * j : at + 32 * j + 32]
        assert {"recipient": r, "key": key.hex()} in vector["mac_keys"]
        tags += Poly1305.generate_tag(key, authenticated)
    return authenticated + tags


@pytest.mark.parametrize("vector", SEALED, ids=[v["name"] for v in SEALED])
def test_sealed_vector_matches_an_independent_computation(vector: dict[str, Any]) -> None:
    assert independent_seal(vector).hex() == vector["sealed"]


@pytest.mark.parametrize("vector", SEALED, ids=[v["name"] for v in SEALED])
def test_resealing_a_vector_gives_identical_bytes(tmp_path: Path, vector: dict[str, Any]) -> None:
    with Kit.open(kit_file(tmp_path, vector["kit"])) as kit:
        sealed = seal_with_kit(
            kit, vector["counter"], vector["offset"], bytes.fromhex(vector["plaintext"])
        )
    assert sealed.hex() == vector["sealed"]


@pytest.mark.parametrize("vector", SEALED, ids=[v["name"] for v in SEALED])
def test_every_recipient_opens_a_sealed_vector(tmp_path: Path, vector: dict[str, Any]) -> None:
    recipients = {e["recipient"] for e in vector["expected"]}
    assert recipients == set(range(KIT_SET["n"])) - {vector["sender"]}
    for expected in vector["expected"]:
        assert expected["outcome"] == "success"
        with Kit.open(kit_file(tmp_path, expected["recipient"])) as kit:
            for erased in vector["erased_keys"]:
                kit.erase_inbound_key(erased["sender"], erased["counter"])
            opened = open_sealed(kit, bytes.fromhex(vector["sealed"]), accepted_log(vector))
        assert opened.plaintext.hex() == expected["plaintext"]
        assert (opened.envelope.sender, opened.envelope.counter) == (
            vector["sender"],
            vector["counter"],
        )


@pytest.mark.parametrize("vector", [v for v in SEALED if "payload" in v], ids=lambda v: v["name"])
def test_payload_of_a_sealed_vector_decodes_as_declared(vector: dict[str, Any]) -> None:
    want = vector["payload"]
    got = decode(bytes.fromhex(vector["plaintext"]))
    assert got.sent_at == want["sent_at"]
    if want["kind"] == 1:
        assert isinstance(got, TextPayload) and got.text == want["text"]
    elif want["kind"] == 2:
        assert isinstance(got, FileHeader)
        assert (got.transfer_id.hex(), got.sha256.hex(), got.name) == (
            want["transfer_id"],
            want["sha256"],
            want["name"],
        )
        assert (got.total_size, got.chunk_size, got.chunk_count) == (
            want["total_size"],
            want["chunk_size"],
            want["chunk_count"],
        )
    else:
        assert isinstance(got, FileChunk)
        assert (got.transfer_id.hex(), got.index, got.data.hex()) == (
            want["transfer_id"],
            want["index"],
            want["data"],
        )


# --- rejected.json -------------------------------------------------------------------


@pytest.mark.parametrize("vector", REJECTED, ids=[v["name"] for v in REJECTED])
def test_rejected_vector_is_refused_for_exactly_its_rule(
    tmp_path: Path, vector: dict[str, Any]
) -> None:
    assert vector["expected"] == {"outcome": "reject", "rule": vector["rule"]}
    path = kit_file(tmp_path, vector["recipient"])
    with Kit.open(path) as kit:
        for erased in vector["erased_keys"]:
            kit.erase_inbound_key(erased["sender"], erased["counter"])
        kit.flush()
        before = path.read_bytes()
        with pytest.raises(RejectedMessage) as caught:
            open_sealed(kit, bytes.fromhex(vector["sealed"]), accepted_log(vector))
        kit.flush()
    assert caught.value.rule == vector["rule"]
    assert path.read_bytes() == before


def test_every_reject_rule_has_a_vector() -> None:
    assert REJECTED_FILE["rules"] == list(Rule.SUITE_1)
    assert {v["rule"] for v in REJECTED} == set(Rule.SUITE_1)


# --- the generator -------------------------------------------------------------------


def test_generator_reproduces_the_committed_files() -> None:
    spec = importlib.util.spec_from_file_location("vectors_generate", VECTORS / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built = module.build()
    assert set(built) == {
        "kit-set.json", "sealed.json", "rejected.json",
        "kit-set-v2.json", "sealed-v2.json", "rejected-v2.json",
    }  # fmt: skip
    for name, text in built.items():
        assert text == (VECTORS / name).read_text(), f"{name} is stale: run generate.py"
