"""End to end: `--relay` given the presence port is told so, not blamed on the kit
(issue 9, "--relay pointed at the presence port blames the kit")."""

from __future__ import annotations

from pathlib import Path

from e2e_support import ghostline

from ghostline.protocol.frames import REASON_PRESENCE_PORT
from helpers import RelayProcess, kits_by_name, make_kit_set


def test_send_to_the_presence_port_is_told_which_port_it_reached(
    tmp_path: Path, home: Path
) -> None:
    kits = kits_by_name(make_kit_set(tmp_path / "kits", ["alice", "bob"]))
    relay = RelayProcess(tmp_path / "relay.sqlite")
    try:
        done = ghostline(
            "send", str(kits["alice"]), "hi", "--relay", f"127.0.0.1:{relay.presence_port}",
            "--timeout", "60", home=home,
        )  # fmt: skip
    finally:
        relay.kill()
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[-2] == f"ghostline: error: the relay refused: {REASON_PRESENCE_PORT} (code 3)"
    assert lines[-1].startswith("ghostline: hint: --relay names the relay's presence port")
    assert "damaged" not in done.stderr
