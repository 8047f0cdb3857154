"""Kit files, formats 1 and 2: open, map, read and erase pad material, and keep the grant
journal. The format itself (header, checksum, layout) is kitformat.py; writing a new
kit set is kitset.py.

A kit is one member's copy of the group pad plus the one-time authentication material
it shares with each other member. The file is opened with mmap so that sealing reads pad
bytes without copying the whole file and erasing writes zeros in place.

Format 1 (suite 1) reads a member's slice by `(sender, offset)` and 32-byte MAC keys.
Format 2 (suite 2) reads the group pad by absolute offset, and builds each one-time
Poly1305 key from the pair's hash key R and a fresh 16-byte mask S_j.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import ErasedKeyError, JournalFullError, KitDamagedError, KitError, KitReadOnlyError
from ..protocol.extents import Extents
from ..protocol.grants import (
    RECORD_LEN,
    GrantRange,
    JournalError,
    decode_journal,
    free_slot,
    replay_journal,
)
from ..protocol.kitformat import (
    FORMAT_1,
    FORMAT_2,
    HASH_KEY_LEN,
    JOURNAL_LEN,
    KEY_LEN,
    MASK_LEN,
    PREFIX_LEN,
    KitHeader,
    KitLayout,
    parse_prefix,
    prefix_size,
    verify_key_of,
)

_ZERO_KEY = bytes(KEY_LEN)
_ZERO_MASK = bytes(MASK_LEN)
_ERASED = "this one-time key has already been used and erased"


class Kit:
    """An open kit file, mapped into memory.

    Reading pad or key bytes returns copies (`bytes`). Erasing writes zeros into the
    file through the map; `flush()` makes the erasure durable.
    """

    def __init__(
        self, path: Path, header: KitHeader, layout: KitLayout, mm: mmap.mmap, fd: int
    ) -> None:
        self.path = path
        self.header = header
        self.layout = layout
        self._mm = mm
        self._fd = fd

    # -- opening ------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, writable: bool = True) -> Kit:
        """Open a kit of either format. Raises KitError (KitDamagedError for a format-2
        kit whose checksum fails) for anything that is not a well-formed kit."""
        path = Path(path)
        where = str(path)
        try:
            fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        except FileNotFoundError:
            raise KitError(f"{where}: no such kit file") from None
        except IsADirectoryError:
            raise KitError(f"{where}: is a directory, not a kit file") from None
        except OSError as exc:
            denied = exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
            if denied and writable and os.access(path, os.R_OK):
                raise KitReadOnlyError(where) from None
            if denied:
                raise KitError(f"{where}: permission denied") from None
            raise KitError(f"{where}: cannot open it ({exc.strerror})") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise KitError(f"{where}: is a directory or device, not a kit file")
            size = prefix_size(os.pread(fd, PREFIX_LEN, 0), where)
            header, layout = parse_prefix(os.pread(fd, size, 0), where)
            size = os.fstat(fd).st_size
            if size != layout.file_len:
                raise KitError(
                    f"{where}: the file is {size} bytes but its header describes "
                    f"{layout.file_len}: truncated or wrong length"
                )
            if verify_key_of(header.signing_key) != header.members[header.self_index].verify_key:
                raise KitError(
                    f"{where}: the signing key does not match member "
                    f"{header.self_index}'s verify key: the kit is damaged or forged"
                )
            access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
            mm = mmap.mmap(fd, size, access=access)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, header, layout, mm, fd)

    def close(self) -> None:
        if not self._mm.closed:
            self._mm.close()
            os.close(self._fd)

    def __enter__(self) -> Kit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- both formats -------------------------------------------------------------

    @property
    def n(self) -> int:
        return self.header.n

    @property
    def self_index(self) -> int:
        return self.header.self_index

    @property
    def pad_id(self) -> bytes:
        return self.header.pad_id

    @property
    def format(self) -> int:
        return self.header.format

    def pad_bytes(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of the group pad, `offset` absolute (format 2's
        offsets; in format 1, member s's slice starts at s*E). Caller checks bounds."""
        start = self.layout.base + offset
        return self._mm[start : start + length]

    def erase_pad(self, offset: int, length: int) -> None:
        """Zero bytes [offset, offset+length) of the group pad (absolute offsets)."""
        start = self.layout.base + offset
        self._mm[start : start + length] = bytes(length)

    def region(self, start: int, length: int) -> memoryview:
        """A read-only view of file bytes; for statistics (`pad info`) and tests."""
        return memoryview(self._mm)[start : start + length].toreadonly()

    def flush(self) -> None:
        """Make erasures durable (msync)."""
        self._mm.flush()

    @contextmanager
    def seal_lock(self) -> Iterator[None]:
        """Hold the kit file's exclusive lock (flock), across processes: a sealer holds
        it from its commit until its erasure is flushed (member.py relies on it)."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            yield  # no locks on this file system: the margin then holds for one sealer
            return
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _require(self, format: int) -> None:
        if self.header.format != format:
            raise ValueError(f"{self.path} is a format-{self.header.format} kit, not {format}")

    # -- format 1: slices and 32-byte MAC keys --------------------------------------

    def key_stream(self, sender: int, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of `sender`'s slice. Caller checks bounds."""
        start = self.layout.slice_start(sender) + offset
        return self._mm[start : start + length]

    def outbound_key(self, recipient: int, counter: int) -> bytes:
        """MAC key `counter` for self -> recipient; raises ErasedKeyError if zeroed."""
        return self._key_at(self.layout.outbound_key_offset(recipient, counter))

    def outbound_keys(self, counter: int) -> list[bytes]:
        """Key `counter` of every pair self -> r, increasing r: one message's MAC keys.

        Raises ErasedKeyError if any of them is zeroed. (Sealing's hot path: one
        offset computation instead of one per recipient.)
        """
        lay = self.layout
        step = lay.auth_keys * KEY_LEN
        first = lay.base + lay.n * lay.slice_len + counter * KEY_LEN
        mm = self._mm
        keys = [mm[at : at + KEY_LEN] for at in range(first, first + (lay.n - 1) * step, step)]
        if _ZERO_KEY in keys:
            raise ErasedKeyError(_ERASED)
        return keys

    def inbound_key(self, sender: int, counter: int) -> bytes:
        """MAC key `counter` for sender -> self; raises ErasedKeyError if zeroed."""
        return self._key_at(self.layout.inbound_key_offset(sender, counter))

    def _key_at(self, at: int) -> bytes:
        key = self._mm[at : at + KEY_LEN]
        if key == _ZERO_KEY:
            raise ErasedKeyError(_ERASED)
        return key

    def is_outbound_key_erased(self, recipient: int, counter: int) -> bool:
        at = self.layout.outbound_key_offset(recipient, counter)
        return self._mm[at : at + KEY_LEN] == _ZERO_KEY

    def is_inbound_key_erased(self, sender: int, counter: int) -> bool:
        at = self.layout.inbound_key_offset(sender, counter)
        return self._mm[at : at + KEY_LEN] == _ZERO_KEY

    def erase_key_stream(self, sender: int, offset: int, length: int) -> None:
        self._require(FORMAT_1)
        start = self.layout.slice_start(sender) + offset
        self._mm[start : start + length] = bytes(length)

    def erase_outbound_keys(self, counter: int) -> None:
        """Erase key `counter` of every self -> r pair (one message's keys)."""
        self._require(FORMAT_1)
        for r in self.layout.others():
            at = self.layout.outbound_key_offset(r, counter)
            self._mm[at : at + KEY_LEN] = _ZERO_KEY

    def erase_inbound_key(self, sender: int, counter: int) -> None:
        self._require(FORMAT_1)
        at = self.layout.inbound_key_offset(sender, counter)
        self._mm[at : at + KEY_LEN] = _ZERO_KEY

    # -- format 2: hash keys R and masks S_j ----------------------------------------

    def outbound_tag_keys(self, counter: int) -> list[bytes]:
        """The one-time Poly1305 keys R || S_counter of every pair self -> r, increasing
        r: one message's tag keys. Raises ErasedKeyError if any R or mask is zeroed."""
        lay = self.layout
        step = lay.pair_region_len
        first = lay.base + lay.n * lay.slice_len
        mask = HASH_KEY_LEN + counter * MASK_LEN
        mm = self._mm
        keys = []
        for region in range(first, first + (lay.n - 1) * step, step):
            hash_key = mm[region : region + HASH_KEY_LEN]
            s = mm[region + mask : region + mask + MASK_LEN]
            if s == _ZERO_MASK or hash_key == _ZERO_MASK:
                raise ErasedKeyError(_ERASED)
            keys.append(hash_key + s)
        return keys

    def inbound_tag_key(self, sender: int, counter: int) -> bytes:
        """R || S_counter of the pair sender -> self; ErasedKeyError if either is zeroed."""
        region = self.layout.inbound_region(sender)
        hash_key = self._mm[region : region + HASH_KEY_LEN]
        at = self.layout.mask_offset(region, counter)
        s = self._mm[at : at + MASK_LEN]
        if s == _ZERO_MASK or hash_key == _ZERO_MASK:
            raise ErasedKeyError(_ERASED)
        return hash_key + s

    def is_outbound_mask_erased(self, recipient: int, counter: int) -> bool:
        at = self.layout.mask_offset(self.layout.outbound_region(recipient), counter)
        return self._mm[at : at + MASK_LEN] == _ZERO_MASK

    def is_inbound_mask_erased(self, sender: int, counter: int) -> bool:
        at = self.layout.mask_offset(self.layout.inbound_region(sender), counter)
        return self._mm[at : at + MASK_LEN] == _ZERO_MASK

    def erase_outbound_masks(self, counter: int) -> None:
        """Erase mask `counter` of every self -> r pair (one message's masks)."""
        self._require(FORMAT_2)
        for r in self.layout.others():
            at = self.layout.mask_offset(self.layout.outbound_region(r), counter)
            self._mm[at : at + MASK_LEN] = _ZERO_MASK

    def erase_inbound_mask(self, sender: int, counter: int) -> None:
        self._require(FORMAT_2)
        at = self.layout.mask_offset(self.layout.inbound_region(sender), counter)
        self._mm[at : at + MASK_LEN] = _ZERO_MASK

    def erase_outbound_hash_keys(self) -> None:
        """Erase R of every self -> r pair: once the last outbound mask is used (the
        masks of all outbound pairs are used together, one per message)."""
        self._require(FORMAT_2)
        for r in self.layout.others():
            at = self.layout.outbound_region(r)
            self._mm[at : at + HASH_KEY_LEN] = _ZERO_MASK

    def erase_inbound_hash_key(self, sender: int) -> None:
        """Erase R of the pair sender -> self, once none of its masks is left."""
        self._require(FORMAT_2)
        at = self.layout.inbound_region(sender)
        self._mm[at : at + HASH_KEY_LEN] = _ZERO_MASK

    # -- format 2: the grant journal ---------------------------------------------------

    def _journal(self) -> memoryview:
        self._require(FORMAT_2)
        at = self.layout.journal_offset
        return memoryview(self._mm)[at : at + JOURNAL_LEN]

    def journal(self) -> list[GrantRange]:
        """The grants recorded in this kit's journal, oldest first. Raises
        KitDamagedError when a record cannot be a grant of this group."""
        view = self._journal()
        try:
            return decode_journal(view, n=self.n, pad_len=self.layout.pad_len)
        except JournalError as exc:
            raise KitDamagedError(f"{self.path}: the grant journal is damaged: {exc}") from None
        finally:
            view.release()

    def journal_extents(self) -> tuple[Extents, ...]:
        """Every member's extents as the journal's grants leave them (what `pad recover`
        rebuilds). Raises KitDamagedError when the journal cannot be replayed."""
        records = self.journal()
        try:
            return replay_journal(self.n, self.header.slice_len, records)
        except JournalError as exc:
            raise KitDamagedError(f"{self.path}: the grant journal is damaged: {exc}") from None

    def append_journal(self, record: GrantRange) -> None:
        """Write `record` into the journal's first empty slot and flush it to disk.
        Raises JournalFullError when all 227 slots are taken (nothing is written)."""
        encoded = record.encode()
        if not (record.to < self.n and record.start < record.end <= self.layout.pad_len):
            raise ValueError(f"{record} is not a grant of this group's pad")
        view = self._journal()
        try:
            slot = free_slot(view)
        finally:
            view.release()
        if slot is None:
            raise JournalFullError(f"{self.path}: the grant journal is full")
        at = self.layout.journal_offset + slot
        self._mm[at : at + RECORD_LEN] = encoded
        page = at - at % mmap.PAGESIZE  # msync wants a page-aligned start
        self._mm.flush(page, at + RECORD_LEN - page)
