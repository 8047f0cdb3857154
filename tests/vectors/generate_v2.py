"""The format-2 vectors (format-2 kits, suite 2, grants), built for generate.py.

Every byte follows from SEED; see README.md for the format of each file. Imported by
generate.py (which writes or checks every vector file) with tests/ on sys.path.
"""

from __future__ import annotations

import hashlib
import json
import struct
import tempfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.poly1305 import Poly1305

from ghostline.errors import InvalidGrant
from ghostline.pad.kit import Kit
from ghostline.pad.seal import xor_bytes
from ghostline.pad.seal2 import open_sealed2, pad_payload, padded_length, seal_with_kit2
from ghostline.protocol.envelope import HEADER_LEN, TAG_LEN
from ghostline.protocol.extents import Extents
from ghostline.protocol.grants import GrantRange, GrantRule, check_grant, move_range
from ghostline.protocol.payload import GrantPayload, TextPayload
from ghostline.protocol.rules import Rule
from helpers import MemoryReceiverView, build_message2, derived, flip, make_kit_set

SEED = "ghostline-vectors-v2"
NAMES = ["alice", "bob", "carol"]
SLICE_LEN = 256
AUTH_KEYS = 8
STEP = 24
GROUP = "vectors v2"
SENT_AT = 1735689600  # 2025-01-01T00:00:00Z
FILES = ("kit-set-v2.json", "sealed-v2.json", "rejected-v2.json")
U64 = (1 << 64) - 1
# The grant most vectors assume already accepted: alice gave carol [128, 256).
GIVEN = GrantRange(2, 128, 256)


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def build() -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_kit_set(
            Path(tmp), names=NAMES, slice_len=SLICE_LEN, auth_keys=AUTH_KEYS, seed=SEED,
            group=GROUP, format=2, length_step=STEP,
        )  # fmt: skip
        kits = [Kit.open(p, writable=False) for p in paths]
        try:
            return {
                "kit-set-v2.json": _dump(_kit_set(paths, kits)),
                "sealed-v2.json": _dump(_sealed(kits)),
                "rejected-v2.json": _dump(_rejected(kits)),
            }
        finally:
            for kit in kits:
                kit.close()


# --- kit-set-v2.json ---------------------------------------------------------------------


def _kit_set(paths: list[Path], kits: list[Kit]) -> dict[str, Any]:
    entries = []
    for path, kit in zip(paths, kits, strict=True):
        raw = path.read_bytes()
        (header_len,) = struct.unpack_from(">I", raw, 8)
        lay = kit.layout
        entries.append(
            {
                "member": kit.self_index,
                "file_name": path.name,
                "header": json.loads(raw[12 : 12 + header_len]),
                "header_len": header_len,
                "checksum": raw[12 + header_len : 44 + header_len].hex(),
                "base": lay.base,
                "file_len": len(raw),
                "regions": {
                    "group_pad": {"start": lay.base, "length": lay.pad_len},
                    "outbound": [
                        {
                            "recipient": r,
                            "start": lay.outbound_region(r),
                            "length": lay.pair_region_len,
                        }
                        for r in lay.others()
                    ],  # fmt: skip
                    "inbound": [
                        {"sender": s, "start": lay.inbound_region(s), "length": lay.pair_region_len}
                        for s in lay.others()
                    ],  # fmt: skip
                    "journal": {"start": lay.journal_offset, "length": 4096},
                },
                "file_hex": raw.hex(),
            }
        )
    return {
        "description": (
            "A complete GhostLine format-2 kit set (docs/PROTOCOL.md sections 11-12): n=3, "
            f"slice_len={SLICE_LEN}, auth_keys={AUTH_KEYS}, length_step={STEP}. Pad bytes "
            "are NOT random (SHAKE-256 of a fixed seed): never use them for messages."
        ),
        "n": len(kits),
        "slice_len": SLICE_LEN,
        "auth_keys": AUTH_KEYS,
        "length_step": STEP,
        "pad_id": kits[0].pad_id.hex(),
        "kits": entries,
    }


# --- state, as the vectors write it --------------------------------------------------------


