"""What the kit's erasures show, and the sweep that finishes erasures a crash left.

Used pad and keys are zeroed in the kit, so the kit itself records what was used: a
one-time key of 32 zero bytes is erased (a random key is all zeros with chance
2^-256), and so is a stretch of ERASED_RUN zero bytes of pad. These scans read the kit
(numpy over the mapped file, a chunk at a time) and change nothing; `sweep` is the one
writer, run when a member opens.

Who uses them: `Member.open` refuses a database the kit shows to be missing or older
(`first_erasure`, `staleness`); `usage` reads a kit without a database; `recovery`
plans a new database from them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from ..errors import StateBehindKit
from ..pad.kit import Kit
from ..protocol.kitformat import KEY_LEN
from .store import Store

# A stretch of this many zero bytes in a random pad means "erased" (chance 2^-256).
ERASED_RUN = 32
_KEY_CHUNK = 1 << 16  # keys scanned per numpy step (2 MiB)
_PAD_CHUNK = 1 << 22


def sweep(kit: Kit, store: Store) -> None:
    """Refuse a database older than the kit's erasures (StateBehindKit); erase what was
    committed but not yet erased (a crash between commit and erase).

    Runs in one transaction, under the write lock, so no other process of this member
    commits (and then erases) between reading the next counter and scanning the kit."""
    me = kit.header.self_index
    with store.transaction():
        counter, offset = store.next_position()
        problem = staleness(kit, counter, offset)
        if problem is not None:
            raise problem
        own = store.unerased_outbox()
        received = store.unerased_accepted()
        for o in own:
            kit.erase_key_stream(me, o.offset, o.length)
            kit.erase_outbound_keys(o.counter)
        for a in received:
            kit.erase_inbound_key(a.sender, a.counter)
            if a.offset is not None and a.length is not None:
                kit.erase_key_stream(a.sender, a.offset, a.length)
        if own or received:
            kit.flush()
            store.record_erased([o.counter for o in own], [(a.sender, a.counter) for a in received])


def staleness(kit: Kit, next_counter: int, next_offset: int) -> StateBehindKit | None:
    """Why a state database with this next counter and offset is older than the kit
    (not raised), or None if nothing in the kit says so."""
    top = highest_erased_outbound(kit, next_counter)
    if top >= 0:
        return StateBehindKit(
            kit_path=os.fspath(kit.path), next_counter=next_counter, erased_counter=top
        )
    if own_pad_erased(kit, next_offset, ERASED_RUN):
        return StateBehindKit(kit_path=os.fspath(kit.path), next_offset=next_offset)
    return None


def own_pad_erased(kit: Kit, offset: int, length: int) -> bool:
    """Whether the owner's slice reads as erased from `offset` (up to ERASED_RUN bytes,
    never past the slice's end: past it lie another member's slice or the key regions,
    whose erasures say nothing about the owner's pad). Fewer than 16 bytes say nothing."""
    size = max(0, min(length, ERASED_RUN, kit.header.slice_len - offset))
    probe = kit.key_stream(kit.self_index, offset, size)
    return size >= 16 and probe == bytes(size)


def first_erasure(kit: Kit) -> tuple[int, int | None] | None:
    """Some erased key in the kit: (counter, None) for an outbound key, (counter,
    sender) for an inbound one; None if no key is erased."""
    top = highest_erased_outbound(kit)
    if top >= 0:
        return top, None
    for sender, region in _inbound_regions(kit):
        for start, mask in _key_masks(kit, region):
            hits = np.flatnonzero(mask)
            if hits.size:
                return start + int(hits[0]), sender
    return None


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
    while at + ERASED_RUN <= e:
        count = min(_PAD_CHUNK, (e - at) // ERASED_RUN * ERASED_RUN)
        arr = np.frombuffer(kit.region(base + at, count), dtype=np.uint8)
        blocks = ~arr.reshape(-1, ERASED_RUN).any(axis=1)
        hits = np.flatnonzero(blocks)
        if hits.size:
            last_block = at // ERASED_RUN + int(hits[-1])
        at += count
    if last_block >= 0:
        run_end = (last_block + 1) * ERASED_RUN
        while run_end < e and kit.region(base + run_end, 1)[0] == 0:
            run_end += 1
        end = max(end, run_end)
    return end


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
