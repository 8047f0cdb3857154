"""The one home of the shared test helpers: kit sets (random or deterministic), a real
`ghostline relay` process, accepted-state fakes and tamper helpers.

Imported as `helpers` (pytest puts tests/ on sys.path) and by tests/vectors/generate.py.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.poly1305 import Poly1305
from cryptography.x509.oid import NameOID

from ghostline.pad.kit import Kit
from ghostline.pad.kitset import create_kit_set
from ghostline.pad.seal import xor_bytes
from ghostline.protocol.envelope import Envelope, pack_header
from ghostline.protocol.grants import GrantRange, initial_extents, move_range
from waiting import wait_until

if TYPE_CHECKING:
    from ghostline.state.entries import OutboxEntry
    from ghostline.state.member import Member

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
    names: int | Sequence[str] = 3,
    *,
    slice_len: int = 1 << 16,
    auth_keys: int = 256,
    group: str = "test group",
    seed: str | None = None,
    **kwargs: Any,
) -> list[Path]:
    """Kits for `names` (a count means members m0..m{n-1}) in `out_dir`, in roster order.

    Pads come from os.urandom; with `seed`, every byte follows from the seed instead
    (pad, pad id, signing keys, a fixed created time). Other keyword arguments go to
    `create_kit_set` and win over these (`pad_id`, `entropy`, `chunk_size`, ...).
    """
    names = [f"m{i}" for i in range(names)] if isinstance(names, int) else list(names)
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    made: dict[str, Any]
    if seed is None:
        made = {"random_bytes": os.urandom, "entropy": "os.urandom (tests)"}
    else:
        made = {
            "random_bytes": deterministic_random(f"{seed}/pad"),
            "entropy": "test: SHAKE-256 of a fixed seed (NOT random)",
            "pad_id": derived(seed, "pad_id", 16),
            "created": VECTOR_CREATED,
            "signing_seeds": [derived(seed, f"signing/{i}", 32) for i in range(len(names))],
        }
    return create_kit_set(
        out_dir,
        names,
        slice_len=slice_len,
        auth_keys=auth_keys,
        group=group,
        **(made | kwargs),
    )


@contextmanager
def opened_members(
    out_dir: Path, n: int, *, seed: str, slice_len: int = 8192, auth_keys: int = 64
) -> Iterator[list[Any]]:
    """A kit set of `n` members on a fixed pad (`seed`), each opened as a `Member`;
    closed again on leaving."""
    from ghostline.state.member import Member

    kits = make_kit_set(out_dir, n, slice_len=slice_len, auth_keys=auth_keys, seed=seed)
    opened = [Member.open(k) for k in kits]
    try:
        yield opened
    finally:
        for member in opened:
            member.close()


def unsent(member: Member) -> list[OutboxEntry]:
    """What `member` has sealed that the relay has not yet ACCEPTED, sealed bytes and all,
    by counter: read as the client reads it (`pending_span`, then `pending_page`), in
    one page that holds it all."""
    count, last = member.pending_span()
    return member.pending_page(-1, last, sys.maxsize, count)


def kits_by_name(paths: Iterable[Path]) -> dict[str, Path]:
    """Kit paths keyed by member name (each kit file is NAME.ghostkit)."""
    return {p.stem: p for p in paths}


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
    authenticated = pack_header(**env._asdict()) + ciphertext
    tags = b""
    for r in range(n):
        if r == sender:
            continue
        if counter < kit.header.auth_keys and r < kit.n:
            tags += Poly1305.generate_tag(kit.outbound_key(r, counter), authenticated)
        else:
            tags += derived("filler", f"tag/{counter}/{r}", 16)
    return authenticated + tags


class MemoryReceiverView:
    """A seal2.ReceiverView held in memory: every member's extents (the initial slices
    with `grants` applied, each `(giver, GrantRange)`) and the accepted messages,
    `(sender, counter, start, end)`."""

    def __init__(
        self,
        n: int,
        slice_len: int,
        *,
        grants: Iterable[tuple[int, GrantRange]] = (),
        accepted: Iterable[tuple[int, int, int, int]] = (),
    ) -> None:
        self.extents = initial_extents(n, slice_len)
        for giver, grant in grants:
            self.extents = move_range(self.extents, giver, grant)
        self.accepted = list(accepted)

    def has_counter(self, sender: int, counter: int) -> bool:
        return any(s == sender and c == counter for s, c, _, _ in self.accepted)

    def holds(self, sender: int, start: int, end: int) -> bool:
        return self.extents[sender].contains(start, end)

    def overlaps_accepted(self, start: int, end: int) -> bool:
        return any(a < end and start < b for _, _, a, b in self.accepted)


def build_message2(
    kits: list[Kit],
    sender: int,
    counter: int,
    offset: int,
    padded: bytes,
    *,
    version: int = 2,
    suite: int = 2,
    pad_id: bytes | None = None,
    n_field: int | None = None,
    length_field: int | None = None,
) -> bytes:
    """A suite-2 message built by hand from an already padded plaintext (which may be
    padded wrongly on purpose), to break exactly one rule of section 14.

    The ciphertext uses the real group pad and the tags the real R || S_j keys (over
    the header as written and `padded`) wherever those exist, filler where they do not.
    """
    kit = kits[sender]
    n = n_field if n_field is not None else kit.n
    length = len(padded) if length_field is None else length_field
    header = pack_header(
        pad_id if pad_id is not None else kit.pad_id, sender, n, counter, offset, length,
        version, suite,
    )  # fmt: skip
    if offset + len(padded) <= kit.layout.pad_len:
        ciphertext = xor_bytes(padded, kit.pad_bytes(offset, len(padded)))
    else:
        ciphertext = derived("filler", f"ciphertext2/{offset}", len(padded))
    tags = b""
    for r in range(n):
        if r == sender:
            continue
        if counter < kit.header.auth_keys and r < kit.n:
            key = kits[r].inbound_tag_key(sender, counter)
            tags += Poly1305.generate_tag(key, header + padded)
        else:
            tags += derived("filler", f"tag2/{counter}/{r}", 16)
    return header + ciphertext + tags


def flip(data: bytes, at: int, mask: int = 0x01) -> bytes:
    """`data` with byte `at` XORed with `mask`."""
    out = bytearray(data)
    out[at] ^= mask
    return bytes(out)


def flip_hex_digit(kit: Path, field: str, nth: int = 0) -> tuple[str, str]:
    """Change one hex digit of the `nth` occurrence of header string `field` in the kit
    file, in place, as a bad sector or a careless edit would. Returns (old, new) value."""
    data = bytearray(kit.read_bytes())
    key = f'"{field}":"'.encode()
    at = -1
    for _ in range(nth + 1):
        at = data.index(key, at + 1)
    start = at + len(key)
    end = data.index(b'"', start)
    old = data[start:end].decode()
    data[start + 5] = ord("1") if data[start + 5] == ord("0") else ord("0")
    kit.write_bytes(bytes(data))
    return old, data[start:end].decode()


def state_rows(path: Path) -> list[str]:
    """Every committed row of a state database, as SQL text, read through a connection
    of its own (tests compare states with it)."""
    import sqlite3

    conn = sqlite3.connect(path)  # not mode=ro: that would leave -wal and -shm behind
    try:
        conn.execute("PRAGMA query_only = ON")
        return list(conn.iterdump())
    finally:
        conn.close()


def file_bytes(path: Path) -> bytes:
    return path.read_bytes()


def free_port() -> int:
    """A loopback port that was free a moment ago: nothing listens on it (yet)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def can_listen_on(port: int) -> bool:
    """Whether a server could listen on loopback `port` now (SO_REUSEADDR, as the relay
    binds: a port whose listener is gone is free even with connections in TIME_WAIT)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# --- a real relay process -------------------------------------------------------------

RELAY_LISTENING = re.compile(r"^ghostline relay: (relay|presence) listening on (\S+):(\d+)")


class RelayProcess:
    """`python -m ghostline relay` on 127.0.0.1, its ports read from the lines it prints.

    Port 0 (the default) lets the system choose. A thread keeps reading stderr into
    `stderr_lines`, so a full pipe never blocks the relay's logging.
    """

    def __init__(
        self, store: Path, *args: str, port: int = 0, presence_port: int = 0, timeout: float = 30
    ) -> None:
        self.store, self.args = store, args
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ghostline", "relay", "--host", "127.0.0.1",
             "--port", str(port), "--presence-port", str(presence_port),
             "--store", str(store), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self.stderr_lines: list[str] = []
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        ports = self._wait_for_ports(timeout)
        self.relay_port, self.presence_port = ports["relay"], ports["presence"]

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.stderr_lines.append(raw.decode("utf-8", "replace"))

    def _wait_for_ports(self, timeout: float) -> dict[str, int]:
        def printed() -> dict[str, int] | None:
            ports = {}
            for line in list(self.stderr_lines):
                if match := RELAY_LISTENING.match(line):
                    ports[match.group(1)] = int(match.group(3))
            if len(ports) == 2:
                return ports
            if self.proc.poll() is not None:
                self._reader.join(5)
                raise AssertionError("the relay exited:\n" + "".join(self.stderr_lines))
            return None

        try:
            return wait_until(printed, timeout, "the relay printing both ports")
        except AssertionError:
            self.kill()
            raise

    def relay_args(self, port: int | None = None) -> list[str]:
        """`--relay` and `--presence-port` for a client (`port`: a proxy in front of it)."""
        relay = f"127.0.0.1:{port or self.relay_port}"
        return ["--relay", relay, "--presence-port", str(self.presence_port)]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self._wait()

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self._wait()

    def _wait(self) -> int:
        code = self.proc.wait(10)
        self._reader.join(5)  # every line the relay printed is in stderr_lines
        return code

    def restart(self, store: Path | None = None) -> RelayProcess:
        """SIGKILL this relay and start a new one on the same ports and options, and the
        same store unless `store` names another."""
        self.kill()
        ports = (self.relay_port, self.presence_port)
        wait_until(lambda: all(map(can_listen_on, ports)), 10, f"ports {ports} free again")
        return RelayProcess(
            store or self.store, *self.args, port=self.relay_port, presence_port=self.presence_port
        )


def self_signed_certificate(tmp: Path, *, expired: bool = False) -> tuple[Path, Path, bytes]:
    """A self-signed certificate for localhost and 127.0.0.1 written to `tmp`: the PEM
    certificate and key paths, and the certificate's DER bytes (for pinning). With
    `expired`, it stopped being valid a day ago."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=2 if expired else 0, minutes=5))
        .not_valid_after(now + datetime.timedelta(days=-1 if expired else 1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, cert.public_bytes(serialization.Encoding.DER)
