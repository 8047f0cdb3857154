"""Fixtures for the end-to-end tests: a home folder and teardown of every process."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def cleanup() -> Iterator[list[Callable[[], object]]]:
    """Append a kill/close callable for everything started; all run at teardown."""
    actions: list[Callable[[], object]] = []
    yield actions
    for action in reversed(actions):
        with contextlib.suppress(Exception):  # teardown must try every action
            action()
