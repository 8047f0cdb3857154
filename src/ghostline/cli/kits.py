"""The KIT argument of every command, opening the member a kit belongs to, and what to
tell a person when a kit or its state cannot be used.

A kit path is checked by `Kit.open`, not by click: a missing, unreadable or read-only
kit is then one line (`ghostline: error: ...`), never a usage banner. `explain` words
the kit and state errors and gives every error its hint; `cli.report` prints what it
returns.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..display import one_line
from ..errors import (
    EntropySourceShort,
    GhostlineError,
    HealthTestFailure,
    KitDamagedError,
    KitHeaderChangedError,
    KitReadOnlyError,
    KitRecordError,
    PadExhaustedError,
    RecoveryNeeded,
    RelayUnreachable,
    StateOfAnotherKit,
)
from ..units import format_size

if TYPE_CHECKING:
    from ..state.member import Member
    from ..state.recovery import RecoveryPlan

KIT_ARGUMENT = click.argument("kit", type=click.Path(path_type=Path, readable=False))


def open_member(kit: Path) -> Member:
    """The member KIT belongs to, with its durable state (use it in a `with` block)."""
    from ..state.member import Member

    return Member.open(kit)


def explain(err: GhostlineError) -> tuple[str, str | None]:
    """The error line and hint line a person reads for `err`."""
    if isinstance(err, KitReadOnlyError):
        return (
            f"{err.path}: the kit must be writable: GhostLine erases the pad and keys of "
            "every message in it once used",
            f"Make it writable (chmod u+w {shlex.quote(err.path)}) or mount its medium "
            "read-write. Do not work on a copy: used pad would stay in the original.",
        )
    if isinstance(err, KitHeaderChangedError):
        changes = "; ".join(
            change
            for field in err.fields
            for change in _changes(field, err.recorded.get(field), err.found.get(field))
        )
        return (
            f"{err.path}: this kit looks damaged: its header is not the one this machine "
            f"recorded when the kit was first used here ({changes}); it was not used",
            "Do not use this file, and do not run `pad recover` on it: restore the kit "
            "from a copy you trust, or meet the group to make a new kit set.",
        )
    if isinstance(err, KitRecordError):
        return (
            f"{err.path}: this machine's record of the kit's header cannot be read ({err.reason})",
            "Remove that file: it only guards against a damaged kit, and the kit is "
            "recorded again the next time it is used.",
        )
    if isinstance(err, RecoveryNeeded):
        if err.kit_path is None:
            return err.message, "Run `ghostline pad recover KIT` on its kit (see its --help)."
        return err.message, recover_hint(err.kit_path)
    if err.hint is not None:
        return err.message, err.hint
    return err.message, next((hint for kind, hint in _HINTS if isinstance(err, kind)), None)


# What to do about errors whose raiser did not say (the library raises them bare, with
# the data; which command or option helps is the CLI's to say).
_HINTS: tuple[tuple[type[GhostlineError], str], ...] = (
    (
        PadExhaustedError,
        "Meet the group in person and make a new kit set with `ghostline pad new`.",
    ),
    (
        KitDamagedError,
        "Use an undamaged copy of your kit; without one, the group needs a new kit set.",
    ),
    (StateOfAnotherKit, "Pass the state file that belongs to this kit, or leave --state out."),
    (
        HealthTestFailure,
        "The source looks stuck or biased. Check the device, or assert a lower "
        "--entropy-rate only if you have measured it.",
    ),
    (EntropySourceShort, "Use a larger sample file or a smaller --size / --auth-keys."),
    (RelayUnreachable, "Check the --relay address and that the relay is running."),
)


def _changes(field: str, was: object, now: object) -> list[str]:
    """What differs in one header field, as `FIELD was X, now Y` clauses; the roster
    member by member."""
    if isinstance(was, list) and isinstance(now, list) and len(was) == len(now):
        return [
            f"{field}[{i}].{key} was {_shown(a.get(key))}, now {_shown(b.get(key))}"
            for i, (a, b) in enumerate(zip(was, now, strict=True))
            if isinstance(a, dict) and isinstance(b, dict)
            for key in sorted(a.keys() | b.keys())
            if a.get(key) != b.get(key)
        ] or [f"{field} differs"]
    return [f"{field} was {_shown(was)}, now {_shown(now)}"]


def _shown(value: object) -> str:
    text = one_line(str(value))  # a damaged header may hold anything
    return text if len(text) <= 64 else f"{text[:61]}..."


def recover_hint(kit_path: str | os.PathLike[str], plan: RecoveryPlan | None = None) -> str:
    """How to run `pad recover` on this kit and what it would cost, from its plan (made
    here when not given). Only for kits whose header is intact."""
    command = f"Run `ghostline pad recover {shlex.quote(os.fspath(kit_path))}`"
    if plan is None:
        plan = _plan(kit_path)
    if plan is None:
        return f"{command} to rebuild the state from the kit (see its --help)."
    return f"{command} to rebuild the state from the kit: it would skip {recovery_cost(plan)}."


def recovery_cost(plan: RecoveryPlan) -> str:
    """What recovering costs: the keys and pad it skips (the object of "skips")."""
    share = plan.skipped_bytes / plan.bytes_left if plan.bytes_left else 1.0
    two = plan.unsealed is not None
    cost = (
        f"{plan.skipped_keys:,} of your {plan.keys_left:,} unused {'masks' if two else 'keys'} "
        f"and {format_size(plan.skipped_bytes)} of the {format_size(plan.bytes_left)} left in "
        f"your {'pad' if two else 'slice'} ({share:.2%})"
    )
    if not plan.can_send_after:
        cost += ", after which this kit can no longer send"
    return cost


def _plan(kit_path: str | os.PathLike[str]) -> RecoveryPlan | None:
    from ..pad.kit import Kit
    from ..state.recovery import plan_recovery

    try:
        with Kit.open(kit_path, writable=False) as kit:
            return plan_recovery(kit)
    except GhostlineError:
        return None
