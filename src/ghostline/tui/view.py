"""Pure helpers the chat widgets share: pad warnings, sizes, times, colours. No Textual.

Kept apart from the widgets so the rules (when to warn, how to name a day) are tested
without a terminal.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Literal

from ..client import MessageRejected, MessagesMissing, RelayError, RelayFailing, StoreChanged
from ..files.names import safe_file_name
from ..protocol.payload import FileHeader, GrantPayload
from ..state.usage import PadLeft, PadLevel
from ..units import format_size
from ..wording.padtalk import gift_sentence, rejection_note
from ..wording.relaylines import messages_missing_line, relay_failing_line, store_changed_line

# Distinct on dark and light themes; a member keeps its colour because it is chosen by
# kit index, which every member's kit agrees on.
SENDER_COLOURS = (
    "#5fafff",
    "#ff875f",
    "#87d75f",
    "#d787ff",
    "#ffd75f",
    "#5fd7d7",
    "#ff5f87",
    "#afaf87",
)
OWN_COLOUR = "#b2b2b2"


def sender_colour(index: int) -> str:
    return SENDER_COLOURS[index % len(SENDER_COLOURS)]


PAD_WARNINGS: dict[PadLevel, str] = {
    "ok": "",
    "low": "Your pad is running low: {pct} left ({summary}). Plan a meeting to make a new kit.",
    "critical": "Your pad is almost used up: {pct} left ({summary}). Meet soon to make a new kit.",
    "exhausted": (
        "Your pad is used up: you cannot send with this kit any more. You can still read "
        "what others send. Meet the group in person and make a new kit set with "
        "`ghostline pad new`."
    ),
}


def pad_warning(pad: PadLeft) -> str:
    return PAD_WARNINGS[pad.level].format(pct=percent(pad.fraction_left), summary=pad_summary(pad))


def failed_checks(count: int) -> str:
    """A member's failed-verification count, as the member lists show it."""
    return f"{count:,} failed check{'s' if count != 1 else ''} (forged, or a damaged kit)"


def percent(fraction: float) -> str:
    value = fraction * 100
    if value >= 10 or value == 0:
        return f"{value:.0f}%"
    return f"{value:.1f}%"


def pad_summary(pad: PadLeft) -> str:
    msgs = "message" if pad.msgs_left == 1 else "messages"
    return f"{format_size(pad.bytes_left)} and {pad.msgs_left:,} {msgs}"


def local_time(timestamp: float, tz: tzinfo | None) -> datetime:
    """The wall-clock time of `timestamp` in `tz` (the machine's zone when None)."""
    return datetime.fromtimestamp(timestamp, tz).astimezone(tz)


def clock_label(timestamp: float, tz: tzinfo | None) -> str:
    return local_time(timestamp, tz).strftime("%H:%M")


def day_label(timestamp: float, tz: tzinfo | None) -> str:
    return local_time(timestamp, tz).strftime("%A %d %B %Y")


def day_key(timestamp: float, tz: tzinfo | None) -> str:
    return local_time(timestamp, tz).strftime("%Y-%m-%d")


def countdown(seconds: float) -> str:
    whole = max(0, round(seconds))
    return f"{whole}s" if whole < 60 else f"{whole // 60}m{whole % 60:02d}s"


# -- sentences both chat apps (terminal and web) show ------------------------------------


def event_sentence(event: object) -> tuple[Literal["warning", "notice"], str] | None:
    """What both chat apps add to the conversation for a client event that is only a
    sentence (a rejected message, a refusal, a relay store that changed, relay seqs
    missing or refused again and again); None for every other event."""
    if isinstance(event, MessageRejected):
        return "warning", rejected_text(event.seq, event.rule, event.reason)
    if isinstance(event, RelayError):
        return "warning", refused_text(event.reason, event.code)
    if isinstance(event, StoreChanged):
        return "notice", store_changed_line(event)
    if isinstance(event, MessagesMissing):
        return "warning", messages_missing_line(event)
    if isinstance(event, RelayFailing):
        return "warning", relay_failing_line(event)
    return None


def rejected_text(seq: int, rule: str, reason: str) -> str:
    note = rejection_note(rule)
    return (
        f"rejected a message (relay seq {seq}): {reason} [rule: {rule}]. "
        "It was not shown and used none of your pad." + (f" {note}" if note else "")
    )


def gift_text(
    names: list[str], me: int, giver: int, grant: GrantPayload, refused: str | None
) -> tuple[Literal["notice", "warning"], str]:
    """The line for a grant: "alice gave bob 96 KiB of pad" (you, for this member), or a
    warning when this kit refused it. `names` must be safe to show."""

    def who(i: int) -> str:
        return "you" if i == me else (names[i] if i < len(names) else f"member {i}")

    text = gift_sentence(who(giver), who(grant.to), max(0, grant.end - grant.start), refused)
    return ("notice" if refused is None else "warning"), text


def refused_text(reason: str, code: int) -> str:
    return f"the relay refused: {reason} (code {code})"


def file_text(header: FileHeader, *, own: bool, unfinished: tuple[int, bool] | None = None) -> str:
    """The line for a file in the conversation. `unfinished`: (parts sealed, sent again
    in full later) for an own file whose parts were not all sealed."""
    size = format_size(header.total_size)
    if not own:
        return f"sends a file: {safe_file_name(header.name)} ({size})"
    if unfinished is None:
        return f"sent a file: {safe_file_name(header.name)} ({size})"
    sealed, sent_again = unfinished
    text = (
        f"did not finish sending a file: {safe_file_name(header.name)} ({size}), "
        f"{sealed} of {header.chunk_count} parts"
    )
    return text + ("; sent again in full later" if sent_again else "")
