"""How much of a member's slice is left, and when to warn: the one home of the thresholds.

Pure. The client, the chat app and the `ghostline` commands all judge the pad with
`PadLeft.level`, so they warn at the same points; each UI words the warning itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..protocol.payload import PREFIX_LEN

# Warn when no more than these shares of the slice (bytes or keys) are left.
LOW_FRACTION = 0.10
CRITICAL_FRACTION = 0.01

# The smallest message: a text payload's prefix (kind, sent_at) and one byte of text.
# A slice with fewer bytes left can send nothing at all.
MIN_MESSAGE_BYTES = PREFIX_LEN + 1

PadLevel = Literal["ok", "low", "critical", "exhausted"]
# Worse levels sort later: a warning is due when the level moves right.
LEVELS: tuple[PadLevel, ...] = ("ok", "low", "critical", "exhausted")


@dataclass(frozen=True, slots=True)
class PadLeft:
    """How much of one member's slice of the pad is left."""

    bytes_left: int
    bytes_total: int
    msgs_left: int
    msgs_total: int

    @property
    def fraction_left(self) -> float:
        """The lower of the byte and message fractions: whichever runs out first."""
        by_bytes = self.bytes_left / self.bytes_total if self.bytes_total else 0.0
        by_msgs = self.msgs_left / self.msgs_total if self.msgs_total else 0.0
        return max(0.0, min(by_bytes, by_msgs))

    @property
    def level(self) -> PadLevel:
        if self.bytes_left < MIN_MESSAGE_BYTES or self.msgs_left <= 0:
            return "exhausted"
        fraction = self.fraction_left
        if fraction <= CRITICAL_FRACTION:
            return "critical"
        if fraction <= LOW_FRACTION:
            return "low"
        return "ok"

    def after(self, used_bytes: int, used_msgs: int) -> PadLeft:
        return PadLeft(
            max(0, self.bytes_left - used_bytes),
            self.bytes_total,
            max(0, self.msgs_left - used_msgs),
            self.msgs_total,
        )


def worse(a: PadLevel, b: PadLevel) -> bool:
    """Whether level `a` is worse than `b`."""
    return LEVELS.index(a) > LEVELS.index(b)
