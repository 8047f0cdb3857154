"""Regenerate docs/screenshot.svg from the app itself (the same scene as the main-screen
snapshot): `.venv/bin/python tests/tui/make_screenshot.py`."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from tui_fakes import live, scene  # noqa: E402

OUT = HERE.parent.parent / "docs" / "screenshot.svg"


async def main() -> None:
    app, client = scene()
    async with app.run_test(size=(110, 32)) as pilot:
        await live(pilot, client)
        await pilot.pause()
        svg = app.export_screenshot(title="ghostline chat")
    OUT.write_text(svg, encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    asyncio.run(main())
