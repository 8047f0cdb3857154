"""A fake client and member for the chat app: the same API, no pad, no network.

Snapshot tests need fixed names, times and figures; these give them. Events are the
real `ghostline.client` event dataclasses, fed through the same `events` queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from ghostline.client import (
    ConnectionChanged,
    MessageAccepted,
    MessageReceived,
    PresenceChanged,
)
from ghostline.errors import PadExhaustedError
from ghostline.files import split_file
from ghostline.protocol.kitformat import KitHeader, KitMember
from ghostline.protocol.payload import decode, encode_text
from ghostline.state.history import HistoryEntry, SavedFiles
from ghostline.state.member import OutboxEntry, Received
from ghostline.state.usage import KitUsage, MemberUsage, PadLeft
from ghostline.tui.app import ChatApp

# Monday 27 January 2025, 09:30 UTC: every time in the snapshots derives from this.
T0 = datetime(2025, 1, 27, 9, 30, tzinfo=UTC).timestamp()
NAMES = ["alice", "bob", "carol"]


class FixedClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def header(
    names: list[str] = NAMES, *, me: int = 0, slice_len: int = 1 << 20, auth_keys: int = 1000
) -> KitHeader:
    return KitHeader(
        pad_id=bytes(16),
        group="river house",
        created="2025-01-01T00:00:00Z",
        members=tuple(KitMember(n, bytes(32)) for n in names),
        self_index=me,
        signing_key=bytes(32),
        slice_len=slice_len,
        auth_keys=auth_keys,
        entropy="test",
    )


@dataclass
class FakeMember:
    header: KitHeader
    entries: list[HistoryEntry] = field(default_factory=list)
    used: dict[int, tuple[int, int]] = field(default_factory=dict)  # index -> (keys, bytes)
    history_calls: list[int | None] = field(default_factory=list)
    saved: dict[tuple[int, bytes], Path] = field(default_factory=dict)  # recorded saves
    record_calls: list[tuple[int, bytes, Path, bytes]] = field(default_factory=list)
    history_keep: int | None = None  # days; None for ever, 0 off

    chat_seen: int | None = None  # the newest history id when the chat app last closed
    failed: dict[int, int] = field(default_factory=dict)  # failed tag checks per sender

    def history(
        self, limit: int | None = None, *, before: HistoryEntry | None = None
    ) -> list[HistoryEntry]:
        """In relay order, like `Member.history`."""
        self.history_calls.append(limit)
        ordered = sorted(self.entries, key=relay_key)
        if before is not None:
            ordered = [e for e in ordered if relay_key(e) < relay_key(before)]
        return ordered if limit is None else ordered[-limit:] if limit else []

    def first_unseen(self) -> int | None:
        if self.chat_seen is None:
            return None
        me = self.header.self_index
        new = [e for e in self.entries if (e.history_id or 0) > self.chat_seen and e.sender != me]
        return new[0].history_id if new else None

    def mark_chat_seen(self) -> None:
        self.chat_seen = max((e.history_id or 0 for e in self.entries), default=0)

    def add_entry(self, sender: int, payload: bytes, at: float, state: str) -> HistoryEntry:
        """A history entry as a real member records it: the next id, and the next relay
        seq unless it is an own message not yet stored."""
        keys, used = self.used.get(sender, (0, 0))
        number = len(self.entries) + 1
        seq = None if state == "sealed" else number
        name = self.header.members[sender].name
        entry = HistoryEntry(sender, name, keys, seq, payload, at, state, number)
        self.entries.append(entry)
        self.used[sender] = (keys + 1, used + len(payload))
        return entry

    def history_of_kind(self, kind: int, *, head: int | None = None) -> list[HistoryEntry]:
        return [
            replace(e, payload=e.payload if head is None else e.payload[:head])
            for e in self.entries
            if e.payload[:1] == bytes([kind])
        ]

    def history_of(self, keys: Iterable[tuple[int, int]]) -> list[HistoryEntry]:
        wanted = set(keys)
        return [e for e in self.entries if (e.sender, e.counter) in wanted]

    def saved_files(self) -> SavedFiles:
        return SavedFiles(dict(self.saved))

    def record_saved_file(self, sender: int, transfer_id: bytes, path: Path, sha256: bytes) -> None:
        self.record_calls.append((sender, transfer_id, path, sha256))
        self.saved.setdefault((sender, transfer_id), path)

    def usage(self, *, scan_kit: bool = True) -> KitUsage:
        h = self.header
        members = []
        for i, m in enumerate(h.members):
            keys, used = self.used.get(i, (0, 0))
            members.append(
                MemberUsage(
                    index=i,
                    name=m.name,
                    is_self=i == h.self_index,
                    bytes_used=used,
                    bytes_left=h.slice_len - used,
                    keys_used=keys,
                    keys_left=h.auth_keys - keys,
                    messages=keys,
                    average_size=64.0,
                    messages_left=min(h.auth_keys - keys, (h.slice_len - used) // 64),
                    slice_len=h.slice_len,
                    auth_keys=h.auth_keys,
                )
            )
        return KitUsage(
            slice_len=h.slice_len,
            auth_keys=h.auth_keys,
            members=tuple(members),
            keys_total=2 * (h.n - 1) * h.auth_keys,
            keys_erased=0,
            pad_bytes_total=h.n * h.slice_len,
            pad_bytes_erased=0,
        )

    def pads(self) -> dict[int, PadLeft]:
        return self.usage().pads()

    def failed_verifications(self) -> dict[int, int]:
        return dict(self.failed)

    def add_history(self, sender: int, text: str, at: float, *, state: str = "received") -> None:
        self.add_entry(sender, encode_text(text, int(at)), at, state)


def relay_key(entry: HistoryEntry) -> tuple[int, int]:
    return (entry.seq if entry.seq is not None else 1 << 63, entry.history_id or 0)


class FakeClient:
    """Seals nothing: `send` hands out counters and offsets like a real member would."""

    def __init__(self, member: FakeMember) -> None:
        self.member = member
        self.events: asyncio.Queue[object] = asyncio.Queue()
        self.sent: list[bytes] = []
        self.groups: list[int] = []  # how many payloads each send_many sealed
        self.started = False
        self.stopped = False
        self.exhausted = False
        self.last_seq = max((e.seq or 0 for e in getattr(member, "entries", ())), default=0)

    def next_seq(self) -> int:
        """The seq a relay would give the next message stored."""
        self.last_seq += 1
        return self.last_seq

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, payload: bytes) -> OutboxEntry:
        me = self.member.header.self_index
        keys, used = self.member.used.get(me, (0, 0))
        h = self.member.header
        if self.exhausted or keys >= h.auth_keys or used + len(payload) > h.slice_len:
            raise PadExhaustedError()
        self.member.used[me] = (keys + 1, used + len(payload))
        self.sent.append(payload)
        return OutboxEntry(keys, used, len(payload), b"", None)

    async def send_many(self, payloads: Sequence[bytes]) -> list[OutboxEntry]:
        me = self.member.header.self_index
        keys, used = self.member.used.get(me, (0, 0))
        h = self.member.header
        size = sum(len(p) for p in payloads)
        if self.exhausted or keys + len(payloads) > h.auth_keys or used + size > h.slice_len:
            raise PadExhaustedError()
        self.groups.append(len(payloads))
        return [await self.send(p) for p in payloads]

    def receive(self, sender: int, payload: bytes, *, seq: int | None = None) -> MessageReceived:
        """A MessageReceived for `payload` from `sender`, with usage updated to match.
        Without `seq`, the relay's next: after every seq given out so far."""
        if seq is None:
            seq = self.next_seq()
        self.last_seq = max(self.last_seq, seq)
        keys, used = self.member.used.get(sender, (0, 0))
        self.member.used[sender] = (keys + 1, used + len(payload))
        name = self.member.header.members[sender].name
        received = Received(seq, sender, name, keys, used, payload)
        return MessageReceived(received, decode(payload))


