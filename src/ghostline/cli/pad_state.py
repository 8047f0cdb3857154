"""`ghostline pad info` and `ghostline pad recover`: what is left of a kit, and how to
rebuild lost local state. The `pad` group (cli/pad.py) adds these with add_command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..display import one_line
from ..errors import StateError
from ..pad.kit import Kit
from ..state.inspect import StateStatus, inspect_state, read_usage
from ..state.limits import MAX_SEAL_BYTES, MAX_SEAL_GROUP
from ..state.recovery import RecoveryPlan, apply_recovery, plan_recovery
from ..state.usage import KitUsage
from ..units import format_size
from .kits import KIT_ARGUMENT, explain, recover_hint, recovery_cost

INFO_SCHEMA = 3

_KIT = KIT_ARGUMENT
_STATE = click.option(
    "--state",
    "state",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="State database to use (default: the one GhostLine keeps for this kit).",
)


@click.command("info")
@_KIT
@_STATE
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (schema below).")
def info(kit: Path, state: Path | None, as_json: bool) -> None:
    """Show a kit's group, members, and how much pad each member has left.

    Read-only: changes neither the kit nor the state database. For the kit's owner the
    figures are exact; for other members they count what you have accepted from them.
    "Messages left" assumes text messages of the size of the member's last 100 (64
    bytes when there are none); files take more.

    For a format-2 kit a member's pad is what it holds now (its first slice, less what
    it gave away, plus what it was given), and "failed checks" counts the messages from
    each member whose authentication failed here (forged, or a damaged kit).

    \b
    --json prints one object (schema 3, documented in docs/CLI.md):
      schema, kit, format, length_step, group, pad_id, created, entropy, n, slice_len,
      auth_keys, self {index, name},
      state {path, status: ok|new|missing|stale, detail},
      members [{index, name, self, pad_total, extents, bytes_used, bytes_left,
                keys_used, keys_left, messages, average_size, text_size,
                messages_left, failed_verifications}],
      erased {keys, keys_total, pad_bytes, pad_bytes_total, fraction}
    """
    with Kit.open(kit, writable=False) as k:
        status = inspect_state(k, state)
        report = info_json(k, status, read_usage(k, status))
        needs_recovery = status.status in ("missing", "stale")
        plan = plan_recovery(k, state) if needs_recovery and not as_json else None
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=False))
        return
    _print_info(report, plan)


def info_json(k: Kit, status: StateStatus, usage: KitUsage) -> dict[str, Any]:
    h = k.header
    return {
        "schema": INFO_SCHEMA,
        "kit": str(k.path),
        "format": h.format,
        "length_step": h.length_step,
        "group": h.group,
        "pad_id": h.pad_id.hex(),
        "created": h.created,
        "entropy": h.entropy,
        "n": h.n,
        "slice_len": h.slice_len,
        "auth_keys": h.auth_keys,
        "self": {"index": h.self_index, "name": h.self_name},
        "state": {
            "path": str(status.path),
            "status": status.status,
            "detail": state_detail(status),
        },
        "members": [
            {
                "index": m.index,
                "name": m.name,
                "self": m.is_self,
                "pad_total": m.pad_size,
                "extents": None if m.extents is None else [list(r) for r in m.extents],
                "bytes_used": m.bytes_used,
                "bytes_left": m.bytes_left,
                "keys_used": m.keys_used,
                "keys_left": m.keys_left,
                "messages": m.messages,
                "average_size": round(m.average_size, 2),
                "text_size": round(m.text_size, 2),
                "messages_left": m.messages_left,
                "failed_verifications": m.failed,
            }
            for m in usage.members
        ],
        "erased": {
            "keys": usage.keys_erased,
            "keys_total": usage.keys_total,
            "pad_bytes": usage.pad_bytes_erased,
            "pad_bytes_total": usage.pad_bytes_total,
            "fraction": round(usage.erased_fraction, 6),
        },
    }


def state_detail(status: StateStatus) -> str | None:
    """Why the state cannot be used as it is, in a sentence; None when it can."""
    return None if status.problem is None else explain(status.problem)[0]


def _print_info(
    r: dict[str, Any], plan: RecoveryPlan | None, console: Console | None = None
) -> None:
    """The report for a person. Fits 80 columns: no number is ever cut (names wrap)."""
    console = console or Console(highlight=False)
    me = r["self"]
    group = one_line(r["group"]) if r["group"] else "(unnamed)"
    console.print(f"Group {group}   pad {r['pad_id']}", markup=False)
    two = r["format"] != 1
    console.print(
        f"You are {one_line(me['name'])} (member {me['index']} of {r['n']}); each slice "
        f"{format_size(r['slice_len'])}, {r['auth_keys']:,} "
        + ("masks" if two else "keys")
        + " per pair"
        + (f"; format 2, messages padded to {r['length_step']} bytes" if two else ""),
        markup=False,
    )
    # Format 2: a member's pad left over what it holds now, on two lines (80 columns).
    rows = [
        (
            one_line(m["name"]) + (" (you)" if m["self"] else ""),
            format_size(m["bytes_left"]) + (f"\n/ {format_size(m['pad_total'])}" if two else ""),
            f"{m['keys_left']:,}",
            f"{m['messages']:,}",
            format_size(round(m["text_size"])),
            f"{m['messages_left']:,}",
        )
        for m in r["members"]
    ]
    headers = (
        "member",
        "pad left\n/ held" if two else "pad\nleft",
        "masks\nleft" if two else "keys\nleft",
        "sent/\nread",
        "text\nsize",
        "≈ msgs\nleft",
    )
    table = Table(show_header=True, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column(headers[0], overflow="fold", min_width=6)
    for i, header in enumerate(headers[1:], start=1):
        widest = max(len(line) for row in rows for line in row[i].split("\n"))
        table.add_column(header, justify="right", no_wrap=True, min_width=widest)
    for row in rows:
        # A name is Text, not a string Rich would read as markup ("[b]" in a name).
        table.add_row(Text(row[0]), *row[1:])
    console.print(table)
    failed = [m for m in r["members"] if m["failed_verifications"]]
    if failed:
        counts = ", ".join(f"{one_line(m['name'])} {m['failed_verifications']:,}" for m in failed)
        console.print(
            f"[bold red]Failed checks:[/bold red] {escape(counts)}: messages from these "
            "members failed their authentication here. Someone may be forging messages, "
            "or a kit (theirs or yours) is damaged.",
        )
    e = r["erased"]
    console.print(
        f"Erased: {e['keys']:,} of {e['keys_total']:,} {'masks' if two else 'keys'}, "
        f"{format_size(e['pad_bytes'])} of {format_size(e['pad_bytes_total'])} of pad "
        f"({e['fraction']:.2%} of the kit's secret bytes)",
        markup=False,
    )
    st = r["state"]
    if st["status"] in ("missing", "stale"):
        console.print(f"[bold red]State {st['status']}:[/bold red] ", end="")
        console.print(st["detail"], markup=False)
        console.print(recover_hint(r["kit"], plan), markup=False)


_RECOVER_HELP = f"""Rebuild a lost or outdated state database from the kit alone.

    Use it when GhostLine says the state database is missing or older than the kit
    (after a disk restore, a copied kit, or a deleted data folder). It never guesses:

    \b
    - next message number = highest erased outbound key + 1 + {MAX_SEAL_GROUP} (the most
      messages one commit seals: a sender that stopped between sealing and erasing
      may have left that many sealed, perhaps sent, but not yet erased);
    - next pad offset = end of the erased part of your slice + {format_size(MAX_SEAL_BYTES)}
      (the most pad one commit uses: {MAX_SEAL_GROUP} file parts, or one message of the
      largest size a relay carries) + 64 bytes, capped at the end of your slice;
    - accepted message numbers are rebuilt from erased inbound keys, so replays are
      still refused;
    - format 2 (masks instead of keys): every member's pad is rebuilt from the kit's
      grant journal, so pad you gave away is never yours again; of your pad above its
      erased part, every piece smaller than the skip above is skipped too (a commit may
      lie in it), then the skip in the first piece that large;
    - the skipped keys and pad bytes are erased; the old database is kept aside.

    What is lost: the history of sent and received messages, the outbox (messages
    sealed but never accepted by the relay are not resent), and the relay cursor.
    It prints what it skips and what that costs, and asks before writing (--yes skips
    the question). `ghostline pad info` shows the same cost before you run it.
    """


@click.command("recover", help=_RECOVER_HELP)
@_KIT
@_STATE
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Rebuild even if the state database looks fine.")
def recover(kit: Path, state: Path | None, yes: bool, force: bool) -> None:
    with Kit.open(kit) as k:
        plan = plan_recovery(k, state)
        if plan.state.status in ("ok", "new") and not force:
            click.echo(
                f"The state database {plan.state.path} "
                + ("is consistent with the kit" if plan.state.status == "ok" else "is not needed")
                + "; nothing to recover (use --force to rebuild anyway)."
            )
            return
        for line in describe_plan(plan):
            click.echo(line)
        if not yes and not click.confirm("Write the new state database?", default=False):
            raise StateError("recovery cancelled; nothing was changed")
        path = apply_recovery(k, plan)
    click.echo(f"Wrote {path}: next message {plan.next_counter}, next offset {plan.next_offset}.")


def describe_plan(plan: RecoveryPlan) -> list[str]:
    """The plan in sentences, for a person to confirm."""
    lines = []
    two = plan.unsealed is not None
    keys = "mask" if two else "key"
    if plan.state.status in ("stale", "missing"):
        lines.append(f"State: {state_detail(plan.state)}.")
    if plan.state.path.exists():
        lines.append(f"The old database will be kept as {plan.aside_path()}.")
    if two:
        lines.append(
            f"Grants: the kit's grant journal holds {len(plan.journal)} grant(s); every "
            "member's pad is rebuilt from it, so pad you gave away stays the other "
            f"member's (yours now: {format_size(plan.pad_size)})."
        )
    used = plan.highest_erased_counter + 1
    lines.append(
        f"{keys.capitalize()}s: the kit shows {used} message(s) sent (highest erased {keys} "
        f"{plan.highest_erased_counter}); the next message will be number "
        f"{plan.next_counter}, skipping {plan.skipped_keys} {keys}(s): a sender that "
        "stopped between sealing and erasing may have left that many sealed but not erased."
    )
    where = "your pad" if two else "your slice"
    lines.append(
        f"Pad: the erased part of {where} ends at byte {plan.erased_extent}; the next "
        f"message will start at byte {plan.next_offset}, skipping {plan.skipped_bytes} "
        f"byte(s) ({plan.skipped_bytes / max(1, plan.pad_size):.2%} of {where}) for "
        "the same reason."
    )
    lines.append(f"In all, it skips {recovery_cost(plan)}.")
    total_acc = sum(len(v) for v in plan.accepted.values())
    lines.append(
        f"Received: {total_acc} accepted message number(s) are rebuilt from erased "
        f"inbound {keys}s, so replays of them are still refused. The history of received "
        "and sent messages is lost, and the relay cursor restarts at 0 (messages "
        "already read will be refused as replays when the relay sends them again)."
    )
    lines.append(f"The skipped {keys}s and pad bytes are erased in the kit.")
    return lines
