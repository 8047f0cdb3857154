"""A key-value read that reaches a NATS replica which has not caught up yet is a hiccup
to wait out, not an internal error: two members of a new room joining at once, on a
NATS cluster with replicas, could otherwise be refused with ERROR 9 (seen in the fault
scenario). nats-py's key-value errors carry no `code`, which `transient` must survive."""

from __future__ import annotations

from collections.abc import Awaitable
from types import SimpleNamespace
from typing import Any, cast

import pytest
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError

from ghostline.relay.cluster.link import StorageUnavailable, transient
from ghostline.relay.cluster.registry import Registry


async def _as_asked(stream: str, asking: Awaitable[Any]) -> Any:
    """Link.racing while nothing waits: the call itself."""
    return await asking


def test_a_key_not_found_is_no_hiccup_and_does_not_break_the_check() -> None:
    assert transient(KeyNotFoundError()) is False


def test_a_busy_jetstream_is_a_hiccup() -> None:
    busy = APIError()
    busy.code = 503
    assert transient(busy) is True


class _LaggingRosters:
    """A rosters bucket where another connection's create came first, and whose reads
    reach a replica that does not hold it yet."""

    def __init__(self, create_raises: Exception) -> None:
        self.create_raises = create_raises
        self.gets = 0

    async def get(self, key: str) -> Any:
        self.gets += 1
        raise KeyNotFoundError()

    async def create(self, key: str, value: bytes) -> int:
        raise self.create_raises


@pytest.mark.parametrize(
    "create_raises",
    [KeyWrongLastSequenceError(), KeyNotFoundError()],
    ids=["create lost the race", "nats-py's own read inside create lagged"],
)
async def test_a_roster_registered_elsewhere_but_not_yet_readable_is_waited_for(
    create_raises: Exception,
) -> None:
    rosters = _LaggingRosters(create_raises)
    # _register uses only the bucket, through the link's `racing` (nothing waits here)
    link = cast(Any, SimpleNamespace(racing=_as_asked))
    unused = cast(Any, SimpleNamespace())
    registry = Registry(link, cast(Any, rosters), unused, unused, lambda room: True)
    with pytest.raises(StorageUnavailable) as raised:
        await registry._register(bytes(16), (bytes(32), bytes(32)))
    assert transient(raised.value)
    assert rosters.gets == 2  # looked, lost the race, looked again
