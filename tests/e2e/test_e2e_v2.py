"""End to end with format-2 kits (the default of `pad new`) over a real relay: giving
pad by hand and automatically, every member seeing it, a damaged pad caught and
counted, a damaged header refused by every command."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e_support import Listener, Sender, ghostline
from test_e2e_errors import one_line_error

from ghostline.pad.kit import Kit
from helpers import RelayProcess
from waiting import wait_until

NAMES = ["alice", "bob", "carol"]


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    process = RelayProcess(tmp_path / "relay.sqlite")
    yield process
    process.kill()


def new_kits(tmp_path: Path, names: list[str], size: str) -> dict[str, Path]:
    done = ghostline(
        "pad", "new", "--members", ",".join(names), "--size", size, "--out",
        str(tmp_path / "kits"), home=tmp_path / "maker",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return {name: tmp_path / "kits" / f"{name}.ghostkit" for name in names}


def test_a_grant_by_hand_reaches_everyone_and_the_grantee_sends_with_it(
    tmp_path: Path, relay: RelayProcess, cleanup: list[Callable[[], object]]
) -> None:
    kits = new_kits(tmp_path, NAMES, "96KiB")
    homes = {name: tmp_path / name for name in NAMES}
    with Kit.open(kits["alice"], writable=False) as kit:
        assert kit.format == 2 and kit.header.slice_len == 32 * 1024
    bob = Listener(kits["bob"], relay.relay_args(), homes["bob"], "--no-auto-give")
    carol = Listener(kits["carol"], relay.relay_args(), homes["carol"], "--no-auto-give")
    cleanup += [bob.kill, carol.kill]
    done = ghostline(
        "pad", "give", str(kits["alice"]), "bob", "4KiB", "--yes", *relay.relay_args(),
        home=homes["alice"],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "ghostline: you gave bob 4 KiB of pad" in done.stderr
    for listener in (bob, carol):
        (grant,) = listener.wait_for(1)
        assert (grant["kind"], grant["sender"], grant["to"], grant["size"]) == (
            "grant", "alice", "bob", 4096,
        )  # fmt: skip
        assert grant["refused"] is None
    # Bob's next message goes into the pad alice gave him (it lies below his slice),
    # and carol, who saw the grant, accepts it.
    done = ghostline("send", str(kits["bob"]), "thanks", *relay.relay_args(), home=homes["bob"])
    assert done.returncode == 0, done.stderr
    assert [m.get("text") for m in carol.wait_for(2)] == [None, "thanks"]
    done = ghostline(
        "listen", str(kits["alice"]), *relay.relay_args(), "--count", "1", "--timeout", "20",
        "--json", home=homes["alice"],
    )  # fmt: skip
    assert json.loads(done.stdout)["text"] == "thanks", done.stderr
    history = ghostline("history", str(kits["alice"]), home=homes["alice"]).stdout
    assert "] alice gave bob 4 KiB of pad\n" in history
    info = json.loads(
        ghostline("pad", "info", str(kits["carol"]), "--json", home=homes["carol"]).stdout
    )
    assert [m["pad_total"] for m in info["members"]] == [28 * 1024, 36 * 1024, 32 * 1024]


def test_a_listening_member_gives_to_a_talker_running_low_who_then_sends_past_its_slice(
    tmp_path: Path, relay: RelayProcess, cleanup: list[Callable[[], object]]
) -> None:
    kits = new_kits(tmp_path, ["alice", "bob"], "16KiB")  # 8 KiB each
    homes = {name: tmp_path / name for name in ("alice", "bob")}
    bob = Listener(kits["bob"], relay.relay_args(), homes["bob"])
    alice = Listener(kits["alice"], relay.relay_args(), homes["alice"])
    sender = Sender(kits["alice"], relay.relay_args(), homes["alice"])
    cleanup += [bob.kill, alice.kill, sender.kill]
    line = "x" * 100  # 105-byte payloads: 128 bytes of pad each
    sender.feed([f"{line} {i}" for i in range(40)])  # 5 KiB of alice's 8
    bob.wait_for(40)
    wait_until(
        lambda: any("you gave alice" in x for x in bob.stderr.lines),
        30,
        f"bob to give (stderr: {bob.stderr.lines[-5:]})",
    )
    assert any("(automatically: alice was running low)" in x for x in bob.stderr.lines)
    wait_until(
        lambda: any(m["kind"] == "grant" for m in alice.messages),
        30,
        f"alice to accept the grant (stderr: {alice.stderr.lines[-5:]})",
    )
    (grant,) = [m for m in alice.messages if m["kind"] == "grant"]
    assert (grant["sender"], grant["to"]) == ("bob", "alice") and grant["size"] > 0
    sender.feed([f"{line} {i}" for i in range(40, 80)])  # 10 KiB in all: past her 8
    assert sender.finish() == 0, sender.stderr.lines
    got = bob.wait_for(80)
    assert [m["text"] for m in got] == [f"{line} {i}" for i in range(80)]


def test_a_flipped_bit_in_the_receivers_pad_is_rejected_named_and_counted(
    tmp_path: Path, relay: RelayProcess
) -> None:
    kits = new_kits(tmp_path, ["alice", "bob"], "16KiB")
    homes = {name: tmp_path / name for name in ("alice", "bob")}
    with Kit.open(kits["bob"], writable=False) as kit:
        at = kit.layout.base + 5  # the group pad's first bytes: alice's first message
    raw = bytearray(kits["bob"].read_bytes())
    raw[at] ^= 0x10
    kits["bob"].write_bytes(bytes(raw))
    for text in ("pay 100", "did that arrive?"):
        done = ghostline("send", str(kits["alice"]), text, *relay.relay_args(), home=homes["alice"])
        assert done.returncode == 0, done.stderr
    done = ghostline(
        "listen", str(kits["bob"]), *relay.relay_args(), "--json", "--count", "1",
        "--timeout", "20", home=homes["bob"],
    )  # fmt: skip
    # The first is not shown; the second is, and its commit writes the failed count.
    assert [json.loads(x)["text"] for x in done.stdout.splitlines()] == ["did that arrive?"]
    assert "rejected message seq 1 (bad_tag)" in done.stderr
    assert "the sender's kit or yours is damaged" in done.stderr
    info = json.loads(
        ghostline("pad", "info", str(kits["bob"]), "--json", home=homes["bob"]).stdout
    )
    assert [m["failed_verifications"] for m in info["members"]] == [1, 0], done.stderr
    text = ghostline("pad", "info", str(kits["bob"]), home=homes["bob"]).stdout
    assert "Failed checks: alice 1" in text


def test_a_damaged_format_2_header_is_refused_by_every_command_naming_the_kit(
    tmp_path: Path, relay: RelayProcess
) -> None:
    kits = new_kits(tmp_path, ["alice", "bob"], "16KiB")
    alice, home = str(kits["alice"]), tmp_path / "alice"
    raw = bytearray(kits["alice"].read_bytes())
    raw[raw.index(b'"pad_id":"') + 12] ^= 0x01  # one bit of one hex digit of pad_id
    kits["alice"].write_bytes(bytes(raw))
    for args in (
        ["send", alice, "hello", *relay.relay_args()],
        ["listen", alice, *relay.relay_args(), "--timeout", "1"],
        ["history", alice],
        ["pad", "info", alice],
        ["pad", "recover", alice, "--yes"],
        ["pad", "give", alice, "bob", "1KiB", "--yes", *relay.relay_args()],
        ["chat", alice, *relay.relay_args()],
        ["web", alice, *relay.relay_args(), "--no-browser"],
    ):
        done = ghostline(*args, home=home)
        assert done.returncode == 1, (args, done.stderr)
        one_line_error(done.stderr, alice, "this kit is damaged", "checksum")
    assert kits["alice"].read_bytes() == bytes(raw)
