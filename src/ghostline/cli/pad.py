"""`ghostline pad ...`: make a kit set (`pad new`); `info` and `recover` live in pad_state.py.

`pad new` is the one place a group's pad is born. It checks everything it can before
writing a byte (names, sizes, entropy sources, free space, existing files), then
streams the kit set to disk (kit.create_kit_set) with a progress bar on stderr, and
prints on stdout who gets which file.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import click

from ..errors import KitError, KitExistsError, UsageError
from ..fsutil import make_private_dirs
from ..pad.entropy import DEFAULT_ENTROPY_RATE, MixedRandom
from ..pad.kitset import (
    AVERAGE_MESSAGE,
    KIT_SUFFIX,
    create_kit_set,
    default_auth_keys,
    kit_set_random_len,
    member_name_problem,
)
from ..protocol.kitformat import (
    DEFAULT_LENGTH_STEP,
    FORMAT_1,
    MAX_LENGTH_STEP,
    MIN_LENGTH_STEP,
    KitLayout,
    base_offset,
)
from ..state.usage import MIN_MESSAGE_BYTES
from ..units import format_size, parse_size
from .params import Number, whole

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

# Subcommands defined elsewhere, imported only when used so `pad new` stays light.
_LAZY: dict[str, tuple[str, str]] = {
    "info": ("ghostline.cli.pad_state", "info"),
    "recover": ("ghostline.cli.pad_state", "recover"),
    "give": ("ghostline.cli.give", "give"),
}


class _PadGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        lazy = [name for name, (mod, _) in _LAZY.items() if _module_exists(mod)]
        return sorted([*super().list_commands(ctx), *lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        target = _LAZY.get(cmd_name)
        if command is None and target is not None and _module_exists(target[0]):
            command = getattr(importlib.import_module(target[0]), target[1])
        return command


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


@click.group(cls=_PadGroup)
def pad() -> None:
    """Make kit sets and look after kits."""


@pad.command("new")
@click.option(
    "--members",
    required=True,
    metavar="NAMES",
    help="Comma-separated member names in roster order, e.g. alice,bob,carol.",
)
@click.option(
    "--size",
    "size_text",
    required=True,
    metavar="SIZE",
    help="The whole group pad (B, KiB, MiB, GiB); each member gets SIZE / n to send with.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the kit files (created, mode 0700, if missing).",
)
@click.option(
    "--auth-keys",
    type=whole(),
    default=None,
    metavar="K",
    help="One-time keys (format 2: masks) per ordered pair = most messages each member "
    f"can send [default: enough for {AVERAGE_MESSAGE}-byte messages on average to use "
    "the own slice (format 1), or two slices or half the group pad (format 2)].",
)
@click.option("--group", default="", help="A name for the group (stored in every kit).")
@click.option(
    "--entropy",
    "entropy_paths",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="A raw randomness source (device such as /dev/hwrng, or a file of samples) to "
    "XOR with os.urandom after SP 800-90B health tests. Repeatable.",
)
@click.option(
    "--entropy-rate",
    type=Number(min=0.0, min_open=True, max=8.0),
    default=DEFAULT_ENTROPY_RATE,
    show_default=True,
    metavar="H",
    help="Min-entropy per byte you assert for the --entropy sources (0 < H <= 8); "
    "sets the health-test cutoffs.",
)
@click.option(
    "--format",
    "kit_format",
    type=click.Choice(["1", "2"]),
    default="2",
    show_default=True,
    help="Kit format. 2 checks its header, pads message lengths, spends 16 instead of "
    "32 bytes per recipient on authenticating a message, catches a damaged pad, and lets "
    "members give each other pad. 1 is for groups whose GhostLine is older.",
)
@click.option(
    "--length-step",
    type=int,
    default=None,
    metavar="N",
    help=f"Format 2: pad every message to a multiple of N bytes, 1 to {MAX_LENGTH_STEP} "
    f"[default: {DEFAULT_LENGTH_STEP}].",
)
def new(
    members: str,
    size_text: str,
    out_dir: Path,
    auth_keys: int | None,
    group: str,
    entropy_paths: tuple[Path, ...],
    entropy_rate: float,
    kit_format: str,
    length_step: int | None,
) -> None:
    """Make a kit set: one kit file per member, written to OUT/NAME.ghostkit.

    Every kit holds the whole group pad and the one-time keys its owner shares with
    each other member. Files are created with mode 0600 and never overwrite anything.
    Hand each member their own file only.
    """
    names = parse_members(members)
    n = len(names)
    size = parse_size(size_text, what="--size")
    slice_len = size // n
    fmt = int(kit_format)
    step = _length_step(fmt, length_step)
    smallest = _smallest_message(step)
    if slice_len < smallest:
        raise UsageError(
            f"--size {size_text} is too small for {n} members to send even one short message: "
            f"each needs at least {smallest} B, so at least {n * smallest} B in all"
        )
    keys = default_auth_keys(slice_len, n, fmt) if auth_keys is None else auth_keys
    if keys < 1:
        raise UsageError(f"--auth-keys must be at least 1, not {keys}")
    paths = [out_dir / f"{name}{KIT_SUFFIX}" for name in names]
    for path in paths:
        if os.path.lexists(path):
            raise KitExistsError(
                f"{path} already exists; GhostLine never overwrites a kit",
                hint="Choose another --out directory, or move the old kits away first.",
            )
    random_len = kit_set_random_len(n, slice_len, keys, fmt)
    with MixedRandom(entropy_paths, entropy_rate=entropy_rate) as randomness:
        randomness.check_enough(random_len)
        made_dirs = _make_dirs(out_dir)
        try:
            file_len = _file_len(n, slice_len, keys, fmt)
            _check_free_space(out_dir, n * file_len)
            with _Progress(random_len) as progress:
                created = create_kit_set(
                    out_dir,
                    names,
                    slice_len=slice_len,
                    auth_keys=keys,
                    group=group,
                    random_bytes=randomness,
                    entropy=randomness.description,
                    progress=progress,
                    format=fmt,
                    length_step=step,
                )
        except BaseException:
            for made in reversed(made_dirs):  # leave nothing behind, not even the folder
                try:
                    made.rmdir()
                except OSError:
                    break
            raise
    _print_summary(names, created, group, slice_len, keys, randomness.description, step)


def parse_members(text: str) -> list[str]:
    """The roster from `alice,bob,carol`; names must make safe, distinct file names."""
    names = [name.strip() for name in text.split(",")]
    for name in names:
        if not name:
            raise UsageError(f"--members {text!r} has an empty name")
        if (problem := member_name_problem(name)) is not None:
            raise UsageError(problem)
    if len(set(names)) != len(names):
        raise UsageError(f"--members {text!r} names someone twice")
    if not 2 <= len(names) <= 255:
        raise UsageError(f"a group has 2 to 255 members, not {len(names)}")
    return names


def _length_step(fmt: int, length_step: int | None) -> int | None:
    """The length step a kit set of format `fmt` gets (None: format 1 does not pad)."""
    if fmt == FORMAT_1:
        if length_step is not None:
            raise UsageError("--length-step is for format-2 kits (format-1 kits do not pad)")
        return None
    step = DEFAULT_LENGTH_STEP if length_step is None else length_step
    if not MIN_LENGTH_STEP <= step <= MAX_LENGTH_STEP:
        raise UsageError(
            f"--length-step must be {MIN_LENGTH_STEP} to {MAX_LENGTH_STEP}, not {step}"
        )
    return step


def _smallest_message(step: int | None) -> int:
    """Pad bytes the shortest text message takes (format 2 pads it to a multiple of
    `step`)."""
    if step is None:
        return MIN_MESSAGE_BYTES
    from ..pad.seal2 import padded_length

    return padded_length(MIN_MESSAGE_BYTES, step)


def _file_len(n: int, slice_len: int, keys: int, fmt: int) -> int:
    """A kit's length, for the free-space check: exact but for the header, which is
    bounded generously (each member's entry is at most about 400 bytes)."""
    base = base_offset(512 + 400 * n, fmt)
    return KitLayout(n, slice_len, keys, 0, base, fmt).file_len


def _make_dirs(path: Path) -> list[Path]:
    """mkdir -p with mode 0700; returns the directories it made, outermost first."""
    try:
        return make_private_dirs(path)
    except OSError as exc:
        raise KitError(f"cannot create {path}: {exc.strerror}") from None


def _check_free_space(path: Path, needed: int) -> None:
    free = shutil.disk_usage(path).free
    if free < needed:
        raise KitError(
            f"{path} has {format_size(free)} free but the kit set needs {format_size(needed)}"
        )


class _Progress:
    """A rich progress bar on stderr, shown only when it helps.

    It appears once generation has taken a second (or at once for a large kit set), and
    only on a terminal: piped stderr gets no control characters.
    """

    LARGE = 1 << 30
    DELAY = 1.0

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self._started = time.monotonic()
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._enabled = sys.stderr.isatty()

    def __call__(self, k: int) -> None:
        self.done += k
        if not self._enabled:
            return
        if self._bar is None and (
            self.total >= self.LARGE or time.monotonic() - self._started >= self.DELAY
        ):
            self._start()
        if self._bar is not None:
            assert self._task is not None
            self._bar.update(self._task, completed=self.done)

    def _start(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        bar = Progress(
            TextColumn("making kits"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        bar.start()
        self._task = bar.add_task("kits", total=self.total, completed=self.done)
        self._bar = bar

    def __enter__(self) -> _Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()


def _print_summary(
    names: Sequence[str],
    paths: Sequence[Path],
    group: str,
    slice_len: int,
    keys: int,
    entropy: str,
    length_step: int | None,
) -> None:
    n = len(names)
    file_len = paths[0].stat().st_size
    width = max(len(name) for name in names)
    label = f"group {group!r}" if group else "an unnamed group"
    echo = click.echo
    echo(f"Made {n} kits for {label} in {paths[0].parent}:")
    for name, path in zip(names, paths, strict=True):
        echo(f"  {name:<{width}}  gets  {path}")
    what = "one-time keys" if length_step is None else "one-time masks"
    echo(
        f"Group pad: {format_size(n * slice_len)} ({format_size(slice_len)} for each member "
        f"to send with); {keys:,} {what} per pair: at most {keys:,} messages each."
    )
    echo(f"Each kit file: {format_size(file_len)} ({file_len:,} bytes). Randomness: {entropy}.")
    if length_step is not None:
        echo(
            f"Kit format 2: every message is padded to a multiple of {length_step} bytes, "
            "and members give pad to whoever runs low."
        )
    echo(
        "Hand each member their own file only, in person or over a channel you trust as "
        "much as the pad: anyone who copies a kit can read the group and speak as its owner."
    )
