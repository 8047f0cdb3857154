"""Shared fixtures: a kit-set factory, and a private GHOSTLINE_HOME for every test."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from ghostline.kit import create_kit_set

MakeKitSet = Callable[..., list[Path]]


@pytest.fixture(autouse=True)
def ghostline_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """GHOSTLINE_HOME set to a fresh folder, so no test touches the user's real files.

    Autouse: every test gets one; ask for it by name to know where it is.
    """
    home = tmp_path_factory.mktemp("ghostline-home")
    monkeypatch.setenv("GHOSTLINE_HOME", str(home))
    return home


@pytest.fixture
def kit_set(tmp_path: Path) -> MakeKitSet:
    """Make a small kit set: `kit_set(names=("alice", "bob"), slice_len=4096, auth_keys=16)`.

    Returns the kit paths in roster order, written under `tmp_path/kits` (or `out=`).
    Other keyword arguments go to `create_kit_set` (`random_bytes`, `group`, ...).
    """

    def make(
        names: Sequence[str] = ("alice", "bob"),
        *,
        slice_len: int = 4096,
        auth_keys: int = 16,
        out: Path | None = None,
        **kwargs: Any,
    ) -> list[Path]:
        out = out if out is not None else tmp_path / "kits"
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        kwargs.setdefault("group", "test")
        kwargs.setdefault("random_bytes", os.urandom)
        kwargs.setdefault("entropy", "os.urandom")
        return create_kit_set(out, list(names), slice_len=slice_len, auth_keys=auth_keys, **kwargs)

    return make