def _grants(*grants: tuple[int, GrantRange]) -> list[dict[str, int]]:
    return [{"sender": g, "to": r.to, "start": r.start, "end": r.end} for g, r in grants]


def _accepted(*entries: tuple[int, int, int, int]) -> list[dict[str, int]]:
    return [{"sender": s, "counter": c, "offset": o, "length": n} for s, c, o, n in entries]


def _view(vector: dict[str, Any]) -> MemoryReceiverView:
    return MemoryReceiverView(
        len(NAMES),
        SLICE_LEN,
        grants=[(g["sender"], GrantRange(g["to"], g["start"], g["end"])) for g in vector["grants"]],
        accepted=[
            (a["sender"], a["counter"], a["offset"], a["offset"] + a["length"])
            for a in vector["accepted"]
        ],
    )


def _extents_json(extents: tuple[Extents, ...]) -> list[list[list[int]]]:
    return [[[start, end] for start, end in ext] for ext in extents]


# --- sealed-v2.json ------------------------------------------------------------------------


def _sealed(kits: list[Kit]) -> dict[str, Any]:
    text = TextPayload
    given = _grants((0, GIVEN))
    # (name, comment, sender, counter, offset, payload, payload json, grants, accepted)
    cases: list[tuple[str, str, int, int, int, bytes, Any, list[Any], list[Any]]] = [
        ("text_hello_from_alice",
         "A 10-byte text payload padded to one step (24): 0x80, then 13 zeros.",
         0, 0, 0, text("hello", SENT_AT).encode(), {"kind": 1, "text": "hello"}, [], []),
        ("payload_fills_a_step_but_one",
         "A 23-byte payload: 0x80 alone completes the step (no zeros).",
         1, 0, 256, derived(SEED, "plain/23", 23), None, [], []),
        ("payload_of_exactly_one_step",
         "A 24-byte payload needs a second step: 0x80 then 23 zeros (L = 48).",
         1, 1, 300, derived(SEED, "plain/24", 24), None, [], []),
        ("payload_ending_like_padding",
         "A payload that itself ends in 0x80 and zeros: only the last 0x80 is padding.",
         2, 0, 600, b"\x01\x80\x00\x00\x80\x00", None, [], []),
        ("last_mask_and_range_end_from_bob",
         "Counter K-1 and offset + L == 2*E: bob's last mask and last pad byte.",
         1, AUTH_KEYS - 1, 2 * SLICE_LEN - 48, text("grüße ✓ 2", SENT_AT + 1).encode(),
         {"kind": 1, "text": "grüße ✓ 2"}, [], []),
        ("grant_from_alice_to_carol",
         "A grant payload (kind 0x10): alice gives carol [128, 256) of the group pad. "
         "The grant message itself uses [24, 48).",
         0, 1, 24, GrantPayload(2, 128, 256, SENT_AT + 2).encode(),
         {"kind": 16, "to": 2, "start": 128, "end": 256}, [], []),
        ("carol_seals_in_the_granted_range",
         "After the grant above: carol's message on [150, 174), in alice's initial slice.",
         2, 1, 150, text("thanks", SENT_AT + 3).encode(), {"kind": 1, "text": "thanks"},
         given, []),
        ("alice_touches_a_range_accepted_from_carol",
         "Accepted: carol's [128, 152). Alice's message on [104, 128) only touches it.",
         0, 2, 104, text("next door", SENT_AT + 4).encode(), {"kind": 1, "text": "next door"},
         given, _accepted((2, 0, 128, 24))),
    ]  # fmt: skip
    vectors = []
    for name, comment, sender, counter, offset, payload, fields, grants, accepted in cases:
        kit = kits[sender]
        size = padded_length(len(payload), STEP)
        view = MemoryReceiverView(3, SLICE_LEN, grants=[(0, GIVEN)] if grants else [])
        free = view.extents[sender]
        sealed = seal_with_kit2(kit, counter, offset, payload, free=free)
        recipients = [r for r in range(len(kits)) if r != sender]
        entry: dict[str, Any] = {
            "name": name,
            "comment": comment,
            "kit": kit.self_index,
            "sender": sender,
            "counter": counter,
            "offset": offset,
            "payload": payload.hex(),
            "padded_plaintext": pad_payload(payload, STEP).hex(),
            "pad": kit.pad_bytes(offset, size).hex(),
            "tag_keys": [
                {
                    "recipient": r,
                    "hash_key": key[:16].hex(),
                    "mask": key[16:].hex(),
                    "key": key.hex(),
                }
                for r, key in zip(recipients, kit.outbound_tag_keys(counter), strict=True)
            ],  # fmt: skip
            "sealed": sealed.hex(),
            "grants": grants,
            "accepted": accepted,
            "expected": [
                {"recipient": r, "outcome": "success", "payload": payload.hex()} for r in recipients
            ],
        }
        if fields is not None:
            entry["payload_fields"] = {"sent_at": struct.unpack_from(">I", payload, 1)[0]} | fields
        if fields is not None and fields["kind"] == 16:
            grant = GrantRange(fields["to"], fields["start"], fields["end"])
            check_grant(grant, sender=sender, n=3, message_range=(offset, offset + size),
                        state=_view(entry))  # fmt: skip
            after = move_range(_view(entry).extents, sender, grant)
            entry["extents_after"] = _extents_json(after)
        for r in recipients:  # the project opens its own vectors, or they are not written
            assert open_sealed2(kits[r], sealed, _view(entry)).plaintext == payload
        vectors.append(entry)
    return {
        "description": (
            "Suite-2 messages (docs/PROTOCOL.md sections 13-15) with every input. Each "
            "vector is independent: open it with fresh kits from kit-set-v2.json, every "
            "member's extents being the initial slices with `grants` applied in order, "
            "and only the listed accepted messages."
        ),
        "kit_set": "kit-set-v2.json",
        "vectors": vectors,
    }


