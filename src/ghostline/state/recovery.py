"""`pad recover`: a conservative state database rebuilt from the kit alone.

A sealer commits and then erases (and flushes) under the kit's seal lock, so at any
moment at most one commit of own messages is committed but not yet erased in the kit;
another process of the same member may already have sent those from the outbox. Every
other message ever sealed has its keys and pad zeroed in the kit. So the kit bounds
what was sent, give or take one commit (limits.py), and a database that skips one
commit's worth past the erasures (`recovery_margin`) never seals a key or a pad byte
twice. What a plan costs is data here (`RecoveryPlan`); the CLI words it.

Format 2 (docs/PROTOCOL.md section 15): every member's extents are rebuilt from the
kit's grant journal, so a range this member gave away is never its own again. Its own
pad is placed first-fit in its extents, so the kit shows where the erased part ends
(the last erased block inside them), and the one commit that may be sealed but not
erased lies above it: in the first piece of its extents that can hold a whole commit,
or in smaller pieces before it. Recovery skips everything below the erased end, every
smaller piece above it, and one commit's worth (with the margin for short erasures) of
the first piece that can hold a commit (`unsealed_after`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..pad.kit import Kit
from ..protocol.extents import Extents
from ..protocol.grants import GrantRange, initial_extents, move_range
from ..protocol.kitformat import FORMAT_1
from .database import Database, binding_of
from .erasure import (
    ERASED_RUN,
    erased_blocks_end,
    erased_extent,
    erased_inbound_counters,
    highest_erased_outbound,
)
from .grantstore import JOURNAL_WRITTEN
from .inspect import StateStatus, inspect_state
from .kitrecord import remember_kit
from .limits import MAX_SEAL_BYTES, MAX_SEAL_GROUP, max_payload
from .store import SkippedRange, Store


def recovery_margin(n: int) -> tuple[int, int]:
    """(keys, pad bytes) `pad recover` skips past what the kit shows erased: one whole
    commit (MAX_SEAL_GROUP keys, MAX_SEAL_BYTES of pad, which holds a message of
    max_payload(n) bytes), which a dead sealer may have left committed and sent but not
    erased, plus 2 * ERASED_RUN bytes: an erased stretch shorter than that past a gap
    cannot be told from random bytes."""
    return MAX_SEAL_GROUP, max(MAX_SEAL_BYTES, max_payload(n)) + 2 * ERASED_RUN


@dataclass(frozen=True)
class RecoveryPlan:
    """What `pad recover` will write, and what it costs. See `plan_recovery`."""

    kit_path: Path
    state: StateStatus
    highest_erased_counter: int  # -1: no outbound key erased
    next_counter: int
    erased_extent: int  # where the erased part of the own slice ends
    next_offset: int
    accepted: dict[int, list[int]]  # sender -> counters whose inbound key is erased
    auth_keys: int
    slice_len: int
    # Format 2: every member's extents from the journal, its grants (giver, grant), and
    # the owner's unsealed bytes after the margin. `erased_extent` and `next_offset`
    # are then absolute offsets: where the erased part ends, and the first unsealed byte.
    extents: tuple[Extents, ...] | None = None
    journal: tuple[tuple[int, GrantRange], ...] = ()
    unsealed: Extents | None = None
    owner: int = 0  # the kit owner's index

    @property
    def skipped_keys(self) -> int:
        return self.next_counter - (self.highest_erased_counter + 1)

    @property
    def own_extents(self) -> Extents | None:
        return None if self.extents is None else self.extents[self.owner]

    @property
    def skipped_bytes(self) -> int:
        if self.unsealed is not None:
            return self.bytes_left - self.unsealed.total
        return self.next_offset - self.erased_extent

    @property
    def keys_left(self) -> int:
        """Own keys the kit shows unused, before the margin."""
        return self.auth_keys - (self.highest_erased_counter + 1)

    @property
    def bytes_left(self) -> int:
        """Own pad bytes the kit shows unused, before the margin."""
        own = self.own_extents
        if own is not None:
            return _above(own, self.erased_extent).total
        return self.slice_len - self.erased_extent

    @property
    def pad_size(self) -> int:
        """The owner's slice, or its extents as the journal leaves them (format 2)."""
        own = self.own_extents
        return self.slice_len if own is None else own.total

    @property
    def can_send_after(self) -> bool:
        """Whether the kit can still send once the margin is skipped."""
        if self.unsealed is not None:
            return self.next_counter < self.auth_keys and bool(self.unsealed)
        return self.next_counter < self.auth_keys and self.next_offset < self.slice_len

    def aside_path(self) -> Path:
        return self.state.path.with_name(f"{self.state.path.name}.stale-{int(time.time())}")


def plan_recovery(kit: Kit, state_path: str | os.PathLike[str] | None = None) -> RecoveryPlan:
    """Plan a conservative state database from the kit alone, with `recovery_margin`:

    - next counter = highest erased outbound key + 1 + MAX_SEAL_GROUP keys;
    - next offset = end of the erased part of the own slice + the margin's bytes;
      format 2: the own extents the journal leaves, less `unsealed_after`'s skips;
    - both capped at the end of the keys and of the slice;
    - accepted counters = every erased inbound key, so replays are still refused.
    """
    h = kit.header
    state = inspect_state(kit, state_path)
    top = highest_erased_outbound(kit)
    accepted = {s: erased_inbound_counters(kit, s) for s in kit.layout.others()}
    margin_keys, margin_bytes = recovery_margin(h.n)
    plan = RecoveryPlan(
        kit_path=kit.path,
        state=state,
        highest_erased_counter=top,
        next_counter=min(h.auth_keys, top + 1 + margin_keys),
        erased_extent=0,
        next_offset=0,
        accepted=accepted,
        auth_keys=h.auth_keys,
        slice_len=h.slice_len,
        owner=h.self_index,
    )
    if kit.format == FORMAT_1:
        extent = erased_extent(kit, h.self_index)
        return replace(
            plan, erased_extent=extent, next_offset=min(h.slice_len, extent + margin_bytes)
        )
    extents = kit.journal_extents()
    own = extents[h.self_index]
    end = erased_blocks_end(kit, own)
    # Format 2 adds another 2 * ERASED_RUN: short erasures may lie on both sides of the
    # commit that was not erased (first-fit fills earlier gaps, see the docstring).
    unsealed = unsealed_after(own, end, margin_bytes + 2 * ERASED_RUN)
    return replace(
        plan,
        erased_extent=end,
        next_offset=unsealed.ranges[0][0] if unsealed else h.pad_len,
        extents=extents,
        journal=_givers(h.n, h.slice_len, kit.journal()),
        unsealed=unsealed,
    )


