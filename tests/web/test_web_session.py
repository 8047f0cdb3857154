"""The web session without a browser: a real member and an unstarted client, events
fed by hand, and what the page would be sent."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from session_page import Page

from ghostline.client import (
    Client,
    ConnectionChanged,
    MessageRejected,
    PresenceChanged,
    RelayAddress,
    RelayError,
)
from ghostline.presencenotes import BURST, WINDOW
from ghostline.state.member import Member
from ghostline.web.session import WebSession
from helpers import make_kit_set
from waiting import until


@pytest.fixture
async def session(tmp_path: Path) -> AsyncIterator[WebSession]:
    kits = make_kit_set(tmp_path / "kits", ["alice", "bob", "carol"], auth_keys=3)
    member = Member.open(kits[0])
    client = Client(member, [RelayAddress.parse("127.0.0.1:9")])  # never started
    web = WebSession(client, relay="127.0.0.1:9", transport="no TLS · no proxy")
    await web.start(connect=False)
    yield web
    await web.stop()
    member.close()


async def test_a_rejected_message_is_marked_and_its_reason_escaped(session: WebSession) -> None:
    page = Page(session)
    session.handle_event(MessageRejected(7, "bad_tag", "tag mismatch\x1b[2J\u202e"))
    (line,) = page.lines()
    assert line["kind"] == "warning"
    assert "relay seq 7" in line["lines"][0] and "[rule: bad_tag]" in line["lines"][0]
    assert "\\x1b[2J\\u202e" in line["lines"][0] and "\x1b" not in line["lines"][0]
    snapshot = await session.snapshot()  # a page opened later sees it too
    assert snapshot["lines"][-1]["id"] == line["id"]


async def test_reconnecting_and_a_refusing_relay_reach_the_page(session: WebSession) -> None:
    page = Page(session)
    session.handle_event(ConnectionChanged("connected", "127.0.0.1:9", None, "resuming"))
    session.handle_event(
        ConnectionChanged("reconnecting", "127.0.0.1:9", 2.5, "the relay closed the connection")
    )
    state = page.last("connection")
    assert (state["state"], state["retry_in"]) == ("reconnecting", 2.5)
    assert state["detail"] == "the relay closed the connection"
    assert page.last("unstored")["state"] == "sealed"  # no longer "sending"
    session.handle_event(
        ConnectionChanged("stopped", "127.0.0.1:9", None, "roster mismatch\nforged line")
    )
    state = page.last("connection")
    assert state["state"] == "stopped" and state["failure"] == "roster mismatch\\nforged line"
    assert "disconnected for good" in page.lines()[-1]["lines"][0]


async def test_presence_coming_back_is_not_announced_as_arrivals(session: WebSession) -> None:
    page = Page(session)
    session.handle_event(PresenceChanged(frozenset({0, 1}), frozenset({1})))
    assert [line["lines"] for line in page.lines()] == [["bob came online"]]
    session.handle_event(
        ConnectionChanged("connected", "127.0.0.1:10", 1.0, "presence unavailable", "presence")
    )
    session.handle_event(PresenceChanged(frozenset(), left=frozenset({0, 1})))
    members = page.last("members")
    assert members["presence_known"] is False
    assert [m["online"] for m in members["members"]] == [True, None, None]
    session.handle_event(
        ConnectionChanged("connected", "127.0.0.1:10", None, "presence connected", "presence")
    )
    session.handle_event(PresenceChanged(frozenset({0, 1, 2}), frozenset({0, 1, 2})))
    session.handle_event(PresenceChanged(frozenset({0, 1}), left=frozenset({2})))
    assert [line["lines"] for line in page.lines()] == [["bob came online"], ["carol went offline"]]


async def test_text_is_sealed_off_the_event_loop_and_the_pad_runs_out(
    session: WebSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = Page(session)
    threads: list[threading.Thread] = []
    real = session.member.seal_many

    def recording(payloads: list[bytes]) -> Any:
        threads.append(threading.current_thread())
        return real(payloads)

    monkeypatch.setattr(session.member, "seal_many", recording)
    for i in range(3):
        assert await session.send_text(f"message {i}") is None
    assert threads and all(t is not threading.main_thread() for t in threads)
    own = page.lines()
    assert [line["lines"] for line in own] == [["message 0"], ["message 1"], ["message 2"]]
    assert {line["state"] for line in own} == {"sealed"}  # not connected: kept to send
    assert page.last("members")["pad"]["level"] == "exhausted"
    reason = await session.send_text("one more")
    assert reason is not None and reason.startswith("not sent")
    await until(lambda: "used up" in page.last("members")["pad"]["warning"], what="warning")


async def test_the_seen_marker_keeps_only_a_message_id(session: WebSession) -> None:
    await session.seen.save("m1-4")
    await session.seen.save("../../etc/passwd")
    assert session.seen.path.read_text() == "m1-4"
    await session.seen.load()
    assert session.seen.key == "m1-4"


async def test_a_member_coming_and_going_in_a_loop_is_folded_and_a_repeated_refusal_said_once(
    tmp_path: Path,
) -> None:
    kits = make_kit_set(tmp_path / "kits", ["alice", "bob", "carol"], auth_keys=3)
    member = Member.open(kits[0])
    client = Client(member, [RelayAddress.parse("127.0.0.1:9")])  # never started
    now = [1000.0]
    web = WebSession(client, relay="127.0.0.1:9", transport="no TLS", clock=lambda: now[0])
    await web.start(connect=False)
    try:
        page = Page(web)
        for i in range(20):
            online = i % 2 == 0
            now[0] += 1
            web.handle_event(
                PresenceChanged(
                    frozenset({0, 1}) if online else frozenset({0}),
                    joined=frozenset({1}) if online else frozenset(),
                    left=frozenset() if online else frozenset({1}),
                )
            )
        told = [line["lines"][0] for line in page.lines()]
        assert told == ["bob came online", "bob went offline"] * (BURST // 2)
        now[0] += WINDOW
        web.presence_due()
        folded = page.lines()[-1]["lines"][0]
        assert "16 changes" in folded and folded.endswith("offline now")
        for _ in range(5):
            web.handle_event(RelayError(8, "relay full: too many connections"))
        assert sum("relay full" in line["lines"][0] for line in page.lines()) == 1
    finally:
        await web.stop()
        member.close()
