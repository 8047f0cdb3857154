"""One member of one kit: the facade over the kit, the sealing code and the state.

`Member` joins a kit (`pad/kit.py`), the pure sealing code (`pad/seal.py`) and the
state database (`store.py`: safety tables, `history.py`: what is shown), in the order
that keeps pad bytes from ever being used twice:

- sealing: seal in memory, then ONE transaction commits the next counter, the next
  offset and the outbox row, then the used pad and keys are zeroed in the kit and
  flushed, and only then does `seal` return the sealed bytes (protocol-v1 section 5).
  A commit holds at most what `limits.py` allows, so `pad recover` (`recovery.py`)
  can skip one commit's worth past the kit's erasures;
- opening: the header is read once; every reject rule is checked against the accepted
  log, then one transaction commits the accepted (sender, counter, range, digest), the
  history row and the relay cursor, then the inbound key and the sender's pad bytes are
  zeroed and flushed, and only then is the message returned (section 6). A rejected
  message changes nothing, durable or not, and settles no relay seq; a byte-for-byte
  copy of a message this member already has settles its seq as `cursor.py` says;
- start-up: the database is checked against the kit's erasures (a missing, older or
  old-layout database is refused: guessing the next offset could reuse pad), and a
  sweep zeroes whatever was committed but not yet erased (`erasure.py`).

Figures of what is left are `usage.py`'s; `Member.usage` and `own_pad` read them.
The module is longer than the 400 lines we aim for because it is the one entry point
of the state layer: each public method is a few lines over the modules it joins, where
the jobs themselves live.

Test hook (the only one): with GHOSTLINE_TEST_CRASH_AFTER_COMMIT in the environment,
`seal`/`seal_many` stop right after the commit: `1` calls `os._exit(86)` before
erasing (tests check that the start-up sweep erases what a crash left behind);
`stop-mid-erase` erases the first half of the group, flushes, and stops the process
with SIGSTOP, so a test can SIGKILL it in the middle of a group.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import (
    ErasedKeyError,
    MessageTooLarge,
    OldStateLayout,
    RejectedMessage,
    StateBehindKit,
    StateError,
    StateMissing,
)
from ..pad.kit import Kit
from ..pad.seal import open_sealed, seal_with_kit
from ..protocol.envelope import HEADER_LEN, Envelope, read_envelope
from ..protocol.relaycursor import SEQ_LIMIT, Anchor, RelayCursor, frame_digest
from ..protocol.rules import Rule
from .cursor import RelayCursorKeeper
from .database import Database, binding_of, default_state_path, require_format_1
from .erasure import first_erasure, own_pad_erased, sweep
from .history import History, HistoryDeleted, HistoryEntry, SavedFiles
from .kitrecord import check_kit, remember_kit
from .limits import MAX_SEAL_BYTES, MAX_SEAL_GROUP, max_payload
from .store import Store
from .usage import KitUsage, PadLeft, compute_usage, own_pad_left

CRASH_HOOK_ENV = "GHOSTLINE_TEST_CRASH_AFTER_COMMIT"
CRASH_HOOK_EXIT = 86
CRASH_HOOK_STOP = "stop-mid-erase"


@dataclass(frozen=True)
class OutboxEntry:
    counter: int
    offset: int
    length: int
    sealed: bytes
    seq: int | None


@dataclass(frozen=True)
class Received:
    seq: int
    sender: int
    sender_name: str
    counter: int
    offset: int
    payload: bytes


@dataclass
class _Erased:
    """Erased in the kit, not yet recorded: written with the next commit."""

    own: list[int] = field(default_factory=list)  # own counters
    received: list[tuple[int, int]] = field(default_factory=list)  # (sender, counter)


class Member:
    """The kit owner's durable view of a group. See docs/CONTRACTS.md."""

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
        self._erased = _Erased()
        self._crash_hook = os.environ.get(CRASH_HOOK_ENV)

    @classmethod
    def open(
        cls, kit_path: str | os.PathLike[str], *, state_path: str | os.PathLike[str] | None = None
    ) -> Member:
        kit = Kit.open(kit_path)
        try:
            require_format_1(kit)
            # Before the state is looked up by pad_id: a damaged pad_id must not look like
            # a new kit (or like a used kit whose state is lost).
            check_kit(kit.header, kit_path)
            path = Path(state_path) if state_path is not None else default_state_path(kit.header)
            db = _open_database(kit, path)
            try:
                member = cls(kit, db)
                sweep(kit, member.store)
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

    # -- sending ------------------------------------------------------------------

    @property
    def max_payload(self) -> int:
        """The largest payload this member can seal (see `limits.max_payload`)."""
        return max_payload(self.header.n)

    def seal(self, payload: bytes) -> OutboxEntry:
        return self.seal_many([payload])[0]

    def seal_many(self, payloads: list[bytes]) -> list[OutboxEntry]:
        """Seal every payload, committing them all in one transaction, in order.

        If any of them does not fit (PadExhaustedError), none is sealed."""
        if any(not p for p in payloads):
            raise ValueError("a sealed message carries at least one byte")
        if len(payloads) > MAX_SEAL_GROUP:
            raise ValueError(f"one commit seals at most {MAX_SEAL_GROUP} messages")
        if not payloads:
            return []
        largest = max(len(p) for p in payloads)
        if largest > self.max_payload:
            # Sealed, it would burn its pad and then block the outbox for good: the relay
            # refuses the frame on every reconnect, and later messages wait behind it.
            raise MessageTooLarge(largest, self.max_payload, self.header.n)
        if sum(len(p) for p in payloads) > MAX_SEAL_BYTES:
            raise ValueError(f"one commit seals at most {MAX_SEAL_BYTES} bytes of pad")
        me = self.index
        kit_path = os.fspath(self.kit.path)
        # The seal lock is held from before the commit until the erasure is flushed, so
        # no other process commits while this one's commit is not yet erased.
        with self._lock, self.kit.seal_lock():
            entries: list[OutboxEntry] = []
            now = time.time()
            with self.store.transaction():
                counter, offset = self.store.next_position()
                for payload in payloads:
                    if own_pad_erased(self.kit, offset, len(payload)):
                        raise StateBehindKit(kit_path=kit_path, next_offset=offset)
                    try:
                        sealed = seal_with_kit(self.kit, counter, offset, payload)
                    except ErasedKeyError:
                        raise StateBehindKit(
                            kit_path=kit_path, next_counter=counter, erased_counter=counter
                        ) from None
                    self.store.add_outbox(counter, offset, len(payload), sealed, now)
                    self._history.record(me, counter, None, payload, now, "sealed")
                    entries.append(OutboxEntry(counter, offset, len(payload), sealed, None))
                    counter += 1
                    offset += len(payload)
                self.store.set_next_position(counter, offset)
                self._record_pending()
                expired = self._history.expire(now, saved=False)
            if self._crash_hook == "1":
                os._exit(CRASH_HOOK_EXIT)
            for i, e in enumerate(entries):
                if self._crash_hook == CRASH_HOOK_STOP and i == len(entries) // 2:
                    self.kit.flush()
                    os.kill(os.getpid(), signal.SIGSTOP)
                self.kit.erase_key_stream(me, e.offset, e.length)
                self.kit.erase_outbound_keys(e.counter)
            self.kit.flush()
            self._erased.own.extend(e.counter for e in entries)
            if expired:
                self.store.db.checkpoint()  # after the erasure: it must not wait on this
        return entries

    def pending(self) -> list[OutboxEntry]:
        return [
            OutboxEntry(r.counter, r.offset, r.length, r.sealed or b"", r.seq)
            for r in self.store.pending()
        ]

    def mark_accepted(
        self, counter: int, seq: int, *, store_id: bytes | None = None, settle: bool = True
    ) -> None:
        """The relay stored own message `counter` as `seq`. Unknown or already
        accepted counters are ignored (ACCEPTED may repeat after a reconnect).

        With `settle`, `seq` counts as seen in the relay cursor of `store_id` (None:
        the store the cursor belongs to) when it names a message of ours: a pending
        one, or one already accepted at that very seq."""
        if not (0 <= counter < self.header.auth_keys and 0 < seq < SEQ_LIMIT):
            return  # no message of ours (and out of SQLite's range)
        with self._lock, self._commit():
            epoch = self._cursor.epoch_of(store_id)
            ours = self.store.mark_accepted(counter, seq, epoch)
            if ours:
                self._history.mark_stored(counter, seq)
            else:
                row = self.store.outbox_row(counter)
                ours = row is not None and (row.seq, row.epoch) == (seq, epoch)
            if ours and settle and epoch is not None:
                self._cursor.settle(store_id, [seq])

    # -- receiving ----------------------------------------------------------------

    def receive(self, seq: int, sealed: bytes, *, store_id: bytes | None = None) -> Received | None:
        """Open a message the relay delivered as `seq` (of relay store `store_id`; None:
        the store the relay cursor belongs to).

        Returns None for a byte-for-byte copy of a message this member already has (its
        own message echoed back, or one it accepted before), whose seq is then settled
        as cursor.py says. Raises RejectedMessage, writing nothing and settling no seq,
        for anything section 6 refuses, and for a frame that names a message this
        member has but is not that message, or not where the relay holds it.
        """
        if not 0 < seq < SEQ_LIMIT:
            raise ValueError(f"seq {seq} is out of range")
        env = read_envelope(sealed) if len(sealed) >= HEADER_LEN else None
        digest = frame_digest(sealed)
        with self._lock:
            if env is not None and self._is_own_echo(env):
                self._cursor.own_copy(env, seq, digest, store_id)
                return None
            try:
                # Checked under the write lock, so that another process of this member
                # cannot accept the same counter between the check and the commit.
                with self.store.transaction():
                    opened = open_sealed(self.kit, sealed, self.store, envelope=env)
                    env = opened.envelope
                    now = time.time()
                    epoch = self._cursor.epoch_of(store_id)
                    self.store.add_accepted(
                        env.sender, env.counter, env.offset, env.length,
                        seq if epoch is not None else None, digest=digest, epoch=epoch,
                    )  # fmt: skip
                    self._history.record(
                        env.sender, env.counter, seq, opened.plaintext, now, "received"
                    )
                    self._cursor.settle(store_id, [seq])
                    self._record_pending()
                    expired = self._history.expire(now, saved=False)
            except RejectedMessage as err:
                if err.rule != Rule.REPLAYED_COUNTER or env is None:
                    raise
                self._cursor.accepted_copy(env, seq, digest, store_id)
                return None
            if expired:
                self.store.db.checkpoint()
            self.kit.erase_inbound_key(env.sender, env.counter)
            self.kit.erase_key_stream(env.sender, env.offset, env.length)
            self.kit.flush()
            self._erased.received.append((env.sender, env.counter))
        return Received(
            seq=seq,
            sender=env.sender,
            sender_name=self.header.members[env.sender].name,
            counter=env.counter,
            offset=env.offset,
            payload=opened.plaintext,
        )

    def _is_own_echo(self, env: Envelope) -> bool:
        h = self.header
        if env.pad_id != h.pad_id or env.n != h.n or env.sender != self.index:
            return False
        if env.counter >= h.auth_keys:
            return False  # no counter of ours (and past what SQLite can compare)
        # Ours if we sealed that counter: in the outbox, or below the next counter
        # (counters a recovered database stepped over were ours too).
        if self.store.outbox_row(env.counter) is not None:
            return True
        return env.counter < self.store.next_position()[0]

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
        """A relay named its store: from now on the cursor is that store's (protocol-v2
        section 8). Returns the cursor as it was, which belongs to another store when
        its `store_id` differs (then the new one starts from 0). Commits only a change."""
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

    # -- history (history.py) ---------------------------------------------------------

    def history(
        self, limit: int | None = None, *, before: HistoryEntry | None = None
    ) -> list[HistoryEntry]:
        """In relay order, oldest first; with `limit`, the newest `limit` entries, and
        with `before`, those that come before that entry (a page further back)."""
        return self._history.page(limit, before=None if before is None else before.history_id)

    def history_of_kind(self, kind: int, *, head: int | None = None) -> list[HistoryEntry]:
        """Every history entry (the whole history, not a page) whose payload is of
        `kind` (its first byte), oldest first. With `head`, payloads are cut to their
        first `head` bytes: enough to tell which file a chunk belongs to without
        reading its data. Read-only; the apps rebuild file transfers with it."""
        return self._history.of_kind(kind, head)

    def history_of(self, keys: Iterable[tuple[int, int]]) -> list[HistoryEntry]:
        """The history entries of these (sender, counter) pairs, oldest first."""
        return self._history.of(keys)

    def accepted_seq(self, counter: int) -> int | None:
        """The seq the relay gave own message `counter`, once it was accepted."""
        row = self.store.outbox_row(counter)
        return None if row is None else row.seq

    def saved_files(self) -> SavedFiles:
        """Every received file recorded as saved. Read-only."""
        return self._history.saved_files()

    def record_saved_file(
        self, sender: int, transfer_id: bytes, path: str | os.PathLike[str], sha256: bytes
    ) -> None:
        """Durably record that `sender`'s transfer was saved at `path`. Call only after
        the file is fsynced and linked into place: a transfer recorded here is never
        saved again."""
        self._history.record_saved(sender, transfer_id, os.fspath(path), sha256, time.time())

    @property
    def history_keep(self) -> int | None:
        """Days history is kept: None for ever (the default), 0 not at all."""
        return self._history.keep()

    def history_to_delete(self, days: int | None) -> int:
        """How many entries keeping history `days` days would delete now."""
        return self._history.to_delete(days, time.time())

    def set_history_keep(self, days: int | None) -> HistoryDeleted:
        """Keep history `days` days from now on (None: for ever, 0: not at all), and
        delete at once what that setting no longer keeps."""
        return self._history.keep_for(days, time.time())

    def clear_history(self) -> HistoryDeleted:
        """Delete the whole history, except parts of received files not yet saved."""
        return self._history.clear()

    @property
    def chat_seen(self) -> int | None:
        """The newest history id when the chat app last closed; None if it never did."""
        return self._history.chat_seen()

    def first_unseen(self) -> int | None:
        """The history id of the first entry from another member recorded since the chat
        app last closed; None when there is none, or when it never closed."""
        return self._history.first_unseen()

    def mark_chat_seen(self) -> None:
        """The chat app closes: everything in the history now has been seen."""
        self._history.mark_seen()

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
        """What is left of this member's own slice and keys (exact, from the state)."""
        return own_pad_left(self.header, *self.store.next_position())

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
        erased = self._erased
        if erased.own or erased.received:
            self.store.record_erased(erased.own, erased.received)
            # Cleared now: if this transaction rolls back, the sweep on the next start
            # erases the same bytes again, which is harmless.
            self._erased = _Erased()


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
    try:
        return Database.create(path, binding)
    except StateError:
        if not path.exists():
            raise
        return Database.open(path, binding)  # another process created it first