def unsealed_after(own: Extents, erased_end: int, margin: int) -> Extents:
    """What a recovered format-2 member may seal with: of its extents above
    `erased_end`, every piece shorter than `margin` is skipped, then the first
    `margin` bytes of the first piece that long; what follows is kept whole."""
    kept: list[tuple[int, int]] = []
    for start, end in _above(own, erased_end):
        if kept:
            kept.append((start, end))
        elif end - start > margin:
            kept.append((start + margin, end))
    return Extents(kept)


def _above(extents: Extents, offset: int) -> Extents:
    """The part of `extents` at or above `offset`."""
    return Extents((max(a, offset), b) for a, b in extents if b > offset)


def _givers(
    n: int, slice_len: int, records: list[GrantRange]
) -> tuple[tuple[int, GrantRange], ...]:
    """(giver, grant) of each journal record, the giver being who held the range then
    (the kit's `journal_extents` has already checked that one did)."""
    extents = initial_extents(n, slice_len)
    out = []
    for record in records:
        giver = next(s for s in range(n) if extents[s].contains(record.start, record.end))
        out.append((giver, record))
        extents = move_range(extents, giver, record)
    return tuple(out)


def apply_recovery(kit: Kit, plan: RecoveryPlan) -> Path:
    """Write the planned database (moving an old one aside), then erase what it skips."""
    path = plan.state.path
    if path.exists():
        aside = plan.aside_path()
        for suffix in ("", "-wal", "-shm"):
            old = Path(f"{path}{suffix}")
            if old.exists():
                old.rename(Path(f"{aside}{suffix}"))
    me = kit.header.self_index
    store = Store(
        Database.create(
            path,
            binding_of(kit.header),
            next_counter=plan.next_counter,
            next_offset=0 if plan.unsealed is not None else plan.next_offset,
            origin="recovered",
            extents=plan.extents or (),
            unsealed=plan.unsealed,
        )
    )
    top = plan.highest_erased_counter
    try:
        now = time.time()
        with store.transaction():
            for sender, counters in plan.accepted.items():
                for c in counters:
                    store.add_accepted(sender, c, None, None, None)
            for giver, grant in plan.journal:
                store.add_grant(giver, None, grant, now, journal=JOURNAL_WRITTEN)
            for skipped in _skipped(plan, me):
                store.add_skipped(skipped, now)
        for c in range(top + 1, plan.next_counter):
            if plan.unsealed is None:
                kit.erase_outbound_keys(c)
            else:
                kit.erase_outbound_masks(c)
        if plan.unsealed is None:
            if plan.next_offset > plan.erased_extent:
                kit.erase_key_stream(me, plan.erased_extent, plan.skipped_bytes)
        else:
            if plan.next_counter >= plan.auth_keys:
                kit.erase_outbound_hash_keys()
            for start, end in _margin_ranges(plan):
                kit.erase_pad(start, end - start)
        kit.flush()
    finally:
        store.close()
    remember_kit(kit.header)
    return path


def _margin_ranges(plan: RecoveryPlan) -> list[tuple[int, int]]:
    """Format 2: the owner's extents above the erased end that recovery skips."""
    own = plan.own_extents
    assert own is not None and plan.unsealed is not None
    skipped = _above(own, plan.erased_extent)
    for start, end in plan.unsealed:
        skipped = skipped.remove(start, end)
    return list(skipped.ranges)


def _skipped(plan: RecoveryPlan, me: int) -> list[SkippedRange]:
    """The ranges recovery records as skipped: what was erased before it (with the
    counters the kit shows used) and the safety margin (with the counters it skips)."""
    top = plan.highest_erased_counter
    if plan.unsealed is None:
        out = []
        if plan.erased_extent or top >= 0:
            out.append(
                SkippedRange(
                    me, 0, plan.erased_extent, 0, top + 1, "pad recover: erased before recovery"
                )
            )
        out.append(
            SkippedRange(
                me,
                plan.erased_extent,
                plan.next_offset,
                top + 1,
                plan.next_counter,
                "pad recover: safety margin",
            )  # fmt: skip
        )
        return out
    own = plan.own_extents
    assert own is not None
    below = [(a, min(b, plan.erased_extent)) for a, b in own if a < plan.erased_extent]
    out = [
        SkippedRange(me, a, b, 0, top + 1 if i == 0 else 0, "pad recover: erased before recovery")
        for i, (a, b) in enumerate(below)
    ]
    margin = _margin_ranges(plan) or [(plan.erased_extent, plan.erased_extent)]
    out.extend(
        SkippedRange(
            me,
            a,
            b,
            top + 1,
            plan.next_counter if i == 0 else top + 1,
            "pad recover: safety margin",
        )  # fmt: skip
        for i, (a, b) in enumerate(margin)
    )
    return out
