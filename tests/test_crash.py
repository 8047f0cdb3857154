"""Crash safety with real processes killed by SIGKILL (tests/crash_worker.py).

A worker seals in a loop and prints each sealed message only after `seal` returned;
we kill it at random moments, restart it, and finally check that nothing printed was
ever sealed twice or with shared pad, that the state is ahead of everything printed,
and that the start-up sweep erased every printed message's keys and pad.
"""

from __future__ import annotations

import fcntl
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ghostline.pad.kit import Kit
from ghostline.state.limits import MAX_SEAL_BYTES, MAX_SEAL_GROUP
from ghostline.state.member import CRASH_HOOK_ENV, CRASH_HOOK_EXIT, CRASH_HOOK_STOP, Member
from ghostline.state.recovery import recovery_margin
from helpers import make_kit_set, unsent
from waiting import wait_until

WORKER = Path(__file__).with_name("crash_worker.py")
KILLS = 15


def start(
    kit: Path, state: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(kit), str(state), *args],
        stdout=subprocess.PIPE,
        env=env,
    )


def read_until_ready(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> bytes:
    """Read the worker's stdout until its `ready` line; return what came with it."""
    assert proc.stdout is not None
    buf = b""
    deadline = time.monotonic() + timeout
    while b"ready\n" not in buf:
        assert time.monotonic() < deadline, "worker did not start"
        readable, _, _ = select.select([proc.stdout], [], [], 0.1)
        if readable:
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, f"worker exited early with {proc.wait()}"
            buf += chunk
    return buf


def test_sigkill_at_random_moments_never_reuses_pad(tmp_path: Path, rng: random.Random) -> None:
    kits = make_kit_set(tmp_path / "kits", 2, slice_len=1 << 20, auth_keys=20_000)
    state = tmp_path / f"state-{0}.sqlite"
    printed: list[tuple[int, int, int, bytes]] = []
    for round_ in range(KILLS):
        batch = "4" if round_ % 3 == 2 else "1"  # some rounds use seal_many
        proc = start(kits[0], state, "--batch", batch, "--seed", str(rng.getrandbits(32)))
        # These sleeps are the test: a random moment to kill at, not a wait for anything.
        # (The seed fixes the moments and sizes; where the worker is at a given moment is
        # up to the machine.)
        if round_ % 4 == 0:
            time.sleep(rng.uniform(0, 0.08))  # kill during start-up (and the sweep)
            early = b""
        else:
            early = read_until_ready(proc)
            time.sleep(rng.uniform(0, 0.08))
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=20)
        assert proc.returncode == -signal.SIGKILL
        for line in (early + rest).decode().splitlines():
            if line and line != "ready":
                fields = line.split()
                printed.append(
                    (int(fields[0]), int(fields[1]), int(fields[2]), bytes.fromhex(fields[3]))
                )

    assert printed, "the worker never got to seal anything"
    print(f"{len(printed)} messages printed over {KILLS} kills")
    counters = [p[0] for p in printed]
    assert len(counters) == len(set(counters)), "a counter was printed twice"
    ranges = sorted((o, o + n) for _, o, n, _ in printed)
    for (_, end), (start_, _) in zip(ranges, ranges[1:], strict=False):
        assert end <= start_, "two printed messages share pad bytes"

    with Member.open(kits[0], state_path=state) as a:  # runs the sweep
        next_counter, next_offset = a.store.next_position()
        assert next_counter > max(counters)
        assert next_offset >= max(end for _, end in ranges)
        outbox = {e.counter: e for e in unsent(a)}
        own_history = {h.counter: h for h in a.history() if h.sender == 0}
        for counter, offset, length, sealed in printed:
            entry = outbox[counter]
            assert (entry.offset, entry.length, entry.sealed) == (offset, length, sealed)
            assert counter in own_history
            assert a.kit.is_outbound_key_erased(1, counter)
            assert a.kit.key_stream(0, offset, length) == bytes(length)
    # Every printed message is genuine and opens exactly once at the recipient.
    with Member.open(kits[1]) as b:
        for seq, (_, _, _, sealed) in enumerate(printed, start=1):
            assert b.receive(seq, sealed) is not None


