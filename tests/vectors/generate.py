"""Regenerate the test vectors in this folder (protocol v1 here, v2 in generate_v2.py),
deterministically.

    .venv/bin/python tests/vectors/generate.py          # rewrite the JSON files
    .venv/bin/python tests/vectors/generate.py --check  # exit 1 if they would change

Every byte follows from SEED (kits: SHAKE-256 streams, see tests/helpers.py) and the
fixed `created` time, so running this twice gives identical files. tests/test_vectors.py
checks that the committed files equal `build()`. See README.md for the format.
"""

from __future__ import annotations

import json
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import generate_v2  # noqa: E402
from cryptography.hazmat.primitives.poly1305 import Poly1305  # noqa: E402

from ghostline.files.split import split_file  # noqa: E402
from ghostline.pad.kit import Kit  # noqa: E402
from ghostline.pad.seal import seal_with_kit, xor_bytes  # noqa: E402
from ghostline.protocol.envelope import pack_header  # noqa: E402
from ghostline.protocol.payload import FileChunk, FileHeader, TextPayload  # noqa: E402
from ghostline.protocol.rules import Rule  # noqa: E402
from helpers import build_message, derived, flip, make_kit_set  # noqa: E402

SEED = "ghostline-vectors-v1"
NAMES = ["alice", "bob", "carol"]
SLICE_LEN = 256
AUTH_KEYS = 8
GROUP = "vectors"
SENT_AT = 1735689600  # 2025-01-01T00:00:00Z
FILES = ("kit-set.json", "sealed.json", "rejected.json", *generate_v2.FILES)


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def _payload_json(obj: TextPayload | FileHeader | FileChunk) -> dict[str, Any]:
    if isinstance(obj, TextPayload):
        return {"kind": 1, "sent_at": obj.sent_at, "text": obj.text}
    if isinstance(obj, FileHeader):
        return {
            "kind": 2,
            "sent_at": obj.sent_at,
            "transfer_id": obj.transfer_id.hex(),
            "total_size": obj.total_size,
            "chunk_size": obj.chunk_size,
            "chunk_count": obj.chunk_count,
            "sha256": obj.sha256.hex(),
            "name": obj.name,
        }
    return {
        "kind": 3,
        "sent_at": obj.sent_at,
        "transfer_id": obj.transfer_id.hex(),
        "index": obj.index,
        "data": obj.data.hex(),
    }


class _Builder:
    """Hand-built sealed messages, for the vectors that break exactly one rule."""

    def __init__(self, kits: list[Kit]) -> None:
        self.kits = kits
        self.n = len(kits)

    def message(
        self, sender: int, counter: int, offset: int, plaintext: bytes, **fields: Any
    ) -> bytes:
        return build_message(self.kits, sender, counter, offset, plaintext, **fields)


