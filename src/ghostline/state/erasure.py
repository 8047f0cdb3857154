"""What the kit's erasures show, and the sweep that finishes erasures a crash left.

Used pad and keys are zeroed in the kit, so the kit itself records what was used: a
one-time key of 32 zero bytes (format 1) or a mask of 16 (format 2) is erased (a random
one is all zeros with chance 2^-256 or 2^-128), and so is a stretch of ERASED_RUN zero
bytes of pad. These scans read the kit (numpy over the mapped file, a chunk at a time)
and change nothing; `sweep` is the one writer, run when a member opens. "Keys" below
means a format-1 key or a format-2 mask: one per message and pair in both.

Who uses them: `Member.open` refuses a database the kit shows to be missing or older
(`first_erasure`, `staleness`); `usage` reads a kit without a database; `recovery`
plans a new database from them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import numpy as np

from ..errors import StateBehindKit
from ..pad.kit import Kit
from ..protocol.extents import Extents
from ..protocol.kitformat import FORMAT_1, KEY_LEN, MASK_LEN
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
    with store.transaction():
        counter, offset = store.next_position()
        unsealed = None if kit.format == FORMAT_1 else store.unsealed()
        problem = staleness(kit, counter, offset, unsealed)
        if problem is not None:
            raise problem
        own = store.unerased_outbox()
        received = store.unerased_accepted()
        for o in own:
            erase_own(kit, o.counter, o.offset, o.length)
        for a in received:
            erase_received(kit, a.sender, a.counter, a.offset, a.length, store.accepted_all)
        if own or received:
            kit.flush()
            store.record_erased([o.counter for o in own], [(a.sender, a.counter) for a in received])


def erase_own(kit: Kit, counter: int, offset: int, length: int) -> None:
    """Zero what own message `counter` used (not flushed): its pad and its keys (format
    1), or its group-pad bytes and masks, and the hash keys R once the last mask is
    used (format 2)."""
    if kit.format == FORMAT_1:
        kit.erase_key_stream(kit.self_index, offset, length)
        kit.erase_outbound_keys(counter)
        return
    kit.erase_pad(offset, length)
    kit.erase_outbound_masks(counter)
    if counter == kit.header.auth_keys - 1:
        kit.erase_outbound_hash_keys()


def erase_received(
    kit: Kit,
    sender: int,
    counter: int,
    offset: int | None,
    length: int | None,
    accepted_all: Callable[[int, int], bool],
) -> None:
    """Zero what an accepted message used (not flushed); format 2 also erases the pair's
    R once every mask of it is accepted (`accepted_all(sender, K)`)."""
    if kit.format == FORMAT_1:
        kit.erase_inbound_key(sender, counter)
        if offset is not None and length is not None:
            kit.erase_key_stream(sender, offset, length)
        return
    kit.erase_inbound_mask(sender, counter)
    if offset is not None and length is not None:
        kit.erase_pad(offset, length)
    if accepted_all(sender, kit.header.auth_keys):
        kit.erase_inbound_hash_key(sender)


def staleness(
    kit: Kit, next_counter: int, next_offset: int, unsealed: Extents | None = None
) -> StateBehindKit | None:
    """Why a state database with this next counter and offset (format 2: these unsealed
    extents) is older than the kit (not raised), or None if nothing in the kit says so."""
    top = highest_erased_outbound(kit, next_counter)
    if top >= 0:
        return StateBehindKit(
            kit_path=os.fspath(kit.path), next_counter=next_counter, erased_counter=top
        )
    if unsealed is None:
        if own_pad_erased(kit, next_offset, ERASED_RUN):
            return StateBehindKit(kit_path=os.fspath(kit.path), next_offset=next_offset)
        return None
    for start, end in unsealed:
        if group_pad_erased(kit, start, end - start):
            return StateBehindKit(kit_path=os.fspath(kit.path), next_offset=start)
    return None


def own_pad_erased(kit: Kit, offset: int, length: int) -> bool:
    """Format 1: whether the owner's slice reads as erased from `offset` (up to
    ERASED_RUN bytes, never past the slice's end: past it lie another member's slice or
    the key regions, whose erasures say nothing about the owner's pad). Fewer than 16
    bytes say nothing."""
    size = max(0, min(length, ERASED_RUN, kit.header.slice_len - offset))
    probe = kit.key_stream(kit.self_index, offset, size)
    return size >= 16 and probe == bytes(size)


def group_pad_erased(kit: Kit, offset: int, length: int) -> bool:
    """Format 2: whether the group pad reads as erased from absolute `offset` (up to
    ERASED_RUN bytes of the `length` asked about; fewer than 16 say nothing)."""
    size = max(0, min(length, ERASED_RUN, kit.layout.pad_len - offset))
    return size >= 16 and kit.pad_bytes(offset, size) == bytes(size)


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
    region = _first_key(kit, kit.layout.inbound_region(sender))
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
    """Format 1: length of the all-zero start of `sender`'s slice."""
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
    """Format 1: where the erased part of `sender`'s slice ends, as far as the kit shows: the end
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


def erased_blocks_end(kit: Kit, extents: Extents) -> int:
    """Format 2: where the erased part of `extents` ends, as far as the kit shows: the
    end of the zero run holding the last all-zero ERASED_RUN-byte block (aligned to the
    group pad) inside them; the first offset of `extents` when there is none, 0 when
    they are empty. (Shorter erased stretches cannot be told from random zeros.)"""
    end = extents.ranges[0][0] if extents else 0
    for start, stop in extents:
        first = -(-start // ERASED_RUN) * ERASED_RUN
        last = -1
        at = first
        while at + ERASED_RUN <= stop:
            count = min(_PAD_CHUNK, (stop - at) // ERASED_RUN * ERASED_RUN)
            arr = np.frombuffer(kit.region(kit.layout.base + at, count), dtype=np.uint8)
            hits = np.flatnonzero(~arr.reshape(-1, ERASED_RUN).any(axis=1))
            if hits.size:
                last = at + int(hits[-1]) * ERASED_RUN
            at += count
        if last >= 0:
            run_end = last + ERASED_RUN
            while run_end < stop and kit.pad_bytes(run_end, 1) == b"\0":
                run_end += 1
            end = run_end
    return end


def erased_bytes_within(kit: Kit, extents: Extents) -> int:
    """Format 2: bytes of `extents` in all-zero ERASED_RUN-byte blocks (aligned to the
    group pad): what the kit shows erased there, short erasures left out."""
    total = 0
    for start, stop in extents:
        at = -(-start // ERASED_RUN) * ERASED_RUN
        while at + ERASED_RUN <= stop:
            count = min(_PAD_CHUNK, (stop - at) // ERASED_RUN * ERASED_RUN)
            arr = np.frombuffer(kit.region(kit.layout.base + at, count), dtype=np.uint8)
            total += int((~arr.reshape(-1, ERASED_RUN).any(axis=1)).sum()) * ERASED_RUN
            at += count
    return total


def _key_len(kit: Kit) -> int:
    return KEY_LEN if kit.format == FORMAT_1 else MASK_LEN


def _first_key(kit: Kit, region: int) -> int:
    """File offset of key (format 1) or mask (format 2) 0 of the pair region at `region`."""
    return region if kit.format == FORMAT_1 else kit.layout.mask_offset(region, 0)


def _key_masks(kit: Kit, region_start: int, first: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """(first counter, erased mask) chunks for the keys (masks) [first, K) of one pair
    region, whose key 0 starts at `region_start`."""
    k_total = kit.header.auth_keys
    size = _key_len(kit)
    start = first
    while start < k_total:
        count = min(_KEY_CHUNK, k_total - start)
        view = kit.region(region_start + start * size, count * size)
        arr = np.frombuffer(view, dtype=np.uint8).reshape(count, size)
        mask = np.asarray(~arr.any(axis=1))
        yield start, mask
        start += count


def _outbound_regions(kit: Kit) -> list[int]:
    return [_first_key(kit, kit.layout.outbound_region(r)) for r in kit.layout.others()]


def _inbound_regions(kit: Kit) -> list[tuple[int, int]]:
    return [(s, _first_key(kit, kit.layout.inbound_region(s))) for s in kit.layout.others()]
