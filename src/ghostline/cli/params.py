"""Click types for numbers a person types: finite, in range, or a usage error (exit 2).

click's FloatRange lets `nan` through (every comparison with NaN is false) and `inf`
through an open upper end; a timeout of `nan` seconds then reads as a failure of the
relay. These refuse both before anything is opened.
"""

from __future__ import annotations

import math
from typing import Any

import click


class Number(click.FloatRange):
    """A finite float within [min, max] (either end may be open with min_open/max_open)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if isinstance(number, float) and not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def seconds(minimum: float = 0.0, *, open_min: bool = True) -> Number:
    """A positive duration (0 allowed with open_min=False)."""
    return Number(min=minimum, min_open=open_min)


def whole(minimum: int = 1, maximum: int | None = None) -> click.IntRange:
    return click.IntRange(min=minimum, max=maximum)
