"""Writing a new kit set (`pad new`): every member's kit, streamed, private, durable.

The formats are kitformat.py's; this module only draws the random material and puts
each byte where it belongs in every kit that holds it. Formats 1 and 2 differ only in
the prefix (format 2 adds the header checksum), the size of a pair region (K keys of 32
bytes, or a 16-byte hash key R and K masks of 16 bytes) and format 2's trailing grant
journal, which a new kit holds as zeros.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..errors import KitError, KitExistsError
from ..fsutil import publish_new
from ..protocol.envelope import MAX_MEMBERS, MIN_MEMBERS, PAD_ID_LEN
from ..protocol.kitformat import (
    DEFAULT_LENGTH_STEP,
    FORMAT_1,
    FORMAT_2,
    MAX_LENGTH_STEP,
    MIN_LENGTH_STEP,
    KitHeader,
    KitLayout,
    KitMember,
    encode_prefix,
    now_rfc3339,
    verify_key_of,
)

KIT_SUFFIX = ".ghostkit"
# The default number of one-time keys (masks) per pair assumes messages this long, on
# average, in pad bytes.
AVERAGE_MESSAGE = 64
# A member's name is the name of its kit file: `NAME.ghostkit`, written first as
# `.NAME.ghostkit.partial-<16 hex>`, which must fit the usual 255-byte limit of a name.
MAX_NAME = 64  # characters
MAX_NAME_BYTES = 200  # in UTF-8
# Random material is drawn and written in chunks of this size: large enough that
# syscall and Python overhead vanish, small enough that memory use stays flat.
CHUNK = 1 << 22


def default_auth_keys(slice_len: int, n: int = 2, format: int = FORMAT_1) -> int:
    """K, when `pad new` is not told: enough AVERAGE_MESSAGE-byte messages for a member
    to send its own slice (format 1: it can use no more), or, in format 2, two slices'
    worth or half of the whole group pad, whichever is more. In format 2 pad moves to
    whoever talks (grants) but masks cannot move: K is what caps a talker's share of
    the group pad, at K times its average message. Format 2 spends 16 bytes on a mask
    where format 1 spends 32 on a key, so this costs the same kit bytes as format 1
    up to four members, and n/4 times as many above."""
    share = 1.0 if format == FORMAT_1 else max(2.0, n / 2)
    return max(1, math.ceil(slice_len * share / AVERAGE_MESSAGE))


def member_name_problem(name: str) -> str | None:
    """Why `name` cannot be a member's name (it names the member's kit file), or None."""
    if not name:
        return "a member name cannot be empty"
    if (
        name.startswith(".")
        or len(name) > MAX_NAME
        or len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES
        or any(c in name for c in "/\\")
        or not name.isprintable()
    ):
        return (
            f"member name {name!r} cannot be a file name: use up to {MAX_NAME} printable "
            f"characters ({MAX_NAME_BYTES} bytes in UTF-8), no slashes, not starting with a "
            "dot"
        )
    return None


def kit_set_random_len(n: int, slice_len: int, auth_keys: int, format: int = FORMAT_1) -> int:
    """Random bytes one kit set consumes: the group pad plus one region per ordered pair."""
    pair_region = KitLayout(n, slice_len, auth_keys, 0, 0, format).pair_region_len
    return n * slice_len + n * (n - 1) * pair_region


def create_kit_set(
    out_dir: str | os.PathLike[str],
    names: list[str],
    *,
    slice_len: int,
    auth_keys: int,
    group: str,
    random_bytes: Callable[[int], bytes],
    entropy: str,
    pad_id: bytes | None = None,
    created: str | None = None,
    signing_seeds: list[bytes] | None = None,
    progress: Callable[[int], None] | None = None,
    chunk_size: int = CHUNK,
    format: int = FORMAT_1,
    length_step: int | None = None,
) -> list[Path]:
    """Write `out_dir/NAME.ghostkit` for every member and return their paths.

    `format` is 1 or 2; a format-2 kit set pads messages to multiples of `length_step`
    (1 to 4096, default 32), which format 1 does not take.

    `random_bytes(k)` supplies all pad and key material, at most `chunk_size` bytes per
    call, consumed in this order: the group pad (n*E bytes), then the region of each
    ordered pair s -> r, s then r increasing (format 1: K*32 bytes of keys; format 2:
    16 + 16*K bytes, the hash key R first, then the masks). Each chunk is drawn once
    and written where it belongs in every kit that holds it: the group pad into all n
    kits, pair s -> r as outbound in s's kit and inbound in r's kit. Memory use is a
    few chunks, whatever the size of the kit set.

    Each kit is written with mode 0600 under a hidden temporary name (O_EXCL), fsynced,
    and only then linked to its real name, which never replaces an existing file; then
    the directory is fsynced. If any kit file already exists nothing is overwritten
    (KitExistsError); on any failure (a health test, a full disk, Ctrl-C) every file
    this call created is removed.
    `progress(k)` is called with the number of random bytes just consumed.
    """
    n = len(names)
    if not MIN_MEMBERS <= n <= MAX_MEMBERS:
        raise KitError(f"a group has 2 to 255 members, not {n}")
    for name in names:
        if (problem := member_name_problem(name)) is not None:
            raise KitError(problem)
    if len(set(names)) != n:
        raise KitError("member names must be distinct")
    if slice_len < 1 or auth_keys < 1:
        raise KitError("slice length and key count must be at least 1")
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    if format == FORMAT_2:
        length_step = DEFAULT_LENGTH_STEP if length_step is None else length_step
        if not MIN_LENGTH_STEP <= length_step <= MAX_LENGTH_STEP:
            raise KitError(
                f"the length step must be {MIN_LENGTH_STEP} to {MAX_LENGTH_STEP}, not {length_step}"
            )
    elif format == FORMAT_1:
        if length_step is not None:
            raise KitError("format-1 kits do not pad messages: they take no length step")
    else:
        raise KitError(f"kit format {format} does not exist (1 or 2)")
    out = Path(out_dir)
    paths = [out / f"{name}{KIT_SUFFIX}" for name in names]
    for path in paths:  # O_EXCL below is the real guard; this just fails before any work
        if os.path.lexists(path):
            raise KitExistsError(f"{path} already exists; GhostLine never overwrites a kit")
    seeds = signing_seeds or [
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        for _ in names
    ]
    members = tuple(
        KitMember(name, verify_key_of(seed)) for name, seed in zip(names, seeds, strict=True)
    )
    pad_id = pad_id if pad_id is not None else os.urandom(PAD_ID_LEN)
    created = created or now_rfc3339()
    headers = [
        KitHeader(
            pad_id,
            group,
            created,
            members,
            i,
            seeds[i],
            slice_len,
            auth_keys,
            entropy,
            format,
            length_step,
        )  # fmt: skip
        for i in range(n)
    ]
    header_json = [h.to_json_bytes() for h in headers]
    layouts = [KitLayout.for_header(h, len(j)) for h, j in zip(headers, header_json, strict=True)]

    # Each kit is written under a hidden temporary name and appears under its real name
    # only once complete and durable (fsutil.publish_new, which never replaces a file),
    # so a kit file that exists is never half-written, even after a crash or a power cut.
    tmps = [out / f".{path.name}.partial-{os.urandom(8).hex()}" for path in paths]
    fds: list[int] = []
    opened: list[Path] = []
    published: list[Path] = []
    writer: _Writer | None = None
    try:
        for tmp in tmps:
            # Recorded before the open so that an interrupt right after it still removes
            # the file; the name is random, so removing it can never harm another file.
            opened.append(tmp)
            fds.append(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        for fd, raw, layout in zip(fds, header_json, layouts, strict=True):
            # The gap up to `base` and a format-2 journal read as zeros.
            os.ftruncate(fd, layout.file_len)
            _pwrite_all(fd, encode_prefix(raw, format), 0)
        writer = _Writer(fds)
        writer.start()
        for length, places in _regions(layouts, fds):
            done = 0
            while done < length:
                want = min(chunk_size, length - done)
                chunk = random_bytes(want)
                if len(chunk) != want:
                    raise KitError(f"the randomness source gave {len(chunk)} bytes, not {want}")
                writer.put(chunk, [(fd, at + done) for fd, at in places])
                done += len(chunk)
                if progress:
                    progress(len(chunk))
        writer.finish()
        writer = None
        for fd in fds:
            os.fsync(fd)
        for tmp, path in zip(tmps, paths, strict=True):
            try:
                publish_new(tmp, path)
            except FileExistsError:
                raise KitExistsError(
                    f"{path} already exists; GhostLine never overwrites a kit"
                ) from None
            published.append(path)
    except BaseException:
        try:
            if writer is not None:
                writer.abort()
        finally:
            for fd in fds:
                os.close(fd)
            fds.clear()
            for tmp, path in zip(tmps, paths, strict=True):
                if path in published or _same_file(tmp, path):
                    path.unlink(missing_ok=True)
            for tmp in opened:
                tmp.unlink(missing_ok=True)
        raise
    finally:
        for fd in fds:
            os.close(fd)
    return paths


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _regions(
    layouts: list[KitLayout], fds: list[int]
) -> Iterator[tuple[int, list[tuple[int, int]]]]:
    """(length, [(fd, file offset), ...]) of every random region, in generation order."""
    n = len(layouts)
    yield layouts[0].pad_len, [(fd, lay.base) for fd, lay in zip(fds, layouts, strict=True)]
    region = layouts[0].pair_region_len
    for s in range(n):
        for r in range(n):
            if s != r:
                # Outbound s->r in s's kit is byte-identical to inbound s->r in r's kit.
                yield (
                    region,
                    [
                        (fds[s], layouts[s].outbound_region(r)),
                        (fds[r], layouts[r].inbound_region(s)),
                    ],
                )


class _Writer(threading.Thread):
    """Writes chunks in the background while the next one is drawn.

    os.urandom, os.pwrite and os.fdatasync all release the GIL, so drawing, writing
    and flushing overlap. A second thread flushes the kits to disk as they grow:
    otherwise the kernel would hold the whole kit set dirty in memory and the final
    fsync would write it all while nothing else happens (that alone cost a third of
    the time for a 256 MiB pad). A write error is kept and re-raised by the producer
    at its next `put` or at `finish`.
    """

    FLUSH_EVERY = 0.05  # seconds between rounds of fdatasync

    def __init__(self, fds: list[int]) -> None:
        super().__init__(name="ghostline-kit-writer", daemon=True)
        self._fds = fds
        self._queue: queue.Queue[tuple[bytes, list[tuple[int, int]]] | None] = queue.Queue(2)
        self._error: BaseException | None = None
        self._aborted = False
        self._done = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush, name="ghostline-kit-flusher", daemon=True
        )

    def start(self) -> None:
        super().start()
        self._flusher.start()

    def run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._aborted or self._error is not None:
                continue  # drain, so a blocked producer can always finish its put
            chunk, places = item
            try:
                for fd, at in places:
                    _pwrite_all(fd, chunk, at)
            except BaseException as exc:  # re-raised in the producer's thread
                self._error = exc

    def _flush(self) -> None:
        while not self._done.wait(self.FLUSH_EVERY):
            try:
                for fd in self._fds:
                    os.fdatasync(fd)
            except OSError as exc:
                self._error = self._error or exc
                return

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, chunk: bytes, places: list[tuple[int, int]]) -> None:
        self._raise_error()
        self._queue.put((chunk, places))

    def _stop_threads(self) -> None:
        # Ctrl-C can land between starting the two threads: join only what started.
        if self.ident is not None:
            self._queue.put(None)
            self.join()
        self._done.set()
        if self._flusher.ident is not None:
            self._flusher.join()

    def finish(self) -> None:
        self._stop_threads()
        self._raise_error()

    def abort(self) -> None:
        self._aborted = True
        self._stop_threads()


def _pwrite_all(fd: int, data: bytes, at: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, at)
        view = view[written:]
        at += written
