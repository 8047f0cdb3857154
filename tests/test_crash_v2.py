"""Format-2 crash safety with real processes killed by SIGKILL (tests/crash_worker.py):
a donor killed at random moments while it gives pad and seals, and a grantee killed
while it seals in the range it was given. Nothing printed (or committed) may share a
pad byte with anything else, and a donor never seals in a range it gave away."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

from ghostline.protocol.extents import Extents
from ghostline.protocol.payload import encode_text
from ghostline.state.member import Member
from helpers import make_kit_set, unsent
from test_crash import read_until_ready, start

KILLS = 12
E = 1 << 20


def run_killed(rng: random.Random, kit: Path, state: Path, *args: str) -> list[list[str]]:
    """Start the worker KILLS times, each killed at a random moment; every line it
    printed, split."""
    lines: list[list[str]] = []
    for round_ in range(KILLS):
        proc = start(kit, state, *args, "--seed", str(rng.getrandbits(32)))
        # These sleeps are the test: a random moment to kill at, not a wait for anything.
        if round_ % 4 == 0:
            time.sleep(rng.uniform(0, 0.08))  # during start-up (the sweep, the journal)
            early = b""
        else:
            early = read_until_ready(proc)
            time.sleep(rng.uniform(0, 0.1))
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
        printed = (early + rest).decode().splitlines()
        lines.extend(line.split() for line in printed if line not in ("ready", "exhausted"))
        if "exhausted" in printed:  # it used up its pad before the kill came: done
            # The kill may still land while it closes after saying so.
            assert proc.returncode in (0, -signal.SIGKILL)
            break
        assert proc.returncode == -signal.SIGKILL
    return lines


def disjoint(ranges: list[tuple[int, int]]) -> bool:
    ordered = sorted(ranges)
    return all(a[1] <= b[0] for a, b in zip(ordered, ordered[1:], strict=False))


def test_a_donor_killed_while_giving_never_seals_twice_nor_in_what_it_gave(
    tmp_path: Path, rng: random.Random
) -> None:
    kits = make_kit_set(tmp_path / "kits", 3, slice_len=E, auth_keys=20_000, format=2)
    state = tmp_path / "donor.sqlite"
    size = str(rng.randint(64, 2048))
    lines = run_killed(
        rng, kits[0], state, "--give-every", "3", "--give-to", str(rng.randint(1, 2)),
        "--give-size", size, "--max-size", "300",
    )  # fmt: skip
    messages = [(int(f[0]), int(f[1]), int(f[2])) for f in lines if f[0].isdigit()]
    gifts = [(int(f[1]), int(f[2])) for f in lines if f[0] == "gift"]
    messages += [(int(f[3]), int(f[4]), int(f[5])) for f in lines if f[0] == "gift"]
    print(f"{len(messages)} messages and {len(gifts)} gifts printed over {KILLS} kills")
    assert gifts, "the worker never got to give"
    counters = [m[0] for m in messages]
    assert len(counters) == len(set(counters))
    used = [(o, o + n) for _, o, n in messages]
    assert disjoint(used + gifts), "a printed message shares pad with another or a gift"

    with Member.open(kits[0], state_path=state) as a:  # the sweep, and the journal caught up
        outbox = [(r.offset, r.offset + r.length) for r in a.store.unerased_outbox()]
        assert outbox == []  # every committed message erased
        sealed = [(e.offset, e.offset + e.length) for e in unsent(a)]
        given = [(g.grant.start, g.grant.end) for g in a.store.grants(giver=0)]
        assert set(used) <= set(sealed) and set(gifts) <= set(given)
        # Everything committed: the donor's slice is exactly what it sealed, what it
        # gave (sealed or not: a crash may come between giving and sealing) and what is
        # still unsealed, with no byte twice.
        free = a.store.unsealed()
        assert disjoint(sealed + given + list(free.ranges))
        assert Extents(sealed + given + list(free.ranges)) == Extents([(0, E)])
        assert a.extents()[0] == Extents(sealed + list(free.ranges))
        assert [(g.start, g.end) for g in a.kit.journal()] == given
        for start_, end in given:  # kept: the donor reads the grantee's messages with it
            assert a.kit.pad_bytes(start_, end - start_) != bytes(end - start_)
        pending = unsent(a)
    # The other members accept every message, grants included, in order.
    for kit in kits[1:]:
        with Member.open(kit) as other:
            for seq, e in enumerate(pending, start=1):
                assert other.receive(seq, e.sealed) is not None
            held = other.extents()[0]
            assert all(not held.overlaps(s, t) for s, t in given if (s, t) in gifts)


def test_a_grantee_killed_while_sealing_in_its_grant_never_seals_a_byte_twice(
    tmp_path: Path, rng: random.Random
) -> None:
    kits = make_kit_set(tmp_path / "kits", 3, slice_len=E, auth_keys=20_000, format=2)
    with Member.open(kits[0]) as a, Member.open(kits[1]) as b, Member.open(kits[2]) as c:
        gift = a.give(1, 16 * 1024)
        b.receive(1, gift.entry.sealed)
        c.receive(1, gift.entry.sealed)
        b_state = b.state_path
    granted = (gift.grant.start, gift.grant.end)
    assert granted[1] <= E  # below bob's own slice: first-fit seals there first
    lines = run_killed(rng, kits[1], b_state, "--max-size", "400", "--batch", "2")
    used = [(int(f[1]), int(f[1]) + int(f[2])) for f in lines if f[0].isdigit()]
    print(f"{len(used)} messages printed over {KILLS} kills")
    assert disjoint(used)
    assert any(granted[0] <= s and t <= granted[1] for s, t in used), "never sealed in the grant"

    with Member.open(kits[1], state_path=b_state) as b:
        pending = unsent(b)
        sealed = [(e.offset, e.offset + e.length) for e in pending]
        assert set(used) <= set(sealed) and disjoint(sealed)
        mine = b.extents()[1]
        assert all(mine.contains(s, t) for s, t in sealed)
        assert Extents(sealed + list(b.store.unsealed().ranges)) == mine
        more = b.seal(encode_text("after the kills", 0))  # still seals, elsewhere
        assert disjoint([*sealed, (more.offset, more.offset + more.length)])
        pending.append(more)
    # The donor and the third member accept all of it: the range is bob's for them too.
    for kit in (kits[0], kits[2]):
        with Member.open(kit) as other:
            for seq, e in enumerate(pending, start=2):
                assert other.receive(seq, e.sealed) is not None
