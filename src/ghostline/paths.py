"""Where GhostLine keeps files on this machine (platformdirs), overridable for tests.

Setting GHOSTLINE_HOME puts everything under that one folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "ghostline"


def data_dir() -> Path:
    home = os.environ.get("GHOSTLINE_HOME")
    path = Path(home) / "data" if home else Path(platformdirs.user_data_dir(APP))
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def state_dir() -> Path:
    path = data_dir() / "state"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def downloads_dir() -> Path:
    home = os.environ.get("GHOSTLINE_HOME")
    base = Path(home) / "downloads" if home else Path(platformdirs.user_downloads_dir())
    path = base / APP if not home else base
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def default_relay_store() -> Path:
    return data_dir() / "relay.sqlite"
