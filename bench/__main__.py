"""`make bench`: run every bench/bench_*.py and write docs/BENCHMARKS.md.

Each benchmark module has `TITLE` and `run() -> str`, the Markdown body of its section
(tables of measured numbers, with the goal beside each). Run one alone with
`python -m bench NAME` (e.g. `python -m bench seal`); that prints, and writes nothing.
"""

from __future__ import annotations

import importlib
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).parent
DOC = HERE.parent / "docs" / "BENCHMARKS.md"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores{mem}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}"
    )


def main(argv: list[str]) -> int:
    names = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    chosen = argv or names
    sections = []
    for name in chosen:
        module = importlib.import_module(f"bench.bench_{name}")
        print(f"== {module.TITLE}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        body = module.run()
        took = time.perf_counter() - started
        sections.append(f"## {module.TITLE}\n\n{body.strip()}\n\n_(took {took:.0f} s)_\n")
        print(body, flush=True)
    if argv:
        return 0
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    header = (
        "# Benchmarks\n\n"
        "Written by `make bench` (which runs `python -m bench`); do not edit by hand.\n\n"
        f"- Machine: {machine()}\n"
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; commit {commit or 'uncommitted'}\n"
        "- Goals are stated beside each number; none of them is a test.\n\n"
    )
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(header + "\n".join(sections))
    print(f"wrote {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
