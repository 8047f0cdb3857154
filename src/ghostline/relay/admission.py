"""What the relay lets anyone do, and how much of it the log tells.

Connections are counted in total and per client address; on a TLS port they count
from the moment they are accepted, before their handshake (listen.py). New rooms are
rationed per address (a token bucket), so that one address cannot fill the room table.
Lines anyone can cause at will (connects, refusals, and the joins and leaves of anyone
who made a room of their own keys) go through a `LogLimiter`.

"Per address" is per IPv4 address, and per IPv6 /64: one subscriber commonly holds a
whole /64, so counting each of its 2^64 addresses apart would be no limit at all.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from .config import RelayLimits
from .logfmt import LogLimiter, log_event
from .metrics import Metrics
from .ratelimit import TokenBucket

log = logging.getLogger("ghostline.relay")
_NUMBERS = re.compile(r"0x[0-9a-fA-F]+|\d+")
# Log budgets kept at once: one per refusal cause, and one per address for joins and
# leaves (past it, new keys share one budget).
_LOG_KEYS = 4096


class _Connection(Protocol):
    source: str  # `source_of` its address


C = TypeVar("C", bound=_Connection)


def cause(reason: str) -> str:
    """A refusal's reason with its numbers taken out: one log budget per kind of reason."""
    return _NUMBERS.sub("N", reason)


def source_of(address: str) -> str:
    """What the per-address limits count: an IPv4 address as it is (an IPv4-mapped IPv6
    address too), an IPv6 address by its /64 (`2001:db8:1:2::/64`)."""
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address.split("%", 1)[0])
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))


class Admission(Generic[C]):
    def __init__(
        self, limits: RelayLimits, now: Callable[[], float], metrics: Metrics | None = None
    ) -> None:
        self.limits = limits
        self.now = now
        self.metrics = metrics or Metrics()
        self.connections: set[C] = set()
        self._per_address: dict[str, int] = {}
        self._early = 0  # accepted on a TLS port, handshake not finished
        self._early_per_address: dict[str, int] = {}
        self._room_buckets: dict[str, TokenBucket] = {}
        self._registering: dict[bytes, int] = {}  # new room -> its joins registering it now
        self._log = LogLimiter(max_keys=_LOG_KEYS)

    # --- connections -------------------------------------------------------------------

    def admit(self, conn: C) -> str | None:
        """Count a new connection; returns why it is refused, or None."""
        self.connections.add(conn)
        count = self._per_address.get(conn.source, 0) + 1
        self._per_address[conn.source] = count
        if len(self.connections) > self.limits.max_connections:
            return "relay full: too many connections"
        if count > self.limits.max_connections_per_address:
            return "relay full: too many connections from your address"
        return None

    def forget(self, conn: C) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            _decrement(self._per_address, conn.source)

    def admit_early(self, address: str) -> str | None:
        """Count a connection before its TLS handshake (listen.TlsGate)."""
        address = source_of(address)
        limits = self.limits
        if len(self.connections) + self._early >= limits.max_connections:
            return "relay full: too many connections"
        per = self._per_address.get(address, 0) + self._early_per_address.get(address, 0)
        if per >= limits.max_connections_per_address:
            return "relay full: too many connections from your address"
        self._early += 1
        self._early_per_address[address] = self._early_per_address.get(address, 0) + 1
        return None

    def forget_early(self, address: str) -> None:
        self._early -= 1
        _decrement(self._early_per_address, source_of(address))

    def refused_early(self, port_name: str, peer: str, reason: str, code: int = 0) -> None:
        """A connection closed before its protocol began (`code`: the ERROR it was
        sent, 0 for none)."""
        self.metrics.refused(code, cause(reason))
        self.log(
            f"refused reason={cause(reason)}", "refused", level=logging.WARNING,
            port=port_name, peer=peer, reason=reason,
        )  # fmt: skip

    # --- rooms -------------------------------------------------------------------------

    def start_new_room(self, address: str, room: bytes) -> bool:
        """Whether `address` (a `source_of`) may register `room`, new to the relay, now.
        The joins of one new room under way at the same moment register it once, so only
        the first takes a token of its address's burst; each join that was let in calls
        `end_new_room` when its registration is over (done or failed)."""
        if room not in self._registering and not self._take_room_token(address):
            return False
        self._registering[room] = self._registering.get(room, 0) + 1
        return True

    def end_new_room(self, room: bytes) -> None:
        left = self._registering.pop(room) - 1
        if left:
            self._registering[room] = left

    def _take_room_token(self, address: str) -> bool:
        now = self.now()
        bucket = self._room_buckets.get(address)
        if bucket is None:
            limits = self.limits
            bucket = TokenBucket(limits.new_room_rate, limits.new_room_burst, now)
            self._room_buckets[address] = bucket
        return bucket.take(now)

    # --- the log -----------------------------------------------------------------------

    def log(
        self, key: str | None, event: str, *, level: int = logging.INFO, **fields: object
    ) -> None:
        """Log a line within the limits of `key` (None: no limit); the next line of a key
        counts those held back (`suppressed=N`)."""
        held = 0 if key is None else self._log.allow(key, self.now())
        if held is not None:
            log_event(log, event, level=level, **fields, suppressed=held or None)

    def sweep(self) -> None:
        """Now and then: count what the log held back, forget addresses' full buckets."""
        now = self.now()
        for key, count in self._log.overdue(now):
            log_event(log, "suppressed", level=logging.WARNING, lines=key, count=count)
        for address, bucket in list(self._room_buckets.items()):
            if bucket.tokens + (now - bucket.stamp) * bucket.rate >= bucket.burst:
                del self._room_buckets[address]


def _decrement(counts: dict[str, int], key: str) -> None:
    count = counts.get(key, 1) - 1
    if count > 0:
        counts[key] = count
    else:
        counts.pop(key, None)
