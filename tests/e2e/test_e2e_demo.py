"""`ghostline demo` tells the whole story and exits 0, quickly, touching no real data dir."""

from __future__ import annotations

from pathlib import Path

from e2e_support import ghostline


def test_the_demo_tells_the_whole_story_and_exits_0(home: Path) -> None:
    done = ghostline("demo", home=home, timeout=60)
    assert done.returncode == 0, done.stderr
    out = " ".join(done.stdout.split())  # rich wraps lines
    for beat in (
        "make a kit set",
        "A blind relay starts",
        "Alice sees Bob come online",
        "Carol comes online",
        "Alice sees Carol come online",
        'Carol reads Alice\'s "Bring the blue notebook."',
        "Carol rejects seq",
        "rule bad_tag",
        "Carol reads Bob's \"Carol, did you get that?",
        "make a kit set (format 2)",
        "Bob sees: Alice gave Carol 16 KiB of pad",
        "Carol sees: Alice gave Carol 16 KiB of pad",
        "sealed in the pad Alice gave her",
        "Bob reads Carol's \"Thanks, Alice!",
        "Alice sees Bob go offline",
        "pad held",
        "pad left",
        "The end.",
    ):
        assert beat in out, beat
    assert "Traceback" not in done.stderr
    assert not (home / "data").exists()  # everything lived in the demo's temp dir
