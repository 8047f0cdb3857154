"""Where GhostLine keeps files on this machine (platformdirs), overridable for tests.

Setting GHOSTLINE_HOME puts everything under that one folder. Every directory created
here is mode 0700, whatever the umask (`fsutil.make_private_dirs`).
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from .fsutil import make_private_dirs

APP = "ghostline"


def data_dir() -> Path:
    home = os.environ.get("GHOSTLINE_HOME")
    path = Path(home) / "data" if home else Path(platformdirs.user_data_dir(APP))
    make_private_dirs(path)
    return path


def state_dir() -> Path:
    path = data_dir() / "state"
    make_private_dirs(path)
    return path


def downloads_dir() -> Path:
    home = os.environ.get("GHOSTLINE_HOME")
    base = Path(home) / "downloads" if home else Path(platformdirs.user_downloads_dir())
    path = base / APP if not home else base
    make_private_dirs(path)
    return path


def default_relay_store() -> Path:
    return data_dir() / "relay.sqlite"