def build() -> dict[str, str]:
    """File name -> JSON text, for every vector file."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_kit_set(
            Path(tmp),
            names=NAMES,
            slice_len=SLICE_LEN,
            auth_keys=AUTH_KEYS,
            seed=SEED,
            group=GROUP,
        )
        kits = [Kit.open(p, writable=False) for p in paths]
        try:
            v1 = {
                "kit-set.json": _dump(_kit_set(paths, kits)),
                "sealed.json": _dump(_sealed(kits)),
                "rejected.json": _dump(_rejected(kits)),
            }
        finally:
            for kit in kits:
                kit.close()
    return v1 | generate_v2.build()


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
                "base": lay.base,
                "file_len": len(raw),
                "regions": {
                    "group_pad": {"start": lay.base, "length": lay.pad_len},
                    "outbound": [
                        {
                            "recipient": r,
                            "start": lay.outbound_key_offset(r, 0),
                            "length": lay.pair_region_len,
                        }
                        for r in lay.others()
                    ],
                    "inbound": [
                        {
                            "sender": s,
                            "start": lay.inbound_key_offset(s, 0),
                            "length": lay.pair_region_len,
                        }
                        for s in lay.others()
                    ],
                },
                "file_hex": raw.hex(),
            }
        )
    return {
        "description": (
            "A complete GhostLine kit set (docs/PROTOCOL.md sections 2-3): n=3, "
            f"slice_len={SLICE_LEN}, auth_keys={AUTH_KEYS}. Pad bytes are NOT random "
            "(SHAKE-256 of a fixed seed): never use them for messages."
        ),
        "n": len(kits),
        "slice_len": SLICE_LEN,
        "auth_keys": AUTH_KEYS,
        "pad_id": kits[0].pad_id.hex(),
        "kits": entries,
    }


def _sealed(kits: list[Kit]) -> dict[str, Any]:
    tid = derived(SEED, "transfer_id", 8)
    file_header, chunks = split_file(
        b"GhostLine test file\n", 8, transfer_id=tid, sent_at=SENT_AT + 2, name="notes.txt"
    )
    last_chunk = list(chunks)[-1]
    cases: list[tuple[str, str, int, int, int, bytes, Any, list[dict[str, int]]]] = [
        (
            "text_hello_from_alice",
            "A text payload, alice's first message at the start of her slice.",
            0,
            0,
            0,
            TextPayload("hello", SENT_AT).encode(),
            TextPayload("hello", SENT_AT),
            [],
        ),
        (
            "one_byte_from_bob",
            "The shortest possible ciphertext (L = 1).",
            1,
            0,
            0,
            b"\x00",
            None,
            [],
        ),
        (
            "text_utf8_from_carol_gap",
            "Counter 3 at offset 17: gaps in counters and offsets are never errors.",
            2,
            3,
            17,
            TextPayload("grüße ✓", SENT_AT + 1).encode(),
            TextPayload("grüße ✓", SENT_AT + 1),
            [],
        ),
        (
            "last_key_and_slice_end_from_carol",
            "Counter K-1 and offset + L == slice_len: the last key and the last pad byte.",
            2,
            AUTH_KEYS - 1,
            SLICE_LEN - 56,
            derived(SEED, "plain/end", 56),
            None,
            [],
        ),
        (
            "file_header_from_alice",
            "A FILE_HEADER payload (kind 0x02): a 20-byte file in chunks of 8.",
            0,
            1,
            5,
            file_header.encode(),
            file_header,
            [],
        ),
        (
            "file_chunk_from_alice",
            "The last FILE_CHUNK (kind 0x03) of that file: 4 bytes, index 2.",
            0,
            2,
            130,
            last_chunk.encode(),
            last_chunk,
            [],
        ),
        (
            "adjacent_range_after_accepted_from_bob",
            "Already accepted: bob's counter 0 on [0, 40). This message on [40, 140) "
            "touches that range without overlapping it, so it is accepted.",
            1,
            5,
            40,
            derived(SEED, "plain/adjacent", 100),
            None,
            [{"sender": 1, "counter": 0, "offset": 0, "length": 40}],
        ),
    ]
    vectors = []
    for name, comment, sender, counter, offset, plaintext, payload, accepted in cases:
        kit = kits[sender]
        sealed = seal_with_kit(kit, counter, offset, plaintext)
        recipients = [r for r in range(len(kits)) if r != sender]
        entry: dict[str, Any] = {
            "name": name,
            "comment": comment,
            "kit": kit.self_index,
            "sender": sender,
            "counter": counter,
            "offset": offset,
            "plaintext": plaintext.hex(),
            "key_stream": kit.key_stream(sender, offset, len(plaintext)).hex(),
            "mac_keys": [
                {"recipient": r, "key": kit.outbound_key(r, counter).hex()} for r in recipients
            ],
            "sealed": sealed.hex(),
            "accepted": accepted,
            "erased_keys": [],
            "expected": [
                {"recipient": r, "outcome": "success", "plaintext": plaintext.hex()}
                for r in recipients
            ],
        }
        if payload is not None:
            entry["payload"] = _payload_json(payload)
        vectors.append(entry)
    return {
        "description": (
            "Sealed messages (docs/PROTOCOL.md sections 4-6) with every input. Each vector is "
            "independent: open it with fresh kits from kit-set.json and only the listed "
            "accepted state and erased keys."
        ),
        "kit_set": "kit-set.json",
        "vectors": vectors,
    }


def _rejected(kits: list[Kit]) -> dict[str, Any]:
    b = _Builder(kits)
    good = b.message(0, 1, 10, b"attack at dawn")  # alice -> bob, carol; counter 1, [10, 24)
    u64 = (1 << 64) - 1
    bad_tag_swapped = good[: 42 + 14] + good[42 + 14 + 16 :] + good[42 + 14 : 42 + 14 + 16]
    cut_header = pack_header(kits[0].pad_id, 0, b.n, 1, 10, 6)
    truncated = cut_header + good[42 : 42 + 6] + good[42 + 14 :]
    # Bob knows the group pad and his own key alice->bob: he rewrites the plaintext
    # and fixes bob's tag; carol's tag (keyed by alice->carol) he cannot fix.
    forged_plain = b"attack at noon"
    forged_head = good[:42] + xor_bytes(forged_plain, kits[1].key_stream(0, 10, 14))
    forged_for_bob = Poly1305.generate_tag(kits[1].inbound_key(0, 1), forged_head)
    insider = forged_head + forged_for_bob + good[42 + 14 + 16 :]
    guessed_key = derived(SEED, "bob-guesses-alice-carol-key", 32)
    made_up = forged_head + forged_for_bob + Poly1305.generate_tag(guessed_key, forged_head)

    # (name, rule, recipient, sealed, accepted, erased_keys, comment)
    acc = [{"sender": 0, "counter": 0, "offset": 0, "length": 11}]
    cases: list[tuple[str, str, int, bytes, list[dict[str, int]], list[dict[str, int]], str]] = [
        ("empty_input", Rule.TOO_SHORT, 1, b"", [], [], "Zero bytes."),
        ("header_cut_to_41", Rule.TOO_SHORT, 1, good[:41], [], [], "One byte short of a header."),
        (
            "v2_message_for_v1_kit",
            Rule.FORMAT_MISMATCH,
            1,
            b.message(0, 1, 10, b"attack at dawn", version=2, suite=2),
            [],
            [],
            "Version 0x02 and suite 0x02: a whole suite-2 message, which a format-1 kit "
            "refuses by this name (tags here are suite 1's, over the header as written).",
        ),
        (
            "version_2",
            Rule.UNKNOWN_VERSION,
            1,
            b.message(0, 1, 10, b"attack at dawn", version=2),
            [],
            [],
            "Version 0x02, tags recomputed.",
        ),
        (
            "version_0",
            Rule.UNKNOWN_VERSION,
            2,
            b.message(0, 1, 10, b"attack at dawn", version=0),
            [],
            [],
            "Version 0x00, tags recomputed.",
        ),
        (
            "suite_2",
            Rule.UNKNOWN_SUITE,
            1,
            b.message(0, 1, 10, b"attack at dawn", suite=2),
            [],
            [],
            "Suite 0x02, tags recomputed.",
        ),
        (
            "other_pad_id",
            Rule.WRONG_PAD,
            1,
            b.message(0, 1, 10, b"attack at dawn", pad_id=bytes(16)),
            [],
            [],
            "pad_id all zeros, tags recomputed.",
        ),
        (
            "group_of_4",
            Rule.WRONG_GROUP_SIZE,
            1,
            b.message(0, 1, 10, b"attack at dawn", n_field=4),
            [],
            [],
            "n = 4 with a consistent length (three tags).",
        ),
        (
            "group_of_2",
            Rule.WRONG_GROUP_SIZE,
            2,
            b.message(0, 1, 10, b"attack at dawn", n_field=2),
            [],
            [],
            "n = 2 with a consistent length (one tag).",
        ),
        (
            "sender_3_of_3",
            Rule.UNKNOWN_SENDER,
            1,
            b.message(0, 1, 10, b"attack at dawn", sender_field=3),
            [],
            [],
            "sender = n.",
        ),
        (
            "sender_65535",
            Rule.UNKNOWN_SENDER,
            2,
            b.message(0, 1, 10, b"attack at dawn", sender_field=0xFFFF),
            [],
            [],
            "sender = 0xffff.",
        ),
        (
            "own_message",
            Rule.OWN_MESSAGE,
            0,
            good,
            [],
            [],
            "alice's valid message, opened by alice herself (she matches it against her "
            "outbox instead; as an open it is rejected).",
        ),
        ("extra_byte", Rule.BAD_LENGTH, 1, good + b"\x00", [], [], "One byte appended."),
        ("missing_byte", Rule.BAD_LENGTH, 1, good[:-1], [], [], "Last tag byte cut off."),
        (
            "length_field_too_big",
            Rule.BAD_LENGTH,
            2,
            b.message(0, 1, 10, b"attack at dawn", length_field=15),
            [],
            [],
            "L says 15, 14 bytes of ciphertext follow.",
        ),
        (
            "empty_ciphertext",
            Rule.EMPTY,
            1,
            b.message(0, 1, 10, b""),
            [],
            [],
            "L = 0 with a consistent length and real tags.",
        ),
        (
            "counter_k",
            Rule.COUNTER_OUT_OF_RANGE,
            1,
            b.message(0, AUTH_KEYS, 10, b"attack"),
            [],
            [],
            "counter = auth_keys (one past the last key).",
        ),
        (
            "counter_u64_max",
            Rule.COUNTER_OUT_OF_RANGE,
            2,
            b.message(0, u64, 10, b"attack"),
            [],
            [],
            "counter = 2^64-1.",
        ),
        (
            "range_past_slice",
            Rule.OFFSET_OUT_OF_RANGE,
            1,
            b.message(0, 1, SLICE_LEN - 6, b"attack!"),
            [],
            [],
            "offset + L = slice_len + 1.",
        ),
        (
            "offset_u64_max",
            Rule.OFFSET_OUT_OF_RANGE,
            2,
            b.message(0, 1, u64, b"ab"),
            [],
            [],
            "offset = 2^64-1: offset + L overflows 64 bits (must not wrap around).",
        ),
        (
            "replayed_counter_new_range",
            Rule.REPLAYED_COUNTER,
            1,
            b.message(0, 0, 50, b"second try"),
            acc,
            [],
            "Counter 0 from alice was already accepted (on [0, 11)); this one uses [50, 60).",
        ),
        (
            "exact_replay",
            Rule.REPLAYED_COUNTER,
            1,
            good,
            [{"sender": 0, "counter": 1, "offset": 10, "length": 14}],
            [],
            "The same message again: the counter rule fires before the range rule.",
        ),
        (
            "overlap_at_start",
            Rule.OVERLAPPING_RANGE,
            1,
            good,
            acc,
            [],
            "Accepted [0, 11) from counter 0; this message's [10, 24) shares byte 10.",
        ),
        (
            "overlap_at_end",
            Rule.OVERLAPPING_RANGE,
            2,
            good,
            [{"sender": 0, "counter": 5, "offset": 23, "length": 30}],
            [],
            "Accepted [23, 53) from counter 5; this message's [10, 24) shares byte 23.",
        ),
        (
            "key_already_erased",
            Rule.ERASED_KEY,
            1,
            good,
            [],
            [{"sender": 0, "counter": 1}],
            "The recipient's inbound key alice->bob #1 is zeroed, though no accepted "
            "state says so (e.g. erased by recovery).",
        ),
        (
            "ciphertext_bit_flipped",
            Rule.BAD_TAG,
            1,
            flip(good, 42),
            [],
            [],
            "Lowest bit of the first ciphertext byte flipped.",
        ),
        (
            "offset_field_changed",
            Rule.BAD_TAG,
            2,
            flip(good, 37),
            [],
            [],
            "Offset field 10 -> 11; the tag covers the header.",
        ),
        (
            "tag_bit_flipped",
            Rule.BAD_TAG,
            1,
            flip(good, 42 + 14),
            [],
            [],
            "Lowest bit of bob's tag flipped.",
        ),
        (
            "tags_swapped",
            Rule.BAD_TAG,
            1,
            bad_tag_swapped,
            [],
            [],
            "bob's and carol's tags exchanged.",
        ),
        (
            "truncation_forgery",
            Rule.BAD_TAG,
            2,
            truncated,
            [],
            [],
            "L rewritten 14 -> 6 and the ciphertext cut to match, original tags kept.",
        ),
        (
            "insider_modifies_for_carol",
            Rule.BAD_TAG,
            2,
            insider,
            [],
            [],
            "bob changed 'dawn' to 'noon' and recomputed his own tag; carol's tag is "
            "alice's original (bob would accept this: he forged it himself).",
        ),
        (
            "insider_forges_whole_message",
            Rule.BAD_TAG,
            2,
            made_up,
            [],
            [],
            "bob builds a message 'from alice' with a guessed alice->carol key.",
        ),
    ]
    vectors = [
        {
            "name": name,
            "rule": rule,
            "recipient": recipient,
            "sealed": sealed.hex(),
            "accepted": accepted,
            "erased_keys": erased,
            "expected": {"outcome": "reject", "rule": rule},
            "comment": comment,
        }
        for name, rule, recipient, sealed, accepted, erased, comment in cases
    ]
    return {
        "description": (
            "Messages a recipient MUST reject (docs/PROTOCOL.md section 6), each named by the "
            "first rule it breaks in checking order. Open each with a fresh kit of "
            "`recipient` from kit-set.json, the listed accepted state and erased keys."
        ),
        "kit_set": "kit-set.json",
        "rules": list(Rule.SUITE_1),
        "vectors": vectors,
    }


def main(argv: list[str]) -> int:
    files = build()
    if "--check" in argv:
        stale = [n for n, text in files.items() if (HERE / n).read_text() != text]
        for name in stale:
            print(f"{name} is out of date", file=sys.stderr)
        return 1 if stale else 0
    for name, text in files.items():
        (HERE / name).write_text(text)
        print(f"wrote {HERE / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
