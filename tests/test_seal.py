"""Sealing and opening (docs/PROTOCOL.md sections 4-6): round trips, every reject rule,
tampering, insider forgery, purity, exhaustion and the two XOR code paths."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.poly1305 import Poly1305
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ghostline.errors import ErasedKeyError, PadExhaustedError, RejectedMessage
from ghostline.pad import seal as seal_module
from ghostline.pad.kit import Kit
from ghostline.pad.seal import open_sealed, seal, seal_with_kit, tag_index, xor_bytes
from ghostline.protocol.envelope import HEADER_LEN, TAG_LEN, Envelope, pack_header
from ghostline.protocol.rules import Rule
from helpers import (
    MemoryAcceptedLog,
    RecordingAcceptedLog,
    build_message,
    flip,
    make_kit_set,
    open_kits,
)

SLICE = 16384
KEYS = 64


@pytest.fixture(scope="module")
def groups(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[Kit]]:
    """Read-only kit sets for n = 2..6 (tests that erase make their own)."""
    out = {}
    for n in range(2, 7):
        paths = make_kit_set(
            tmp_path_factory.mktemp(f"n{n}"), n, slice_len=SLICE, auth_keys=KEYS, seed=f"n{n}"
        )
        out[n] = open_kits(paths)
    yield out
    for kits in out.values():
        for kit in kits:
            kit.close()


@pytest.fixture
def kits(tmp_path: Path) -> list[Kit]:
    """A fresh, writable n = 3 kit set (slice 256 bytes, 8 keys)."""
    opened = open_kits(
        make_kit_set(tmp_path / "kits", 3, slice_len=256, auth_keys=8, seed="ghostline-tests")
    )
    yield opened
    for kit in opened:
        kit.close()


def empty() -> MemoryAcceptedLog:
    return MemoryAcceptedLog()


def rule_of(kit: Kit, data: bytes, accepted: MemoryAcceptedLog | None = None) -> str:
    with pytest.raises(RejectedMessage) as caught:
        open_sealed(kit, data, accepted or empty())
    return caught.value.rule


# --- round trips ---------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_recipient_opens_what_any_member_seals(
    groups: dict[int, list[Kit]], data: st.DataObject
) -> None:
    n = data.draw(st.integers(2, 6), label="n")
    kits = groups[n]
    sender = data.draw(st.integers(0, n - 1), label="sender")
    plaintext = data.draw(st.binary(min_size=1, max_size=5000), label="plaintext")
    counter = data.draw(st.integers(0, KEYS - 1), label="counter")
    offset = data.draw(st.integers(0, SLICE - len(plaintext)), label="offset")
    sealed = seal_with_kit(kits[sender], counter, offset, plaintext)
    assert len(sealed) == HEADER_LEN + len(plaintext) + TAG_LEN * (n - 1)
    assert sealed[HEADER_LEN : HEADER_LEN + len(plaintext)] != plaintext or len(plaintext) < 4
    for r in range(n):
        if r == sender:
            continue
        opened = open_sealed(kits[r], sealed, empty())
        assert opened.plaintext == plaintext
        assert opened.envelope == Envelope(
            1, 1, kits[r].pad_id, sender, n, counter, offset, len(plaintext)
        )


def test_seal_puts_each_recipients_tag_in_increasing_order(kits: list[Kit]) -> None:
    sealed = seal_with_kit(kits[1], 2, 7, b"tag order")
    authenticated = sealed[: HEADER_LEN + 9]
    for r in (0, 2):
        at = HEADER_LEN + 9 + TAG_LEN * tag_index(1, r)
        want = Poly1305.generate_tag(kits[r].inbound_key(1, 2), authenticated)
        assert sealed[at : at + TAG_LEN] == want
    assert [tag_index(1, r) for r in (0, 2)] == [0, 1]


def test_seal_refuses_an_empty_plaintext_and_mismatched_inputs() -> None:
    common = {"pad_id": bytes(16), "sender": 0, "n": 3, "counter": 0, "offset": 0}
    key = b"\x01" * 32
    with pytest.raises(ValueError):
        seal(**common, plaintext=b"", key_stream=b"", mac_keys=[key, key])
    with pytest.raises(ValueError):
        seal(**common, plaintext=b"ab", key_stream=b"a", mac_keys=[key, key])
    with pytest.raises(ValueError):
        seal(**common, plaintext=b"ab", key_stream=b"ab", mac_keys=[key])


# --- one test per reject rule, in the order of section 6 ----------------------------


def test_a_message_shorter_than_the_header_is_rejected_as_too_short(kits: list[Kit]) -> None:
    good = seal_with_kit(kits[0], 0, 0, b"hello")
    assert rule_of(kits[1], good[:41]) == Rule.TOO_SHORT
    assert rule_of(kits[1], b"") == Rule.TOO_SHORT


def test_an_unknown_version_is_rejected(kits: list[Kit]) -> None:
    data = build_message(kits, 0, 0, 0, b"hello", version=2)
    assert rule_of(kits[1], data) == Rule.UNKNOWN_VERSION


def test_an_unknown_suite_is_rejected(kits: list[Kit]) -> None:
    data = build_message(kits, 0, 0, 0, b"hello", suite=9)
    assert rule_of(kits[1], data) == Rule.UNKNOWN_SUITE


def test_a_message_for_another_pad_is_rejected(kits: list[Kit]) -> None:
    data = build_message(kits, 0, 0, 0, b"hello", pad_id=flip(kits[0].pad_id, 15))
    assert rule_of(kits[1], data) == Rule.WRONG_PAD


def test_a_message_naming_another_group_size_is_rejected(kits: list[Kit]) -> None:
    data = build_message(kits, 0, 0, 0, b"hello", n_field=4)
    assert rule_of(kits[1], data) == Rule.WRONG_GROUP_SIZE


def test_a_sender_outside_the_group_is_rejected(kits: list[Kit]) -> None:
    data = build_message(kits, 0, 0, 0, b"hello", sender_field=3)
    assert rule_of(kits[1], data) == Rule.UNKNOWN_SENDER


def test_a_message_claiming_to_be_from_the_recipient_is_rejected(kits: list[Kit]) -> None:
    data = seal_with_kit(kits[0], 0, 0, b"hello")
    assert rule_of(kits[0], data) == Rule.OWN_MESSAGE


def test_a_length_that_disagrees_with_the_header_is_rejected(kits: list[Kit]) -> None:
    good = seal_with_kit(kits[0], 0, 0, b"hello")
    assert rule_of(kits[1], good + b"\x00") == Rule.BAD_LENGTH
    assert rule_of(kits[1], good[:-1]) == Rule.BAD_LENGTH
    assert rule_of(kits[1], build_message(kits, 0, 0, 0, b"hello", length_field=6)) == (
        Rule.BAD_LENGTH
    )


def test_an_empty_ciphertext_is_rejected(kits: list[Kit]) -> None:
    data = build_message(kits, 0, 0, 0, b"")
    assert len(data) == HEADER_LEN + 2 * TAG_LEN
    assert rule_of(kits[1], data) == Rule.EMPTY


def test_a_counter_past_the_kits_keys_is_rejected(kits: list[Kit]) -> None:
    assert rule_of(kits[1], build_message(kits, 0, 8, 0, b"hello")) == Rule.COUNTER_OUT_OF_RANGE
    big = build_message(kits, 0, (1 << 64) - 1, 0, b"hello")
    assert rule_of(kits[1], big) == Rule.COUNTER_OUT_OF_RANGE


def test_a_range_past_the_senders_slice_is_rejected(kits: list[Kit]) -> None:
    assert rule_of(kits[1], build_message(kits, 0, 0, 252, b"hello")) == Rule.OFFSET_OUT_OF_RANGE
    wraps = build_message(kits, 0, 0, (1 << 64) - 1, b"hi")
    assert rule_of(kits[1], wraps) == Rule.OFFSET_OUT_OF_RANGE
    fits = seal_with_kit(kits[0], 0, 251, b"hello")  # ends exactly at the slice end
    assert open_sealed(kits[1], fits, empty()).plaintext == b"hello"


def test_a_replayed_counter_is_rejected_even_with_a_fresh_range(kits: list[Kit]) -> None:
    data = seal_with_kit(kits[0], 3, 100, b"hello")
    accepted = MemoryAcceptedLog([(0, 3, 0, 5)])
    assert rule_of(kits[1], data, accepted) == Rule.REPLAYED_COUNTER
    other_sender = MemoryAcceptedLog([(2, 3, 100, 105)])
    assert open_sealed(kits[1], data, other_sender).plaintext == b"hello"


def test_a_range_overlapping_an_accepted_one_is_rejected(kits: list[Kit]) -> None:
    data = seal_with_kit(kits[0], 3, 100, b"hello")  # [100, 105)
    for start, end in [(104, 110), (90, 101), (101, 102), (0, 256)]:
        accepted = MemoryAcceptedLog([(0, 1, start, end)])
        assert rule_of(kits[1], data, accepted) == Rule.OVERLAPPING_RANGE
    touching = MemoryAcceptedLog([(0, 1, 95, 100), (0, 2, 105, 110)])
    assert open_sealed(kits[1], data, touching).plaintext == b"hello"


def test_a_message_whose_key_is_erased_is_rejected(kits: list[Kit]) -> None:
    data = seal_with_kit(kits[0], 4, 0, b"hello")
    kits[1].erase_inbound_key(0, 4)
    assert rule_of(kits[1], data) == Rule.ERASED_KEY
    assert open_sealed(kits[2], data, empty()).plaintext == b"hello"


def test_a_tag_that_does_not_verify_is_rejected(kits: list[Kit]) -> None:
    data = seal_with_kit(kits[0], 0, 0, b"hello")
    assert rule_of(kits[1], flip(data, HEADER_LEN)) == Rule.BAD_TAG
    assert rule_of(kits[1], flip(data, HEADER_LEN + 5)) == Rule.BAD_TAG


def test_every_rule_has_a_test_above() -> None:
    # format_mismatch (a suite-2 message for this format-1 kit) is tested in
    # test_seal2.py, bad_padding is suite 2's alone.
    names = {name for name in dir(Rule) if name.isupper() and not name.startswith(("ALL", "SUITE"))}
    assert {getattr(Rule, name) for name in names} == set(Rule.ALL)
    assert set(Rule.SUITE_1) == set(Rule.ALL) - {Rule.BAD_PADDING}
    assert len(Rule.SUITE_1) == 16


# --- tampering and forgery -----------------------------------------------------------


def test_flipping_any_byte_is_rejected_by_every_recipient_it_concerns(kits: list[Kit]) -> None:
    plaintext = b"8 bytes!"
    data = seal_with_kit(kits[0], 1, 20, plaintext)
    tags_at = HEADER_LEN + len(plaintext)
    for at in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            tampered = flip(data, at, mask)
            for r in (1, 2):
                own_tag = tags_at + TAG_LEN * tag_index(0, r)
                if at < tags_at or own_tag <= at < own_tag + TAG_LEN:
                    assert rule_of(kits[r], tampered), (at, mask, r)
                else:  # another recipient's tag: not this recipient's to check
                    assert open_sealed(kits[r], tampered, empty()).plaintext == plaintext


def test_an_insider_who_rewrites_a_message_and_fixes_its_own_tag_fools_no_one_else(
    kits: list[Kit],
) -> None:
    # Member 1 knows the group pad and its keys with 0 and 2, but not the key 0 -> 2.
    original = seal_with_kit(kits[0], 2, 30, b"pay bob 10")
    forged_plain = b"pay bob 99"
    ciphertext = xor_bytes(forged_plain, kits[1].key_stream(0, 30, len(forged_plain)))
    authenticated = original[:HEADER_LEN] + ciphertext
    tag_for_1 = Poly1305.generate_tag(kits[1].inbound_key(0, 2), authenticated)
    forged = authenticated + tag_for_1 + original[-TAG_LEN:]
    assert open_sealed(kits[1], forged, empty()).plaintext == forged_plain  # it fools itself
    assert rule_of(kits[2], forged) == Rule.BAD_TAG


def test_an_insider_cannot_make_up_a_message_in_another_members_name(kits: list[Kit]) -> None:
    plaintext = b"meet at 9"
    header = pack_header(kits[1].pad_id, 0, 3, 5, 60, len(plaintext))
    authenticated = header + xor_bytes(plaintext, kits[1].key_stream(0, 60, len(plaintext)))
    # Its best guesses at the 0 -> 2 key: its own keys and the group pad.
    guesses = [
        kits[1].inbound_key(0, 5),
        kits[1].outbound_key(2, 5),
        kits[1].key_stream(0, 0, 32),
        kits[1].key_stream(2, 0, 32),
    ]
    for guess in guesses:
        tag = Poly1305.generate_tag(guess, authenticated)
        forged = authenticated + Poly1305.generate_tag(kits[1].inbound_key(0, 5), authenticated)
        assert rule_of(kits[2], forged + tag) == Rule.BAD_TAG


# --- purity ----------------------------------------------------------------------------


def test_opening_changes_no_state_whether_it_accepts_or_rejects(kits: list[Kit]) -> None:
    path = kits[1].path
    before = path.read_bytes()
    good = seal_with_kit(kits[0], 1, 0, b"hello")
    log = RecordingAcceptedLog([(2, 0, 0, 10)])
    assert open_sealed(kits[1], good, log).plaintext == b"hello"
    with pytest.raises(RejectedMessage):
        open_sealed(kits[1], flip(good, HEADER_LEN), log)
    with pytest.raises(RejectedMessage):
        open_sealed(kits[1], good, RecordingAcceptedLog([(0, 1, 50, 60)]))
    kits[1].flush()
    assert path.read_bytes() == before
    assert log.entries == [(2, 0, 0, 10)]
    assert ("has_counter", (0, 1)) in log.calls and ("overlaps", (0, 0, 5)) in log.calls


def test_sealing_changes_nothing_in_the_kit(kits: list[Kit]) -> None:
    before = kits[0].path.read_bytes()
    seal_with_kit(kits[0], 0, 0, b"hello")
    kits[0].flush()
    assert kits[0].path.read_bytes() == before


# --- exhaustion and erased keys ------------------------------------------------------


def test_sealing_past_the_last_key_or_slice_byte_is_pad_exhausted_and_consumes_nothing(
    kits: list[Kit],
) -> None:
    before = kits[0].path.read_bytes()
    with pytest.raises(PadExhaustedError):
        seal_with_kit(kits[0], 8, 0, b"x")
    with pytest.raises(PadExhaustedError):
        seal_with_kit(kits[0], 100, 0, b"x")
    with pytest.raises(PadExhaustedError):
        seal_with_kit(kits[0], 0, 252, b"hello")
    with pytest.raises(PadExhaustedError):
        seal_with_kit(kits[0], 0, 0, bytes(257))
    kits[0].flush()
    assert kits[0].path.read_bytes() == before
    assert seal_with_kit(kits[0], 7, 251, b"hello")  # the very last key and bytes still work


def test_sealing_with_an_erased_key_is_refused(kits: list[Kit]) -> None:
    kits[0].erase_outbound_keys(3)
    with pytest.raises(ErasedKeyError):
        seal_with_kit(kits[0], 3, 0, b"hello")
    kits[0].erase_inbound_key(2, 0)  # an inbound key has no say in sealing
    assert seal_with_kit(kits[0], 0, 0, b"hello")


def test_sealing_is_refused_when_only_one_recipients_key_is_erased(kits: list[Kit]) -> None:
    at = kits[0].layout.outbound_key_offset(2, 5)
    kits[0]._mm[at : at + 32] = bytes(32)  # noqa: SLF001 - simulate a half-finished erase
    with pytest.raises(ErasedKeyError):
        seal_with_kit(kits[0], 5, 0, b"hello")


# --- xor_bytes ---------------------------------------------------------------------------


def naive_xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_xor_bytes_matches_a_naive_xor_on_both_code_paths(data: st.DataObject) -> None:
    threshold = seal_module.NUMPY_XOR_FROM
    size = data.draw(
        st.one_of(
            st.integers(0, 64),
            st.integers(threshold - 3, threshold + 3),
            st.integers(0, 3 * threshold),
        )
    )
    a = data.draw(st.binary(min_size=size, max_size=size))
    b = data.draw(st.binary(min_size=size, max_size=size))
    want = naive_xor(a, b)
    assert xor_bytes(a, b) == want
    assert xor_bytes(memoryview(a), memoryview(b)) == want


@pytest.mark.parametrize("size", [1, 31, 2047, 2048, 2049, 70000])
def test_xor_bytes_keeps_leading_and_trailing_zero_bytes(size: int) -> None:
    a = bytes(size)
    b = b"\x00" * (size - 1) + b"\x80"
    assert xor_bytes(a, b) == b
    assert xor_bytes(b, b) == bytes(size)
    assert type(xor_bytes(a, b)) is bytes


def test_xor_bytes_refuses_unequal_lengths() -> None:
    with pytest.raises(ValueError):
        xor_bytes(b"ab", b"a")


@pytest.mark.parametrize("size", [1, 64, 2047, 2048, 2049, 5000])
def test_both_sealing_code_paths_give_the_bytes_section_4_defines(
    groups: dict[int, list[Kit]], size: int
) -> None:
    kit = groups[4][2]
    plaintext = bytes(range(256)) * (size // 256) + bytes(size % 256)
    header = pack_header(kit.pad_id, 2, 4, 9, 33, size)
    ciphertext = naive_xor(plaintext, kit.key_stream(2, 33, size))
    tags = b"".join(
        Poly1305.generate_tag(kit.outbound_key(r, 9), header + ciphertext) for r in (0, 1, 3)
    )
    assert seal_with_kit(kit, 9, 33, plaintext) == header + ciphertext + tags
