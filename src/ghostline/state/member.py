"""One member of one kit: sealing, opening and erasing, with durable state.

`Member` joins a kit (`kit.py`), the pure sealing code (`seal.py`) and the state
database (`store.py`), in the order that keeps pad bytes from ever being used twice:

- sealing: seal in memory, then ONE transaction commits the next counter, the next
  offset and the outbox row, then the used pad and keys are zeroed in the kit and
  flushed, and only then does `seal` return the sealed bytes (protocol-v1 section 5);
- opening: check every reject rule against the accepted log, then one transaction
  commits the accepted (sender, counter, range), the history row and the relay cursor,
  then the inbound key and the sender's pad bytes are zeroed and flushed, and only then
  is the message returned (section 6). A rejected message writes nothing: its seq is
  settled in memory only, and reaches the relay cursor with the next commit;
- start-up: a sweep zeroes whatever was committed but not yet erased (a crash between
  commit and erase), and the database is checked against the kit's erasures: a missing
  or older database is refused, because guessing the next offset could reuse pad.

Consequence used by recovery: a sealer commits and then erases (and flushes) under the
kit's seal lock, so at any moment at most one commit of own messages, MAX_SEAL_GROUP
messages at most, is committed but not yet erased in the kit; another process of the
same member may already have sent those from the outbox. Every other message ever
sealed has its keys and pad zeroed in the kit. So the kit alone bounds what was sent,
give or take one commit, and `pad recover` can rebuild a database that is safe by
skipping one commit's worth past the erasures (see `recovery_margin`).

Test hook (the only one): with GHOSTLINE_TEST_CRASH_AFTER_COMMIT in the environment,
`seal`/`seal_many` stop right after the commit: `1` calls `os._exit(86)` before
erasing (tests check that the start-up sweep erases what a crash left behind);
`stop-mid-erase` erases the first half of the group, flushes, and stops the process
with SIGSTOP, so a test can SIGKILL it in the middle of a group.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import paths
from ..errors import (
    ErasedKeyError,
    RecoveryNeeded,
    RejectedMessage,
    StateError,
    UnsupportedKitError,
    UsageError,
)
from ..pad.kit import Kit
from ..pad.seal import open_sealed, seal_with_kit
from ..protocol.envelope import HEADER_LEN, read_envelope, sealed_length
from ..protocol.frames import DEFAULT_MAX_FRAME
from ..protocol.kitformat import FORMAT_1, KEY_LEN, KitHeader
from ..protocol.payload import PREFIX_LEN, TRANSFER_ID_LEN, Kind
from ..protocol.relaycursor import SEQ_LIMIT, RelayCursor
from .kitrecord import check_kit, remember_kit
from .store import Binding, HeldParts, HistoryRow, SenderTotals, SkippedRange, Store

CRASH_HOOK_ENV = "GHOSTLINE_TEST_CRASH_AFTER_COMMIT"
CRASH_HOOK_EXIT = 86
CRASH_HOOK_STOP = "stop-mid-erase"
DEFAULT_AVERAGE_SIZE = 64
RECENT_TEXTS = 100  # text messages the "messages left" estimate averages over
# The most messages one commit seals: `seal_many` refuses more, and the file sender
# seals in groups of this many. It bounds what a dead sealer can leave committed (and
# perhaps sent) but not erased, and so the margin `pad recover` skips.
MAX_SEAL_GROUP = 32
# Parts of received files are kept until the file is saved, whatever the history setting.
HISTORY_HELD = HeldParts(bytes([Kind.FILE_HEADER, Kind.FILE_CHUNK]), PREFIX_LEN, TRANSFER_ID_LEN)
DAY = 86400.0
# A stretch of this many zero bytes in a random pad means "erased" (chance 2^-256).
_ERASED_RUN = 32
_KEY_CHUNK = 1 << 16  # keys scanned per numpy step (2 MiB)
_PAD_CHUNK = 1 << 22


# --- values handed to callers ----------------------------------------------------


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


@dataclass(frozen=True)
class HistoryEntry:
    sender: int
    sender_name: str
    counter: int
    seq: int | None
    payload: bytes
    recorded_at: float
    state: str  # "sealed" | "stored" (own) | "received"
    history_id: int | None = None  # grows in the order entries were recorded


@dataclass(frozen=True)
class SavedFiles:
    """Which received files were saved to the downloads folder (see `Member.saved_files`)."""

    records: dict[tuple[int, bytes], Path]  # (sender, transfer id) -> where it was saved
    # Entries with a history_id up to this were recorded before saves were (an upgraded
    # database): whether their files were saved is unknown. 0: every entry is tracked.
    untracked_until: int = 0


@dataclass(frozen=True)
class HistoryDeleted:
    """What deleting history did (`Member.set_history_keep`, `clear_history`)."""

    count: int  # history entries deleted
    left: int  # entries still kept (after a clear: parts of files not yet saved)
    checkpointed: bool  # False: another process had the database open (see Store.checkpoint)


@dataclass(frozen=True)
class MemberUsage:
    """One member's slice and keys as this kit's owner sees them.

    For the owner the figures are exact. For another member they count what the owner
    has accepted from them (highest counter + 1, end of the highest range): a lower
    bound on what they really used.
    """

    index: int
    name: str
    is_self: bool
    bytes_used: int
    bytes_left: int
    keys_used: int
    keys_left: int
    messages: int  # sent (owner) or accepted (others)
    average_size: float  # bytes per message; DEFAULT_AVERAGE_SIZE when none yet
    messages_left: int  # min(keys left, bytes left // text size)
    slice_len: int
    auth_keys: int
    # Bytes per text message, over the last RECENT_TEXTS in the history (file chunks,
    # 64 KiB each, would make "messages left" mean "file chunks left");
    # DEFAULT_AVERAGE_SIZE when there are none.
    text_size: float = float(DEFAULT_AVERAGE_SIZE)

    @property
    def fraction_left(self) -> float:
        """The smaller of the shares of keys and of slice bytes still unused (0..1)."""
        return min(self.keys_left / self.auth_keys, self.bytes_left / self.slice_len)


@dataclass(frozen=True)
class KitUsage:
    slice_len: int
    auth_keys: int
    members: tuple[MemberUsage, ...]
    keys_total: int  # 2 * (n-1) * K one-time keys in this kit
    keys_erased: int  # exact: keys reading as all zeros
    pad_bytes_total: int  # n * E
    pad_bytes_erased: int  # from the state's records (own, accepted, skipped)

    @property
    def erased_fraction(self) -> float:
        """Share of the kit's secret bytes (pad and keys) that are erased."""
        total = self.pad_bytes_total + self.keys_total * KEY_LEN
        return (self.pad_bytes_erased + self.keys_erased * KEY_LEN) / total if total else 0.0

    @property
    def me(self) -> MemberUsage:
        return next(m for m in self.members if m.is_self)


