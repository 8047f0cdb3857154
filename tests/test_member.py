"""Member: sealing and opening with durable state, erasure, rejection without side
effects, own echoes, concurrency, and refusing/recovering missing or stale state."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ghostline.errors import (
    PadExhaustedError,
    RecoveryNeeded,
    RejectedMessage,
    StateError,
    UsageError,
)
from ghostline.pad.kit import Kit
from ghostline.protocol.envelope import sealed_length
from ghostline.protocol.frames import DEFAULT_MAX_FRAME
from ghostline.protocol.payload import encode_text
from ghostline.protocol.relaycursor import Anchor, RelayCursor, frame_digest
from ghostline.state.database import default_state_path
from ghostline.state.limits import MAX_SEAL_BYTES, MAX_SEAL_GROUP, max_payload, seal_groups
from ghostline.state.member import Member
from ghostline.state.recovery import apply_recovery, plan_recovery, recovery_margin
from helpers import make_kit_set, state_rows, unsent

WORKER = Path(__file__).with_name("crash_worker.py")


def open_all(kits: list[Path]) -> list[Member]:
    return [Member.open(k) for k in kits]


def close_all(members: list[Member]) -> None:
    for m in members:
        m.close()


def snapshot(member: Member) -> tuple[list[str], bytes]:
    """Every row of the state database and every byte of the kit."""
    return state_rows(member.state_path), member.kit.path.read_bytes()


def test_three_members_exchange_messages_and_keep_history(tmp_path: Path) -> None:
    a, b, c = open_all(make_kit_set(tmp_path / "kits"))
    sent = a.seal(b"hello from a")
    assert (sent.counter, sent.offset, sent.length, sent.seq) == (0, 0, 12, None)
    got_b = b.receive(1, sent.sealed)
    got_c = c.receive(1, sent.sealed)
    assert got_b is not None and got_c is not None
    assert (got_b.sender, got_b.sender_name, got_b.counter, got_b.payload) == (
        0,
        "m0",
        0,
        b"hello from a",
    )
    reply = b.seal(b"hi a")
    assert a.receive(2, reply.sealed) is not None
    assert c.receive(2, reply.sealed) is not None
    assert [(h.sender_name, h.payload, h.state) for h in c.history()] == [
        ("m0", b"hello from a", "received"),
        ("m1", b"hi a", "received"),
    ]
    # In relay order: an own message the relay has not yet confirmed comes last...
    assert [(h.sender_name, h.counter, h.state) for h in a.history()] == [
        ("m1", 0, "received"),
        ("m0", 0, "sealed"),
    ]
    assert [e.counter for e in unsent(a)] == [0]
    a.mark_accepted(0, 1)
    assert unsent(a) == []
    # ...and once it has, takes its place by seq.
    assert [(h.seq, h.state) for h in a.history(limit=1)] == [(2, "received")]
    assert a.history()[0].state == "stored" and a.history()[0].seq == 1
    assert (a.relay_cursor, b.relay_cursor, c.relay_cursor) == (2, 1, 2)
    close_all([a, b, c])


def test_the_default_state_path_lives_under_ghostline_home(
    tmp_path: Path, ghostline_home: Path
) -> None:
    kits = make_kit_set(tmp_path / "kits", 2)
    with Member.open(kits[0]) as m:
        assert m.state_path == default_state_path(m.header)
        assert str(m.state_path).startswith(str(ghostline_home))
        assert m.state_path.name == f"{m.header.pad_id.hex()}-0.sqlite"


def test_sealing_erases_the_used_pad_and_keys_before_returning(tmp_path: Path) -> None:
    a, b, c = open_all(make_kit_set(tmp_path / "kits"))
    e = a.seal(b"x" * 40)
    assert a.kit.key_stream(0, 0, 40) == bytes(40)
    assert a.kit.is_outbound_key_erased(1, 0) and a.kit.is_outbound_key_erased(2, 0)
    assert not a.kit.is_outbound_key_erased(1, 1)
    b.receive(1, e.sealed)
    assert b.kit.is_inbound_key_erased(0, 0)
    assert b.kit.key_stream(0, 0, 40) == bytes(40)
    assert not c.kit.is_inbound_key_erased(0, 0)
    close_all([a, b, c])


def test_seal_many_commits_consecutive_counters_and_offsets(tmp_path: Path) -> None:
    a, b = open_all(make_kit_set(tmp_path / "kits", 2))
    entries = a.seal_many([b"one", b"two!", b"three"])
    assert [(e.counter, e.offset, e.length) for e in entries] == [(0, 0, 3), (1, 3, 4), (2, 7, 5)]
    assert a.store.next_position() == (3, 12)
    got = [b.receive(i + 1, e.sealed) for i, e in enumerate(entries)]
    assert [g.payload for g in got if g] == [b"one", b"two!", b"three"]
    close_all([a, b])


def test_running_out_of_keys_fails_cleanly_with_nothing_consumed(tmp_path: Path) -> None:
    a, b = open_all(make_kit_set(tmp_path / "kits", 2, auth_keys=3))
    a.seal_many([b"1", b"2", b"3"])
    before = snapshot(a)
    with pytest.raises(PadExhaustedError, match="no one-time keys left"):
        a.seal(b"4")
    assert snapshot(a) == before
    assert a.store.next_position() == (3, 3)
    close_all([a, b])


def test_running_out_of_pad_fails_cleanly_with_nothing_consumed(tmp_path: Path) -> None:
    a, b = open_all(make_kit_set(tmp_path / "kits", 2, slice_len=100))
    a.seal(b"x" * 60)
    before = snapshot(a)
    with pytest.raises(PadExhaustedError, match="40 remain"):
        a.seal(b"y" * 41)
    # A group is all or nothing: the first fits, the second does not.
    with pytest.raises(PadExhaustedError):
        a.seal_many([b"y" * 30, b"z" * 30])
    assert snapshot(a) == before
    assert [e.counter for e in unsent(a)] == [0]
    assert a.seal(b"y" * 40).offset == 60
    close_all([a, b])


def test_the_last_member_can_reopen_its_kit_after_using_its_whole_slice(
    tmp_path: Path,
) -> None:
    # Past the last member's slice lie its outbound keys: key 0 is erased by now, and
    # must not read as "the pad at the next offset is erased" (a stale database).
    kits = make_kit_set(tmp_path / "kits", 2, slice_len=64, auth_keys=8)
    with Member.open(kits[1]) as last:
        last.seal(b"x" * 64)
    with Member.open(kits[1]) as last:
        assert last.store.next_position() == (1, 64)
        with pytest.raises(PadExhaustedError):
            last.seal(b"y" * 20)


def test_a_member_whose_slice_is_used_up_reopens_though_the_next_slice_is_erased(
    tmp_path: Path,
) -> None:
    a, b = open_all(make_kit_set(tmp_path / "kits", 2, slice_len=64, auth_keys=8))
    a.seal(b"x" * 64)
    assert a.receive(1, b.seal(b"z" * 40).sealed) is not None  # erases b's slice start
    close_all([a, b])
    # Exhausted, not "the database is older than the kit".
    with Member.open(a.kit.path) as again, pytest.raises(PadExhaustedError):
        again.seal(b"w" * 20)


def test_a_message_too_large_for_a_relay_frame_is_refused_with_nothing_consumed(
    tmp_path: Path,
) -> None:
    # Sealed, it would burn its pad and then block the outbox: the relay refuses the
    # frame (ERROR 2) on every reconnect, and everything sealed after it waits behind it.
    a, b = open_all(make_kit_set(tmp_path / "kits", 2, slice_len=4 << 20, auth_keys=8))
    largest = DEFAULT_MAX_FRAME - 1 - 8 - sealed_length(0, 2)  # DELIVER: type, seq, sealed
    before = snapshot(a)
    with pytest.raises(UsageError, match="too large"):
        a.seal_many([b"ok", b"x" * (largest + 1)])
    assert snapshot(a) == before
    entry = a.seal(b"x" * largest)
    assert b.receive(1, entry.sealed) is not None
    close_all([a, b])


def test_one_commit_holds_at_most_the_byte_cap_and_a_group_over_it_consumes_nothing(
    tmp_path: Path,
) -> None:
    a, b = open_all(make_kit_set(tmp_path / "kits", 2, slice_len=8 << 20, auth_keys=80))
    share = MAX_SEAL_BYTES // MAX_SEAL_GROUP
    over = [b"x" * share] * (MAX_SEAL_GROUP - 1) + [b"x" * (share + 1)]
    before = snapshot(a)
    with pytest.raises(ValueError, match="bytes of pad"):
        a.seal_many(over)
    assert snapshot(a) == before
    full = a.seal_many([b"y" * share] * MAX_SEAL_GROUP)  # both caps exactly
    assert sum(e.length for e in full) == MAX_SEAL_BYTES
    assert [e.counter for e in full] == list(range(MAX_SEAL_GROUP))
    # The largest message a relay carries fits one commit alone, in any group size.
    assert all(max_payload(n) <= MAX_SEAL_BYTES for n in range(2, 256))
    close_all([a, b])


def test_seal_groups_cut_by_messages_and_by_bytes() -> None:
    share = MAX_SEAL_BYTES // MAX_SEAL_GROUP
    assert list(seal_groups([1] * 70)) == [slice(0, 32), slice(32, 64), slice(64, 70)]
    assert list(seal_groups([1] * 5, most=2)) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    # 32 parts of `share` bytes fill the byte cap exactly; one byte more starts a group.
    assert list(seal_groups([share] * 32)) == [slice(0, 32)]
    assert list(seal_groups([share + 1] * 32)) == [slice(0, 31), slice(31, 32)]
    # The largest messages go one or two to a commit.
    big = max_payload(2)
    assert list(seal_groups([big, big, big])) == [slice(0, 2), slice(2, 3)]
    assert list(seal_groups([])) == []


def test_a_rejected_message_changes_no_state(tmp_path: Path) -> None:
    a, b, _c = open_all(make_kit_set(tmp_path / "kits"))
    good = a.seal(b"genuine").sealed
    b.advance_cursor(5)
    forged = bytearray(good)
    forged[-17] ^= 1  # the last byte of b's tag (c's tag is the last 16 bytes)
    before = snapshot(b)
    with pytest.raises(RejectedMessage) as err:
        b.receive(5, bytes(forged))
    assert err.value.rule == "bad_tag"
    assert snapshot(b) == before
    assert not b.kit.is_inbound_key_erased(0, 0)
    # The genuine message still opens: the failed attempt consumed nothing.
    assert b.receive(6, good) is not None
    close_all([a, b, _c])


def test_a_rejected_message_changes_nothing_not_even_the_relay_cursor(tmp_path: Path) -> None:
    a, b = open_all(make_kit_set(tmp_path / "kits", 2))
    before = snapshot(b)
    with pytest.raises(RejectedMessage):
        b.receive(9, b"short")
    forged = bytearray(a.seal(b"genuine").sealed)
    forged[-1] ^= 1
    with pytest.raises(RejectedMessage):
        b.receive(2**63 - 1, bytes(forged))
    assert snapshot(b) == before
    assert b.relay_cursor == 0
    close_all([a, b])


def test_a_forged_echo_naming_us_as_sender_is_rejected_and_settles_nothing(
    tmp_path: Path,
) -> None:
    a, b = open_all(make_kit_set(tmp_path / "kits", 2))
    e = a.seal(b"mine")
    assert a.receive(1, e.sealed) is None  # the genuine echo: byte-identical, authentic
    assert a.relay_cursor == 1
    forged = bytearray(e.sealed)
    forged[-1] ^= 1  # same header (sender = us, a counter we used), other bytes
    before = snapshot(a)
    for seq in (2, 2**63 - 1):
        with pytest.raises(RejectedMessage, match="not the message it sealed") as err:
            a.receive(seq, bytes(forged))
        assert err.value.rule == "own_message"
    assert a.relay_state() == RelayCursor(None, 1)
    assert snapshot(a) == before
    close_all([a, b])


def test_an_own_message_copied_to_another_seq_is_rejected_and_settles_nothing(
    tmp_path: Path,
) -> None:
    a, b = open_all(make_kit_set(tmp_path / "kits", 2))
    e = a.seal(b"mine")
    a.mark_accepted(e.counter, 1)
    assert a.receive(1, e.sealed) is None  # where the relay's ACCEPTED put it
    with pytest.raises(RejectedMessage, match="holds as seq 1, replayed at seq 2") as err:
        a.receive(2, e.sealed)  # a hop puts our old message over the one at seq 2
    assert err.value.rule == "own_message"
    assert a.relay_state() == RelayCursor(None, 1)
    close_all([a, b])


def test_a_copy_of_an_accepted_message_settles_only_its_own_seq(tmp_path: Path) -> None:
    a, b = open_all(make_kit_set(tmp_path / "kits", 2))
    first, second = a.seal(b"first").sealed, a.seal(b"second").sealed
    assert b.receive(1, first) is not None
    before = snapshot(b)
    assert b.receive(1, first) is None  # the relay sent it again: a genuine copy
    assert snapshot(b) == before  # settled already: nothing to write
    with pytest.raises(RejectedMessage, match="holds as seq 1, replayed at seq 2") as err:
        b.receive(2, first)  # a hop puts the old message over the one at seq 2
    assert err.value.rule == "replayed_counter"
    forged = bytearray(first)
    forged[-1] ^= 1  # the same sender and counter, other bytes
    with pytest.raises(RejectedMessage, match="not that message") as err:
        b.receive(2, bytes(forged))
    assert err.value.rule == "replayed_counter"
    assert b.relay_cursor == 1 and snapshot(b) == before
    got = b.receive(2, second)  # the genuine message at seq 2 still opens
    assert got is not None and got.payload == b"second"
    assert b.relay_cursor == 2
    close_all([a, b])


def test_after_a_store_change_each_copy_settles_once_at_its_new_seq(tmp_path: Path) -> None:
    a, b = open_all(make_kit_set(tmp_path / "kits", 2))
    old, mine = a.seal(b"old").sealed, b.seal(b"mine")
    b.enter_relay_store(b"the first store!")
    assert b.receive(5, old) is not None
    b.mark_accepted(mine.counter, 6, store_id=b"the first store!")
    assert b.relay_cursor == 0  # seqs 1-4 have not come
    b.enter_relay_store(b"another store id")
    # The new store holds both at other seqs: each copy settles there, once.
    assert b.receive(2, old, store_id=b"another store id") is None
    assert b.receive(1, mine.sealed, store_id=b"another store id") is None
    assert b.relay_state() == RelayCursor(b"another store id", 2)
    for seq, sealed in ((3, old), (4, mine.sealed)):
        with pytest.raises(RejectedMessage, match="replayed at seq"):
            b.receive(seq, sealed, store_id=b"another store id")
    # The anchor: the highest settled seq whose frame is known, with its digest.
    assert b.relay_anchor() == Anchor(2, frame_digest(old))
    close_all([a, b])


def test_erased_key_material_is_refused_for_receiving_and_sending(tmp_path: Path) -> None:
    a, b = open_all(make_kit_set(tmp_path / "kits", 2))
    msg = a.seal(b"to be refused").sealed
    b.kit.erase_inbound_key(0, 0)
    with pytest.raises(RejectedMessage) as err:
        b.receive(1, msg)
    assert err.value.rule == "erased_key"
    a.kit.erase_outbound_keys(1)  # as if the database forgot message 1
    before = snapshot(a)
    with pytest.raises(StateError, match="older than the kit") as state_err:
        a.seal(b"next")
    assert isinstance(state_err.value, RecoveryNeeded)
    assert snapshot(a) == before
    close_all([a, b])


def test_a_replay_is_refused_even_after_reopening(tmp_path: Path) -> None:
    kits = make_kit_set(tmp_path / "kits", 2)
    a, b = open_all(kits)
    msg = a.seal(b"once only").sealed
    assert b.receive(1, msg) is not None
    b.close()
    b = Member.open(kits[1])
    with pytest.raises(RejectedMessage) as err:
        b.receive(2, msg)
    assert err.value.rule == "replayed_counter"
    close_all([a, b])


def test_an_own_message_echoed_by_the_relay_returns_none(tmp_path: Path) -> None:
    a, b = open_all(make_kit_set(tmp_path / "kits", 2))
    e = a.seal(b"mine")
    before_history = a.history()
    assert a.receive(3, e.sealed) is None
    assert a.history()[0].payload == before_history[0].payload
    assert unsent(a) == []  # the echo told us the relay stored it
    assert a.history()[0].seq == 3
    assert a.relay_state().seen == {3}  # seqs 1 and 2 have not come yet
    assert a.relay_cursor == 0
    # A message "from us" with a counter we never used is refused, not ignored.
    forged = bytearray(e.sealed)
    forged[22:30] = (5).to_bytes(8, "big")
    with pytest.raises(RejectedMessage) as err:
        a.receive(4, bytes(forged))
    assert err.value.rule == "own_message"
    close_all([a, b])


def test_usage_counts_what_was_sent_and_accepted(tmp_path: Path) -> None:
    a, b, c = open_all(make_kit_set(tmp_path / "kits", slice_len=10_000, auth_keys=100))
    texts = [encode_text("x" * 95, 1), encode_text("y" * 295, 1)]  # 100 and 300 bytes
    for i, e in enumerate(a.seal_many(texts)):
        b.receive(i + 1, e.sealed)
    ua, ub = a.usage(), b.usage()
    me = ua.me
    assert (me.bytes_used, me.bytes_left, me.keys_used, me.keys_left) == (400, 9600, 2, 98)
    assert (me.messages, me.average_size, me.messages_left) == (2, 200.0, 48)
    assert ua.members[1].messages == 0 and ua.members[1].messages_left == 100
    assert ua.members[1].average_size == 64.0
    seen = ub.members[0]
    assert (seen.bytes_used, seen.keys_used, seen.messages, seen.messages_left) == (400, 2, 2, 48)
    assert ua.keys_erased == 4 and ub.keys_erased == 2 and c.usage().keys_erased == 0
    assert a.usage(scan_kit=False).keys_erased == 4 and b.usage(scan_kit=False).keys_erased == 2
    assert me.fraction_left == pytest.approx(0.96)
    assert ua.pad_bytes_erased == 400 and ub.pad_bytes_erased == 400
    assert ua.keys_total == 2 * 2 * 100 and ua.pad_bytes_total == 30_000
    close_all([a, b, c])


def test_a_state_database_of_another_member_is_refused(tmp_path: Path) -> None:
    kits = make_kit_set(tmp_path / "kits", 2)
    Member.open(kits[0], state_path=tmp_path / f"state-{0}.sqlite").close()
    with pytest.raises(StateError, match="belongs to another kit"):
        Member.open(kits[1], state_path=tmp_path / f"state-{0}.sqlite")


# --- concurrency -------------------------------------------------------------------


def group_ranges(kit: Kit, sends: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """(sender, offset, length) -> [start, end) in group-pad coordinates."""
    e = kit.header.slice_len
    return sorted((s * e + o, s * e + o + n) for s, o, n in sends)


def assert_disjoint(ranges: list[tuple[int, int]]) -> None:
    for (_, end), (start, _) in zip(ranges, ranges[1:], strict=False):
        assert end <= start, "two messages share pad bytes"


def test_members_sealing_in_parallel_threads_never_share_pad_bytes(tmp_path: Path) -> None:
    members = open_all(make_kit_set(tmp_path / "kits", 4, slice_len=1 << 14))
    sends: list[tuple[int, int, int]] = []
    lock = threading.Lock()

    def run(m: Member) -> None:
        for i in range(40):
            e = m.seal(os.urandom(1 + (i * 7) % 50))
            with lock:
                sends.append((m.index, e.offset, e.length))

    threads = [threading.Thread(target=run, args=(m,)) for m in members]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(sends) == 160
    assert_disjoint(group_ranges(members[0].kit, sends))
    close_all(members)


def run_workers(jobs: list[tuple[Path, Path]], count: int, rng: random.Random) -> list[list[str]]:
    procs = []
    for kit, state in jobs:
        seed = str(rng.getrandbits(32))  # the worker's message sizes and bytes
        command = [sys.executable, str(WORKER), str(kit), str(state), "--count", str(count)]
        procs.append(
            subprocess.Popen([*command, "--seed", seed], stdout=subprocess.PIPE, text=True)
        )
    outputs = []
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        outputs.append([line for line in out.splitlines() if line not in ("ready", "")])
    return outputs


def parse(line: str) -> tuple[int, int, int, bytes]:
    counter, offset, length, sealed = line.split()
    return int(counter), int(offset), int(length), bytes.fromhex(sealed)


def test_members_sealing_in_parallel_processes_never_share_pad_bytes(
    tmp_path: Path, rng: random.Random
) -> None:
    kits = make_kit_set(tmp_path / "kits", 3, slice_len=1 << 14)
    jobs = [(k, tmp_path / f"state-{i}.sqlite") for i, k in enumerate(kits)]
    outputs = run_workers(jobs, 40, rng)
    sends = [(i, o, n) for i, lines in enumerate(outputs) for _, o, n, _ in map(parse, lines)]
    assert len(sends) == 120
    with Kit.open(kits[0], writable=False) as kit:
        assert_disjoint(group_ranges(kit, sends))


def test_two_processes_of_one_member_never_reuse_a_counter(
    tmp_path: Path, rng: random.Random
) -> None:
    kits = make_kit_set(tmp_path / "kits", 2, slice_len=1 << 15)
    state = tmp_path / f"state-{0}.sqlite"
    Member.open(kits[0], state_path=state).close()
    outputs = run_workers([(kits[0], state), (kits[0], state)], 60, rng)
    messages = [parse(line) for lines in outputs for line in lines]
    counters = [m[0] for m in messages]
    assert sorted(counters) == list(range(120))
    assert_disjoint(sorted((o, o + n) for _, o, n, _ in messages))
    with Member.open(kits[0], state_path=state) as a:
        assert a.store.next_position()[0] == 120
    with Member.open(kits[1]) as b:
        for seq, (_, _, _, sealed) in enumerate(messages, start=1):
            assert b.receive(seq, sealed) is not None


# --- missing, stale and recovered state ----------------------------------------------


def test_a_missing_database_for_a_used_kit_is_refused_with_the_recovery_hint(
    tmp_path: Path,
) -> None:
    kits = make_kit_set(tmp_path / "kits", 2)
    with Member.open(kits[0]) as a:
        a.seal(b"used")
        path = a.state_path
    path.unlink()
    with pytest.raises(StateError, match="already erased") as err:
        Member.open(kits[0])
    assert isinstance(err.value, RecoveryNeeded) and err.value.kit_path == str(kits[0])
    assert not path.exists()


def test_a_missing_database_for_a_kit_that_only_received_is_refused_too(tmp_path: Path) -> None:
    kits = make_kit_set(tmp_path / "kits", 2)
    a, b = open_all(kits)
    b.receive(1, a.seal(b"hi").sealed)
    path = b.state_path
    close_all([a, b])
    path.unlink()
    with pytest.raises(StateError, match="inbound key 0 from member 0"):
        Member.open(kits[1])


def test_an_older_copy_of_the_database_is_refused(tmp_path: Path) -> None:
    kits = make_kit_set(tmp_path / "kits", 2)
    with Member.open(kits[0]) as a:
        a.seal(b"first")
        path = a.state_path
    backup = tmp_path / "backup.sqlite"
    shutil.copy(path, backup)
    with Member.open(kits[0]) as a:
        a.seal(b"second")
    shutil.copy(backup, path)
    with pytest.raises(StateError, match="older than the kit") as err:
        Member.open(kits[0])
    assert isinstance(err.value, RecoveryNeeded) and err.value.kit_path == str(kits[0])


def test_recovery_skips_past_everything_used_and_sealing_works_after_it(tmp_path: Path) -> None:
    margin_keys, margin = recovery_margin(3)
    # A fixed pad (a seed) whose byte after the used part is not zero: the kit cannot
    # tell a zero pad byte from an erased one, so a random pad would make the erased
    # extent one byte longer once in 256 runs.
    kits = make_kit_set(
        tmp_path / "kits", 3, slice_len=margin + (1 << 16), auth_keys=64, seed="recovery"
    )
    a, b, c = open_all(kits)
    sent = [a.seal(os.urandom(n)) for n in (10, 300, 5000)]
    for i, e in enumerate(sent):
        b.receive(i + 1, e.sealed)
    from_c = c.seal(b"to everyone")
    a.receive(10, from_c.sealed)
    used_end = sent[-1].offset + sent[-1].length
    path = a.state_path
    close_all([a, b, c])
    path.unlink()

    with Kit.open(kits[0]) as kit:
        plan = plan_recovery(kit)
        assert plan.state.status == "missing"
        assert (plan.highest_erased_counter, plan.next_counter) == (2, 3 + margin_keys)
        assert plan.erased_extent == used_end
        assert plan.next_offset == used_end + margin
        assert plan.accepted == {1: [], 2: [0]}
        apply_recovery(kit, plan)

    with Member.open(kits[0]) as a:
        assert a.store.next_position() == (3 + margin_keys, used_end + margin)
        for counter in range(3, 3 + margin_keys):  # the skipped keys were erased
            assert a.kit.is_outbound_key_erased(1, counter)
        with pytest.raises(RejectedMessage) as err:
            a.receive(11, from_c.sealed)
        assert err.value.rule == "replayed_counter"
        # An own message from before: its bytes were not kept, so a copy of it cannot
        # be told from a forgery. Refused, and its seq is not settled.
        with pytest.raises(RejectedMessage, match="before `pad recover`") as err:
            a.receive(12, sent[0].sealed)
        assert err.value.rule == "own_message"
        assert not a.relay_state().is_settled(12)
        new = a.seal(b"after recovery")
        assert (new.counter, new.offset) == (3 + margin_keys, used_end + margin)
    with Member.open(kits[1]) as b:
        got = b.receive(20, new.sealed)
        assert got is not None and got.payload == b"after recovery"


def test_processes_opening_a_new_member_at_once_all_get_the_same_complete_database(
    tmp_path: Path,
) -> None:
    kit = make_kit_set(tmp_path / "kits")[0]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    # Each process says it is ready (imports done), then waits for "go" on stdin: all
    # four open the member at the same moment, whatever their start-up took.
    start_together = (
        "import sys; from ghostline.state.member import Member; "
        "print('ready', flush=True); sys.stdin.readline(); "
        "m = Member.open(sys.argv[1]); print(m.store.path); m.close()"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", start_together, str(kit)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline() == "ready\n"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [err for _, err in outputs]
    assert len({out.strip() for out, _ in outputs}) == 1
    with Member.open(kit) as member:
        assert member.seal(b"works").counter == 0
    with Kit.open(kit, writable=False) as opened:
        state_dir = default_state_path(opened.header).parent
    assert not [p.name for p in state_dir.iterdir() if p.name.endswith(".new")]
