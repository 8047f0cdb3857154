"""Looking at a kit's state without opening a member: read-only, for `pad info` and
for planning `pad recover`. Changes neither the kit nor the state database."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import OldStateLayout, RecoveryNeeded, StateMissing
from ..pad.kit import Kit
from ..protocol.kitformat import FORMAT_1
from .database import Database, binding_of, default_state_path
from .erasure import first_erasure, staleness
from .history import History
from .kitrecord import check_kit
from .store import Store
from .usage import KitUsage, compute_usage


@dataclass(frozen=True)
class StateStatus:
    path: Path
    status: str  # "ok" | "new" (no database, kit unused) | "missing" | "stale"
    # For "missing" and "stale": what Member.open would raise (not raised here).
    problem: RecoveryNeeded | None = None


def inspect_state(kit: Kit, state_path: str | os.PathLike[str] | None = None) -> StateStatus:
    """Does the kit have a usable state database? Raises KitHeaderChangedError for a kit
    whose header is not the one recorded when it was first used here."""
    check_kit(kit.header, kit.path)
    path = Path(state_path) if state_path is not None else default_state_path(kit.header)
    kit_path = os.fspath(kit.path)
    if not path.exists():
        erased = first_erasure(kit)
        if erased is None:
            return StateStatus(path, "new")
        counter, sender = erased
        missing = StateMissing(
            os.fspath(path), erased_counter=counter, erased_from=sender, kit_path=kit_path
        )
        return StateStatus(path, "missing", missing)
    try:
        db = Database.open(path, binding_of(kit.header), read_only=True)
    except OldStateLayout as old:
        return StateStatus(
            path,
            "stale",
            OldStateLayout(old.state_path, old.version, old.current, kit_path=kit_path),
        )
    try:
        store = Store(db)
        unsealed = None if kit.format == FORMAT_1 else store.unsealed()
        problem = staleness(kit, *store.next_position(), unsealed)
    finally:
        db.close()
    return StateStatus(path, "stale" if problem else "ok", problem)


def read_usage(kit: Kit, status: StateStatus) -> KitUsage:
    """Usage figures: from the state database when it is usable ("ok"), else from the
    kit's erasures alone."""
    if status.status != "ok":
        return compute_usage(kit, None)
    db = Database.open(status.path, binding_of(kit.header), read_only=True)
    try:
        names = [m.name for m in kit.header.members]
        return compute_usage(kit, (Store(db), History(db, names)))
    finally:
        db.close()
