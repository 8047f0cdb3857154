"""One member of one kit: the facade over the kit, the sealing code and the state.

`Member` joins a kit (`pad/kit.py`, either format), the pure sealing code (`pad/seal.py`
for format 1, `pad/seal2.py` for format 2) and the state database (`store.py`: safety
tables, `history.py`: what is shown), in the order that keeps pad bytes from ever
being used twice. Its methods live in files by job, one class:

- sealing (`memberseal.py`): ONE transaction commits the next position and the outbox
  row, then the pad and keys used are zeroed and flushed, and only then are the sealed
  bytes returned (docs/PROTOCOL.md sections 5 and 14);
- opening (`memberreceive.py`): every reject rule is checked, then one transaction
  commits what was accepted, then the key and pad are zeroed and flushed, and only
  then is the message returned (section 6); a rejected message changes nothing;
- giving (format 2, `membergrants.py`): `give` and `auto_give` (policy: `giving.py`):
  see `granting.py`; the history (`memberhistory.py`);
- here: start-up, where the database is checked against the kit's erasures (a missing,
  older or old-layout database is refused: guessing the next offset could reuse pad),
  and a sweep zeroes whatever was committed but not yet erased (`erasure.py`); the
  relay cursor (`cursor.py`); and the one place that writes what waits for a commit.

Figures of what is left are `usage.py`'s; `Member.usage` and `own_pad` read them.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import OldStateLayout, StateError, StateMissing
from ..pad.kit import Kit
from ..protocol.grants import initial_extents
from ..protocol.kitformat import FORMAT_1
from ..protocol.relaycursor import Anchor, RelayCursor
from . import granting
from .cursor import RelayCursorKeeper
from .database import Database, binding_of, default_state_path
from .entries import OutboxEntry as OutboxEntry  # re-exported: the apps import it from here
from .entries import PendingErasure
from .erasure import first_erasure, sweep
from .history import History
from .kitrecord import check_kit, remember_kit
from .membergrants import Gift as Gift  # re-exported: the apps import it from here
from .membergrants import MemberGrants
from .memberhistory import MemberHistory
from .memberreceive import MemberReceive
from .memberreceive import Received as Received  # re-exported: the apps import it from here
from .memberseal import CRASH_HOOK_ENV as CRASH_HOOK_ENV  # re-exported for the crash tests
from .memberseal import CRASH_HOOK_EXIT as CRASH_HOOK_EXIT  # re-exported for the crash tests
from .memberseal import CRASH_HOOK_STOP as CRASH_HOOK_STOP  # re-exported for the crash tests
from .memberseal import MemberSeal
from .store import Store
from .usage import KitUsage, PadLeft, compute_usage, own_pad_left


class Member(MemberSeal, MemberReceive, MemberGrants, MemberHistory):
    """The kit owner's durable view of a group. See docs/CONTRACTS.md. Sealing is
    `memberseal.py`'s, opening `memberreceive.py`'s, the calls on grants (`give`,
    `auto_give`, ...) `membergrants.py`'s, those on the history `memberhistory.py`'s:
    one class, its methods in five files by job."""

    def __init__(self, kit: Kit, db: Database) -> None:
        self.kit = kit
        self.header = kit.header
        self.index = kit.header.self_index
        self.name = kit.header.self_name
        self.store = Store(db)
        self._history = History(db, [m.name for m in kit.header.members])
        self.state_path = db.path
        self._cursor = RelayCursorKeeper(self.store, self._history, self._commit)
        self._lock = threading.RLock()
        self._erased = PendingErasure()
        self._failed: dict[int, int] = {}  # failed tag verifications not yet written
        self._crash_hook = os.environ.get(CRASH_HOOK_ENV)

    @classmethod
    def open(
        cls, kit_path: str | os.PathLike[str], *, state_path: str | os.PathLike[str] | None = None
    ) -> Member:
        kit = Kit.open(kit_path)
        try:
            # Before the state is looked up by pad_id: a damaged pad_id must not look like
            # a new kit (or like a used kit whose state is lost).
            check_kit(kit.header, kit_path)
            path = Path(state_path) if state_path is not None else default_state_path(kit.header)
            db = _open_database(kit, path)
            try:
                member = cls(kit, db)
                sweep(kit, member.store)
                if kit.format != FORMAT_1:
                    with kit.seal_lock():
                        granting.write_journal(kit, member.store)  # what a crash left
                remember_kit(kit.header)
                member._history.expire_now(time.time())  # what expired while closed
            except BaseException:
                db.close()
                raise
        except BaseException:
            kit.close()
            raise
        return member

    def close(self) -> None:
        with self._lock:
            if self.store.closed:
                return
            try:
                # Not for failed-verification counts alone: they wait for a real commit,
                # or forged frames would make a member write (then they are lost).
                if self._erased.own or self._erased.received:
                    with self.store.transaction():
                        self._record_pending()
            finally:
                self.store.close()
                self.kit.close()

    def __enter__(self) -> Member:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the relay cursor -----------------------------------------------------------

    @property
    def relay_cursor(self) -> int:
        """Every relay seq up to this one is settled (see `relay_state`)."""
        return self.relay_state().upto

    def relay_state(self) -> RelayCursor:
        """The relay cursor as committed, with the seqs of frames that were not
        authenticated settled on top (they are written with the next commit)."""
        with self._lock:
            return self._cursor.state()

    def relay_anchor(self) -> Anchor | None:
        """The highest settled relay seq whose frame this member knows, and its digest
        (`relaycursor.Anchor`); None when there is none."""
        with self._lock:
            return self._cursor.anchor()

    def enter_relay_store(self, store_id: bytes) -> RelayCursor:
        """A relay named its store: from now on the cursor is that store's
        (docs/PROTOCOL.md section 8, "Store identity"). Returns the cursor as it was,
        which belongs to another store when its `store_id` differs (then the new one
        starts from 0). Commits only a change."""
        with self._lock:
            before = self._cursor.state()
            if before.for_store(store_id) != before:
                with self._commit():
                    self._cursor.enter(store_id)
            return before

    def restart_relay_store(self, store_id: bytes) -> RelayCursor:
        """The relay's store `store_id` went back (restored from a backup) or was
        replaced under the same id: read it again from seq 0, as if it were another
        store. Returns the cursor as it was."""
        with self._lock, self._commit():
            return self._cursor.restart(store_id)

    def advance_cursor(self, seq: int, *, store_id: bytes | None = None) -> None:
        """Give up every relay seq up to `seq` of store `store_id`: the client's gap
        watch saw them stay missing after asking again, and reports them lost."""
        with self._lock, self._commit():
            self._cursor.give_up_to(seq, store_id)

    def take_lost(self) -> list[tuple[int, int]]:
        """Relay seqs given up since the last call because too many seqs were settled
        above a hole (see relaycursor.MAX_SEEN): (first, last) of each."""
        with self._lock:
            return self._cursor.take_lost()

    # -- how much is left (usage.py) --------------------------------------------------

    def usage(self, *, scan_kit: bool = True) -> KitUsage:
        """Every member's figures. `keys_erased` is an exact count of zeroed keys in the
        kit (a scan of every key region, ~1 ms per 10 MB of keys); with scan_kit=False
        it is counted from the state's records instead, which is instant."""
        with self._lock:
            if self._erased.own or self._erased.received:
                with self.store.transaction():
                    self._record_pending()
            return compute_usage(self.kit, (self.store, self._history), scan_kit=scan_kit)

    def pads(self) -> dict[int, PadLeft]:
        """Every member's slice and keys left, by index. Reads only: it never commits
        (the erasure record waiting for a commit changes no figure here)."""
        with self._lock:
            return compute_usage(self.kit, (self.store, self._history), scan_kit=False).pads()

    def own_pad(self) -> PadLeft:
        """What is left of this member's own pad and keys (exact, from the state)."""
        counter, offset = self.store.next_position()
        if self.format == FORMAT_1:
            return own_pad_left(self.header, counter, offset)
        return own_pad_left(
            self.header, counter, 0, unsealed=self.store.unsealed(),
            extents=self.store.member_extents(self.index),
        )  # fmt: skip

    # -- internals ----------------------------------------------------------------

    @contextmanager
    def _commit(self) -> Iterator[None]:
        """One transaction, with what waits for a commit written in it."""
        with self.store.transaction():
            yield
            self._record_pending()

    def _record_pending(self) -> None:
        """Inside a transaction: write what waits for a commit: the erasure record of
        earlier messages and the relay seqs settled in memory (copies of messages this
        member has, at the seqs they are known at)."""
        self._cursor.write_waiting()
        if self._failed:
            self.store.add_failed(self._failed)
            self._failed = {}
        erased = self._erased
        if erased.own or erased.received:
            self.store.record_erased(erased.own, erased.received)
            # Cleared now: if this transaction rolls back, the sweep on the next start
            # erases the same bytes again, which is harmless.
            self._erased = PendingErasure()


def _open_database(kit: Kit, path: Path) -> Database:
    """The kit's state database; created when the kit shows no erasures. Refuses a
    missing database of a used kit (StateMissing) and one of an older layout."""
    kit_path = os.fspath(kit.path)
    binding = binding_of(kit.header)
    if path.exists():
        try:
            return Database.open(path, binding)
        except OldStateLayout as old:
            raise OldStateLayout(
                old.state_path, old.version, old.current, kit_path=kit_path
            ) from None
    erased = first_erasure(kit)
    if erased is not None:
        counter, sender = erased
        raise StateMissing(
            os.fspath(path), erased_counter=counter, erased_from=sender, kit_path=kit_path
        )
    start: dict[str, object] = {}
    if kit.format != FORMAT_1:
        h = kit.header
        extents = initial_extents(h.n, h.slice_len)
        start = {"extents": extents, "unsealed": extents[h.self_index]}
    try:
        return Database.create(path, binding, **start)  # type: ignore[arg-type]
    except StateError:
        if not path.exists():
            raise
        return Database.open(path, binding)  # another process created it first
