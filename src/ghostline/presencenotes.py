"""Which presence changes the apps tell as they come: `listen`, the chat app and the web
page share it (each words the notes itself; `PresenceWatch` is the apps' whole view).

Presence is not authenticated, and coming and going costs a member nothing: a member
whose client joins and leaves in a loop (or, without TLS, anyone on the path injecting
ONLINE and OFFLINE frames) would put a line on every other member's screen for each
change. So each member's first `burst` changes in any `window` seconds are told one by
one; after that its changes are held, and told as one note (where the member ended up,
and how many changes the note folds) once its window allows (`due`). The member lists
are not affected: they show who is online now.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

WINDOW = 60.0  # seconds
BURST = 4  # changes per member told one by one within a window


@dataclass(frozen=True, slots=True)
class PresenceNote:
    member: int
    online: bool  # where the member is now
    changes: int  # 1: this one change; more: the changes this note folds


@dataclass
class _Member:
    told: deque[float] = field(default_factory=deque)  # when notes were told, in the window
    held: int = 0  # changes held since
    online: bool = False


class PresenceNotes:
    def __init__(self, window: float = WINDOW, burst: int = BURST) -> None:
        self.window = window
        self.burst = burst
        self._members: dict[int, _Member] = {}

    def changed(self, joined: Iterable[int], left: Iterable[int], now: float) -> list[PresenceNote]:
        """These members came online (`joined`) or went offline (`left`): the notes to
        tell now (the others are held)."""
        notes = []
        moves = [(m, True) for m in joined] + [(m, False) for m in left]
        for member, online in sorted(moves):
            state = self._members.setdefault(member, _Member())
            self._forget(state, now)
            state.online = online
            if state.held or len(state.told) >= self.burst:
                state.held += 1
            else:
                state.told.append(now)
                notes.append(PresenceNote(member, online, 1))
        return notes

    def due(self, now: float) -> list[PresenceNote]:
        """The held changes whose time came, one note per member."""
        notes = []
        for member, state in sorted(self._members.items()):
            self._forget(state, now)
            if state.held and len(state.told) < self.burst:
                notes.append(PresenceNote(member, state.online, state.held))
                state.told.append(now)
                state.held = 0
        return notes

    def next_due(self) -> float | None:
        """When `due` will next have a note (None: nothing is held)."""
        times = [s.told[0] + self.window for s in self._members.values() if s.held and s.told]
        return min(times, default=None)

    def _forget(self, state: _Member, now: float) -> None:
        while state.told and state.told[0] <= now - self.window:
            state.told.popleft()


class PresenceWatch:
    """Who is online, as the chat app and the web page show it, and which changes they
    tell (`PresenceNotes`). A list that only restates who is online is told as no
    change: the first after the presence channel (re)connects (everyone it lists
    "joins"), and any while the channel is down (nobody is known to be online then).
    This member's own comings and goings are never told."""

    def __init__(self, me: int, members: int) -> None:
        self.online: frozenset[int] = frozenset()
        self.down = False  # the presence channel is down: who is online is unknown
        self._resync = False  # the next list is the one after (re)connecting
        self._others = frozenset(i for i in range(members) if i != me)
        self._notes = PresenceNotes()

    def changed(
        self, online: frozenset[int], joined: frozenset[int], left: frozenset[int], now: float
    ) -> list[PresenceNote]:
        """A presence list arrived: the notes to tell now."""
        self.online = online
        quiet = self.down or self._resync
        self._resync = False
        if quiet:
            return []
        return self._notes.changed(joined & self._others, left & self._others, now)

    def channel(self, down: bool) -> None:
        """The presence channel went down (`down`) or came back."""
        self._resync = not down
        self.down = down

    def due(self, now: float) -> list[PresenceNote]:
        return self._notes.due(now)

    def next_due(self) -> float | None:
        return self._notes.next_due()
