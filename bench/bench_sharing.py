"""How much of the group pad a skewed chat uses before its first member runs out:
format 1 (fixed slices) vs format 2 with automatic giving.

A simulated chat on real parts: a real kit set of each format, one real `Member` (its
SQLite state database, its kit erased as it goes) per person, messages passed from
member to member in order without a relay. Each turn a member chosen by the talkers'
shares seals a text of random length (drawn from a fixed seed), every other member
receives it, and then each member runs the real giving policy (`Member.auto_give`)
and any grant it makes is received by all the others too. The chat stops at the first
message a member cannot seal (its pad or its masks are used up); the figure is the
pad sealed by everyone, grants included, over the whole group pad.

The state databases live in a RAM disk when there is one (/dev/shm): each message is a
few commits per member, and this measures the policy, not the disk.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ghostline.errors import PadExhaustedError
from ghostline.pad.kitset import create_kit_set, default_auth_keys
from ghostline.protocol.payload import encode_text
from ghostline.state.member import Member, OutboxEntry

TITLE = "Sharing the pad: share of the group pad used when the first member runs out"

SLICE = 48 * 1024  # bytes of group pad per member
STEP = 32  # format 2's length step (pad new's default)
MEAN_TEXT = 60  # characters per text, on average (exponential, 1 to 400)
GOAL = 0.95  # format 2 with automatic giving
DEADLINE = 600.0  # seconds, per run: a run that takes longer stops and says so
SCENARIOS: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("2 members, 80/20", (0.8, 0.2)),
    ("5 members, one writes half", (0.5, 0.125, 0.125, 0.125, 0.125)),
)


def _scratch() -> Path:
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="ghostline-bench-sharing-", dir=base))


class Chat:
    """n members on one kit set, each message delivered to every other member at once."""

    def __init__(self, tmp: Path, n: int, fmt: int) -> None:
        names = [f"m{i}" for i in range(n)]
        (tmp / "kits").mkdir()
        paths = create_kit_set(
            tmp / "kits", names, slice_len=SLICE, auth_keys=default_auth_keys(SLICE, n, fmt),
            group="bench", random_bytes=os.urandom, entropy="bench", format=fmt,
            length_step=STEP if fmt == 2 else None,
        )  # fmt: skip
        self.members = [Member.open(p, state_path=tmp / f"{i}.sqlite") for i, p in enumerate(paths)]
        self.seq = 0
        self.grants = 0
        self.sealed = [0] * n  # pad bytes each member sealed with

    def close(self) -> None:
        for m in self.members:
            m.close()

    def deliver(self, sender: int, entry: OutboxEntry) -> None:
        self.seq += 1
        self.sealed[sender] += entry.length
        for i, m in enumerate(self.members):
            if i != sender:
                m.receive(self.seq, entry.sealed)
            else:
                m.mark_accepted(entry.counter, self.seq)

    def give_round(self) -> None:
        """Every member runs the giving policy until nobody gives (bounded)."""
        for _ in range(4 * len(self.members)):
            gave = False
            for i, m in enumerate(self.members):
                gift = m.auto_give()
                if gift is not None:
                    self.grants += 1
                    self.deliver(i, gift.entry)
                    gave = True
            if not gave:
                return


def simulate(shares: Sequence[float], fmt: int, *, seed: int = 1) -> dict[str, object]:
    """One chat to the first exhausted member: the share of the group pad used, messages
    sent, grants made, and who ran out."""
    rng = random.Random(seed)
    tmp = _scratch()
    os.environ["GHOSTLINE_HOME"] = str(tmp / "home")  # kit records stay in the scratch
    chat = Chat(tmp, len(shares), fmt)
    started = time.perf_counter()
    messages = 0
    out_of_pad: int | None = None
    try:
        while time.perf_counter() - started < DEADLINE:
            speaker = rng.choices(range(len(shares)), weights=shares)[0]
            size = min(400, 1 + int(rng.expovariate(1 / MEAN_TEXT)))
            payload = encode_text("x" * size, int(time.time()))
            try:
                entry = chat.members[speaker].seal(payload)
            except PadExhaustedError:
                out_of_pad = speaker
                break
            messages += 1
            chat.deliver(speaker, entry)
            if fmt == 2:
                chat.give_round()
    finally:
        chat.close()
        shutil.rmtree(tmp, ignore_errors=True)
    group = SLICE * len(shares)
    return {
        "used": sum(chat.sealed) / group,
        "messages": messages,
        "grants": chat.grants,
        "ran_out": out_of_pad,
        "seconds": time.perf_counter() - started,
    }


def run() -> str:
    rows = []
    for label, shares in SCENARIOS:
        for fmt in (1, 2):
            r = simulate(shares, fmt)
            used = float(r["used"])  # type: ignore[arg-type]
            goal = f"≥ {GOAL:.0%}: {'met' if used >= GOAL else 'NOT met'}" if fmt == 2 else ""
            stopped = "" if r["ran_out"] is not None else " (stopped at the time limit)"
            rows.append(
                f"| {label} | {fmt}{' + giving' if fmt == 2 else ''} | {used:.1%}{stopped} | "
                f"{r['messages']:,} | {r['grants']} | m{r['ran_out']} | {goal} |"
            )
    return "\n".join(
        [
            f"A chat to its first member's last message: group pad {SLICE // 1024} KiB per "
            f"member, texts of {MEAN_TEXT} characters on average (1 to 400, exponential), "
            f"format 2 with `length_step` {STEP} and `pad new`'s default masks; real "
            "`Member`s on real kits and SQLite, messages passed between them in order. "
            "Pad used counts every byte sealed: format 2's padding and its grant messages "
            "included. A format-1 member can use only its own slice, so the talker runs "
            "out when it has used its share; format 2 moves the quiet members' pad to it.",
            "",
            "| chat | format | group pad used | messages | grants | ran out | goal |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
