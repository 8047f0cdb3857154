"""The committed format-2 vectors agree with the project AND with an independent
implementation written from docs/PROTOCOL.md alone (tests/vectors/independent_v2.py), byte for
byte, both ways."""

from __future__ import annotations

import ast
import json
import random
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from ghostline.errors import InvalidGrant, KitDamagedError, RejectedMessage
from ghostline.pad.kit import Kit
from ghostline.pad.seal2 import open_sealed2, padded_length, seal_with_kit2
from ghostline.protocol.extents import Extents
from ghostline.protocol.grants import GrantRange, GrantRule, check_grant
from ghostline.protocol.payload import decode, decode_grant
from ghostline.protocol.rules import Rule
from helpers import MemoryReceiverView

VECTORS = Path(__file__).parent / "vectors"
sys.path.insert(0, str(VECTORS))
import independent_v2 as ind  # noqa: E402

KIT_SET = json.loads((VECTORS / "kit-set-v2.json").read_text())
SEALED = json.loads((VECTORS / "sealed-v2.json").read_text())["vectors"]
REJECTED_FILE = json.loads((VECTORS / "rejected-v2.json").read_text())
REJECTED = REJECTED_FILE["vectors"]
KITS = KIT_SET["kits"]
N, E = KIT_SET["n"], KIT_SET["slice_len"]
# The one rule the specification leaves unnamed (see independent_v2.py).
INDEPENDENT_NAME = {Rule.FORMAT_MISMATCH: Rule.UNKNOWN_VERSION}


def kit_bytes(member: int) -> bytes:
    return bytes.fromhex(KITS[member]["file_hex"])


def kit_file(tmp_path: Path, member: int, data: bytes | None = None) -> Path:
    path = tmp_path / f"member{member}.ghostkit"
    path.write_bytes(kit_bytes(member) if data is None else data)
    return path


def grants_of(vector: dict[str, Any]) -> list[tuple[int, GrantRange]]:
    return [(g["sender"], GrantRange(g["to"], g["start"], g["end"])) for g in vector["grants"]]


def accepted_of(vector: dict[str, Any]) -> list[tuple[int, int, int, int]]:
    return [
        (a["sender"], a["counter"], a["offset"], a["offset"] + a["length"])
        for a in vector["accepted"]
    ]


def project_state(vector: dict[str, Any]) -> MemoryReceiverView:
    return MemoryReceiverView(N, E, grants=grants_of(vector), accepted=accepted_of(vector))


def independent_state(vector: dict[str, Any]) -> ind.State:
    state = ind.State.initial(N, E)
    for giver, g in grants_of(vector):
        state.move(giver, g.to, g.start, g.end)
    state.accepted = accepted_of(vector)
    return state


def test_the_independent_implementation_imports_nothing_from_ghostline() -> None:
    tree = ast.parse((VECTORS / "independent_v2.py").read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0] for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }  # fmt: skip
    assert imported == {"__future__", "hashlib", "json", "struct", "dataclasses", "cryptography"}


# --- kit-set-v2.json ---------------------------------------------------------------------


@pytest.mark.parametrize("member", range(len(KITS)))
def test_format_2_kit_bytes_follow_sections_11_and_12(member: int) -> None:
    entry = KITS[member]
    kit = ind.parse_kit(kit_bytes(member))
    assert kit.header == entry["header"] and kit.me == entry["member"] == member
    assert kit.step == KIT_SET["length_step"] and kit.base == entry["base"]
    assert len(kit.raw) == entry["file_len"]
    regions = entry["regions"]
    assert regions["group_pad"] == {"start": kit.base, "length": kit.pad_len}
    assert {o["recipient"]: o["start"] for o in regions["outbound"]} == {
        r: kit.outbound(r) for r in range(N) if r != member
    }
    assert {i["sender"]: i["start"] for i in regions["inbound"]} == {
        s: kit.inbound(s) for s in range(N) if s != member
    }
    assert regions["journal"] == {"start": kit.journal, "length": 4096}
    assert kit.raw[kit.journal :] == bytes(4096)


def test_format_2_kits_share_the_pad_and_pair_their_regions() -> None:
    kits = [ind.parse_kit(kit_bytes(m)) for m in range(N)]
    assert len({k.pad(0, k.pad_len) for k in kits}) == 1
    for s, ks in enumerate(kits):
        for r in range(N):
            if r != s:
                out = ks.raw[ks.outbound(r) : ks.outbound(r) + ks.pair_len]
                inn = kits[r].raw[kits[r].inbound(s) : kits[r].inbound(s) + ks.pair_len]
                assert out == inn


