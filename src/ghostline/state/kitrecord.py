"""What this machine remembers of each kit it has used, so a damaged header is noticed.

A kit's header is written once, by `pad new`, and never changes. But the state database
is found by the header's pad_id: a kit whose pad_id lost one bit would look like an
unused kit of another group, so GhostLine would make a fresh state for it and send into
another room (and the relay would accept it); had the kit been used, it would look like
a kit whose state was lost, and `pad recover` would burn its pad. A protocol v1 kit
carries no checksum, so the machine keeps one: the first time a kit is used here, its
public header (everything but the signing key) is recorded under its owner's verify key,

    <state dir>/kits/<verify key, hex>.json     (mode 0600, written once)

and every later use compares. `Kit.open` has already checked that the signing key in the
kit matches that verify key, and an Ed25519 key pair belongs to one kit for good, so a
difference means the header is damaged: `KitHeaderChangedError` names the fields that differ.
What this cannot notice: damage before the kit's first use on this machine, and damage
on a machine that lost its state directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .. import paths
from ..errors import KitHeaderChangedError, KitRecordError
from ..fsutil import fsync_dir, make_private_dirs
from ..protocol.kitformat import KitHeader, verify_key_of

# The header fields that identify a kit: all but the signing key, a secret.
_SECRET = "signing_key"


def public_header(header: KitHeader) -> dict[str, Any]:
    """The kit's header as its JSON object, without the signing key."""
    fields: dict[str, Any] = json.loads(header.to_json_bytes())
    del fields[_SECRET]
    return fields


def record_path(header: KitHeader) -> Path:
    return paths.state_dir() / "kits" / f"{verify_key_of(header.signing_key).hex()}.json"


def check_kit(header: KitHeader, kit_path: str | os.PathLike[str]) -> None:
    """Raise KitHeaderChangedError if this machine recorded another header for this kit.
    Read-only."""
    recorded = _read(record_path(header))
    if recorded is None:
        return
    found = public_header(header)
    differ = tuple(
        k for k in sorted(recorded.keys() | found.keys()) if recorded.get(k) != found.get(k)
    )
    if differ:
        raise KitHeaderChangedError(
            os.fspath(kit_path),
            differ,
            {k: recorded.get(k) for k in differ},
            {k: found.get(k) for k in differ},
        )


def remember_kit(header: KitHeader) -> None:
    """Record this kit's public header, unless one is recorded already (then it is left
    as it is: `check_kit` compares against the first)."""
    path = record_path(header)
    if path.exists():
        return
    make_private_dirs(path.parent)
    data = json.dumps(public_header(header), sort_keys=True).encode()
    building = path.with_name(f".{path.name}.{os.getpid()}.new")
    fd = os.open(building, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(building, path)  # never replaces a record another process wrote first
    except FileExistsError:
        pass
    finally:
        building.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KitRecordError(os.fspath(path), exc.strerror or "unreadable") from None
    try:
        recorded = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        recorded = None
    if not isinstance(recorded, dict):
        raise KitRecordError(os.fspath(path), "not a JSON object")
    return recorded
