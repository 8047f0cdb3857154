"""End to end: `listen` after the relay was restarted on a new store shows the new
messages, and says that the store changed."""

from __future__ import annotations

from pathlib import Path

from e2e_support import ghostline

from helpers import RelayProcess, kits_by_name, make_kit_set


def test_listen_after_the_relay_restarts_on_a_new_store_shows_new_messages(
    tmp_path: Path, home: Path
) -> None:
    kits = kits_by_name(make_kit_set(tmp_path / "kits", ["alice", "bob"]))
    relay = RelayProcess(tmp_path / "first.sqlite")
    try:

        def send(text: str) -> None:
            done = ghostline("send", str(kits["alice"]), text, *relay.relay_args(), home=home)
            assert done.returncode == 0, done.stderr

        def listen(count: int) -> tuple[list[str], str]:
            done = ghostline(
                "listen", str(kits["bob"]), *relay.relay_args(),
                "--count", str(count), "--timeout", "30", home=home,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            return [line.split(": ", 1)[1] for line in done.stdout.splitlines()], done.stderr

        send("one")
        send("two")
        assert listen(2)[0] == ["one", "two"]
        relay = relay.restart(tmp_path / "second.sqlite")
        send("three")  # seq 1 of the new store, below bob's cursor in the old one
        shown, stderr = listen(1)
        assert shown == ["three"]
        assert "has another message store than before" in stderr
    finally:
        relay.kill()
