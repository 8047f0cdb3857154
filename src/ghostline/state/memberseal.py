"""`Member`'s sending path: seal, the outbox, and what the relay says it stored.

Sealing seals in memory, then ONE transaction commits the next counter, the next offset
(format 2: the owner's unsealed bytes, where first-fit placed each message) and the
outbox row, then the used pad and keys (masks) are zeroed in the kit and flushed, and
only then does `seal` return the sealed bytes (docs/PROTOCOL.md sections 5 and 14). A
commit holds at most what `limits.py` allows, so `pad recover` (`recovery.py`) can skip
one commit's worth past the kit's erasures. A mixin of `Member` (member.py): the
facade's methods, in their own file by job.

Test hook (the only one): with GHOSTLINE_TEST_CRASH_AFTER_COMMIT in the environment,
`seal`/`seal_many` stop right after the commit: `1` calls `os._exit(86)` before
erasing (tests check that the start-up sweep erases what a crash left behind);
`stop-mid-erase` erases the first half of the group, flushes, and stops the process
with SIGSTOP, so a test can SIGKILL it in the middle of a group.
"""

from __future__ import annotations

import os
import signal
import time

from ..errors import ErasedKeyError, MessageTooLarge, StateBehindKit
from ..pad.seal import keys_used_up, seal_with_kit
from ..pad.seal2 import next_range, seal_with_kit2
from ..protocol.extents import Extents
from ..protocol.kitformat import FORMAT_1
from ..protocol.relaycursor import SEQ_LIMIT
from .entries import OutboxEntry
from .erasure import erase_own, group_pad_erased, own_pad_erased
from .limits import MAX_SEAL_BYTES, MAX_SEAL_GROUP, max_payload, pad_cost
from .memberparts import MemberParts
from .store import OutboxRow

CRASH_HOOK_ENV = "GHOSTLINE_TEST_CRASH_AFTER_COMMIT"
CRASH_HOOK_EXIT = 86
CRASH_HOOK_STOP = "stop-mid-erase"


class MemberSeal(MemberParts):
    @property
    def format(self) -> int:
        return self.header.format

    @property
    def max_payload(self) -> int:
        """The largest payload this member can seal (see `limits.max_payload`)."""
        return max_payload(self.header.n, self.header.length_step)

    def pad_cost(self, payload_len: int) -> int:
        """Pad bytes a payload of this length uses (format 2 pads it)."""
        return pad_cost(payload_len, self.header.length_step)

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
        if sum(self.pad_cost(len(p)) for p in payloads) > MAX_SEAL_BYTES:
            raise ValueError(f"one commit seals at most {MAX_SEAL_BYTES} bytes of pad")
        # The seal lock is held from before the commit until the erasure is flushed, so
        # no other process commits while this one's commit is not yet erased.
        with self._lock, self.kit.seal_lock():
            return self._seal_locked(payloads)

    def _seal_locked(
        self, payloads: list[bytes], *, grant_id: int | None = None
    ) -> list[OutboxEntry]:
        """`seal_many` with the member's lock and the kit's seal lock held. `grant_id`:
        the payload is that own grant's message (its row learns the counter)."""
        me = self.index
        kit_path = os.fspath(self.kit.path)
        entries: list[OutboxEntry] = []
        now = time.time()
        with self.store.transaction():
            counter, offset = self.store.next_position()
            free = None if self.format == FORMAT_1 else self.store.unsealed()
            for payload in payloads:
                try:
                    if free is None:
                        length = len(payload)
                        if own_pad_erased(self.kit, offset, length):
                            raise StateBehindKit(kit_path=kit_path, next_offset=offset)
                        sealed = seal_with_kit(self.kit, counter, offset, payload)
                    else:
                        offset, length = self._place2(counter, payload, free)
                        sealed = seal_with_kit2(self.kit, counter, offset, payload, free=free)
                except ErasedKeyError:
                    raise StateBehindKit(
                        kit_path=kit_path, next_counter=counter, erased_counter=counter
                    ) from None
                self.store.add_outbox(counter, offset, length, sealed, now)
                self._history.record(me, counter, None, payload, now, "sealed")
                entries.append(OutboxEntry(counter, offset, length, sealed, None))
                if free is not None:
                    free = free.remove(offset, offset + length)
                counter += 1
                offset += length
            if free is None:
                self.store.set_next_position(counter, offset)
            else:
                self.store.set_next_position(counter, 0)  # format 2 places by `unsealed`
                self.store.set_unsealed(free)
            if grant_id is not None:
                self.store.set_grant_counter(grant_id, entries[0].counter)
            self._record_pending()
            expired = self._history.expire(now, saved=False)
        if self._crash_hook == "1":
            os._exit(CRASH_HOOK_EXIT)
        for i, e in enumerate(entries):
            if self._crash_hook == CRASH_HOOK_STOP and i == len(entries) // 2:
                self.kit.flush()
                os.kill(os.getpid(), signal.SIGSTOP)
            erase_own(self.kit, e.counter, e.offset, e.length)
        self.kit.flush()
        self._erased.own.extend(e.counter for e in entries)
        if expired:
            self.store.db.checkpoint()  # after the erasure: it must not wait on this
        return entries

    def _place2(self, counter: int, payload: bytes, free: Extents) -> tuple[int, int]:
        """Format 2: (offset, padded length) of the next message: the lowest
        free run of the owner's unsealed bytes that holds it. PadExhaustedError when
        the masks or the pad run out (nothing is consumed)."""
        h = self.header
        assert h.length_step is not None
        if counter >= h.auth_keys:
            raise keys_used_up(h)
        start, end = next_range(free, len(payload), h.length_step)
        if group_pad_erased(self.kit, start, end - start):
            raise StateBehindKit(kit_path=os.fspath(self.kit.path), next_offset=start)
        return start, end - start

    def pending_counters(self) -> list[int]:
        """The counters of the messages not yet ACCEPTED, in order (no sealed bytes)."""
        return self.store.pending_counters()

    def pending_span(self) -> tuple[int, int]:
        """How many messages are not yet ACCEPTED, and the highest counter among them
        (-1 when there are none)."""
        return self.store.pending_span()

    def pending_page(self, after: int, upto: int, most_bytes: int, most: int) -> list[OutboxEntry]:
        """The messages not yet ACCEPTED with `after < counter <= upto`, by counter: at
        most `most`, of at most `most_bytes` sealed bytes together (but one, however long)."""
        return [_entry(r) for r in self.store.pending_page(after, upto, most_bytes, most)]

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

    def accepted_seq(self, counter: int) -> int | None:
        """The seq the relay gave own message `counter`, once it was accepted."""
        row = self.store.outbox_row(counter)
        return None if row is None else row.seq


def _entry(row: OutboxRow) -> OutboxEntry:
    return OutboxEntry(row.counter, row.offset, row.length, row.sealed or b"", row.seq)
