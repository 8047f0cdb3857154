"""Member with format-2 kits: sealing in extents, opening against every member's
extents, grants moving exactly their range, the grant journal, failed-verification
counts written only with a real commit, damaged pads caught on either side, and
recovery that never seals in a range given away."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ghostline.errors import JournalFullError, PadExhaustedError, RejectedMessage
from ghostline.files import prepare_file, send_file
from ghostline.pad.kit import Kit
from ghostline.pad.seal2 import seal_with_kit2
from ghostline.protocol.extents import Extents
from ghostline.protocol.grants import JOURNAL_SLOTS, GrantRange, GrantRule
from ghostline.protocol.payload import GrantPayload, decode, encode_text
from ghostline.protocol.rules import Rule
from ghostline.state import granting
from ghostline.state.limits import MAX_SEAL_BYTES
from ghostline.state.member import Member
from ghostline.state.recovery import apply_recovery, plan_recovery
from helpers import file_bytes, flip, make_kit_set, state_rows, unsent

E = 8192


def group(tmp_path: Path, n: int = 3, **kwargs: object) -> list[Member]:
    kits = make_kit_set(
        tmp_path / "kits", n, slice_len=kwargs.pop("slice_len", E),
        auth_keys=kwargs.pop("auth_keys", 256), format=2, length_step=32, **kwargs,
    )  # fmt: skip
    return [Member.open(k) for k in kits]


def deliver(seq: int, sealed: bytes, *members: Member) -> None:
    for m in members:
        assert m.receive(seq, sealed) is not None


def test_a_format_2_group_seals_pads_to_the_length_step_and_opens(tmp_path: Path) -> None:
    a, b, c = group(tmp_path)
    sent = a.seal(encode_text("hello", 7))
    assert (sent.counter, sent.offset, sent.length) == (0, 0, 32)  # 11 bytes -> 32
    got = b.receive(1, sent.sealed)
    assert got is not None and decode(got.payload).text == "hello"  # type: ignore[union-attr]
    assert (got.offset, got.pad_used) == (0, 32)
    assert c.receive(1, sent.sealed) is not None
    second = a.seal(encode_text("x" * 40, 7))  # 45 bytes -> 64, right after the first
    assert (second.offset, second.length) == (32, 64)
    for m in (a, b, c):  # used pad and masks erased everywhere they were held
        assert m.kit.pad_bytes(0, 32) == bytes(32)
    assert a.kit.is_outbound_mask_erased(1, 0) and b.kit.is_inbound_mask_erased(0, 0)


@pytest.mark.parametrize("side", ["sender", "receiver"])
def test_one_flipped_pad_bit_on_either_side_is_rejected_not_shown(
    tmp_path: Path, side: str
) -> None:
    a, b, c = group(tmp_path)
    damaged = a if side == "sender" else b
    a.close() if side == "sender" else b.close()
    raw = bytearray(damaged.kit.path.read_bytes())
    raw[damaged.kit.layout.base + 3] ^= 0x04  # one bit of the pad the next message uses
    damaged.kit.path.write_bytes(bytes(raw))
    if side == "sender":
        a = Member.open(a.kit.path)
    else:
        b = Member.open(b.kit.path)
    sealed = a.seal(encode_text("pay 100 to bob", 1)).sealed
    rows, kit_before = state_rows(b.state_path), b.kit.path.read_bytes()
    with pytest.raises(RejectedMessage) as rejected:
        b.receive(1, sealed)
    assert rejected.value.rule == Rule.BAD_TAG
    assert "the sender's or this kit is damaged" in rejected.value.message
    # Not shown, nothing consumed, nothing written: the count waits in memory.
    assert b.history() == [] and b.kit.path.read_bytes() == kit_before
    assert state_rows(b.state_path) == rows and b.store.failed_counts() == {}
    assert b.failed_verifications() == {0: 1}
    # The undamaged member (carol) opens the same bytes only if the sender was fine.
    if side == "receiver":
        assert c.receive(1, sealed) is not None
    else:
        with pytest.raises(RejectedMessage, match="does not verify"):
            c.receive(1, sealed)
    # The next real commit writes the count.
    deliver(2, c.seal(encode_text("next", 2)).sealed, b)
    assert b.store.failed_counts() == {0: 1}


def test_forged_frames_make_the_receiver_write_nothing(tmp_path: Path) -> None:
    a, b, _ = group(tmp_path)
    sealed = a.seal(encode_text("genuine", 1)).sealed
    before = file_bytes(b.state_path), b.kit.path.read_bytes()
    for i in range(20):
        with pytest.raises(RejectedMessage):
            b.receive(i + 1, flip(sealed, len(sealed) - 20 - i))  # bytes of its tags
    assert (file_bytes(b.state_path), b.kit.path.read_bytes()) == before
    assert b.failed_verifications() == {0: 20}
    b.close()  # nor does closing write them: they wait for a real commit, and are lost
    assert file_bytes(b.state_path) == before[0]
    b = Member.open(b.kit.path)
    assert b.failed_verifications() == {}
    with pytest.raises(RejectedMessage):
        b.receive(30, flip(sealed, len(sealed) - 20))
    assert b.receive(31, sealed) is not None  # a real commit: the count goes with it
    assert b.store.failed_counts() == {0: 1}


def test_a_grant_moves_exactly_its_range_for_donor_grantee_and_third_member(
    tmp_path: Path,
) -> None:
    a, b, c = group(tmp_path)
    before = a.extents()
    gift = a.give(1, 1000)
    grant = gift.grant
    assert (grant.to, grant.end - grant.start) == (1, 1000)
    assert grant.end == E  # from the top of alice's slice: she seals from the bottom
    for m in (b, c):
        got = m.receive(1, gift.entry.sealed)
        assert got is not None and got.grant_refused is None
        assert decode(got.payload) == GrantPayload(
            1, grant.start, grant.end, decode(got.payload).sent_at
        )  # type: ignore[union-attr]
    expected = (
        before[0].remove(grant.start, grant.end),
        before[1].add(grant.start, grant.end),
        before[2],
    )
    for m in (a, b, c):
        assert m.extents() == expected
    assert b.store.unsealed() == Extents([(grant.start, grant.end), (E, 2 * E)])
    assert a.store.unsealed().overlaps(grant.start, grant.end) is False
    # Every member's journal holds it: the donor's before it sealed, the others' after.
    for m in (a, b, c):
        assert m.kit.journal() == [GrantRange(1, grant.start, grant.end)]
    # The grantee seals in it first (first-fit, lowest), and everyone accepts that.
    used = b.seal(encode_text("thanks", 2))
    assert grant.start <= used.offset and used.offset + used.length <= grant.end
    deliver(2, used.sealed, a, c)


def test_a_member_never_seals_outside_its_extents(tmp_path: Path, rng: random.Random) -> None:
    members = group(tmp_path, slice_len=4096, auth_keys=4096)
    seq = 0
    sealed: dict[int, list[tuple[int, int]]] = {0: [], 1: [], 2: []}
    exhausted: set[int] = set()
    while len(exhausted) < 3 and seq < 2000:
        who = rng.randrange(3)
        me = members[who]
        if rng.random() < 0.1:  # give a random amount to a random other member
            to = rng.choice([i for i in range(3) if i != who])
            size = rng.randint(1, 600)
            if size > me.giftable():
                continue
            entry = me.give(to, size).entry
        else:
            try:
                entry = me.seal(encode_text("x" * rng.randint(1, 200), 0))
            except PadExhaustedError:
                exhausted.add(who)
                continue
        held = me.extents()[who]
        start, end = entry.offset, entry.offset + entry.length
        assert held.contains(start, end)
        sealed[who].append((start, end))
        seq += 1
        for other in members:
            if other is not me:
                assert other.receive(seq, entry.sealed) is not None
    every = sorted(r for ranges in sealed.values() for r in ranges)
    assert all(x[1] <= y[0] for x, y in zip(every, every[1:], strict=False))
    for who, m in enumerate(members):  # sealed + unsealed + given away = what it held
        assert all(m.extents()[who].contains(s, t) for s, t in sealed[who])
    views = [m.extents() for m in members]
    assert views[0] == views[1] == views[2]  # everyone agrees on who holds what
    assert Extents(r for x in views[0] for r in x) == Extents([(0, 3 * 4096)])


def test_a_range_given_away_and_then_used_by_its_donor_is_refused_by_every_receiver(
    tmp_path: Path,
) -> None:
    a, b, c = group(tmp_path)
    gift = a.give(2, 512)
    deliver(1, gift.entry.sealed, b, c)
    start = gift.grant.start
    counter = a.store.next_position()[0]
    # What a donor that forgot its grant would send: genuine tags, alice's own masks.
    forged = seal_with_kit2(
        a.kit, counter, start, encode_text("mine again", 3), free=Extents([(start, start + 64)])
    )
    for m in (b, c):
        with pytest.raises(RejectedMessage) as rejected:
            m.receive(2, forged)
        assert rejected.value.rule == Rule.OFFSET_OUT_OF_RANGE


def test_a_donor_whose_state_is_lost_after_a_grant_recovers_and_never_seals_in_it(
    tmp_path: Path,
) -> None:
    a, b, c = group(tmp_path, slice_len=4 << 20, auth_keys=1 << 16)
    for seq in range(1, 6):
        deliver(seq, a.seal(encode_text("before the loss " * 10, 0)).sealed, b, c)
    gift = a.give(1, 1 << 20)
    deliver(6, gift.entry.sealed, b, c)
    kit_path, state = a.kit.path, a.state_path
    a.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{state}{suffix}").unlink(missing_ok=True)
    with Kit.open(kit_path) as kit:
        plan = plan_recovery(kit)
        assert plan.journal == ((0, gift.grant),)
        assert not plan.unsealed.overlaps(gift.grant.start, gift.grant.end)  # type: ignore[union-attr]
        apply_recovery(kit, plan)
    a = Member.open(kit_path)
    assert a.extents()[0] == Extents([(0, gift.grant.start)])
    assert a.extents()[1] == Extents([(gift.grant.start, 8 << 20)])
    seq, used = 6, []
    while True:  # seal until the pad runs out: never in the range given away
        try:
            entry = a.seal(encode_text("after recovery " * 4000, 0))
        except PadExhaustedError:
            break
        used.append(entry)
    assert used, "recovery left nothing to seal with"
    for e in used:
        assert e.offset + e.length <= gift.grant.start
        seq += 1
        deliver(seq, e.sealed, b, c)


def test_messages_of_the_other_format_are_refused_by_name(tmp_path: Path) -> None:
    v2 = group(tmp_path / "two", 2)
    v1 = [Member.open(k) for k in make_kit_set(tmp_path / "one", 2, slice_len=E)]
    with pytest.raises(RejectedMessage) as one_to_two:
        v2[1].receive(1, v1[0].seal(b"suite 1").sealed)
    with pytest.raises(RejectedMessage) as two_to_one:
        v1[1].receive(1, v2[0].seal(encode_text("suite 2", 0)).sealed)
    assert one_to_two.value.rule == two_to_one.value.rule == Rule.FORMAT_MISMATCH


def test_a_grant_a_receiver_refuses_moves_nothing_and_says_which_rule(tmp_path: Path) -> None:
    a, b, c = group(tmp_path)
    # Alice "gives" bob part of carol's slice: sealed like any message, refused as a grant.
    sealed = a.seal(GrantPayload(1, 2 * E, 2 * E + 100, 0).encode()).sealed
    before = b.extents()
    got = b.receive(1, sealed)
    assert got is not None and got.grant_refused == GrantRule.OUTSIDE_EXTENTS
    assert b.extents() == before and b.kit.journal() == []
    (entry,) = b.history()
    assert entry.grant_refused == GrantRule.OUTSIDE_EXTENTS
    assert c.receive(1, sealed).grant_refused == GrantRule.OUTSIDE_EXTENTS  # type: ignore[union-attr]


def test_a_crash_between_giving_and_journalling_is_journalled_on_the_next_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _, _ = group(tmp_path)

    def crash(*args: object) -> None:
        raise KeyboardInterrupt  # the process dies after the commit, before the journal

    with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(granting, "write_journal", crash)
        a.give(2, 300)
    assert a.kit.journal() == []
    kit_path = a.kit.path
    a.close()
    a = Member.open(kit_path)
    (grant,) = a.store.grants(giver=0)
    assert a.kit.journal() == [grant.grant] and grant.counter is None  # never sealed
    assert not a.store.unsealed().overlaps(grant.grant.start, grant.grant.end)
    assert granting.outstanding(a.store, 0) == frozenset()  # nobody waits for it
    assert unsent(a) == []


def test_the_hash_keys_are_erased_when_the_masks_are_used_up(tmp_path: Path) -> None:
    a, b = group(tmp_path, 2, auth_keys=3)
    for seq in range(1, 4):
        deliver(seq, a.seal(encode_text("m", 0)).sealed, b)
    region = a.kit.layout.outbound_region(1)
    assert a.kit.region(region, 16).tobytes() == bytes(16)  # R of alice -> bob
    region = b.kit.layout.inbound_region(0)
    assert b.kit.region(region, 16).tobytes() == bytes(16)
    with pytest.raises(Exception, match="no one-time keys left"):
        a.seal(encode_text("one too many", 0))


def test_a_member_running_low_gets_pad_from_the_one_with_the_most_to_spare(
    tmp_path: Path,
) -> None:
    members = group(tmp_path, slice_len=16 * 1024, auth_keys=2048)
    seq = 0
    gifts = []
    while not gifts and seq < 400:
        seq += 1
        entry = members[0].seal(encode_text("talking " * 10, 0))
        for m in members[1:]:
            m.receive(seq, entry.sealed)
        for giver in members[1:]:
            gift = giver.auto_give()
            if gift is not None:
                gifts.append((giver.index, gift))
                seq += 1
                for m in members:
                    if m is not giver:
                        m.receive(seq, gift.entry.sealed)
    assert len(gifts) == 1, "exactly one member gives when one runs low"
    giver, gift = gifts[0]
    assert gift.grant.to == 0
    # Ties go to the lowest index: both quiet members hold the same.
    assert giver == 1
    assert members[2].auto_give() is None  # alice is not low any more
    assert members[1].auto_give() is None  # and bob's grant is outstanding


async def test_a_file_at_the_largest_length_step_is_cut_by_padded_sizes(tmp_path: Path) -> None:
    kits = make_kit_set(tmp_path / "kits", 2, slice_len=8 << 20, auth_keys=512, format=2,
                        length_step=4096)  # fmt: skip
    source = tmp_path / "big.bin"
    source.write_bytes(random.Random(3).randbytes(3 << 20))
    with Member.open(kits[0]) as a:

        class Sealer:
            groups: list[int] = []

            async def send_many(self, payloads: list[bytes]) -> list[object]:
                self.groups.append(sum(a.pad_cost(len(p)) for p in payloads))
                return a.seal_many(list(payloads))  # refuses more than one commit holds

        outgoing = prepare_file(source, transfer_id=b"T" * 8, sent_at=0, step=4096)
        assert outgoing.pad_bytes == sum(a.pad_cost(len(p)) for p in outgoing.payloads)
        sealer = Sealer()
        await send_file(sealer, outgoing)
        assert len(sealer.groups) > 1 and max(sealer.groups) <= MAX_SEAL_BYTES
        assert (
            sum(sealer.groups)
            == outgoing.pad_bytes
            == a.own_pad().bytes_total - a.own_pad().bytes_left
        )


def test_a_full_journal_stops_giving_and_a_grant_accepted_then_is_kept_unjournalled(
    tmp_path: Path,
) -> None:
    a, b, c, d = group(tmp_path, 4, slice_len=64 * 1024, auth_keys=1024)
    for seq in range(1, JOURNAL_SLOTS + 1):  # alice gives carol 227 times; bob sees it all
        deliver(seq, a.give(2, 64).entry.sealed, b, c)
    assert len(a.kit.journal()) == len(b.kit.journal()) == JOURNAL_SLOTS
    before = (a.extents(), a.store.next_position(), a.kit.path.read_bytes())
    with pytest.raises(JournalFullError):
        a.give(2, 64)
    assert (a.extents(), a.store.next_position(), a.kit.path.read_bytes()) == before
    # Dave, who saw none of it, has room: bob accepts his grant but cannot journal it.
    gift = d.give(1, 4096)
    got = b.receive(JOURNAL_SLOTS + 1, gift.entry.sealed)
    assert got is not None and got.grant_refused is None
    assert b.extents()[1].contains(gift.grant.start, gift.grant.end)
    assert len(b.kit.journal()) == JOURNAL_SLOTS
    assert b.store.grants()[-1].journal == "full"
    with Kit.open(b.kit.path, writable=False) as kit:  # what recovery would rebuild
        assert kit.journal_extents()[3].contains(gift.grant.start, gift.grant.end)
