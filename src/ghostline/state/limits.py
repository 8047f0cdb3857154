"""How much one commit may seal, and the largest message: one home for both.

A sealer commits a group of messages, then erases their keys and pad in the kit. A
process killed in between leaves one commit sealed (and perhaps already sent from the
outbox by another process of the same member) but not erased, and the kit alone cannot
show it. So `pad recover` skips one whole commit past what the kit shows erased
(`recovery.recovery_margin`): whatever a commit may hold, recovery burns. Both caps
are small on purpose: `seal_many` refuses a group over either, and the file sender
(`files.outgoing`) cuts its groups by both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ..pad.seal2 import largest_payload, padded_length
from ..protocol.envelope import sealed_length
from ..protocol.frames import DEFAULT_MAX_FRAME
from ..protocol.payload import DEFAULT_CHUNK_SIZE

# Messages one commit seals: a file's parts go 32 to a commit (one fsync, not 32).
MAX_SEAL_GROUP = 32
# Pad bytes one commit uses: 2 MiB + 64 KiB. That holds 32 file parts of the default
# 64 KiB with their 17-byte heads (and format 2's padding of up to 2 KiB each), and
# one message of the largest size a relay carries (`max_payload`, about 1 MiB).
MAX_SEAL_BYTES = (MAX_SEAL_GROUP + 1) * DEFAULT_CHUNK_SIZE


def max_payload(n: int, step: int | None = None) -> int:
    """The largest payload a member of a group of `n` can seal: its DELIVER frame (type,
    seq, sealed message) must fit the protocol's default relay frame limit. `step`: a
    format-2 kit's length step (the payload is padded to a multiple of it)."""
    room = DEFAULT_MAX_FRAME - 1 - 8 - sealed_length(0, n)
    return room if step is None else largest_payload(room, step)


def pad_cost(payload_len: int, step: int | None = None) -> int:
    """Pad bytes a payload of `payload_len` bytes uses: itself (format 1), or padded to a
    multiple of a format-2 kit's length `step`."""
    return payload_len if step is None else padded_length(payload_len, step)


def seal_groups(sizes: Sequence[int], *, most: int = MAX_SEAL_GROUP) -> Iterator[slice]:
    """Cut messages of these pad sizes, in order, into groups one commit may seal: at
    most `most` (up to MAX_SEAL_GROUP) messages and MAX_SEAL_BYTES bytes each. A single
    message larger than MAX_SEAL_BYTES is a group of its own (`seal_many` refuses it)."""
    most = max(1, min(most, MAX_SEAL_GROUP))
    start = 0
    total = 0
    for i, size in enumerate(sizes):
        if i > start and (i - start >= most or total + size > MAX_SEAL_BYTES):
            yield slice(start, i)
            start, total = i, 0
        total += size
    if start < len(sizes):
        yield slice(start, len(sizes))
