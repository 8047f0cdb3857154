"""Snapshots of the chat screen (pytest-textual-snapshot). Fixed clock, names, sizes and
figures; events come from the fake client, never the network.

Regenerate after a deliberate UI change with
`.venv/bin/pytest tests/tui/test_tui_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from tui_fakes import live, scene

from ghostline.client import ConnectionChanged, MessageRejected
from ghostline.tui.widgets import ChatInput
from waiting import until

SIZE = (110, 32)


def test_main_screen(snap_compare: Any) -> None:
    app, client = scene()

    async def run_before(pilot: Pilot[Any]) -> None:
        await live(pilot, client)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_rejected_message_and_reconnecting(snap_compare: Any) -> None:
    app, client = scene()

    async def run_before(pilot: Pilot[Any]) -> None:
        await live(pilot, client)
        client.events.put_nowait(
            MessageRejected(43, "bad_tag", "the authentication tag for you does not verify")
        )
        client.events.put_nowait(
            ConnectionChanged("reconnecting", "relay.example.net:7000", 7.0, "connection reset")
        )
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_pad_low_warning(snap_compare: Any) -> None:
    app, _ = scene(used=(905, 200_000))
    assert snap_compare(app, terminal_size=SIZE)


def test_pad_critical_warning(snap_compare: Any) -> None:
    app, _ = scene(used=(600, (1 << 20) - 9_000))
    assert snap_compare(app, terminal_size=SIZE)


def test_pad_exhausted_disables_input(snap_compare: Any) -> None:
    app, _ = scene(used=(1000, 900_000))
    assert snap_compare(app, terminal_size=SIZE)


def test_file_confirmation(snap_compare: Any, tmp_path: Path) -> None:
    source = tmp_path / "plan.pdf"
    source.write_bytes(b"%PDF" * 50_000)
    app, _ = scene()

    async def run_before(pilot: Pilot[Any]) -> None:
        pilot.app.query_one(ChatInput).load_text(f"/file {source}")
        await pilot.press("enter")
        await until(lambda: app.screen is not app.screen_stack[0], poll=pilot.pause)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
