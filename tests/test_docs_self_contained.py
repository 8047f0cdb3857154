"""The repository's own documents are its whole specification: no file a user gets
points to design pages outside the repository (docs/PROTOCOL.md is the canonical spec)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(r"protocol-v[12]|shared/design|shared/seed|\.\./shared")


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [
        ROOT / name
        for name in listed
        if name.endswith((".py", ".md", ".json", ".toml", ".html", ".js", ".css", ".txt"))
        and name != "tests/test_docs_self_contained.py"
    ]


def test_no_tracked_file_refers_to_the_design_pages_outside_the_repository() -> None:
    files = tracked_text_files()
    assert any(p.name == "PROTOCOL.md" for p in files)
    offenders = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in files
        if path.is_file()
        for match in [OUTSIDE.search(path.read_text(errors="replace"))]
        if match
    ]
    assert not offenders, offenders
