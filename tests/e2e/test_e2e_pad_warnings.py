"""End to end: `send` and `listen` warn on stderr when the own pad runs low, once at 10%
left, once at 1%, once when it is used up."""

from __future__ import annotations

from pathlib import Path

from e2e_support import ghostline

from helpers import RelayProcess, kits_by_name, make_kit_set


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("ghostline: warning:")]


def test_send_and_listen_warn_once_at_ten_and_one_percent_left(tmp_path: Path, home: Path) -> None:
    # 1000 pad bytes and 100 keys each; a text message costs its length + 5 bytes.
    kits = kits_by_name(make_kit_set(tmp_path / "kits", ["alice", "bob"], slice_len=1000,
                                     auth_keys=100))  # fmt: skip
    alice = str(kits["alice"])
    relay = RelayProcess(tmp_path / "relay.sqlite")
    try:
        said = []
        for text in ("a" * 850, "b" * 50, "c", "d" * 70, "e"):  # 145, 90, 84, 9, 3 bytes left
            done = ghostline("send", alice, text, *relay.relay_args(), "-q", home=home)
            assert done.returncode == 0, done.stderr
            said.append(warnings(done.stderr))
        assert said[0] == [] and said[2] == []
        assert said[1] == [
            "ghostline: warning: Your pad is running low: 9.0% left (90 B and 98 messages). "
            "Plan a meeting with your group to make a new kit set."
        ]
        assert len(said[3]) == 1 and "almost used up: 0.9% left (9 B and 96 messages)" in said[3][0]
        assert len(said[4]) == 1 and "used up: you cannot send with this kit any more" in said[4][0]
        done = ghostline("listen", alice, *relay.relay_args(), "--timeout", "0.5", "-q", home=home)
        assert done.returncode == 0, done.stderr
        assert len(warnings(done.stderr)) == 1 and "used up" in done.stderr
    finally:
        relay.kill()
