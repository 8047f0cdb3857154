"""What the parts of `Member` read of one another, declared once for the type checker.

`Member` (member.py) sets these attributes and defines `_record_pending` and `_commit`;
its mixins (`memberseal.py`, `memberreceive.py`, `membergrants.py`, `memberhistory.py`)
read them. Annotations only: no code runs here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

from ..pad.kit import Kit
from ..protocol.kitformat import KitHeader
from .cursor import RelayCursorKeeper
from .entries import PendingErasure
from .history import History
from .store import Store


class MemberParts:
    kit: Kit
    header: KitHeader
    index: int
    store: Store
    _history: History
    _cursor: RelayCursorKeeper
    _lock: threading.RLock
    _erased: PendingErasure  # erased in the kit, recorded with the next commit
    _failed: dict[int, int]  # failed tag verifications not yet written
    _crash_hook: str | None
    # Member's methods (member.py):
    _record_pending: Callable[[], None]
    _commit: Callable[[], AbstractContextManager[None]]
