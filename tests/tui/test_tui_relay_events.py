"""The chat app shows what the client says about the relay: a store change, seqs that
never came, a relay that keeps failing, and why it stopped for good."""

from __future__ import annotations

from test_tui_app import SIZE, make_app, texts

from ghostline.client import ConnectionChanged, MessagesMissing, RelayFailing, StoreChanged
from ghostline.client.transport import TlsCertificateError
from waiting import until


async def test_a_store_change_missing_seqs_and_a_failing_relay_are_shown() -> None:
    app, client = make_app()
    async with app.run_test(size=SIZE) as pilot:
        client.events.put_nowait(StoreChanged("127.0.0.1:7000", 12))
        client.events.put_nowait(MessagesMissing(4, 6, "127.0.0.1:7000"))
        client.events.put_nowait(RelayFailing(9, "database is locked", 3))
        await until(lambda: len(texts(app)) == 3, poll=pilot.pause)
        changed, missing, failing = texts(app)
        assert "another message store" in changed and "nothing is lost" in changed
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
