"""Small kit-set helper for the state tests (test_store, test_member, test_crash,
test_cli_pad_state). Random pads from os.urandom: these tests need no fixed bytes."""

from __future__ import annotations

import os
from pathlib import Path

from ghostline.kit import create_kit_set


def make_kits(
    where: Path, n: int = 3, *, slice_len: int = 1 << 16, auth_keys: int = 256
) -> list[Path]:
    """Kits for members m0..m{n-1} in `where`/kits."""
    out = where / "kits"
    out.mkdir(parents=True, exist_ok=True)
    return create_kit_set(
        out,
        [f"m{i}" for i in range(n)],
        slice_len=slice_len,
        auth_keys=auth_keys,
        group="state tests",
        random_bytes=os.urandom,
        entropy="os.urandom (tests)",
    )


def state_path(where: Path, index: int) -> Path:
    return where / f"state-{index}.sqlite"