# --- the facade --------------------------------------------------------------------


def default_state_path(header: KitHeader) -> Path:
    return paths.state_dir() / f"{header.pad_id.hex()}-{header.self_index}.sqlite"


def require_format_1(kit: Kit) -> None:
    """Refuse a format-2 kit: the durable state suite 2 needs (extents, grants, failed
    verification counts) does not exist yet. The one place that says so."""
    if kit.format != FORMAT_1:
        raise UnsupportedKitError(
            f"{kit.path}: v2 kits are not supported by this command yet",
            hint="Make a format-1 kit set with `ghostline pad new --format 1`.",
        )


def binding_of(header: KitHeader) -> Binding:
    return Binding(header.pad_id, header.self_index, header.n, header.slice_len, header.auth_keys)


def max_payload(n: int) -> int:
    """The largest payload a member of a group of `n` can seal: its DELIVER frame (type,
    seq, sealed message) must fit the protocol's default relay frame limit."""
    return DEFAULT_MAX_FRAME - 1 - 8 - sealed_length(0, n)


def recovery_margin(n: int) -> tuple[int, int]:
    """(keys, pad bytes) `pad recover` skips past what the kit shows erased: one whole
    commit of the largest messages (MAX_SEAL_GROUP of max_payload bytes), which a dead
    sealer may have left committed and sent but not erased, plus 2 * 32 bytes: an
    erased stretch shorter than that past a gap cannot be told from random bytes."""
    return MAX_SEAL_GROUP, MAX_SEAL_GROUP * max_payload(n) + 2 * _ERASED_RUN


@dataclass
class _Pending:
    """Erasures done in the kit but not yet recorded: written with the next commit."""

    own: list[int] = field(default_factory=list)
    received: list[tuple[int, int]] = field(default_factory=list)
    # Seqs of rejected frames, with the relay store they came from: settled with the
    # next commit (a forged frame must not cause a write of its own).
    seqs: list[tuple[bytes | None, int]] = field(default_factory=list)


