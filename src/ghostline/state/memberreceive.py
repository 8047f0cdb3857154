"""`Member`'s receiving path: open what the relay delivers, or settle a copy of it.

The header is read once; every reject rule is checked against the accepted log
(format 2: and the sender's extents), then one transaction commits the accepted
(sender, counter, range, digest), the history row, the relay cursor and, for a grant,
the range it moves (`granting.py`), then the inbound key (mask) and the pad bytes are
zeroed and flushed, an accepted grant goes into the kit's journal, and only then is the
message returned (docs/PROTOCOL.md section 6). A rejected message changes nothing,
durable or not, and settles no relay seq; the one thing it changes is in memory: a
failed tag adds one to its sender's failed-verification count, written with the next
commit (a forged frame must never cause a write of its own). A byte-for-byte copy of a
message this member already has settles its seq as `cursor.py` says. A mixin of
`Member` (member.py): the facade's methods, in their own file by job.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..errors import RejectedMessage
from ..pad.seal import open_sealed
from ..pad.seal2 import open_sealed2
from ..protocol.envelope import HEADER_LEN, Envelope, read_envelope
from ..protocol.kitformat import FORMAT_1
from ..protocol.payload import Kind
from ..protocol.relaycursor import SEQ_LIMIT, frame_digest
from ..protocol.rules import Rule
from . import granting
from .erasure import erase_received
from .memberparts import MemberParts

_GRANT = bytes([Kind.GRANT])


@dataclass(frozen=True)
class Received:
    seq: int
    sender: int
    sender_name: str
    counter: int
    offset: int
    payload: bytes
    length: int = -1  # pad bytes the message used (format 2: padded); -1: len(payload)
    grant_refused: str | None = None  # a grant that moved nothing: the rule it broke

    @property
    def pad_used(self) -> int:
        return len(self.payload) if self.length < 0 else self.length


class MemberReceive(MemberParts):
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
            refused: str | None = None
            moved = False
            try:
                # Checked under the write lock, so that another process of this member
                # cannot accept the same counter between the check and the commit.
                with self.store.transaction():
                    if self.header.format == FORMAT_1:
                        opened = open_sealed(self.kit, sealed, self.store, envelope=env)
                    else:
                        opened = open_sealed2(self.kit, sealed, self.store)
                    env = opened.envelope
                    now = time.time()
                    if self.header.format != FORMAT_1 and opened.plaintext[:1] == _GRANT:
                        verdict = granting.accept_grant(
                            self.store, self.header, env, opened.plaintext, now
                        )
                        if verdict is not None:
                            refused = verdict[1]
                            moved = refused is None
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
                if err.rule == Rule.BAD_TAG and env is not None:
                    # The one thing a rejection may change, written with the next commit.
                    self._failed[env.sender] = self._failed.get(env.sender, 0) + 1
                if err.rule != Rule.REPLAYED_COUNTER or env is None:
                    raise
                self._cursor.accepted_copy(env, seq, digest, store_id)
                return None
            if expired:
                self.store.db.checkpoint()
            erase_received(
                self.kit, env.sender, env.counter, env.offset, env.length,
                self.store.accepted_all,
            )  # fmt: skip
            self.kit.flush()
            self._erased.received.append((env.sender, env.counter))
            if moved:
                with self.kit.seal_lock():
                    granting.write_journal(self.kit, self.store)
        return Received(
            seq=seq,
            sender=env.sender,
            sender_name=self.header.members[env.sender].name,
            counter=env.counter,
            offset=env.offset,
            payload=opened.plaintext,
            length=env.length,
            grant_refused=refused,
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