@pytest.mark.parametrize("member", range(len(KITS)))
def test_the_project_opens_each_format_2_kit_as_declared(tmp_path: Path, member: int) -> None:
    with Kit.open(kit_file(tmp_path, member)) as kit:
        assert (kit.format, kit.self_index, kit.n) == (2, member, N)
        assert kit.header.length_step == KIT_SET["length_step"]
        assert kit.pad_id.hex() == KIT_SET["pad_id"]
        assert kit.layout.journal_offset == KITS[member]["regions"]["journal"]["start"]
        assert kit.journal() == []


# --- sealed-v2.json ----------------------------------------------------------------------


@pytest.mark.parametrize("vector", SEALED, ids=[v["name"] for v in SEALED])
def test_both_implementations_seal_each_vector_to_the_same_bytes(
    tmp_path: Path, vector: dict[str, Any]
) -> None:
    s, j, o = vector["sender"], vector["counter"], vector["offset"]
    payload = bytes.fromhex(vector["payload"])
    kit = ind.parse_kit(kit_bytes(s))
    assert ind.pad_payload(payload, kit.step).hex() == vector["padded_plaintext"]
    assert kit.pad(o, len(vector["pad"]) // 2).hex() == vector["pad"]
    assert ind.seal(kit, j, o, payload).hex() == vector["sealed"]
    with Kit.open(kit_file(tmp_path, s)) as project:
        size = padded_length(len(payload), KIT_SET["length_step"])
        free = MemoryReceiverView(N, E, grants=grants_of(vector)).extents[s]
        assert free.contains(o, o + size)
        assert seal_with_kit2(project, j, o, payload, free=free).hex() == vector["sealed"]
        keys = [k["key"] for k in vector["tag_keys"]]
        assert [key.hex() for key in project.outbound_tag_keys(j)] == keys
        assert all(k["key"] == k["hash_key"] + k["mask"] for k in vector["tag_keys"])


@pytest.mark.parametrize("vector", SEALED, ids=[v["name"] for v in SEALED])
def test_every_recipient_opens_each_vector_in_both_implementations(
    tmp_path: Path, vector: dict[str, Any]
) -> None:
    sealed = bytes.fromhex(vector["sealed"])
    assert {e["recipient"] for e in vector["expected"]} == set(range(N)) - {vector["sender"]}
    for expected in vector["expected"]:
        r = expected["recipient"]
        kit = ind.parse_kit(kit_bytes(r))
        assert ind.open_message(kit, sealed, independent_state(vector)) == (
            "ok",
            bytes.fromhex(expected["payload"]),
        )
        with Kit.open(kit_file(tmp_path, r)) as project:
            opened = open_sealed2(project, sealed, project_state(vector))
        assert opened.plaintext.hex() == expected["payload"]
        assert opened.envelope.offset == vector["offset"]


@pytest.mark.parametrize(
    "vector", [v for v in SEALED if "payload_fields" in v], ids=lambda v: v["name"]
)
def test_payloads_decode_as_declared_and_grants_move_exactly_their_range(
    vector: dict[str, Any],
) -> None:
    want = vector["payload_fields"]
    payload = bytes.fromhex(vector["payload"])
    if want["kind"] == 1:
        text = decode(payload)
        assert (text.sent_at, getattr(text, "text", None)) == (want["sent_at"], want["text"])
        return
    grant = decode_grant(payload)
    assert (grant.sent_at, grant.to, grant.start, grant.end) == (
        want["sent_at"], want["to"], want["start"], want["end"],
    )  # fmt: skip
    sender = vector["sender"]
    size = len(vector["padded_plaintext"]) // 2
    message = (vector["offset"], vector["offset"] + size)
    check_grant(grant.grant, sender=sender, n=N, message_range=message, state=project_state(vector))
    state = independent_state(vector)
    assert ind.check_grant(state, sender, N, message, ind.grant_of(payload)) == 0
    state.move(sender, grant.to, grant.start, grant.end)
    after = [[list(r) for r in ext] for ext in state.extents]
    assert after == vector["extents_after"]
    before = project_state(vector).extents
    moved = [Extents(map(tuple, ext)) for ext in vector["extents_after"]]
    assert moved[sender] == before[sender].remove(grant.start, grant.end)
    assert moved[grant.to] == before[grant.to].add(grant.start, grant.end)
    assert sum(e.total for e in moved) == N * E


# --- both ways, beyond the vectors -------------------------------------------------------


def test_each_implementation_opens_what_the_other_seals(tmp_path: Path, rng: random.Random) -> None:
    kits = [ind.parse_kit(kit_bytes(m)) for m in range(N)]
    project = [Kit.open(kit_file(tmp_path, m)) for m in range(N)]
    try:
        for _ in range(60):
            s = rng.randrange(N)
            payload = rng.randbytes(rng.choice([0, 1, 22, 23, 24, 100, 200]))
            size = padded_length(len(payload), kits[s].step)
            o = s * E + rng.randrange(E - size + 1)
            j = rng.randrange(KIT_SET["auth_keys"])
            theirs = ind.seal(kits[s], j, o, payload)
            ours = seal_with_kit2(project[s], j, o, payload, free=Extents([(s * E, s * E + E)]))
            assert ours == theirs
            for r in set(range(N)) - {s}:
                assert open_sealed2(project[r], theirs, MemoryReceiverView(N, E)).plaintext == (
                    payload
                )
                assert ind.open_message(kits[r], ours, ind.State.initial(N, E)) == ("ok", payload)
    finally:
        for kit in project:
            kit.close()


# --- rejected-v2.json --------------------------------------------------------------------


def damaged_kit(vector: dict[str, Any]) -> bytes:
    raw = bytearray(kit_bytes(vector["recipient"]))
    for f in vector["kit_flips"]:
        raw[f["at"]] ^= f["xor"]
    for e in vector["erased_masks"]:
        kit = ind.parse_kit(bytes(raw))
        at = kit.inbound(e["sender"]) + 16 + 16 * e["counter"]
        raw[at : at + 16] = bytes(16)
    for e in vector["erased_hash_keys"]:
        at = ind.parse_kit(bytes(raw)).inbound(e["sender"])
        raw[at : at + 16] = bytes(16)
    return bytes(raw)


@pytest.mark.parametrize("vector", REJECTED, ids=[v["name"] for v in REJECTED])
def test_both_implementations_refuse_each_rejected_vector_for_its_rule(
    tmp_path: Path, vector: dict[str, Any]
) -> None:
    assert vector["expected"] == {"outcome": "reject", "rule": vector["rule"]}
    sealed = bytes.fromhex(vector["sealed"])
    raw = damaged_kit(vector)
    assert ind.open_message(ind.parse_kit(raw), sealed, independent_state(vector)) == (
        INDEPENDENT_NAME.get(vector["rule"], vector["rule"]),
        None,
    )
    path = kit_file(tmp_path, vector["recipient"], raw)
    with Kit.open(path) as kit, pytest.raises(RejectedMessage) as caught:
        open_sealed2(kit, sealed, project_state(vector))
    assert caught.value.rule == vector["rule"]
    assert path.read_bytes() == raw  # opening changed nothing


def test_every_suite_2_rule_has_a_vector() -> None:
    assert REJECTED_FILE["rules"] == list(Rule.SUITE_2)
    assert {v["rule"] for v in REJECTED} == set(Rule.SUITE_2)
    assert REJECTED_FILE["grant_rules"] == list(GrantRule.ALL)
    assert {g["rule"] for g in REJECTED_FILE["grants"]} == set(GrantRule.ALL)


@pytest.mark.parametrize("vector", REJECTED_FILE["kits"], ids=lambda v: v["name"])
def test_both_implementations_refuse_a_damaged_header_as_a_bad_checksum(
    tmp_path: Path, vector: dict[str, Any]
) -> None:
    assert vector["expected"] == {"outcome": "reject", "rule": "bad_checksum"}
    raw = bytearray(kit_bytes(vector["kit"]))
    for f in vector["flips"]:
        raw[f["at"]] ^= f["xor"]
    with pytest.raises(ind.Damaged):
        ind.parse_kit(bytes(raw))
    with pytest.raises(KitDamagedError):
        Kit.open(kit_file(tmp_path, vector["kit"], bytes(raw)))


@pytest.mark.parametrize("vector", REJECTED_FILE["grants"], ids=lambda v: v["name"])
def test_both_implementations_open_a_refused_grant_but_move_nothing(
    tmp_path: Path, vector: dict[str, Any]
) -> None:
    sealed = bytes.fromhex(vector["sealed"])
    r = vector["recipient"]
    want = vector["expected"]
    (sender,) = struct.unpack_from(">H", sealed, 18)
    (offset,) = struct.unpack_from(">Q", sealed, 30)
    (length,) = struct.unpack_from(">I", sealed, 38)
    message = (offset, offset + length)
    status, payload = ind.open_message(
        ind.parse_kit(kit_bytes(r)), sealed, independent_state(vector)
    )
    assert (status, payload.hex() if payload else None) == ("ok", want["payload"])
    number = ind.check_grant(independent_state(vector), sender, N, message, ind.grant_of(payload))
    assert GrantRule.ALL[number - 1] == want["rule"] == vector["rule"]
    with Kit.open(kit_file(tmp_path, r)) as kit:
        opened = open_sealed2(kit, sealed, project_state(vector))
    grant = decode_grant(opened.plaintext)
    with pytest.raises(InvalidGrant) as caught:
        check_grant(
            grant.grant, sender=sender, n=N, message_range=message, state=project_state(vector)
        )
    assert caught.value.rule == want["rule"]