class Member:
    """The kit owner's durable view of a group. See docs/CONTRACTS.md."""

    def __init__(self, kit: Kit, store: Store) -> None:
        self.kit = kit
        self.header = kit.header
        self.index = kit.header.self_index
        self.name = kit.header.self_name
        self.store = store
        self.state_path = store.path
        self._lock = threading.RLock()
        self._pending = _Pending()
        self._crash_hook = os.environ.get(CRASH_HOOK_ENV)
        self._lost: list[tuple[int, int]] = []

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
            binding = binding_of(kit.header)
            if path.exists():
                store = Store.open(path, binding)
            else:
                erased = first_erasure(kit)
                if erased is not None:
                    raise RecoveryNeeded(
                        f"no state database at {path}, but this kit has already erased "
                        f"{erased}: it was used before, and sending now could reuse pad",
                        kit_path=os.fspath(kit_path),
                    )
                try:
                    store = Store.create(path, binding)
                except StateError:
                    if not path.exists():
                        raise
                    store = Store.open(path, binding)  # another process created it first
            try:
                member = cls(kit, store)
                member._check_and_sweep()
                remember_kit(kit.header)
                member._keep_history()
            except BaseException:
                store.close()
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
                if self._pending.own or self._pending.received:
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
            raise UsageError(
                f"message too large: {largest} bytes, a relay carries at most "
                f"{self.max_payload} in a group of {self.header.n}; nothing was sent"
            )
        me = self.index
        # The seal lock is held from before the commit until the erasure is flushed, so
        # no other process commits while this one's commit is not yet erased.
        with self._lock, self.kit.seal_lock():
            entries: list[OutboxEntry] = []
            now = time.time()
            expired = 0
            with self.store.transaction():
                counter, offset = self.store.next_position()
                for payload in payloads:
                    self._refuse_erased_pad(offset, len(payload))
                    try:
                        sealed = seal_with_kit(self.kit, counter, offset, payload)
                    except ErasedKeyError:
                        raise RecoveryNeeded(
                            f"the kit has already erased the keys of message {counter}, "
                            "which the state database says is unused: the database is older "
                            "than the kit",
                            kit_path=os.fspath(self.kit.path),
                        ) from None
                    self.store.add_outbox(counter, offset, len(payload), sealed, now)
                    self._record_history(me, counter, None, payload, now, "sealed")
                    entries.append(OutboxEntry(counter, offset, len(payload), sealed, None))
                    counter += 1
                    offset += len(payload)
                self.store.set_next_position(counter, offset)
                self._record_pending()
                expired = self._expire_history(now, saved=False)
            if self._crash_hook == "1":
                os._exit(CRASH_HOOK_EXIT)
            for i, e in enumerate(entries):
                if self._crash_hook == CRASH_HOOK_STOP and i == len(entries) // 2:
                    self.kit.flush()
                    os.kill(os.getpid(), signal.SIGSTOP)
                self.kit.erase_key_stream(me, e.offset, e.length)
                self.kit.erase_outbound_keys(e.counter)
            self.kit.flush()
            self._pending.own.extend(e.counter for e in entries)
            if expired:
                self.store.checkpoint()  # after the erasure: it must not wait on this
        return entries

    @property
    def max_payload(self) -> int:
        """The largest payload this member can seal (see `max_payload`)."""
        return max_payload(self.header.n)

    def _refuse_erased_pad(self, offset: int, length: int) -> None:
        probe = _own_pad_probe(self.kit, offset, length)
        if len(probe) >= 16 and probe == bytes(len(probe)):
            raise RecoveryNeeded(
                f"the kit has already erased the pad at offset {offset} of your slice, "
                "which the state database says is unused: the database is older than the kit",
                kit_path=os.fspath(self.kit.path),
            )

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
        with self._lock, self.store.transaction():
            ours = self.store.mark_accepted(counter, seq)
            if not ours:
                row = self.store.outbox_row(counter)
                ours = row is not None and row.seq == seq
            if ours and settle:
                self._settle(store_id, [seq])
            self._record_pending()

    # -- receiving ----------------------------------------------------------------

    def receive(self, seq: int, sealed: bytes, *, store_id: bytes | None = None) -> Received | None:
        """Open a message the relay delivered as `seq` (of relay store `store_id`; None:
        the store the relay cursor belongs to).

        Returns None for an own message echoed back. Raises RejectedMessage, writing
        nothing at all, for anything section 6 refuses.

        The relay cursor settles `seq` durably only for what is authenticated: an
        accepted message, an echo byte-identical to a message in our outbox, or an echo
        at the very seq the relay's ACCEPTED gave that message. Any other frame (a
        forged one, a replay) settles it in memory, written with the next commit: the
        seq is not authenticated, and forged frames must not make us write.
        """
        if not 0 < seq < SEQ_LIMIT:
            raise ValueError(f"seq {seq} is out of range")
        with self._lock:
            if self._is_own_echo(sealed):
                env = read_envelope(sealed)
                row = self.store.outbox_row(env.counter)
                if row is not None and row.seq is None and row.sealed == sealed:
                    with self.store.transaction():
                        self.store.mark_accepted(env.counter, seq)
                        self._settle(store_id, [seq])
                        self._record_pending()
                elif row is not None and row.seq == seq:
                    # Where the relay's ACCEPTED put it: settling it reveals nothing new.
                    with self.store.transaction():
                        self._settle(store_id, [seq])
                        self._record_pending()
                else:
                    self._pending.seqs.append((store_id, seq))
                return None
            try:
                # Checked under the write lock, so that another process of this member
                # cannot accept the same counter between the check and the commit.
                with self.store.transaction():
                    opened = open_sealed(self.kit, sealed, self.store)
                    env = opened.envelope
                    now = time.time()
                    self.store.add_accepted(env.sender, env.counter, env.offset, env.length, seq)
                    self._record_history(
                        env.sender, env.counter, seq, opened.plaintext, now, "received"
                    )
                    self._settle(store_id, [seq])
                    self._record_pending()
                    expired = self._expire_history(now, saved=False)
            except RejectedMessage:
                self._pending.seqs.append((store_id, seq))
                raise
            if expired:
                self.store.checkpoint()
            self.kit.erase_inbound_key(env.sender, env.counter)
            self.kit.erase_key_stream(env.sender, env.offset, env.length)
            self.kit.flush()
            self._pending.received.append((env.sender, env.counter))
        return Received(
            seq=seq,
            sender=env.sender,
            sender_name=self.header.members[env.sender].name,
            counter=env.counter,
            offset=env.offset,
            payload=opened.plaintext,
        )

    def _is_own_echo(self, sealed: bytes) -> bool:
        if len(sealed) < HEADER_LEN:
            return False
        env = read_envelope(sealed)
        if env.pad_id != self.header.pad_id or env.n != self.header.n or env.sender != self.index:
            return False
        if env.counter >= self.header.auth_keys:
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
        """The relay cursor as committed, with the seqs of rejected frames that wait
        for the next commit settled on top."""
        with self._lock:
            cursor = self.store.relay_cursor()
            waiting = [s for store, s in self._pending.seqs if store in (None, cursor.store_id)]
            return cursor.settle(waiting)[0] if waiting else cursor

    def enter_relay_store(self, store_id: bytes) -> RelayCursor:
        """A relay named its store: from now on the cursor is that store's (protocol-v2
        section 8). Returns the cursor as it was, which belongs to another store when
        its `store_id` differs (then the new one starts from 0)."""
        with self._lock:
            before = self.relay_state()
            after = before.for_store(store_id)
            if after != before:
                with self.store.transaction():
                    self.store.set_relay_cursor(after)
                    if before.store_id is not None and before.store_id != store_id:
                        self.store.next_relay_epoch()  # its seqs start again from 1
                    self._pending.seqs = []
                    self._record_pending()
            return before

    def advance_cursor(self, seq: int, *, store_id: bytes | None = None) -> None:
        """Step the relay cursor over every seq up to `seq`: whatever is missing up to
        there is given up (the member was told it is lost)."""
        with self._lock, self.store.transaction():
            cursor = self.store.relay_cursor()
            if store_id is None or cursor.store_id in (None, store_id):
                self.store.set_relay_cursor(cursor.give_up_to(seq))
            self._record_pending()

    def take_lost(self) -> list[tuple[int, int]]:
        """Relay seqs given up since the last call because too many seqs were settled
        above a hole (see relaycursor.MAX_SEEN): (first, last) of each."""
        with self._lock:
            lost, self._lost = self._lost, []
            return lost

    def _settle(self, store_id: bytes | None, seqs: list[int]) -> None:
        """Inside a transaction: settle `seqs` of relay store `store_id`, with the
        seqs of rejected frames waiting for a commit. Seqs of another store than the
        cursor's are dropped: that store's cursor is not kept."""
        cursor = self.store.relay_cursor()
        waiting, self._pending.seqs = self._pending.seqs, []
        mine = [s for store, s in waiting if store in (None, cursor.store_id)]
        if store_id in (None, cursor.store_id):
            mine.extend(seqs)
        if mine:
            settled, lost = cursor.settle(mine)
            self.store.set_relay_cursor(settled)
            self._lost.extend(lost)

    # -- reading ------------------------------------------------------------------

    def history(
        self, limit: int | None = None, *, before: HistoryEntry | None = None
    ) -> list[HistoryEntry]:
        """In relay order, oldest first (see `Store.history`); with `limit`, the newest
        `limit` entries, and with `before`, those that come before that entry."""
        key = None if before is None else before.history_id
        return self._entries(self.store.history(limit, before=key))

    def history_of_kind(self, kind: int, *, head: int | None = None) -> list[HistoryEntry]:
        """Every history entry (the whole history, not a page) whose payload is of
        `kind` (its first byte), oldest first. With `head`, payloads are cut to their
        first `head` bytes: enough to tell which file a chunk belongs to without
        reading its data. Read-only; the chat app rebuilds file transfers with it."""
        return self._entries(self.store.history_starting_with(kind, head))

    def history_of(self, keys: Iterable[tuple[int, int]]) -> list[HistoryEntry]:
        """The history entries of these (sender, counter) pairs, oldest first."""
        return self._entries(self.store.history_of(keys))

    def _entries(self, rows: Iterable[HistoryRow]) -> list[HistoryEntry]:
        names = [m.name for m in self.header.members]
        return [
            HistoryEntry(
                r.sender, names[r.sender], r.counter, r.seq, r.payload, r.recorded_at, r.state, r.id
            )
            for r in rows
        ]

    # -- saved files --------------------------------------------------------------

    def saved_files(self) -> SavedFiles:
        """Every received file recorded as saved, and which history entries predate
        the record. Read-only."""
        records = {(r.sender, r.transfer_id): Path(r.path) for r in self.store.saved_files()}
        return SavedFiles(records, self.store.saves_tracked_after())

    def record_saved_file(
        self, sender: int, transfer_id: bytes, path: str | os.PathLike[str], sha256: bytes
    ) -> None:
        """Durably record that `sender`'s transfer was saved at `path`. Call only after
        the file is fsynced and linked into place: a transfer recorded here is never
        saved again."""
        now = time.time()
        with self._lock:
            with self.store.transaction():
                self.store.add_saved_file(sender, transfer_id, os.fspath(path), sha256, now)
                self._record_pending()
                # Its parts were kept only until now, if history is off or they expired.
                expired = self._expire_history(now, saved=True)
            if expired:
                self.store.checkpoint()

    # -- keeping history ----------------------------------------------------------

    @property
    def history_keep(self) -> int | None:
        """Days history is kept: None for ever (the default), 0 not at all."""
        return self.store.history_keep()

    def history_to_delete(self, days: int | None) -> int:
        """How many entries keeping history `days` days would delete now."""
        if days is None:
            return 0
        return self.store.count_history(HISTORY_HELD, before=time.time() - days * DAY)

    def set_history_keep(self, days: int | None) -> HistoryDeleted:
        """Keep history `days` days from now on (None: for ever, 0: not at all), and
        delete at once what that setting no longer keeps."""
        with self._lock:
            with self.store.transaction():
                self.store.set_history_keep(days)
                count = self._expire_history(time.time(), saved=True)
            return self._deleted(count)

    def clear_history(self) -> HistoryDeleted:
        """Delete the whole history, except parts of received files not yet saved."""
        with self._lock:
            with self.store.transaction():
                count = self.store.delete_history(HISTORY_HELD)
            return self._deleted(count)

    def _deleted(self, count: int) -> HistoryDeleted:
        checkpointed = self.store.checkpoint()
        return HistoryDeleted(count, self.store.history_rows(), checkpointed)

    def _record_history(
        self, sender: int, counter: int, seq: int | None, payload: bytes, now: float, state: str
    ) -> None:
        """Inside a transaction: a history row, unless history is off. With history off
        a part of a received file is still kept, until the file is saved."""
        held = sender != self.index and payload[:1] in (bytes([k]) for k in HISTORY_HELD.kinds)
        if self.store.history_keep() == 0 and not held:
            return
        self.store.add_history(sender, counter, seq, payload, now, state)

    def _expire_history(self, now: float, *, saved: bool) -> int:
        """Inside a transaction: delete what the history setting no longer keeps.

        With history off nothing new is recorded but held file parts, and those go only
        once their file is saved: so with `saved=False` (a message came or went) there
        is nothing to look for, and the held parts are not scanned on every message."""
        days = self.store.history_keep()
        if days is None or (days == 0 and not saved):
            return 0
        return self.store.delete_history(HISTORY_HELD, before=now - days * DAY)

    def _keep_history(self) -> None:
        """On opening: delete what expired while the kit was closed."""
        if self.store.history_keep() is None:
            return
        with self._lock:
            with self.store.transaction():
                expired = self._expire_history(time.time(), saved=True)
            if expired:
                self.store.checkpoint()

    # -- the chat app's "new since you left" --------------------------------------

    def first_unseen(self) -> int | None:
        """The history id of the first entry from another member recorded since the chat
        app last closed; None when there is none, or when it never closed."""
        seen = self.store.chat_seen()
        return None if seen is None else self.store.first_received_after(seen)

    @property
    def chat_seen(self) -> int | None:
        """The newest history id when the chat app last closed; None if it never did."""
        return self.store.chat_seen()

    def mark_chat_seen(self) -> None:
        """The chat app closes: everything in the history now has been seen."""
        with self._lock, self.store.transaction():
            self.store.set_chat_seen(self.store.history_head())

    def accepted_seq(self, counter: int) -> int | None:
        """The seq the relay gave own message `counter`, once it was accepted."""
        row = self.store.outbox_row(counter)
        return None if row is None else row.seq

    def usage(self, *, scan_kit: bool = True) -> KitUsage:
        """Usage figures. `keys_erased` is an exact count of zeroed keys in the kit
        (a scan of every key region, ~1 ms per 10 MB of keys); with scan_kit=False it
        is counted from the state's records instead, which is instant."""
        with self._lock:
            if self._pending.own or self._pending.received:
                with self.store.transaction():
                    self._record_pending()
            return compute_usage(self.kit, self.store, scan_kit=scan_kit)

    # -- internals ----------------------------------------------------------------

    def _record_pending(self) -> None:
        """Inside a transaction: write the erasure record of earlier messages."""
        pending = self._pending
        if pending.seqs:
            self._settle(None, [])
        if pending.own or pending.received:
            self.store.record_erased(pending.own, pending.received)
            # Cleared now: if this transaction rolls back, the sweep on the next start
            # erases the same bytes again, which is harmless.
            self._pending = _Pending()

    def _check_and_sweep(self) -> None:
        """Refuse a database older than the kit's erasures; erase what a crash left.

        Runs under the write lock, so no other process of this member commits (and
        then erases) between reading the next counter and scanning the kit."""
        kit = self.kit
        with self.store.transaction():
            counter, offset = self.store.next_position()
            problem = staleness(kit, counter, offset)
            if problem is not None:
                raise RecoveryNeeded(problem, kit_path=os.fspath(kit.path))
            own = self.store.unerased_outbox()
            received = self.store.unerased_accepted()
            for o in own:
                kit.erase_key_stream(self.index, o.offset, o.length)
                kit.erase_outbound_keys(o.counter)
            for a in received:
                kit.erase_inbound_key(a.sender, a.counter)
                if a.offset is not None and a.length is not None:
                    kit.erase_key_stream(a.sender, a.offset, a.length)
            if own or received:
                kit.flush()
                self.store.record_erased(
                    [o.counter for o in own], [(a.sender, a.counter) for a in received]
                )