# --- rejected-v2.json ----------------------------------------------------------------------


def _rejected(kits: list[Kit]) -> dict[str, Any]:
    return {
        "description": (
            "What a format-2 receiver MUST refuse: messages (each named by the first rule "
            "of section 14 it breaks, in checking order), damaged kits (`bad_checksum`), "
            "and grants that open as messages but MUST NOT move any pad (section 15). "
            "Start from fresh kits from kit-set-v2.json and the listed state."
        ),
        "kit_set": "kit-set-v2.json",
        "rules": list(Rule.SUITE_2),
        "grant_rules": list(GrantRule.ALL),
        "vectors": _rejected_messages(kits),
        "kits": _damaged_kits(kits),
        "grants": _refused_grants(kits),
    }


def _rejected_messages(kits: list[Kit]) -> list[dict[str, Any]]:
    padded = pad_payload(TextPayload("attack at dawn", SENT_AT).encode(), STEP)  # 24 bytes

    def msg(sender: int, counter: int, offset: int, plain: bytes = padded, **kw: Any) -> bytes:
        return build_message2(kits, sender, counter, offset, plain, **kw)

    good = msg(0, 1, 10)  # alice -> bob, carol; counter 1, [10, 34)
    tags_at = HEADER_LEN + len(padded)
    # Bob knows the group pad and his own mask: he rewrites alice's text, fixes his own
    # tag, and cannot fix carol's.
    forged = pad_payload(TextPayload("attack at noon", SENT_AT).encode(), STEP)
    forged_head = good[:HEADER_LEN]
    forged_body = forged_head + xor_bytes(forged, kits[1].pad_bytes(10, len(forged)))
    bob_tag = Poly1305.generate_tag(kits[1].inbound_tag_key(0, 1), forged_head + forged)
    insider = forged_body + bob_tag + good[tags_at + TAG_LEN :]
    truncated = good[:38] + (12).to_bytes(4, "big") + good[HEADER_LEN : HEADER_LEN + 12]
    truncated += good[tags_at:]
    pad_bit = kits[1].layout.base + 10 + 3  # a pad byte of this message, in bob's kit
    given = _grants((0, GIVEN))

    # (name, rule, recipient, sealed, grants, accepted, erased masks, erased R, kit flips,
    #  comment)
    cases: list[tuple[Any, ...]] = [
        ("empty_input", Rule.TOO_SHORT, 1, b"", [], [], [], [], [], "Zero bytes."),
        ("header_cut_to_41", Rule.TOO_SHORT, 1, good[:41], [], [], [], [], [],
         "One byte short of a header."),
        ("v1_message_for_v2_kit", Rule.FORMAT_MISMATCH, 1, msg(0, 1, 10, version=1, suite=1),
         [], [], [], [], [], "Version 0x01 and suite 0x01: a whole suite-1 message."),
        ("version_3", Rule.UNKNOWN_VERSION, 1, msg(0, 1, 10, version=3), [], [], [], [], [],
         "Version 0x03, tags recomputed."),
        ("version_1_suite_2", Rule.UNKNOWN_VERSION, 2, msg(0, 1, 10, version=1), [], [], [],
         [], [], "Version 0x01 with suite 0x02: no format's pair."),
        ("suite_1", Rule.UNKNOWN_SUITE, 1, msg(0, 1, 10, suite=1), [], [], [], [], [],
         "Version 0x02 with suite 0x01."),
        ("other_pad_id", Rule.WRONG_PAD, 1, msg(0, 1, 10, pad_id=bytes(16)), [], [], [], [],
         [], "pad_id all zeros, tags recomputed."),
        ("group_of_4", Rule.WRONG_GROUP_SIZE, 1, msg(0, 1, 10, n_field=4), [], [], [], [], [],
         "n = 4 with a consistent length (three tags)."),
        ("sender_3_of_3", Rule.UNKNOWN_SENDER, 1, good[:18] + b"\x00\x03" + good[20:], [],
         [], [], [], [], "sender = n."),
        ("own_message", Rule.OWN_MESSAGE, 0, good, [], [], [], [], [],
         "alice's valid message, opened by alice herself."),
        ("extra_byte", Rule.BAD_LENGTH, 1, good + b"\x00", [], [], [], [], [],
         "One byte appended."),
        ("length_field_a_step_more", Rule.BAD_LENGTH, 2, msg(0, 1, 10, length_field=48), [],
         [], [], [], [], "L says 48, 24 bytes of ciphertext follow."),
        ("empty_ciphertext", Rule.EMPTY, 1, msg(0, 1, 10, b""), [], [], [], [], [],
         "L = 0 with a consistent length and real tags."),
        ("counter_k", Rule.COUNTER_OUT_OF_RANGE, 1, msg(0, AUTH_KEYS, 10), [], [], [], [], [],
         "counter = auth_keys (one past the last mask)."),
        ("counter_u64_max", Rule.COUNTER_OUT_OF_RANGE, 2, msg(0, U64, 10), [], [], [], [], [],
         "counter = 2^64-1."),
        ("range_past_the_group_pad", Rule.OFFSET_OUT_OF_RANGE, 1,
         msg(2, 1, 3 * SLICE_LEN - 23), [], [], [], [], [],
         "carol's offset + L = n*E + 1."),
        ("offset_u64_max", Rule.OFFSET_OUT_OF_RANGE, 2, msg(0, 1, U64), [], [], [], [], [],
         "offset = 2^64-1: offset + L overflows 64 bits (must not wrap around)."),
        ("range_in_another_members_slice", Rule.OFFSET_OUT_OF_RANGE, 2,
         msg(0, 1, SLICE_LEN + 10), [], [], [], [], [],
         "alice seals on [266, 290), inside bob's initial range: outside her extents."),
        ("range_across_two_slices", Rule.OFFSET_OUT_OF_RANGE, 2, msg(1, 1, 2 * SLICE_LEN - 12),
         [], [], [], [], [], "bob's [500, 524) runs 12 bytes into carol's range."),
        ("range_granted_away", Rule.OFFSET_OUT_OF_RANGE, 1, msg(0, 3, 140), given, [], [],
         [], [], "alice gave carol [128, 256), then sealed on [140, 164) herself."),
        ("replayed_counter_new_range", Rule.REPLAYED_COUNTER, 1, good, [],
         _accepted((0, 1, 50, 24)), [], [], [],
         "Counter 1 from alice was already accepted (on [50, 74))."),
        ("overlap_same_sender", Rule.OVERLAPPING_RANGE, 1, good, [], _accepted((0, 0, 0, 11)),
         [], [], [], "Accepted alice's [0, 11); this message's [10, 34) shares byte 10."),
        ("overlap_another_sender", Rule.OVERLAPPING_RANGE, 2, good, [],
         _accepted((1, 0, 33, 24)), [], [], [],
         "Accepted bob's [33, 57) (a state that only disagreeing extents could give: the "
         "rule holds whoever the earlier sender was); this message's [10, 34) shares 33."),
        ("mask_already_erased", Rule.ERASED_KEY, 1, good, [], [], [{"sender": 0, "counter": 1}],
         [], [], "The recipient's mask S_1 of alice -> bob is zeroed."),
        ("hash_key_erased", Rule.ERASED_KEY, 2, good, [], [], [], [{"sender": 0}], [],
         "The recipient's hash key R of alice -> carol is zeroed (its masks used up)."),
        ("ciphertext_bit_flipped", Rule.BAD_TAG, 1, flip(good, HEADER_LEN), [], [], [], [], [],
         "Lowest bit of the first ciphertext byte flipped."),
        ("offset_field_changed", Rule.BAD_TAG, 2, flip(good, 37), [], [], [], [], [],
         "Offset field 10 -> 11: still alice's, but the tag covers the header."),
        ("tag_bit_flipped", Rule.BAD_TAG, 1, flip(good, tags_at), [], [], [], [], [],
         "Lowest bit of bob's tag flipped."),
        ("truncation_forgery", Rule.BAD_TAG, 2, truncated, [], [], [], [], [],
         "L rewritten 24 -> 12 and the ciphertext cut to match, original tags kept."),
        ("insider_modifies_for_carol", Rule.BAD_TAG, 2, insider, [], [], [], [], [],
         "bob changed 'dawn' to 'noon' and fixed his own tag; carol's is alice's original."),
        ("recipient_pad_bit_flipped", Rule.BAD_TAG, 1, good, [], [], [], [],
         [{"at": pad_bit, "xor": 4}],
         "The genuine message, but one bit of the group pad in bob's kit is damaged: the "
         "tag covers the plaintext, so bob refuses it instead of showing wrong text."),
        ("no_padding_marker", Rule.BAD_PADDING, 1, msg(0, 1, 10, padded[:-10] + bytes(10)),
         [], [], [], [], [], "Valid tags over a plaintext that ends in zeros without 0x80."),
        ("a_step_of_zeros_too_many", Rule.BAD_PADDING, 2,
         msg(0, 1, 10, padded + bytes(STEP)), [], [], [], [], [],
         "Correct marker, then 24 zeros more than the fewest: not the padding of anything."),
        ("length_not_a_multiple_of_the_step", Rule.BAD_PADDING, 1,
         msg(0, 1, 10, padded[:-1]), [], [], [], [], [],
         "L = 23 with the marker and 8 zeros: valid tags, but L is not a multiple of 24."),
        ("junk_after_the_marker", Rule.BAD_PADDING, 2,
         msg(0, 1, 10, padded[:-2] + b"\x07\x00"), [], [], [], [], [],
         "The marker, then a non-zero byte before the zeros."),
    ]  # fmt: skip
    vectors = []
    for name, rule, recipient, sealed, grants, accepted, masks, hash_keys, flips, note in cases:
        entry = {
            "name": name,
            "rule": rule,
            "recipient": recipient,
            "sealed": sealed.hex(),
            "grants": grants,
            "accepted": accepted,
            "erased_masks": masks,
            "erased_hash_keys": hash_keys,
            "kit_flips": flips,
            "expected": {"outcome": "reject", "rule": rule},
            "comment": note,
        }
        vectors.append(entry)
    return vectors


