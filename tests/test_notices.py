"""Which notices the apps show as they come: presence changes (presencenotes.py) and
status lines that repeat (wording/repeats.Repeats). Pure logic on an injected clock."""

from __future__ import annotations

from ghostline.presencenotes import PresenceNote, PresenceNotes
from ghostline.wording.presence import presence_note_text
from ghostline.wording.repeats import Repeats


def test_the_first_changes_are_told_one_by_one_and_the_rest_folded_into_one_note() -> None:
    notes = PresenceNotes(window=60.0, burst=4)
    told = []
    for i in range(20):  # member 1 comes and goes, one change a second
        online = i % 2 == 0
        told += notes.changed([1] if online else [], [] if online else [1], now=float(i))
    assert told == [
        PresenceNote(1, True, 1),
        PresenceNote(1, False, 1),
        PresenceNote(1, True, 1),
        PresenceNote(1, False, 1),
    ]
    assert notes.next_due() == 60.0  # when the first of the four leaves the window
    assert notes.due(59.9) == []
    # The 16 held changes, in one note that says where the member ended up (offline).
    assert notes.due(60.0) == [PresenceNote(1, False, 16)]
    assert notes.next_due() is None and notes.due(1000.0) == []


def test_another_member_is_told_whatever_one_member_does() -> None:
    notes = PresenceNotes(window=60.0, burst=2)
    for t in range(6):
        online = t % 2 == 0
        notes.changed([1] if online else [], [] if online else [1], now=float(t))
    assert notes.changed([2], [], now=7.0) == [PresenceNote(2, True, 1)]
    # Past the window, one member's changes are told one by one again.
    assert notes.due(61.0) == [PresenceNote(1, False, 4)]
    assert notes.changed([1], [], now=200.0) == [PresenceNote(1, True, 1)]


def test_a_folded_note_says_how_many_changes_and_where_the_member_is_now() -> None:
    assert presence_note_text(PresenceNote(1, True, 1), "bob") == "bob came online"
    assert presence_note_text(PresenceNote(1, False, 1), "bob") == "bob went offline"
    folded = presence_note_text(PresenceNote(1, False, 16), "bob")
    assert "16 changes" in folded and folded.endswith("offline now")


def test_a_status_line_that_says_the_same_again_within_a_minute_is_left_out() -> None:
    now = [0.0]
    repeats = Repeats(lambda: now[0], every=60.0)
    assert repeats.line("k", "connected") == "connected"
    for t in (1.0, 2.0, 30.0):
        now[0] = t
        assert repeats.line("k", "connected") is None
    assert repeats.line("other", "another line") == "another line"
    now[0] = 60.0
    assert repeats.line("k", "connected") == "connected (this came 3 more times in the last 60 s)"
    now[0] = 61.0
    assert repeats.line("k", "connected") is None
    repeats.useful()  # a message came: the next failure is news again
    assert repeats.line("k", "connected") == "connected"


def test_a_relay_refusing_as_full_is_not_said_to_need_its_operator() -> None:
    from ghostline.client.events import RelayFailing
    from ghostline.protocol.frames import ErrorCode
    from ghostline.wording.relaylines import relay_failing_line

    full = relay_failing_line(RelayFailing(ErrorCode.RELAY_FULL, "relay full", 3))
    broken = relay_failing_line(RelayFailing(ErrorCode.INTERNAL, "store failed", 3))
    assert "full or busy" in full and "operator" not in full
    assert "operator must fix" in broken and "3 times in a row" in broken
    assert "outbox" in full and "outbox" in broken
