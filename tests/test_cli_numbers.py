"""Numbers on the command line are finite and in range, or the command is a usage error
(exit 2) that opens nothing: no relay store is created, no message sealed."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ghostline.cli import cli


@pytest.mark.parametrize(
    "option",
    [
        ["--max-rooms", "-3"],
        ["--handshake-timeout", "-1"],
        ["--handshake-timeout", "nan"],
        ["--idle-timeout", "inf"],
        ["--max-frame", "100"],
        ["--retain-days", "0"],
        ["--publish-rate", "nan"],
        ["--cluster-replicas", "0"],
    ],
)
def test_a_relay_option_out_of_range_is_a_usage_error_before_the_store_opens(
    tmp_path: Path, option: list[str]
) -> None:
    store = tmp_path / "relay.sqlite"
    done = CliRunner().invoke(cli, ["relay", "--store", str(store), "--port", "0", *option])
    assert done.exit_code == 2, done.output
    assert option[0] in done.output
    assert not store.exists()


@pytest.mark.parametrize("timeout", ["nan", "inf", "-1", "0"])
def test_send_with_a_timeout_that_is_not_a_time_seals_nothing(
    kit_set, timeout: str, ghostline_home: Path
) -> None:
    alice, _ = kit_set()
    done = CliRunner().invoke(
        cli, ["send", str(alice), "--relay", "127.0.0.1:9", "--timeout", timeout, "hello"]
    )
    assert done.exit_code == 2, done.output
    assert "--timeout" in done.output
    assert not any(ghostline_home.rglob("*.sqlite")), "the kit's state was opened"