# --- the scene of the snapshots and of docs/screenshot.svg --------------------------


def scene(*, used: tuple[int, int] = (0, 0), auth_keys: int = 1000) -> tuple[ChatApp, FakeClient]:
    """A group of three a day into its chat: history, alice online, one message stored."""
    member = FakeMember(header(auth_keys=auth_keys, slice_len=1 << 20))
    member.add_history(1, "Morning! Did everyone get home ok?", T0 - 86400 + 120)
    member.add_history(0, "Yes, thanks. Kit is in the drawer.", T0 - 86400 + 300, state="stored")
    member.add_history(2, "Same here.\nLet's test the relay tomorrow.", T0 - 86400 + 600)
    member.add_history(1, "Relay is up on the usual address.", T0 - 600)
    me = member.header.self_index
    keys, size = member.used.get(me, (0, 0))
    member.used[me] = (max(keys, used[0]), max(size, used[1]))
    client = FakeClient(member)
    app = ChatApp(
        client,
        relay="relay.example.net:7000",
        transport="TLS (pinned cert) · no proxy",
        clock=FixedClock(T0),
        tz=UTC,
        downloads=lambda: Path("/nonexistent"),
        random_bytes=lambda k: bytes(k),
    )
    return app, client


async def live(pilot: Pilot[Any], client: FakeClient) -> None:
    client.events.put_nowait(ConnectionChanged("connected", "relay.example.net:7000", None, ""))
    client.events.put_nowait(PresenceChanged(frozenset({0, 1}), frozenset({1})))
    client.events.put_nowait(client.receive(1, encode_text("Anyone around?", int(T0) - 30)))
    await pilot.pause()
    await pilot.press(*"Here. Sending the plan in a minute.", "enter")
    await pilot.pause()
    client.events.put_nowait(MessageAccepted(1, client.next_seq()))
    # carol is halfway through sending a file
    head, chunks = split_file(
        bytes(200_000), 65536, transfer_id=b"C" * 8, sent_at=int(T0) - 10, name="route.pdf"
    )
    client.events.put_nowait(client.receive(2, head.encode()))
    client.events.put_nowait(client.receive(2, next(chunks).encode()))
    client.events.put_nowait(client.receive(2, next(chunks).encode()))
    await pilot.press(*"Typing a second line", "ctrl+j", *"and a third")
    await pilot.pause()
