"""`Member`'s calls on the history (history.py): pages in relay order, retention, saved
files, "last seen". A mixin of `Member` (member.py): the facade's methods, in their own
file by job. Grants this member refused say so in their entries."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import replace

from ..protocol.kitformat import FORMAT_1
from ..protocol.payload import Kind
from .history import HistoryDeleted, HistoryEntry, SavedFiles
from .memberparts import MemberParts

_GRANT = bytes([Kind.GRANT])


class MemberHistory(MemberParts):
    def history(
        self, limit: int | None = None, *, before: HistoryEntry | None = None
    ) -> list[HistoryEntry]:
        """In relay order, oldest first; with `limit`, the newest `limit` entries, and
        with `before`, those that come before that entry (a page further back)."""
        return self._with_grant_rules(
            self._history.page(limit, before=None if before is None else before.history_id)
        )

    def _with_grant_rules(self, entries: list[HistoryEntry]) -> list[HistoryEntry]:
        """Grants this member refused say so (`HistoryEntry.grant_refused`)."""
        grants = [(e.sender, e.counter) for e in entries if e.payload[:1] == _GRANT]
        if not grants or self.header.format == FORMAT_1:
            return entries
        rules = self.store.grant_rules(grants)
        return [
            replace(e, grant_refused=rules[(e.sender, e.counter)])
            if (e.sender, e.counter) in rules
            else e
            for e in entries
        ]

    def history_of_kind(self, kind: int, *, head: int | None = None) -> list[HistoryEntry]:
        """Every history entry (the whole history, not a page) whose payload is of
        `kind` (its first byte), oldest first. With `head`, payloads are cut to their
        first `head` bytes: enough to tell which file a chunk belongs to without
        reading its data. Read-only; the apps rebuild file transfers with it."""
        return self._history.of_kind(kind, head)

    def history_of(self, keys: Iterable[tuple[int, int]]) -> list[HistoryEntry]:
        """The history entries of these (sender, counter) pairs, oldest first."""
        return self._with_grant_rules(self._history.of(keys))

    def saved_files(self) -> SavedFiles:
        """Every received file recorded as saved. Read-only."""
        return self._history.saved_files()

    def record_saved_file(
        self, sender: int, transfer_id: bytes, path: str | os.PathLike[str], sha256: bytes
    ) -> None:
        """Durably record that `sender`'s transfer was saved at `path`. Call only after
        the file is fsynced and linked into place: a transfer recorded here is never
        saved again."""
        self._history.record_saved(sender, transfer_id, os.fspath(path), sha256, time.time())

    @property
    def history_keep(self) -> int | None:
        """Days history is kept: None for ever (the default), 0 not at all."""
        return self._history.keep()

    def history_to_delete(self, days: int | None) -> int:
        """How many entries keeping history `days` days would delete now."""
        return self._history.to_delete(days, time.time())

    def set_history_keep(self, days: int | None) -> HistoryDeleted:
        """Keep history `days` days from now on (None: for ever, 0: not at all), and
        delete at once what that setting no longer keeps."""
        return self._history.keep_for(days, time.time())

    def clear_history(self) -> HistoryDeleted:
        """Delete the whole history, except parts of received files not yet saved."""
        return self._history.clear()

    @property
    def chat_seen(self) -> int | None:
        """The newest history id when the chat app last closed; None if it never did."""
        return self._history.chat_seen()

    def first_unseen(self) -> int | None:
        """The history id of the first entry from another member recorded since the chat
        app last closed; None when there is none, or when it never closed."""
        return self._history.first_unseen()

    def mark_chat_seen(self) -> None:
        """The chat app closes: everything in the history now has been seen."""
        self._history.mark_seen()
