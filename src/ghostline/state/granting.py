"""Format 2: giving pad and accepting what others give (docs/PROTOCOL.md section 15).

The pure rules (what a grant is, whether a receiver may accept it, how extents follow
from grants) are `protocol.grants`; this module applies them to the state database
and keeps the kit's grant journal in step with it. `Member` calls it under its locks:

- a donor first takes the range out of its unsealed bytes and moves it to the grantee
  in its own view, in one commit (`take_gift`); then appends the grant to its journal
  and flushes it (`write_journal`); only then seals the grant message. A crash between
  the two leaves the range given away and never announced: lost, never reused;
- a receiver checks a grant in the transaction that records its message and, if it
  passes, moves the range there (`accept_grant`); after the commit it appends the grant
  to its journal (`write_journal`).

The journal holds the grants marked written, in recording order, and then perhaps some
of those still waiting (a crash can come between appending and marking): so
`write_journal` appends only the waiting grants the journal does not hold yet, which
makes it safe to run again after any crash (the start-up sweep does). It must run with
the kit's seal lock held, so that no other process of the member appends meanwhile.
"""

from __future__ import annotations

import os

from ..errors import (
    GiftTooLarge,
    InvalidGrant,
    JournalFullError,
    PadExhaustedError,
    PayloadError,
    RecoveryNeeded,
)
from ..pad.kit import Kit
from ..pad.seal2 import padded_length
from ..protocol.envelope import Envelope
from ..protocol.extents import Extents
from ..protocol.grants import JOURNAL_SLOTS, GrantRange, check_grant, move_range
from ..protocol.kitformat import KitHeader
from ..protocol.payload import GRANT_PAYLOAD_LEN, decode_grant
from .grantstore import JOURNAL_FULL, JOURNAL_NONE, JOURNAL_WRITTEN
from .store import Store

_SQLITE_MAX = (1 << 63) - 1


def largest_gift(free: Extents, step: int) -> int:
    """The most a member with these unsealed bytes can give in one grant: the longest
    run, less what the grant message itself needs when no other run holds it."""
    message = padded_length(GRANT_PAYLOAD_LEN, step)
    runs = sorted((end - start for start, end in free), reverse=True)
    if not runs:
        return 0
    if len(runs) > 1 and runs[1] >= message:
        return runs[0]
    return max(0, runs[0] - message)


def gift_range(free: Extents, size: int, step: int) -> GrantRange | None:
    """Where a gift of `size` bytes comes from: the top of the highest run that holds
    it and leaves room for the grant message (the lowest runs are sealed first, so
    the top ones are what the owner needs last). None when nothing fits. `to` is 0:
    the caller fills it in."""
    message = padded_length(GRANT_PAYLOAD_LEN, step)
    for start, end in reversed(free.ranges):
        if end - start < size:
            continue
        left = free.remove(end - size, end)
        if left.first_fit(message) is not None:
            return GrantRange(0, end - size, end)
    return None


def take_gift(
    store: Store, header: KitHeader, to: int, size: int, now: float
) -> tuple[int, GrantRange]:
    """Inside a transaction: give `size` unsealed bytes to member `to`: out of the
    owner's unsealed bytes and extents, into `to`'s extents (this member's view), and a
    grant row waiting for the journal. Returns (grant id, the grant). Raises
    PadExhaustedError when no mask is left for the grant message, GiftTooLarge when no
    run can give `size` and still hold the grant message."""
    me, step = header.self_index, header.length_step
    assert step is not None  # format 2
    counter, _ = store.next_position()
    if counter >= header.auth_keys:
        raise PadExhaustedError(
            f"no one-time keys left: all {header.auth_keys} messages of this kit are used, "
            "so it cannot send a grant"
        )
    free = store.unsealed()
    where = gift_range(free, size, step)
    if where is None:
        raise GiftTooLarge(size, largest_gift(free, step))
    grant = GrantRange(to, where.start, where.end)
    store.set_unsealed(free.remove(grant.start, grant.end))
    extents = move_range(store.extents(header.n), me, grant)
    store.set_member_extents(me, extents[me])
    store.set_member_extents(to, extents[to])
    return store.add_grant(me, None, grant, now), grant


def accept_grant(
    store: Store, header: KitHeader, env: Envelope, payload: bytes, now: float
) -> tuple[GrantRange, str | None] | None:
    """Inside the transaction that records grant message `env` (before its range is
    recorded): check the grant and, if it passes, move its range (docs/PROTOCOL.md
    section 15). Returns (the grant, None when it moved, else the rule it broke), or
    None for a grant payload that does not even decode (a payload error, shown as
    such)."""
    try:
        grant = decode_grant(payload).grant
    except PayloadError:
        return None
    sender = env.sender
    try:
        check_grant(
            grant,
            sender=sender,
            n=header.n,
            message_range=(env.offset, env.offset + env.length),
            state=store,
        )
    except InvalidGrant as refused:
        # Recorded only for display; its numbers may be anything a sender wrote.
        shown = GrantRange(*(min(field, _SQLITE_MAX) for field in grant))
        store.add_grant(sender, env.counter, shown, now, rule=refused.rule, journal=JOURNAL_NONE)
        return grant, refused.rule
    extents = move_range(store.extents(header.n), sender, grant)
    store.set_member_extents(sender, extents[sender])
    store.set_member_extents(grant.to, extents[grant.to])
    if grant.to == header.self_index:
        store.set_unsealed(store.unsealed().add(grant.start, grant.end))
    store.add_grant(sender, env.counter, grant, now)
    return grant, None


def journal_room(kit: Kit, store: Store) -> int:
    """Slots of the kit's journal left once the grants waiting for it are written."""
    _, waiting = store.grants_journal()
    return JOURNAL_SLOTS - len(kit.journal()) - len(waiting)


def write_journal(kit: Kit, store: Store) -> None:
    """Append to the kit's journal the grants waiting for it that it does not hold yet,
    flushing each, then mark them written (or `full` once the journal has no room).
    Call with the kit's seal lock held, outside any transaction."""
    records = kit.journal()
    with store.transaction():
        written, waiting = store.grants_journal()
        already = len(records) - written
        if not 0 <= already <= len(waiting) or records[written:] != [
            g.grant for g in waiting[:already]
        ]:
            # A database older than the kit (restored from a backup): rebuild it.
            raise RecoveryNeeded(
                f"{os.fspath(store.path)}: the state database and the grant journal of "
                f"{os.fspath(kit.path)} disagree ({len(records)} records in the journal, "
                f"{written} written and {len(waiting)} waiting in the database)",
                kit_path=os.fspath(kit.path),
            )
        done = [g.id for g in waiting[:already]]
        full: list[int] = []
        for i, g in enumerate(waiting[already:], start=already):
            try:
                kit.append_journal(g.grant)
            except JournalFullError:
                full = [w.id for w in waiting[i:]]
                break
            done.append(g.id)
        store.mark_journal(done, JOURNAL_WRITTEN)
        store.mark_journal(full, JOURNAL_FULL)


def outstanding(store: Store, me: int) -> frozenset[int]:
    """The members holding a grant of ours they have not been seen to seal in yet: one
    outstanding grant per recipient at a time (`giving.py`)."""
    found = set()
    for g in store.grants(giver=me):
        if g.counter is None or g.rule is not None or g.grant.to in found:
            continue  # never sealed (a crash came between), or none of ours to wait for
        if not store.used_in(g.grant.to, g.grant.start, g.grant.end):
            found.add(g.grant.to)
    return frozenset(found)
