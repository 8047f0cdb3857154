"""Suite 2 (docs/PROTOCOL.md sections 13-14): round trips, padding, every reject rule,
damaged pads on either side, extents and grants, insider forgery, purity, exhaustion."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.poly1305 import Poly1305
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ghostline.errors import ErasedKeyError, PadExhaustedError, RejectedMessage
from ghostline.pad.kit import Kit
from ghostline.pad.seal import open_sealed, seal_with_kit, tag_index, xor_bytes
from ghostline.pad.seal2 import (
    largest_payload,
    next_range,
    open_sealed2,
    pad_payload,
    padded_length,
    payload_length,
    seal2,
    seal_with_kit2,
)
from ghostline.protocol.envelope import HEADER_LEN, TAG_LEN, pack_header
from ghostline.protocol.extents import Extents
from ghostline.protocol.grants import GrantRange
from ghostline.protocol.rules import Rule
from helpers import (
    MemoryAcceptedLog,
    MemoryReceiverView,
    build_message,
    build_message2,
    flip,
    make_kit_set,
    open_kits,
)

E = 256  # slice length of the `kits` fixture
STEP = 24
EVERYTHING = Extents([(0, 1 << 40)])  # for sealing tests that are not about extents


@pytest.fixture
def kits(tmp_path: Path) -> list[Kit]:
    """A fresh, writable n = 3 format-2 kit set: E = 256, K = 8, length step 24."""
    opened = open_kits(
        make_kit_set(
            tmp_path / "kits", 3, slice_len=E, auth_keys=8, seed="seal2", format=2,
            length_step=STEP,
        )
    )  # fmt: skip
    yield opened
    for kit in opened:
        kit.close()


@pytest.fixture(scope="module")
def groups(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, int], list[Kit]]:
    """Read-only format-2 kit sets for n = 2..5 and length steps 1, 7, 32, 4096."""
    out = {}
    for n in range(2, 6):
        for step in (1, 7, 32, 4096):
            paths = make_kit_set(
                tmp_path_factory.mktemp(f"n{n}s{step}"), n, slice_len=16384, auth_keys=16,
                seed=f"seal2-{n}-{step}", format=2, length_step=step,
            )  # fmt: skip
            out[(n, step)] = open_kits(paths)
    yield out
    for kits in out.values():
        for kit in kits:
            kit.close()


def fresh(n: int = 3, slice_len: int = E, **kwargs: object) -> MemoryReceiverView:
    return MemoryReceiverView(n, slice_len, **kwargs)  # type: ignore[arg-type]


def rule_of(kit: Kit, data: bytes, state: MemoryReceiverView | None = None) -> str:
    with pytest.raises(RejectedMessage) as caught:
        open_sealed2(kit, data, state or fresh(kit.n, kit.header.slice_len))
    return caught.value.rule


def sealed_by_the_book(kit: Kit, counter: int, offset: int, payload: bytes) -> bytes:
    """Section 13 written out plainly: header, padded plaintext XOR pad, tags over
    header || padded plaintext keyed by R || S_j."""
    step = kit.header.length_step
    assert step is not None
    padded = payload + b"\x80" + bytes(-(len(payload) + 1) % step)
    header = pack_header(
        kit.pad_id, kit.self_index, kit.n, counter, offset, len(padded), version=2, suite=2
    )
    stream = kit.pad_bytes(offset, len(padded))
    out = header + bytes(p ^ k for p, k in zip(padded, stream, strict=True))
    for key in kit.outbound_tag_keys(counter):
        out += Poly1305.generate_tag(key, header + padded)
    return out


# --- padding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "step", "padded"),
    [(0, 1, 1), (5, 1, 6), (23, 24, 24), (24, 24, 48), (25, 24, 48), (0, 4096, 4096)],
)
def test_padding_is_0x80_then_the_fewest_zeros_to_a_multiple_of_the_step(
    size: int, step: int, padded: int
) -> None:
    payload = bytes([0x80]) * size  # payload bytes that look like padding stay payload
    assert padded_length(size, step) == padded
    out = pad_payload(payload, step)
    assert out == payload + b"\x80" + bytes(padded - size - 1)
    assert payload_length(out, step) == size


@pytest.mark.parametrize(("room", "step"), [(100, 24), (96, 24), (95, 1), (23, 24), (1, 1)])
def test_the_largest_payload_is_the_longest_whose_padding_still_fits(room: int, step: int) -> None:
    most = largest_payload(room, step)
    assert padded_length(most, step) <= room if most >= 0 else room < step
    assert padded_length(most + 1, step) > room


@pytest.mark.parametrize(
    ("padded", "step"),
    [
        (b"", 4),
        (b"abc\x00", 4),  # no marker
        (b"abc\x81", 4),  # wrong marker
        (b"abcd" + b"\x80\x00\x00\x00", 4),  # fine...
        (b"abc\x80" + bytes(4), 4),  # ...but a whole step of zeros more is not minimal
        (b"ab\x80", 4),  # not a multiple of the step
        (bytes(8), 4),  # all zeros
    ],
)
def test_anything_but_exact_padding_is_refused(padded: bytes, step: int) -> None:
    want = 4 if padded == b"abcd\x80\x00\x00\x00" else None
    assert payload_length(padded, step) == want


# --- round trips -----------------------------------------------------------------------


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_recipient_opens_what_any_member_seals(
    groups: dict[tuple[int, int], list[Kit]], data: st.DataObject
) -> None:
    n = data.draw(st.integers(2, 5), label="n")
    step = data.draw(st.sampled_from([1, 7, 32, 4096]), label="step")
    kits = groups[(n, step)]
    sender = data.draw(st.integers(0, n - 1), label="sender")
    payload = data.draw(st.binary(max_size=5000), label="payload")
    size = padded_length(len(payload), step)
    slice_len = kits[0].header.slice_len
    start = data.draw(st.integers(0, slice_len - size), label="offset in slice")
    offset = sender * slice_len + start
    counter = data.draw(st.integers(0, 15), label="counter")
    sealed = seal_with_kit2(kits[sender], counter, offset, payload, free=EVERYTHING)
    assert sealed == sealed_by_the_book(kits[sender], counter, offset, payload)
    assert len(sealed) == HEADER_LEN + size + TAG_LEN * (n - 1)
    for r in range(n):
        if r != sender:
            opened = open_sealed2(kits[r], sealed, fresh(n, slice_len))
            assert opened.plaintext == payload
            assert opened.envelope[3:] == (sender, n, counter, offset, size)


def test_seal2_takes_the_pad_and_keys_it_is_given(kits: list[Kit]) -> None:
    payload = b"x" * 3000  # the large-message path
    size = padded_length(len(payload), STEP)
    sealed = seal2(
        pad_id=kits[0].pad_id, sender=0, n=3, counter=2, offset=40, payload=payload,
        step=STEP, pad=kits[0].pad_bytes(40, size), tag_keys=kits[0].outbound_tag_keys(2),
    )  # fmt: skip
    assert sealed == sealed_by_the_book(kits[0], 2, 40, payload)
    with pytest.raises(ValueError, match="pad must be"):
        seal2(
            pad_id=kits[0].pad_id, sender=0, n=3, counter=2, offset=40, payload=payload,
            step=STEP, pad=bytes(size - 1), tag_keys=kits[0].outbound_tag_keys(2),
        )  # fmt: skip
    with pytest.raises(ValueError, match="needs 2 tag keys"):
        seal2(
            pad_id=kits[0].pad_id, sender=0, n=3, counter=2, offset=40, payload=payload,
            step=STEP, pad=bytes(size), tag_keys=[bytes(32)],
        )  # fmt: skip


# --- every reject rule -----------------------------------------------------------------


def good(kits: list[Kit], counter: int = 1, offset: int = 10) -> bytes:
    return seal_with_kit2(kits[0], counter, offset, b"attack at dawn", free=EVERYTHING)


def test_a_message_shorter_than_the_header_is_rejected_as_too_short(kits: list[Kit]) -> None:
    assert rule_of(kits[1], good(kits)[:41]) == Rule.TOO_SHORT


def test_a_suite_1_message_for_a_format_2_kit_is_refused_by_name(
    kits: list[Kit], tmp_path: Path
) -> None:
    v1 = open_kits(make_kit_set(tmp_path / "v1", 3, slice_len=E, auth_keys=8, seed="seal2"))
    message = build_message(v1, 0, 1, 10, b"attack at dawn", pad_id=kits[0].pad_id)
    assert rule_of(kits[1], message) == Rule.FORMAT_MISMATCH
    for kit in v1:
        kit.close()


def test_a_suite_2_message_for_a_format_1_kit_is_refused_by_name(
    kits: list[Kit], tmp_path: Path
) -> None:
    v1 = open_kits(make_kit_set(tmp_path / "v1", 3, slice_len=E, auth_keys=8, seed="seal2"))
    message = build_message2(kits, 0, 1, 10, pad_payload(b"hi", STEP), pad_id=v1[0].pad_id)
    with pytest.raises(RejectedMessage) as caught:
        open_sealed(v1[1], message, MemoryAcceptedLog())
    assert caught.value.rule == Rule.FORMAT_MISMATCH
    for kit in v1:
        kit.close()


@pytest.mark.parametrize(("version", "suite"), [(3, 2), (0, 2), (1, 2), (255, 255)])
def test_a_version_other_than_2_is_rejected(kits: list[Kit], version: int, suite: int) -> None:
    message = build_message2(kits, 0, 1, 10, pad_payload(b"hi", STEP), version=version, suite=suite)
    assert rule_of(kits[1], message) == Rule.UNKNOWN_VERSION


@pytest.mark.parametrize("suite", [1, 3, 0])
def test_a_suite_other_than_2_is_rejected(kits: list[Kit], suite: int) -> None:
    message = build_message2(kits, 0, 1, 10, pad_payload(b"hi", STEP), suite=suite)
    assert rule_of(kits[1], message) == Rule.UNKNOWN_SUITE


def test_a_message_for_another_pad_is_rejected(kits: list[Kit]) -> None:
    message = build_message2(kits, 0, 1, 10, pad_payload(b"hi", STEP), pad_id=bytes(16))
    assert rule_of(kits[1], message) == Rule.WRONG_PAD


def test_a_message_naming_another_group_size_is_rejected(kits: list[Kit]) -> None:
    message = build_message2(kits, 0, 1, 10, pad_payload(b"hi", STEP), n_field=4)
    assert rule_of(kits[1], message) == Rule.WRONG_GROUP_SIZE


def test_a_sender_outside_the_group_is_rejected(kits: list[Kit]) -> None:
    message = bytearray(good(kits))
    message[18:20] = (3).to_bytes(2, "big")
    assert rule_of(kits[1], bytes(message)) == Rule.UNKNOWN_SENDER


def test_a_message_claiming_to_be_from_the_recipient_is_rejected(kits: list[Kit]) -> None:
    assert rule_of(kits[0], good(kits)) == Rule.OWN_MESSAGE


def test_a_length_that_disagrees_with_the_header_is_rejected(kits: list[Kit]) -> None:
    assert rule_of(kits[1], good(kits) + b"\x00") == Rule.BAD_LENGTH
    message = build_message2(kits, 0, 1, 10, pad_payload(b"hi", STEP), length_field=48)
    assert rule_of(kits[2], message) == Rule.BAD_LENGTH


def test_an_empty_ciphertext_is_rejected(kits: list[Kit]) -> None:
    assert rule_of(kits[1], build_message2(kits, 0, 1, 10, b"")) == Rule.EMPTY


def test_a_counter_past_the_kits_masks_is_rejected(kits: list[Kit]) -> None:
    assert rule_of(kits[1], build_message2(kits, 0, 8, 10, pad_payload(b"", STEP))) == (
        Rule.COUNTER_OUT_OF_RANGE
    )


@pytest.mark.parametrize("offset", [3 * E - STEP + 1, (1 << 64) - 1, E, 2 * E - 1])
def test_a_range_outside_the_senders_extents_is_rejected(kits: list[Kit], offset: int) -> None:
    # Past the group pad, overflowing 64 bits, or in another member's range.
    message = build_message2(kits, 0, 1, offset, pad_payload(b"hi", STEP))
    assert rule_of(kits[1], message) == Rule.OFFSET_OUT_OF_RANGE


def test_a_range_the_sender_granted_away_is_rejected_and_the_grantee_may_use_it(
    kits: list[Kit],
) -> None:
    granted = GrantRange(2, 100, 200)
    state = fresh(grants=[(0, granted)])
    alice = build_message2(kits, 0, 1, 120, pad_payload(b"hi", STEP))
    assert rule_of(kits[1], alice, state) == Rule.OFFSET_OUT_OF_RANGE
    carol = seal_with_kit2(kits[2], 0, 120, b"mine now", free=Extents([(100, 200)]))
    assert open_sealed2(kits[1], carol, state).plaintext == b"mine now"
    assert rule_of(kits[1], carol, fresh()) == Rule.OFFSET_OUT_OF_RANGE  # grant unknown


def test_a_replayed_counter_is_rejected_even_with_a_fresh_range(kits: list[Kit]) -> None:
    state = fresh(accepted=[(0, 1, 50, 74)])
    assert rule_of(kits[1], good(kits, 1, 10), state) == Rule.REPLAYED_COUNTER


def test_a_range_overlapping_one_accepted_from_any_sender_is_rejected(kits: list[Kit]) -> None:
    # Bob accepted carol's message on [20, 44) of what alice later gave carol; alice
    # (whose view of her extents is stale) seals there again: pad reuse, refused.
    state = fresh(accepted=[(2, 0, 20, 44)])
    assert rule_of(kits[1], good(kits, 1, 10), state) == Rule.OVERLAPPING_RANGE
    assert rule_of(kits[1], good(kits, 1, 10), fresh(accepted=[(0, 0, 33, 34)])) == (
        Rule.OVERLAPPING_RANGE
    )
    touching = fresh(accepted=[(2, 0, 34, 58), (0, 0, 0, 10)])
    assert open_sealed2(kits[1], good(kits, 1, 10), touching).plaintext == b"attack at dawn"


def test_a_message_whose_mask_or_hash_key_is_erased_is_rejected(kits: list[Kit]) -> None:
    message = good(kits)
    kits[1].erase_inbound_mask(0, 1)
    assert rule_of(kits[1], message) == Rule.ERASED_KEY
    kits[2].erase_inbound_hash_key(0)
    assert rule_of(kits[2], message) == Rule.ERASED_KEY


def test_a_tag_that_does_not_verify_is_rejected(kits: list[Kit]) -> None:
    message = good(kits)
    assert rule_of(kits[1], flip(message, HEADER_LEN + STEP)) == Rule.BAD_TAG


@pytest.mark.parametrize(
    "padded",
    [
        b"attack at dawn" + bytes(10),  # no 0x80
        b"attack at dawn\x80" + bytes(9 + 24),  # a whole step of zeros too many
        b"attack at dawn\x80\x01" + bytes(8),  # the marker, then not only zeros
        bytes(24),
    ],
)
def test_a_verified_message_with_malformed_padding_is_rejected(
    kits: list[Kit], padded: bytes
) -> None:
    assert rule_of(kits[1], build_message2(kits, 0, 1, 10, padded)) == Rule.BAD_PADDING


def test_a_length_that_is_not_a_multiple_of_the_step_is_bad_padding_after_the_tag(
    kits: list[Kit],
) -> None:
    message = build_message2(kits, 0, 1, 10, b"attack at dawn\x80")  # 15 bytes, step 24
    assert rule_of(kits[1], message) == Rule.BAD_PADDING
    # Checked after the tag: a forger gets bad_tag (counted), never bad_padding.
    assert rule_of(kits[1], flip(message, HEADER_LEN)) == Rule.BAD_TAG


def test_every_rule_has_a_test_above() -> None:
    assert (*Rule.SUITE_1, Rule.BAD_PADDING) == Rule.SUITE_2
    assert len(set(Rule.SUITE_2)) == 17 == len(Rule.SUITE_2)


# --- damage and forgery ----------------------------------------------------------------


def flip_on_disk(kit: Kit, at: int, mask: int) -> None:
    """Damage one byte of the kit file, as a failing disk would (the open kit's shared
    map sees the change)."""
    with open(kit.path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ mask]))


def test_flipping_any_byte_is_rejected_by_every_recipient_it_concerns(kits: list[Kit]) -> None:
    payload = b"8 bytes!"
    data = seal_with_kit2(kits[0], 1, 20, payload, free=EVERYTHING)
    tags_at = HEADER_LEN + STEP
    for at in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            tampered = flip(data, at, mask)
            for r in (1, 2):
                own_tag = tags_at + TAG_LEN * tag_index(0, r)
                if at < tags_at or own_tag <= at < own_tag + TAG_LEN:
                    assert rule_of(kits[r], tampered), (at, mask, r)
                else:
                    assert open_sealed2(kits[r], tampered, fresh()).plaintext == payload


@pytest.mark.parametrize("bit", [0, 5, 37, 191])
def test_one_flipped_pad_bit_in_the_senders_kit_is_rejected_by_every_receiver(
    kits: list[Kit], bit: int
) -> None:
    offset = 30
    flip_on_disk(kits[0], kits[0].layout.base + offset + bit // 8, 1 << (bit % 8))
    data = seal_with_kit2(kits[0], 1, offset, b"pay 10", free=EVERYTHING)
    assert rule_of(kits[1], data) == Rule.BAD_TAG
    assert rule_of(kits[2], data) == Rule.BAD_TAG


@pytest.mark.parametrize("bit", [0, 5, 37, 191])
def test_one_flipped_pad_bit_in_a_receivers_kit_is_rejected_by_that_receiver_only(
    kits: list[Kit], bit: int
) -> None:
    offset = 30
    data = seal_with_kit2(kits[0], 1, offset, b"pay 10", free=EVERYTHING)
    flip_on_disk(kits[1], kits[1].layout.base + offset + bit // 8, 1 << (bit % 8))
    assert rule_of(kits[1], data) == Rule.BAD_TAG
    assert open_sealed2(kits[2], data, fresh()).plaintext == b"pay 10"


def test_an_insider_who_rewrites_a_message_and_fixes_its_own_tag_fools_no_one_else(
    kits: list[Kit],
) -> None:
    original = seal_with_kit2(kits[0], 2, 30, b"pay bob 10", free=EVERYTHING)
    forged_padded = pad_payload(b"pay bob 99", STEP)
    header = original[:HEADER_LEN]
    ciphertext = xor_bytes(forged_padded, kits[1].pad_bytes(30, STEP))
    tag_for_1 = Poly1305.generate_tag(kits[1].inbound_tag_key(0, 2), header + forged_padded)
    forged = header + ciphertext + tag_for_1 + original[-TAG_LEN:]
    assert open_sealed2(kits[1], forged, fresh()).plaintext == b"pay bob 99"  # fools itself
    assert rule_of(kits[2], forged) == Rule.BAD_TAG


def test_an_insider_cannot_make_up_a_message_with_its_own_hash_key_or_masks(
    kits: list[Kit],
) -> None:
    padded = pad_payload(b"meet at 9", STEP)
    header = pack_header(kits[1].pad_id, 0, 3, 5, 60, STEP, version=2, suite=2)
    body = header + xor_bytes(padded, kits[1].pad_bytes(60, STEP))
    own = kits[1].inbound_tag_key(0, 5)
    guesses = [own, kits[1].outbound_tag_keys(5)[1], own[:16] + kits[1].pad_bytes(0, 16)]
    for guess in guesses:
        tag = Poly1305.generate_tag(guess, header + padded)
        assert rule_of(kits[2], body + Poly1305.generate_tag(own, header + padded) + tag) == (
            Rule.BAD_TAG
        )


# --- purity and exhaustion -------------------------------------------------------------


class RecordingView(MemoryReceiverView):
    """Fails the test if opening tries to change the receiver's state."""

    def __setattr__(self, name: str, value: object) -> None:
        if getattr(self, "_frozen", False):
            raise AssertionError(f"open_sealed2 must not change the state ({name})")
        super().__setattr__(name, value)