def _damaged_kits(kits: list[Kit]) -> list[dict[str, Any]]:
    raw = Path(kits[1].path).read_bytes()
    (h,) = struct.unpack_from(">I", raw, 8)
    pad_id_at = raw.index(b'"pad_id":"') + len(b'"pad_id":"')
    group_at = raw.index(b'"group":"') + len(b'"group":"')
    cases = [
        ("pad_id_hex_digit_changed", pad_id_at,
         raw[pad_id_at] ^ (ord("2") if raw[pad_id_at] == ord("1") else ord("1")),
         "One hex digit of pad_id changed (still valid hex: v1 would send to another room)."),
        ("group_name_bit_flipped", group_at, 0x01, "One bit of the group name flipped."),
        ("length_step_digit_changed", raw.index(b'"length_step":') + 14, 0x01,
         "The first digit of length_step changed (2 -> 3)."),
        ("checksum_bit_flipped", 12 + h + 31, 0x80, "The checksum's last bit flipped."),
    ]  # fmt: skip
    out = []
    for name, at, xor, note in cases:
        damaged = flip(raw, at, xor)
        assert hashlib.sha256(damaged[: 12 + h]).digest() != damaged[12 + h : 44 + h]
        out.append(
            {
                "name": name,
                "kit": 1,
                "flips": [{"at": at, "xor": xor}],
                "expected": {"outcome": "reject", "rule": "bad_checksum"},
                "comment": note,
            }
        )
    return out


