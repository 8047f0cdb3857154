"""A file offered on the web page waits on disk, not in memory: a real member, an
unstarted client (sealing works offline), a real upload file in the private spool."""

from __future__ import annotations

import stat
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ghostline.client import Client, RelayAddress
from ghostline.files import prepare_file
from ghostline.state.member import Member
from ghostline.web.session import WebSession
from ghostline.web.transfers import MAX_OFFERS
from helpers import make_kit_set

SIZE = 8 << 20


@pytest.fixture
async def session(tmp_path: Path) -> AsyncIterator[WebSession]:
    kits = make_kit_set(tmp_path / "kits", ["alice", "bob"], slice_len=SIZE * 2, auth_keys=600)
    member = Member.open(kits[0])
    client = Client(member, [RelayAddress.parse("127.0.0.1:9")])  # never started
    ids = iter(bytes([c]) for c in b"TUVWXYZ")  # each offer's transfer id, in turn
    web = WebSession(
        client, relay="127.0.0.1:9", transport="no TLS", clock=lambda: 1_700_000_000.0,
        random_bytes=lambda k: next(ids) * k,
    )  # fmt: skip
    await web.start(connect=False)
    yield web
    await web.stop()
    member.close()


def upload(session: WebSession, data: bytes) -> Path:
    path = session.transfers.new_upload()
    path.write_bytes(data)
    return path


async def test_an_offered_file_waits_in_a_private_file_not_in_memory(
    session: WebSession, tmp_path: Path
) -> None:
    data = bytes(range(256)) * (SIZE // 256)
    path = upload(session, data)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    tracemalloc.start()
    try:
        offer = await session.transfers.offer(path, "big.bin")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "refused" not in offer and offer["messages"] == 1 + SIZE // (64 << 10)
    # Hashing reads 1 MiB at a time; reading the file in took all of it and more.
    assert peak < SIZE // 2, f"offering an {SIZE} B file took {peak} B of memory"
    assert path.exists()  # the content waits there for the person to confirm

    await session.transfers.send(offer["id"])
    assert not path.exists()
    # What was sealed is what the whole file splits into.
    copy = tmp_path / "copy.bin"
    copy.write_bytes(data)
    expected = prepare_file(copy, transfer_id=b"T" * 8, sent_at=1_700_000_000, name="big.bin")
    sealed = [entry.payload for entry in session.member.history()]
    assert sealed == list(expected.payloads)


async def test_a_cancelled_or_refused_offer_is_deleted_at_once(session: WebSession) -> None:
    path = upload(session, b"x" * 1000)
    offer = await session.transfers.offer(path, "small.txt")
    session.transfers.cancel(offer["id"])
    assert not path.exists()
    huge = upload(session, b"y" * (SIZE * 2))  # more than alice's pad
    refused = await session.transfers.offer(huge, "huge.bin")
    assert "needs" in refused["refused"] and not huge.exists()


async def test_offers_waiting_are_bounded_and_gone_when_the_server_stops(
    session: WebSession,
) -> None:
    paths = []
    for i in range(MAX_OFFERS):
        paths.append(upload(session, b"z" * 100))
        await session.transfers.offer(paths[-1], f"f{i}")
    with pytest.raises(ValueError, match="waiting for you to send or cancel"):
        session.transfers.new_upload()
    spool = paths[0].parent
    await session.stop()
    assert not spool.exists()