def test_opening_changes_no_state_whether_it_accepts_or_rejects(kits: list[Kit]) -> None:
    path = kits[1].path
    before = path.read_bytes()
    state = RecordingView(3, E, accepted=[(2, 0, 600, 624)])
    state._frozen = True
    accepted_before = list(state.accepted)
    message = good(kits)
    assert open_sealed2(kits[1], message, state).plaintext == b"attack at dawn"
    for bad in (flip(message, HEADER_LEN), message[:-1], build_message2(kits, 0, 1, 10, b"x" * 24)):
        with pytest.raises(RejectedMessage):
            open_sealed2(kits[1], bad, state)
    kits[1].flush()
    assert path.read_bytes() == before
    assert state.accepted == accepted_before


def test_sealing_changes_nothing_in_the_kit(kits: list[Kit]) -> None:
    before = kits[0].path.read_bytes()
    seal_with_kit2(kits[0], 0, 0, b"hello", free=EVERYTHING)
    kits[0].flush()
    assert kits[0].path.read_bytes() == before


def test_sealing_only_inside_the_free_extents(kits: list[Kit]) -> None:
    free = Extents([(0, 100)])
    assert open_sealed2(kits[1], seal_with_kit2(kits[0], 0, 76, b"x", free=free), fresh())
    with pytest.raises(ValueError, match="not free"):
        seal_with_kit2(kits[0], 0, 77, b"x", free=free)  # [77, 101) runs past it
    with pytest.raises(ValueError, match="not free"):
        seal_with_kit2(kits[0], 0, 300, b"x", free=free)