def test_a_crash_between_commit_and_erase_is_swept_on_restart(tmp_path: Path) -> None:
    kits = make_kit_set(tmp_path / "kits", 3)
    state = tmp_path / f"state-{0}.sqlite"
    env = {**os.environ, CRASH_HOOK_ENV: "1"}
    proc = start(kits[0], state, "--count", "3", "--batch", "3", env=env)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == CRASH_HOOK_EXIT
    assert out == b"ready\n"  # nothing was printed: seal_many never returned

    with Kit.open(kits[0], writable=False) as kit:  # committed, not erased
        assert not any(kit.is_outbound_key_erased(r, c) for r in (1, 2) for c in range(3))

    with Member.open(kits[0], state_path=state) as a:
        pending = unsent(a)
        assert [e.counter for e in pending] == [0, 1, 2]
        for e in pending:
            assert a.kit.is_outbound_key_erased(1, e.counter)
            assert a.kit.is_outbound_key_erased(2, e.counter)
            assert a.kit.key_stream(0, e.offset, e.length) == bytes(e.length)
        assert a.store.unerased_outbox() == []
    # The committed messages are resent as they were, never re-sealed, and they open.
    with Member.open(kits[1]) as b:
        for seq, e in enumerate(pending, start=1):
            assert b.receive(seq, e.sealed) is not None


def wait_stopped(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """Wait until `proc` stops (SIGSTOP) or exits; its wait status (reaped here)."""
    seen: list[int] = []

    def changed() -> bool:
        pid, status = os.waitpid(proc.pid, os.WNOHANG | os.WUNTRACED)
        seen.append(status)
        return pid != 0

    wait_until(changed, timeout, "the process stopping or exiting")
    return seen[-1]


@pytest.mark.parametrize("crash", [CRASH_HOOK_STOP, "1"], ids=["mid-erase", "before-erase"])
def test_recovery_after_a_crash_in_the_middle_of_a_full_group_never_seals_anything_twice(
    tmp_path: Path, crash: str, rng: random.Random
) -> None:
    """A sealer commits one group as large as a commit may be (MAX_SEAL_GROUP messages
    and MAX_SEAL_BYTES of pad together) and dies: SIGKILLed after erasing half of it,
    or gone before erasing any. The committed group may already have gone out (another
    process of the member sends outbox rows). The state database is then lost and
    rebuilt by `ghostline pad recover`: what is sealed after it shares no counter and
    no pad byte with anything sealed before."""
    margin_keys, margin_bytes = recovery_margin(2)
    assert (margin_keys, margin_bytes) == (MAX_SEAL_GROUP, MAX_SEAL_BYTES + 64)
    kits = make_kit_set(
        tmp_path / "kits", 2, slice_len=margin_bytes + (4 << 20), auth_keys=4 * MAX_SEAL_GROUP
    )
    state = tmp_path / "state.sqlite"
    before = start(kits[0], state, "--count", "5", "--seed", str(rng.getrandbits(32)))
    assert before.wait(30) == 0  # a few messages, sealed and erased

    size = MAX_SEAL_BYTES // MAX_SEAL_GROUP  # the group fills both caps exactly
    sizes = ["--min-size", str(size), "--max-size", str(size)]
    group = ["--count", str(MAX_SEAL_GROUP), "--batch", str(MAX_SEAL_GROUP)]
    env = {**os.environ, CRASH_HOOK_ENV: crash}
    sealer = start(kits[0], state, *group, *sizes, env=env)
    if crash == CRASH_HOOK_STOP:
        assert os.WIFSTOPPED(wait_stopped(sealer, 60)), "the sealer did not stop mid-group"
        with open(kits[0], "rb") as probe:  # no other sealer can commit until it erased
            with pytest.raises(BlockingIOError):
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            sealer.send_signal(signal.SIGKILL)
            sealer.wait(20)
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # its death released the lock
        erased_first = MAX_SEAL_GROUP // 2
    else:
        assert sealer.wait(60) == CRASH_HOOK_EXIT
        erased_first = 0

    with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as db:
        committed = db.execute("SELECT counter, offset, length FROM outbox").fetchall()
    killed = committed[5:]
    assert [c for c, _, _ in killed] == list(range(5, 5 + MAX_SEAL_GROUP))
    assert sum(n for _, _, n in killed) == MAX_SEAL_BYTES
    with Kit.open(kits[0], writable=False) as kit:
        erased = [kit.is_outbound_key_erased(1, c) for c, _, _ in killed]
    assert erased == [True] * erased_first + [False] * (MAX_SEAL_GROUP - erased_first)
    # More than the old margin (one key, 1 MiB) was committed past the erasures.
    assert sum(n for _, _, n in killed[erased_first:]) > 1 << 20

    for suffix in ("", "-wal", "-shm"):  # the database is lost
        Path(f"{state}{suffix}").unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "ghostline", "pad", "recover", str(kits[0]), "--state",
         str(state), "--yes"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    with Member.open(kits[0], state_path=state) as a:
        new = a.seal_many([rng.randbytes(size) for _ in range(MAX_SEAL_GROUP)])
        new.append(a.seal(b"and a short one"))
    used_counters = {c for c, _, _ in committed}
    assert not used_counters & {e.counter for e in new}
    for e in new:
        for _, offset, length in committed:
            assert e.offset + e.length <= offset or offset + length <= e.offset, (e, offset)
