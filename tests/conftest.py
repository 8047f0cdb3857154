"""Shared fixtures: a kit-set factory, a private GHOSTLINE_HOME for every test, and the
seeded random generator of the randomised tests.

A randomised test takes `rng` and draws everything random from it; the seed is printed,
so a failing test's captured output shows it, and `GHOSTLINE_TEST_SEED=N pytest ...`
runs again with seed N. (Hypothesis tests print their own reproduction.) Waiting is
done with tests/waiting.py, never with a fixed sleep: see tests/README.md.
"""

from __future__ import annotations

import os
import random
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


SEED_ENV = "GHOSTLINE_TEST_SEED"


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """A `random.Random` for a randomised test: seeded from GHOSTLINE_TEST_SEED when it is
    set, else at random, and the seed printed either way."""
    given = os.environ.get(SEED_ENV)
    seed = int(given) if given else int.from_bytes(os.urandom(4), "big")
    print(f"{SEED_ENV}={seed} reruns {request.node.nodeid} with these random choices")
    return random.Random(seed)
