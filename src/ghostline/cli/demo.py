"""`ghostline demo`: the whole system on loopback, in a temporary directory."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from ..errors import UsageError
from ..fsutil import make_private_dirs


@click.command()
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Work in this (new) directory and keep it, instead of a temporary one.",
)
def demo(keep: Path | None) -> None:
    """Run a three-member group, a relay and a meddler on this machine, and tell the story."""
    from ..demo import run_demo

    if keep is not None:
        if keep.exists():
            raise UsageError(f"--keep {keep} already exists: give a new directory")
        make_private_dirs(keep)
    asyncio.run(run_demo(workdir=keep))