# --- reading the kit's erasures ------------------------------------------------------


def _key_masks(kit: Kit, region_start: int, first: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """(first counter, erased mask) chunks for the keys [first, K) of one pair region."""
    k_total = kit.header.auth_keys
    start = first
    while start < k_total:
        count = min(_KEY_CHUNK, k_total - start)
        view = kit.region(region_start + start * KEY_LEN, count * KEY_LEN)
        arr = np.frombuffer(view, dtype=np.uint8).reshape(count, KEY_LEN)
        mask = np.asarray(~arr.any(axis=1))
        yield start, mask
        start += count


def _outbound_regions(kit: Kit) -> list[int]:
    return [kit.layout.outbound_key_offset(r, 0) for r in kit.layout.others()]


def _inbound_regions(kit: Kit) -> list[tuple[int, int]]:
    return [(s, kit.layout.inbound_key_offset(s, 0)) for s in kit.layout.others()]


def highest_erased_outbound(kit: Kit, first: int = 0) -> int:
    """The highest counter >= first with an erased outbound key (any recipient), or -1."""
    best = -1
    for region in _outbound_regions(kit):
        for start, mask in _key_masks(kit, region, first):
            hits = np.flatnonzero(mask)
            if hits.size:
                best = max(best, start + int(hits[-1]))
    return best


def erased_inbound_counters(kit: Kit, sender: int) -> list[int]:
    region = kit.layout.inbound_key_offset(sender, 0)
    found: list[int] = []
    for start, mask in _key_masks(kit, region):
        found.extend(int(i) + start for i in np.flatnonzero(mask))
    return found


def count_erased_keys(kit: Kit) -> int:
    total = 0
    regions = _outbound_regions(kit) + [r for _, r in _inbound_regions(kit)]
    for region in regions:
        for _, mask in _key_masks(kit, region):
            total += int(mask.sum())
    return total


def first_erasure(kit: Kit) -> str | None:
    """A description of some erased key in the kit, or None if none is erased."""
    top = highest_erased_outbound(kit)
    if top >= 0:
        return f"outbound key {top}"
    for sender, region in _inbound_regions(kit):
        for start, mask in _key_masks(kit, region):
            hits = np.flatnonzero(mask)
            if hits.size:
                return f"inbound key {start + int(hits[0])} from member {sender}"
    return None


def staleness(kit: Kit, next_counter: int, next_offset: int) -> str | None:
    """Why a state database with this next counter/offset is older than the kit, or
    None if nothing in the kit says so."""
    top = highest_erased_outbound(kit, next_counter)
    if top >= 0:
        return (
            f"the state database is older than the kit: it would send message "
            f"{next_counter} next, but the kit has already erased the keys of message {top}"
        )
    probe = _own_pad_probe(kit, next_offset, _ERASED_RUN)
    if len(probe) >= 16 and probe == bytes(len(probe)):
        return (
            f"the state database is older than the kit: it would send from offset "
            f"{next_offset} of your slice next, but the kit has already erased those bytes"
        )
    return None


def _own_pad_probe(kit: Kit, offset: int, length: int) -> bytes:
    """Up to _ERASED_RUN bytes of the owner's slice from `offset`, never past its end:
    past it lie another member's slice or the key regions, whose erasures say nothing
    about the owner's pad."""
    size = max(0, min(length, _ERASED_RUN, kit.header.slice_len - offset))
    return kit.key_stream(kit.self_index, offset, size)


def zero_prefix(kit: Kit, sender: int) -> int:
    """Length of the all-zero start of `sender`'s slice."""
    e = kit.header.slice_len
    base = kit.layout.slice_start(sender)
    at = 0
    while at < e:
        count = min(_PAD_CHUNK, e - at)
        arr = np.frombuffer(kit.region(base + at, count), dtype=np.uint8)
        nz = np.flatnonzero(arr)
        if nz.size:
            return at + int(nz[0])
        at += count
    return e


def erased_extent(kit: Kit, sender: int) -> int:
    """Where the erased part of `sender`'s slice ends, as far as the kit shows: the end
    of the zero prefix, or of the last stretch holding an aligned all-zero 32-byte
    block, whichever is later. (Shorter erased stretches past a gap cannot be told
    from random zeros; `pad recover` adds a margin for them.)"""
    e = kit.header.slice_len
    base = kit.layout.slice_start(sender)
    end = zero_prefix(kit, sender)
    last_block = -1
    at = 0
    while at + _ERASED_RUN <= e:
        count = min(_PAD_CHUNK, (e - at) // _ERASED_RUN * _ERASED_RUN)
        arr = np.frombuffer(kit.region(base + at, count), dtype=np.uint8)
        blocks = ~arr.reshape(-1, _ERASED_RUN).any(axis=1)
        hits = np.flatnonzero(blocks)
        if hits.size:
            last_block = at // _ERASED_RUN + int(hits[-1])
        at += count
    if last_block >= 0:
        run_end = (last_block + 1) * _ERASED_RUN
        while run_end < e and kit.region(base + run_end, 1)[0] == 0:
            run_end += 1
        end = max(end, run_end)
    return end


# --- usage -------------------------------------------------------------------------


def compute_usage(kit: Kit, store: Store | None, *, scan_kit: bool = True) -> KitUsage:
    """Usage figures from the state database, or from the kit alone when `store` is
    None (then the owner's figures are what the kit's erasures show)."""
    h = kit.header
    k, e = h.auth_keys, h.slice_len
    accepted: dict[int, SenderTotals] = store.accepted_totals() if store else {}
    members = []
    for i, m in enumerate(h.members):
        if i == h.self_index:
            if store is not None:
                keys_used, bytes_used = store.next_position()
                messages, sent_bytes = store.sent_totals()
            else:
                keys_used = highest_erased_outbound(kit) + 1
                bytes_used = erased_extent(kit, i)
                messages, sent_bytes = keys_used, bytes_used
        else:
            if store is not None:
                t = accepted.get(i, SenderTotals(0, 0, 0, -1, 0))
                keys_used, bytes_used = t.highest_counter + 1, t.highest_end
                messages, sent_bytes = t.counters, t.bytes
                sized = t.messages
            else:
                erased = erased_inbound_counters(kit, i)
                keys_used = (max(erased) + 1) if erased else 0
                bytes_used = zero_prefix(kit, i)
                messages, sent_bytes = len(erased), bytes_used
                sized = messages if bytes_used else 0
        if i == h.self_index:
            sized = messages
        avg = sent_bytes / sized if sized and sent_bytes else float(DEFAULT_AVERAGE_SIZE)
        texts = store.recent_sizes(i, Kind.TEXT, RECENT_TEXTS) if store is not None else []
        text_size = sum(texts) / len(texts) if texts else float(DEFAULT_AVERAGE_SIZE)
        keys_left = max(0, k - keys_used)
        bytes_left = max(0, e - bytes_used)
        members.append(
            MemberUsage(
                index=i,
                name=m.name,
                is_self=i == h.self_index,
                bytes_used=bytes_used,
                bytes_left=bytes_left,
                keys_used=keys_used,
                keys_left=keys_left,
                messages=messages,
                average_size=avg,
                messages_left=min(keys_left, math.floor(bytes_left / text_size)),
                slice_len=e,
                auth_keys=k,
                text_size=text_size,
            )
        )
    pad_erased = (
        store.erased_pad_bytes()
        if store is not None
        else sum(
            erased_extent(kit, i) if i == h.self_index else zero_prefix(kit, i) for i in range(h.n)
        )
    )
    return KitUsage(
        slice_len=e,
        auth_keys=k,
        members=tuple(members),
        keys_total=2 * (h.n - 1) * k,
        keys_erased=(
            count_erased_keys(kit) if scan_kit or store is None else store.erased_key_count(h.n)
        ),
        pad_bytes_total=h.n * e,
        pad_bytes_erased=pad_erased,
    )


# --- inspecting and recovering -------------------------------------------------------


@dataclass(frozen=True)
class StateStatus:
    path: Path
    status: str  # "ok" | "new" (no database, kit unused) | "missing" | "stale"
    detail: str | None


def inspect_state(kit: Kit, state_path: str | os.PathLike[str] | None = None) -> StateStatus:
    """Read-only: does the kit have a usable state database? Raises KitHeaderChangedError
    for a kit whose header is not the one recorded when it was first used here."""
    require_format_1(kit)
    check_kit(kit.header, kit.path)
    path = Path(state_path) if state_path is not None else default_state_path(kit.header)
    if not path.exists():
        erased = first_erasure(kit)
        if erased is None:
            return StateStatus(path, "new", None)
        return StateStatus(
            path, "missing", f"no state database, but the kit has already erased {erased}"
        )
    store = Store.open(path, binding_of(kit.header), read_only=True)
    try:
        counter, offset = store.next_position()
        problem = staleness(kit, counter, offset)
    finally:
        store.close()
    return StateStatus(path, "stale" if problem else "ok", problem)


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
    def can_send_after(self) -> bool:
        """Whether the kit can still send once the margin is skipped."""
        return self.next_counter < self.auth_keys and self.next_offset < self.slice_len

    def aside_path(self) -> Path:
        return self.state.path.with_name(f"{self.state.path.name}.stale-{int(time.time())}")


def plan_recovery(kit: Kit, state_path: str | os.PathLike[str] | None = None) -> RecoveryPlan:
    """Plan a conservative state database from the kit alone.

    Every message that may have left this device is erased in the kit, except at most
    one commit (see the module docstring), so, with `recovery_margin`:

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
    store = Store.create(
        path,
        binding_of(kit.header),
        next_counter=plan.next_counter,
        next_offset=plan.next_offset,
        origin="recovered",
    )
    try:
        now = time.time()
        with store.transaction():
            if plan.erased_extent or plan.highest_erased_counter >= 0:
                store.add_skipped(
                    SkippedRange(
                        me,
                        0,
                        plan.erased_extent,
                        0,
                        plan.highest_erased_counter + 1,
                        "pad recover: erased before recovery",
                    ),
                    now,
                )
            for sender, counters in plan.accepted.items():
                for c in counters:
                    store.add_accepted(sender, c, None, None, None)
            store.add_skipped(
                SkippedRange(
                    me,
                    plan.erased_extent,
                    plan.next_offset,
                    plan.highest_erased_counter + 1,
                    plan.next_counter,
                    "pad recover: safety margin",
                ),
                now,
            )
        for c in range(plan.highest_erased_counter + 1, plan.next_counter):
            kit.erase_outbound_keys(c)
        if plan.next_offset > plan.erased_extent:
            kit.erase_key_stream(me, plan.erased_extent, plan.skipped_bytes)
        kit.flush()
    finally:
        store.close()
    remember_kit(kit.header)
    return path
