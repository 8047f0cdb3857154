"""`ghostline relay` as a real process: port lines, restart, SIGKILL, SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from relaytest_client import Group, RawClient, joined

from ghostline.pad.seal2 import open_sealed2, seal_with_kit2
from ghostline.protocol.extents import Extents
from ghostline.protocol.frames import Port
from helpers import MemoryReceiverView, make_kit_set, open_kits
from waiting import until


async def test_a_restarted_relay_still_has_its_rooms_and_messages(relay_process, tmp_path):
    store = tmp_path / "relay.sqlite"
    group = Group(3)
    first = relay_process(store)
    assert first.stderr_lines[0].startswith("ghostline relay: relay listening on 127.0.0.1:")
    assert first.stderr_lines[1].startswith("ghostline relay: presence listening on 127.0.0.1:")
    a = await joined(first.relay_port, group, 0)
    for counter in range(5):
        await a.publish(group.sealed(0, counter))
    assert [(await a.accepted())[0] for _ in range(5)] == [1, 2, 3, 4, 5]
    await a.close()
    assert first.terminate() == 0
    assert any("stopped" in line for line in first.stderr_lines)

    second = relay_process(store)
    b = await RawClient.connect(second.relay_port)
    assert await b.join(group, 1, resume_after=2) == 5
    assert [(await b.deliver())[0] for _ in range(3)] == [3, 4, 5]
    # the roster survived too
    impostor = Group(3, room=group.room)
    c = await RawClient.connect(second.relay_port)
    from ghostline.protocol.frames import ErrorCode, FrameType, Hello

    await c.send(FrameType.HELLO, Hello(group.room, 0, impostor.roster, 0).encode())
    await c.expect_error(ErrorCode.ROSTER_MISMATCH)
    # and numbering continues without a gap
    await b.publish(group.sealed(1, 0))
    assert (await b.accepted())[0] == 6
    await b.close()


async def test_a_relay_killed_mid_stream_loses_no_accepted_message(relay_process, tmp_path):
    store = tmp_path / "relay.sqlite"
    group = Group(3)
    proc = relay_process(store, "--publish-rate", "100000", "--publish-burst", "100000")
    publishers = [await joined(proc.relay_port, group, m) for m in range(3)]
    accepted: dict[int, set[int]] = {m: set() for m in range(3)}  # member -> seqs

    async def pump(member: int, client: RawClient) -> None:
        counter = 0
        with contextlib.suppress(EOFError, ConnectionError, TimeoutError, AssertionError):
            while True:
                for _ in range(20):
                    await client.publish(group.sealed(member, counter, bytes(200)))
                    counter += 1
                while True:
                    frame = await client.recv(2)
                    if frame.type == 0x84:
                        accepted[member].add(int.from_bytes(frame.body[:8], "big"))
                        if len(accepted[member]) % 20 == 0:
                            break

    tasks = [asyncio.ensure_future(pump(m, c)) for m, c in enumerate(publishers)]
    await until(lambda: sum(len(s) for s in accepted.values()) >= 1500, 60, "1500 accepted")
    proc.kill()
    await asyncio.gather(*tasks)
    seen = set().union(*accepted.values())
    assert len(seen) >= 1500

    again = relay_process(store)
    reader = await RawClient.connect(again.relay_port)
    head = await reader.join(group, 0)
    stored = [(await reader.deliver())[0] for _ in range(head)]
    assert stored == list(range(1, head + 1))  # gap-free
    assert seen <= set(stored), f"lost {sorted(seen - set(stored))[:10]}"


async def test_sigterm_answers_what_was_accepted_and_closes_connections(relay_process, tmp_path):
    proc = relay_process(tmp_path / "relay.sqlite")
    group = Group(2)
    a = await joined(proc.relay_port, group, 0)
    await a.publish(group.sealed(0, 0))
    assert (await a.accepted())[0] == 1
    assert proc.terminate() == 0
    await a.expect_closed()
    text = "".join(proc.stderr_lines)
    assert "event=connect" in text and "event=disconnect" in text
    assert "hello" not in text  # never payload bytes


@pytest.mark.parametrize("flag", ["--port", "--presence-port"])
def test_a_port_out_of_range_is_a_usage_error_not_a_traceback(flag, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "ghostline", "relay", flag, "99999",
         "--store", str(tmp_path / "relay.sqlite")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"Invalid value for '{flag}'" in done.stderr


async def test_welcome_names_the_store_and_keeps_its_id_across_restarts(relay_process, tmp_path):
    group = Group(2)
    first = relay_process(tmp_path / "relay.sqlite")
    a = await joined(first.relay_port, group, 0)
    p = await RawClient.connect(first.presence_port)
    await p.join(group, 1, port=Port.PRESENCE)
    assert len(a.store_id) == 16 and p.store_id == a.store_id
    await a.close()
    await p.close()
    first.kill()

    again = relay_process(tmp_path / "relay.sqlite")
    b = await joined(again.relay_port, group, 0)
    assert b.store_id == a.store_id
    await b.close()

    other = relay_process(tmp_path / "another.sqlite")
    c = await joined(other.relay_port, group, 0)
    assert c.store_id != a.store_id
    await c.close()


async def test_a_suite_2_message_from_a_format_2_kit_is_stored_and_delivered(
    relay_process, tmp_path
):
    # The relay takes (version, suite) = (1, 1) and (2, 2) alike (PROTOCOL.md section 8):
    # a real format-2 kit set seals, a real relay process stores and delivers, and the
    # recipient opens the very bytes that were published, live and on resume.
    paths = make_kit_set(tmp_path / "kits", 3, slice_len=4096, auth_keys=8, format=2)
    kits = open_kits(paths)
    try:
        keys = [Ed25519PrivateKey.from_private_bytes(k.header.signing_key) for k in kits]
        group = Group(3, room=kits[0].pad_id, keys=keys)
        sealed = seal_with_kit2(kits[0], 0, 0, b"suite two", free=Extents([(0, 4096)]))
        assert sealed[:2] == b"\x02\x02"
        proc = relay_process(tmp_path / "relay.sqlite")
        alice = await joined(proc.relay_port, group, 0)
        bob = await joined(proc.relay_port, group, 1)
        await alice.publish(sealed)
        assert await alice.accepted() == (1, 0)
        assert await bob.deliver() == (1, sealed)
        view = MemoryReceiverView(3, kits[0].header.slice_len)
        assert open_sealed2(kits[1], sealed, view).plaintext == b"suite two"
        carol = await RawClient.connect(proc.relay_port)
        assert await carol.join(group, 2) == 1
        assert await carol.deliver() == (1, sealed)  # stored, and replayed as stored
        for client in (alice, bob, carol):
            await client.close()
    finally:
        for kit in kits:
            kit.close()
