"""Shared fixtures: a kit-set factory, and a private GHOSTLINE_HOME for every test."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from ghostline.state.member import CRASH_HOOK_ENV
from helpers import make_kit_set

MakeKitSet = Callable[..., list[Path]]


@pytest.fixture(autouse=True)
def ghostline_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """GHOSTLINE_HOME set to a fresh folder, so no test touches the user's real files,
    and no crash hook or default relay inherited from the environment.

    Autouse: every test gets one; ask for it by name to know where it is.
    """
    home = tmp_path_factory.mktemp("ghostline-home")
    monkeypatch.setenv("GHOSTLINE_HOME", str(home))
    monkeypatch.delenv(CRASH_HOOK_ENV, raising=False)
    monkeypatch.delenv("GHOSTLINE_RELAY", raising=False)
    return home


@pytest.fixture
def kit_set(tmp_path: Path) -> MakeKitSet:
    """`helpers.make_kit_set` writing under `tmp_path/kits` (or `out=`), for alice and bob
    unless told: `kit_set(("alice", "bob"), slice_len=4096, auth_keys=16)`."""

    def make(
        names: Sequence[str] = ("alice", "bob"), *, out: Path | None = None, **kwargs: Any
    ) -> list[Path]:
        return make_kit_set(out if out is not None else tmp_path / "kits", names, **kwargs)

    return make
