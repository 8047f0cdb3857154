"""`pad recover`: a conservative state database rebuilt from the kit alone.

A sealer commits and then erases (and flushes) under the kit's seal lock, so at any
moment at most one commit of own messages is committed but not yet erased in the kit;
another process of the same member may already have sent those from the outbox. Every
other message ever sealed has its keys and pad zeroed in the kit. So the kit bounds
what was sent, give or take one commit (limits.py), and a database that skips one
commit's worth past the erasures (`recovery_margin`) never seals a key or a pad byte
twice. What a plan costs is data here (`RecoveryPlan`); the CLI words it.

The protocol-v2 recovery (extents rebuilt from the kit's grant journal) belongs here.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..pad.kit import Kit
from .database import Database, binding_of, require_format_1
from .erasure import (
    ERASED_RUN,
    erased_extent,
    erased_inbound_counters,
    highest_erased_outbound,
)
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

    @property
    def skipped_keys(self) -> int:
        return self.next_counter - (self.highest_erased_counter + 1)

    @property
    def skipped_bytes(self) -> int:
        return self.next_offset - self.erased_extent

    @property
    def keys_left(self) -> int:
        """Own keys the kit shows unused, before the margin."""
        return self.auth_keys - (self.highest_erased_counter + 1)

    @property
    def bytes_left(self) -> int:
        """Own pad bytes the kit shows unused, before the margin."""
        return self.slice_len - self.erased_extent

    @property
    def can_send_after(self) -> bool:
        """Whether the kit can still send once the margin is skipped."""
        return self.next_counter < self.auth_keys and self.next_offset < self.slice_len

    def aside_path(self) -> Path:
        return self.state.path.with_name(f"{self.state.path.name}.stale-{int(time.time())}")


def plan_recovery(kit: Kit, state_path: str | os.PathLike[str] | None = None) -> RecoveryPlan:
    """Plan a conservative state database from the kit alone, with `recovery_margin`:

    - next counter = highest erased outbound key + 1 + MAX_SEAL_GROUP keys;
    - next offset = end of the erased part of the own slice + the margin's bytes;
    - both capped at the end of the keys and of the slice;
    - accepted counters = every erased inbound key, so replays are still refused.
    """
    require_format_1(kit)
    h = kit.header
    state = inspect_state(kit, state_path)
    top = highest_erased_outbound(kit)
    extent = erased_extent(kit, h.self_index)
    accepted = {s: erased_inbound_counters(kit, s) for s in kit.layout.others()}
    margin_keys, margin_bytes = recovery_margin(h.n)
    return RecoveryPlan(
        kit_path=kit.path,
        state=state,
        highest_erased_counter=top,
        next_counter=min(h.auth_keys, top + 1 + margin_keys),
        erased_extent=extent,
        next_offset=min(h.slice_len, extent + margin_bytes),
        accepted=accepted,
        auth_keys=h.auth_keys,
        slice_len=h.slice_len,
    )


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
            next_offset=plan.next_offset,
            origin="recovered",
        )
    )
    top = plan.highest_erased_counter
    try:
        now = time.time()
        with store.transaction():
            if plan.erased_extent or top >= 0:
                erased = SkippedRange(
                    me, 0, plan.erased_extent, 0, top + 1, "pad recover: erased before recovery"
                )
                store.add_skipped(erased, now)
            for sender, counters in plan.accepted.items():
                for c in counters:
                    store.add_accepted(sender, c, None, None, None)
            margin = SkippedRange(
                me,
                plan.erased_extent,
                plan.next_offset,
                top + 1,
                plan.next_counter,
                "pad recover: safety margin",
            )
            store.add_skipped(margin, now)
        for c in range(top + 1, plan.next_counter):
            kit.erase_outbound_keys(c)
        if plan.next_offset > plan.erased_extent:
            kit.erase_key_stream(me, plan.erased_extent, plan.skipped_bytes)
        kit.flush()
    finally:
        store.close()
    remember_kit(kit.header)
    return path
