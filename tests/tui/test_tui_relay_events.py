"""The chat app shows what the client says about the relay: a store change, seqs that
never came, a relay that keeps failing, and why it stopped for good; a refusal or a
member's presence that repeats in a loop does not fill the conversation."""

from __future__ import annotations

from test_tui_app import SIZE, make_app, texts

from ghostline.client import (
    ConnectionChanged,
    MessagesMissing,
    PresenceChanged,
    RelayError,
    RelayFailing,
    StoreChanged,
)
from ghostline.client.transport import TlsCertificateError
from ghostline.presencenotes import BURST, WINDOW
from waiting import until


async def test_a_store_change_missing_seqs_and_a_failing_relay_are_shown() -> None:
    app, client = make_app()
    async with app.run_test(size=SIZE) as pilot:
        client.events.put_nowait(StoreChanged("127.0.0.1:7000", 12))
        client.events.put_nowait(StoreChanged("127.0.0.1:7000", 12, went_back=True))
        client.events.put_nowait(MessagesMissing(4, 6, "127.0.0.1:7000"))
        client.events.put_nowait(RelayFailing(9, "database is locked", 3))
        await until(lambda: len(texts(app)) == 4, poll=pilot.pause)
        changed, went_back, missing, failing = texts(app)
        # What holds, and no more: nothing is shown twice, but what the old store held
        # and this member had not received is not in the new one.
        assert "another message store" in changed and "nothing is lost" not in changed
        assert "not shown twice" in changed and "had not received" in changed
        assert "no longer holds the messages you read (up to seq 12)" in went_back
        assert "restored from a backup" in went_back and "had not received" in went_back
        assert "seqs 4-6 never arrived" in missing
        assert "internal error 3 times in a row (database is locked)" in failing
        assert "outbox" in failing


async def test_a_certificate_that_does_not_verify_is_shown_with_its_hint() -> None:
    app, client = make_app()
    client.failure = TlsCertificateError("the TLS certificate did not verify", "untrusted")  # type: ignore[attr-defined]
    async with app.run_test(size=SIZE) as pilot:
        client.events.put_nowait(
            ConnectionChanged("stopped", "127.0.0.1:7000", None, str(client.failure))  # type: ignore[attr-defined]
        )
        await until(lambda: any("for good" in t for t in texts(app)), poll=pilot.pause)
        [line] = [t for t in texts(app) if "for good" in t]
        assert "did not verify" in line and "--tls-ca" in line


async def test_a_member_coming_and_going_in_a_loop_is_told_a_few_times_then_folded() -> None:
    app, client = make_app()
    clock = app.clock
    async with app.run_test(size=SIZE) as pilot:
        client.events.put_nowait(ConnectionChanged("connected", "127.0.0.1:7000", None, ""))
        for i in range(20):
            online = i % 2 == 0
            client.events.put_nowait(
                PresenceChanged(
                    frozenset({0, 1}) if online else frozenset({0}),
                    joined=frozenset({1}) if online else frozenset(),
                    left=frozenset() if online else frozenset({1}),
                )
            )
        await until(lambda: client.events.empty(), poll=pilot.pause)
        await until(lambda: len(app.panel.online) == 1, poll=pilot.pause)
        about_bob = [t for t in texts(app) if "bob" in t]
        assert about_bob == ["bob came online", "bob went offline"] * (BURST // 2)
        clock.now += WINDOW  # type: ignore[attr-defined]
        await until(lambda: any("16 changes" in t for t in texts(app)), poll=pilot.pause)
        [folded] = [t for t in texts(app) if "16 changes" in t]
        assert folded.startswith("bob came and went") and folded.endswith("offline now")


async def test_a_refusal_that_comes_on_every_attempt_is_shown_once_a_minute() -> None:
    app, client = make_app()
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(5):
            client.events.put_nowait(RelayError(8, "relay full: too many connections"))
        client.events.put_nowait(MessagesMissing(4, 6, "127.0.0.1:7000"))
        await until(lambda: len(texts(app)) == 2, poll=pilot.pause)
        refused, missing = texts(app)
        assert "relay full" in refused and "seqs 4-6" in missing
