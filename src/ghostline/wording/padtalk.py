"""What GhostLine says about pad moving between members (format-2 grants) and about
messages that fail their checks: the sentences `listen`, `history`, the chat app and
the web page share. Names passed in must already be safe to show (`display.quote` or
`one_line`)."""

from __future__ import annotations

from typing import Literal

from ..protocol.payload import GrantPayload
from ..protocol.rules import Rule
from ..units import format_size


def gift_sentence(giver: str, to: str, size: int, refused: str | None = None) -> str:
    """ "alice gave bob 96 KiB of pad", or, for a grant this kit refused (`refused`:
    the rule it broke), what that means here."""
    return f"{giver} {gift_predicate(to, size, refused)}"


def gift_predicate(to: str, size: int, refused: str | None = None) -> str:
    """`gift_sentence` after the giver's name: "gave bob 96 KiB of pad"."""
    if refused is None:
        return f"gave {to} {format_size(size)} of pad"
    return (
        f"sent {to} a grant of pad that this kit refuses ({refused}): it moves nothing "
        f"here, and what {to} seals in that pad will be rejected here"
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


_NOTES = {
    Rule.BAD_TAG: (
        "Its authentication check failed: someone may be forging messages, or the "
        "sender's kit or yours is damaged (a damaged pad fails every message that uses "
        "it). `ghostline pad info` counts these per member."
    ),
    Rule.OFFSET_OUT_OF_RANGE: (
        "It uses pad that, as far as this kit knows, its sender does not hold: pad it "
        "gave away, or pad given to it in a grant this kit did not accept."
    ),
    Rule.BAD_PADDING: "Its tag is genuine but the sender's software padded it wrongly.",
}


def rejection_note(rule: str) -> str | None:
    """What a rejection by `rule` may mean, beyond its reason; None when it says enough."""
    return _NOTES.get(rule)


def failed_checks(count: int) -> str:
    """A member's failed-verification count, as the member lists show it."""
    return f"{count:,} failed check{'s' if count != 1 else ''} (forged, or a damaged kit)"
