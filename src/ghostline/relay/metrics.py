"""What the relay counts for its operator, and the Prometheus text format it is read in.

The hot path only adds to plain integers (once per commit or per connection, not per
frame where it can help it); `render` turns them, with the gauges the server reads at
that moment, into the text format (version 0.0.4) that Prometheus scrapes from
`/metrics` (`statushttp.py`). docs/DEPLOYMENT.md lists every metric.
"""

from __future__ import annotations

import os
import resource
import time
from bisect import bisect_left
from dataclasses import dataclass, field

# Upper bounds (seconds) of the store latency histogram: an fsync is a few ms on a good
# disk; a JetStream commit that waits out a leader election takes seconds.
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                 2.5, 5.0, 10.0, 15.0)  # fmt: skip
MAX_CAUSES = 64  # distinct refusal causes counted apart; the rest as "other"


@dataclass
class Histogram:
    bounds: tuple[float, ...] = STORE_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(STORE_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds


@dataclass
class Metrics:
    """Counters of one relay process (all only ever grow)."""

    publishes: int = 0  # PUBLISH frames taken for storing
    stored: int = 0  # of those, stored as new messages
    duplicates: int = 0  # answered with the seq they already had
    deliveries: int = 0  # live DELIVER frames sent (one per message per connection)
    replayed: int = 0  # DELIVER frames sent while replaying from a cursor
    store_failures: int = 0  # commits that failed (their publishes got ERROR 9)
    store_seconds: Histogram = field(default_factory=Histogram)
    refusals: dict[tuple[int, str], int] = field(default_factory=dict)  # (code, cause)
    jetstream: dict[str, int] = field(default_factory=dict)  # cluster: NATS trouble, by kind
    started: float = field(default_factory=time.time)

    def refused(self, code: int, cause: str) -> None:
        key = (code, cause)
        if key not in self.refusals and len(self.refusals) >= MAX_CAUSES:
            key = (code, "other")
        self.refusals[key] = self.refusals.get(key, 0) + 1

    def jetstream_trouble(self, kind: str) -> None:
        self.jetstream[kind] = self.jetstream.get(kind, 0) + 1


@dataclass(frozen=True)
class Gauges:
    """What the server reads at the moment of a scrape."""

    connections: dict[str, int]  # by port name, open (joined) or not
    joined: dict[str, int]  # by port name, past WELCOME
    rooms: int  # rooms with a connection on this node
    max_connections: int
    backend: str  # "sqlite" or "cluster"
    healthy: bool
    nats_connected: bool | None  # cluster only


def render(metrics: Metrics, gauges: Gauges) -> str:
    out: list[str] = []

    def family(name: str, kind: str, text: str, samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(f"{name}{labels} {_number(value)}" for labels, value in samples)

    g = "ghostline_relay_"
    family(g + "up", "gauge", "1 while the relay serves and its store answers, else 0.",
           [(_labels(backend=gauges.backend), 1 if gauges.healthy else 0)])  # fmt: skip
    family(g + "connections", "gauge", "Open connections, by port (before and after WELCOME).",
           [(_labels(port=p), n) for p, n in sorted(gauges.connections.items())])  # fmt: skip
    family(g + "members", "gauge", "Connections past WELCOME (authenticated), by port.",
           [(_labels(port=p), n) for p, n in sorted(gauges.joined.items())])  # fmt: skip
    family(g + "max_connections", "gauge", "--max-connections.",
           [("", gauges.max_connections)])  # fmt: skip
    family(g + "rooms", "gauge", "Rooms with at least one connection on this node.",
           [("", gauges.rooms)])  # fmt: skip
    family(g + "publishes_total", "counter", "PUBLISH frames taken for storing.",
           [("", metrics.publishes)])  # fmt: skip
    family(g + "stored_total", "counter", "Messages stored (new, not duplicates).",
           [("", metrics.stored)])  # fmt: skip
    family(g + "duplicates_total", "counter", "Resent messages answered with their seq.",
           [("", metrics.duplicates)])  # fmt: skip
    family(g + "deliveries_total", "counter", "Live DELIVER frames sent.",
           [("", metrics.deliveries)])  # fmt: skip
    family(g + "replayed_total", "counter", "DELIVER frames sent replaying from a cursor.",
           [("", metrics.replayed)])  # fmt: skip
    family(g + "refusals_total", "counter", "ERROR frames sent (and refused connections), "
           "by code and cause (the reason, numbers taken out).",
           [(_labels(code=str(code), cause=cause), n)
            for (code, cause), n in sorted(metrics.refusals.items())])  # fmt: skip
    family(g + "store_failures_total", "counter", "Commits that failed (ERROR 9).",
           [("", metrics.store_failures)])  # fmt: skip
    hist = metrics.store_seconds
    name = g + "store_seconds"
    out.append(f"# HELP {name} Time to store one commit (SQLite fsync, or JetStream ack).")
    out.append(f"# TYPE {name} histogram")
    running = 0
    for bound, count in zip((*hist.bounds, float("inf")), hist.counts, strict=True):
        running += count
        le = "+Inf" if bound == float("inf") else repr(bound)
        out.append(f'{name}_bucket{{le="{le}"}} {running}')
    out.append(f"{name}_sum {_number(hist.total)}")
    out.append(f"{name}_count {running}")
    if gauges.nats_connected is not None:
        family(g + "nats_connected", "gauge", "1 while the node's NATS connection is up.",
               [("", 1 if gauges.nats_connected else 0)])  # fmt: skip
        family(g + "jetstream_errors_total", "counter",
               "NATS and JetStream trouble, by kind: nats_error (a NATS client error), "
               "disconnected, stalled (a write waiting for NATS or a stream leader), "
               "failed (a write given up: ERROR 9).",
               [(_labels(kind=k), n) for k, n in sorted(metrics.jetstream.items())])  # fmt: skip
    out.extend(_process(metrics.started))
    return "\n".join(out) + "\n"


def _process(started: float) -> list[str]:
    """The standard process_* metrics, from /proc where there is one."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    lines = [
        "# TYPE process_cpu_seconds_total counter",
        f"process_cpu_seconds_total {_number(usage.ru_utime + usage.ru_stime)}",
        "# TYPE process_start_time_seconds gauge",
        f"process_start_time_seconds {_number(started)}",
        "# TYPE process_max_fds gauge",
        f"process_max_fds {soft}",
    ]
    try:
        fds = len(os.listdir("/proc/self/fd"))
        with open("/proc/self/statm") as statm:
            rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return lines
    lines += [
        "# TYPE process_open_fds gauge",
        f"process_open_fds {fds}",
        "# TYPE process_resident_memory_bytes gauge",
        f"process_resident_memory_bytes {rss}",
    ]
    return lines


def _labels(**labels: str) -> str:
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))