def _refused_grants(kits: list[Kit]) -> list[dict[str, Any]]:
    """Grant messages that open (their tags, padding and range are fine) but whose grant
    a receiver MUST NOT apply."""
    # (name, rule, sender, counter, offset, grant, grants, accepted, comment)
    cases = [
        ("grant_to_self", GrantRule.TO_SENDER, 0, 1, 24, GrantRange(0, 100, 200), [], [],
         "alice grants alice."),
        ("grant_to_member_3", GrantRule.TO_UNKNOWN_MEMBER, 0, 1, 24, GrantRange(3, 100, 200),
         [], [], "to = n."),
        ("grant_of_nothing", GrantRule.EMPTY_RANGE, 0, 1, 24, GrantRange(1, 100, 100), [], [],
         "start = end."),
        ("grant_backwards", GrantRule.EMPTY_RANGE, 0, 1, 24, GrantRange(1, 200, 100), [], [],
         "start > end."),
        ("grant_of_bobs_range", GrantRule.OUTSIDE_EXTENTS, 0, 1, 24, GrantRange(2, 300, 400),
         [], [], "alice gives carol part of bob's range."),
        ("grant_of_a_range_given_away", GrantRule.OUTSIDE_EXTENTS, 0, 1, 24,
         GrantRange(1, 130, 140), _grants((0, GIVEN)), [],
         "alice already gave carol [128, 256); now she gives bob [130, 140) of it."),
        ("grant_past_the_pad", GrantRule.OUTSIDE_EXTENTS, 2, 1, 600,
         GrantRange(0, 700, U64), [], [], "carol gives alice [700, 2^64-1)."),
        ("grant_of_its_own_message", GrantRule.OVERLAPS_OWN_MESSAGE, 0, 1, 24,
         GrantRange(1, 40, 100), [], [], "The grant message uses [24, 48); it gives [40, 100)."),
        ("grant_of_an_accepted_range", GrantRule.OVERLAPS_ACCEPTED, 0, 1, 24,
         GrantRange(1, 48, 128), [], _accepted((0, 0, 100, 24)),
         "alice's [100, 124) was accepted; she gives bob [48, 128) around it."),
    ]  # fmt: skip
    out = []
    for name, rule, sender, counter, offset, grant, grants, accepted, note in cases:
        payload = pad_payload(GrantPayload(*grant, SENT_AT).encode(), STEP)
        sealed = build_message2(kits, sender, counter, offset, payload)
        recipient = (sender + 1) % 3
        entry = {
            "name": name,
            "rule": rule,
            "recipient": recipient,
            "sealed": sealed.hex(),
            "grants": grants,
            "accepted": accepted,
            "expected": {"outcome": "grant_refused", "rule": rule,
                         "payload": payload[: 5 + 18].hex()},
            "comment": note,
        }  # fmt: skip
        opened = open_sealed2(kits[recipient], sealed, _view(entry))  # the message is fine
        size = len(payload)
        try:
            check_grant(grant, sender=sender, n=3, message_range=(offset, offset + size),
                        state=_view(entry))  # fmt: skip
        except InvalidGrant as err:
            assert err.rule == rule, (name, err.rule)
        else:
            raise AssertionError(f"{name}: the grant was not refused")
        assert opened.plaintext.hex() == entry["expected"]["payload"]
        out.append(entry)
    return out
