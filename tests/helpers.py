"""Deterministic kits, accepted-state fakes and tamper helpers for the pad-code tests.

Imported as `helpers` (pytest puts tests/ on sys.path) and by tests/vectors/generate.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path

from cryptography.hazmat.primitives.poly1305 import Poly1305

from ghostline.envelope import Envelope
from ghostline.kit import Kit, create_kit_set
from ghostline.seal import xor_bytes

VECTOR_CREATED = "2025-01-01T00:00:00Z"


def deterministic_random(seed: bytes | str) -> Callable[[int], bytes]:
    """A `random_bytes(k)` for create_kit_set: the SHAKE-256 stream of `seed`, in order.

    Block i (4096 bytes) is SHAKE-256(seed || i as 8 bytes big-endian); calls consume
    the concatenation of blocks from the start, so a given sequence of calls always
    yields the same bytes.
    """
    seed_bytes = seed.encode() if isinstance(seed, str) else seed
    buffered = bytearray()
    block = 0

    def random_bytes(k: int) -> bytes:
        nonlocal block
        while len(buffered) < k:
            buffered.extend(hashlib.shake_256(seed_bytes + block.to_bytes(8, "big")).digest(4096))
            block += 1
        out = bytes(buffered[:k])
        del buffered[:k]
        return out

    return random_bytes


def derived(seed: str, label: str, size: int) -> bytes:
    """`size` bytes named by `label` under `seed` (pad ids, signing seeds)."""
    return hashlib.shake_256(f"{seed}/{label}".encode()).digest(size)


def make_kit_set(
    out_dir: Path,
    n: int = 3,
    *,
    slice_len: int = 4096,
    auth_keys: int = 16,
    seed: str = "ghostline-tests",
    group: str = "test group",
    names: list[str] | None = None,
) -> list[Path]:
    """A kit set whose every byte follows from `seed` (fixed created time)."""
    names = names or [f"m{i}" for i in range(n)]
    out_dir.mkdir(parents=True, exist_ok=True)
    return create_kit_set(
        out_dir,
        names,
        slice_len=slice_len,
        auth_keys=auth_keys,
        group=group,
        random_bytes=deterministic_random(f"{seed}/pad"),
        entropy="test: SHAKE-256 of a fixed seed (NOT random)",
        pad_id=derived(seed, "pad_id", 16),
        created=VECTOR_CREATED,
        signing_seeds=[derived(seed, f"signing/{i}", 32) for i in range(n)],
    )


def open_kits(paths: Iterable[Path]) -> list[Kit]:
    return [Kit.open(p) for p in paths]


class MemoryAcceptedLog:
    """An AcceptedLog held in memory: (sender, counter, start, end) per accepted message."""

    def __init__(self, entries: Iterable[tuple[int, int, int, int]] = ()) -> None:
        self.entries = list(entries)

    def record(self, sender: int, counter: int, start: int, end: int) -> None:
        self.entries.append((sender, counter, start, end))

    def has_counter(self, sender: int, counter: int) -> bool:
        return any(s == sender and c == counter for s, c, _, _ in self.entries)

    def overlaps(self, sender: int, start: int, end: int) -> bool:
        return any(s == sender and a < end and start < b for s, _, a, b in self.entries)


class RecordingAcceptedLog(MemoryAcceptedLog):
    """Remembers every call, and fails the test if anything tries to write to it."""

    def __init__(self, entries: Iterable[tuple[int, int, int, int]] = ()) -> None:
        super().__init__(entries)
        self.calls: list[tuple[str, tuple[int, ...]]] = []
        self._frozen = True

    def record(self, sender: int, counter: int, start: int, end: int) -> None:
        raise AssertionError("open_sealed must not write to the accepted log")

    def has_counter(self, sender: int, counter: int) -> bool:
        self.calls.append(("has_counter", (sender, counter)))
        return super().has_counter(sender, counter)

    def overlaps(self, sender: int, start: int, end: int) -> bool:
        self.calls.append(("overlaps", (sender, start, end)))
        return super().overlaps(sender, start, end)

    def __setattr__(self, name: str, value: object) -> None:
        if getattr(self, "_frozen", False):
            raise AssertionError(f"open_sealed must not change the accepted log ({name})")
        super().__setattr__(name, value)


def build_message(
    kits: list[Kit],
    sender: int,
    counter: int,
    offset: int,
    plaintext: bytes,
    *,
    version: int = 1,
    suite: int = 1,
    pad_id: bytes | None = None,
    sender_field: int | None = None,
    n_field: int | None = None,
    length_field: int | None = None,
) -> bytes:
    """A sealed message built by hand, to break exactly one rule of section 6.

    Fields can be overridden; the ciphertext uses the real key stream and the tags
    the real keys (over the header as written) wherever those exist, and fixed
    filler bytes where they do not (counter or range out of the kit, n too big).
    """
    kit = kits[sender]
    n = n_field if n_field is not None else kit.n
    env = Envelope(
        version,
        suite,
        pad_id if pad_id is not None else kit.pad_id,
        sender if sender_field is None else sender_field,
        n,
        counter,
        offset,
        len(plaintext) if length_field is None else length_field,
    )
    if offset + len(plaintext) <= kit.header.slice_len:
        ciphertext = xor_bytes(plaintext, kit.key_stream(sender, offset, len(plaintext)))
    else:
        ciphertext = derived("filler", f"ciphertext/{offset}", len(plaintext))
    authenticated = env.pack() + ciphertext
    tags = b""
    for r in range(n):
        if r == sender:
            continue
        if counter < kit.header.auth_keys and r < kit.n:
            tags += Poly1305.generate_tag(kit.outbound_key(r, counter), authenticated)
        else:
            tags += derived("filler", f"tag/{counter}/{r}", 16)
    return authenticated + tags


def flip(data: bytes, at: int, mask: int = 0x01) -> bytes:
    """`data` with byte `at` XORed with `mask`."""
    out = bytearray(data)
    out[at] ^= mask
    return bytes(out)


def file_bytes(path: Path) -> bytes:
    return path.read_bytes()