def test_the_next_range_is_the_first_free_run_and_none_left_is_pad_exhausted() -> None:
    free = Extents([(0, 10), (40, 100), (200, 260)])
    assert next_range(free, 9, 24) == (40, 64)  # [0, 10) is too short for 24
    assert next_range(free, 0, 1) == (0, 1)
    with pytest.raises(PadExhaustedError, match="longest free piece of your pad is 60"):
        next_range(free, 60, 24)  # needs 72


def test_sealing_past_the_last_mask_is_pad_exhausted_and_an_erased_mask_is_refused(
    kits: list[Kit],
) -> None:
    with pytest.raises(PadExhaustedError, match="all 8 messages"):
        seal_with_kit2(kits[0], 8, 0, b"x", free=EVERYTHING)
    kits[0].erase_outbound_masks(3)
    with pytest.raises(ErasedKeyError):
        seal_with_kit2(kits[0], 3, 0, b"x", free=EVERYTHING)


def test_each_suite_refuses_the_other_formats_kit_as_a_programming_error(
    kits: list[Kit], tmp_path: Path
) -> None:
    v1 = open_kits(make_kit_set(tmp_path / "v1", 2, slice_len=E, auth_keys=8))
    with pytest.raises(ValueError, match="format-1 kits only"):
        seal_with_kit(kits[0], 0, 0, b"x")
    with pytest.raises(ValueError, match="format-1 kits only"):
        open_sealed(kits[1], good(kits), MemoryAcceptedLog())
    with pytest.raises(ValueError, match="format-2 kits only"):
        seal_with_kit2(v1[0], 0, 0, b"x", free=EVERYTHING)
    with pytest.raises(ValueError, match="format-2 kits only"):
        open_sealed2(v1[1], good(kits), fresh(2))
    for kit in v1:
        kit.close()
