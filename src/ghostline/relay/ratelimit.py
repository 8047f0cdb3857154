"""The relay's rate limits as token buckets (publishes per connection, new rooms per
address). Pure: the time comes from the caller."""

from __future__ import annotations


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up. `now` comes from the caller."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> bool:
        tokens = self.tokens + (now - self.stamp) * self.rate
        self.stamp = now
        if tokens > self.burst:
            tokens = self.burst
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True

    def whole(self, now: float) -> int:
        """How many tokens `take` would give now, one after another (none taken yet:
        `spend` takes them). For a loop that counts instead of calling `take` each time."""
        tokens = self.tokens + (now - self.stamp) * self.rate
        self.tokens = tokens if tokens < self.burst else self.burst
        self.stamp = now
        return int(self.tokens)

    def spend(self, count: int) -> None:
        """Take `count` tokens (at most what `whole` just said there are)."""
        self.tokens -= count
