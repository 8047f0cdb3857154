"""End to end: a real relay process and real `ghostline send/listen/history` processes.

- three members exchange 1,000 messages: each delivered exactly once to each other
  member, in per-sender order, while one member is offline for a while and catches up,
  and the relay is SIGKILLed and restarted in the middle;
- a sender SIGKILLed after sealing but before ACCEPTED resends the same bytes on restart,
  and receivers show the message once;
- a frame tampered in flight is rejected (bad_tag) and later messages still arrive;
- `send` with an exhausted pad fails with one line and consumes nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    Listener,
    Sender,
    ThreadedProxy,
    ghostline,
    history,
)

from ghostline.frameproxy import Tamperer
from ghostline.protocol.frames import Frame, FrameType
from helpers import RelayProcess, kits_by_name, make_kit_set
from waiting import wait_until

NAMES = ["alice", "bob", "carol"]
Cleanup = list[Callable[[], object]]


def text(name: str, i: int) -> str:
    return f"{name} says {i:04d}"


def check_order_and_uniqueness(messages: list[dict[str, Any]]) -> None:
    """No (sender, counter) twice; each sender's messages in increasing counter and text."""
    keys = [(m["sender"], m["counter"]) for m in messages]
    dupes = [k for k, n in Counter(keys).items() if n > 1]
    assert not dupes, f"shown more than once: {dupes[:5]}"
    by_sender: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in messages:
        by_sender[m["sender"]].append(m)
    for sender, ms in by_sender.items():
        counters = [m["counter"] for m in ms]
        assert counters == sorted(counters), f"{sender}'s messages out of order"
        assert [m["text"] for m in ms] == sorted(m["text"] for m in ms)


def test_three_members_exchange_1000_messages_through_an_outage_and_a_relay_restart(
    tmp_path: Path, home: Path, cleanup: Cleanup
) -> None:
    kits = kits_by_name(make_kit_set(tmp_path / "kits", NAMES, slice_len=128 * 1024, auth_keys=512))
    relay = RelayProcess(tmp_path / "relay.sqlite")
    cleanup.append(lambda: relay.kill())
    args = relay.relay_args()
    plan = {"alice": 400, "bob": 400, "carol": 200}  # 1,000 messages
    expected = {n: [text(n, i) for i in range(count)] for n, count in plan.items()}

    listeners = {n: Listener(kits[n], args, home) for n in NAMES}
    for lst in listeners.values():
        cleanup.append(lst.kill)
    carol_runs = [listeners["carol"]]
    senders = {n: Sender(kits[n], args, home) for n in NAMES}
    for s in senders.values():
        cleanup.append(s.kill)

    # Phase 1: everyone online. 150 + 150 + 100 messages.
    senders["alice"].feed(expected["alice"][:150])
    senders["bob"].feed(expected["bob"][:150])
    senders["carol"].feed(expected["carol"][:100])
    assert senders["carol"].finish() == 0, senders["carol"].stderr.lines
    listeners["carol"].wait_for(300)
    listeners["alice"].wait_for(250)
    listeners["bob"].wait_for(250)

    # Phase 2: Carol goes offline (her listener crashes); the others go on; the relay
    # is SIGKILLed with messages in flight and restarted on the same store and ports.
    listeners["carol"].kill()
    senders["alice"].feed(expected["alice"][150:225])
    senders["bob"].feed(expected["bob"][150:225])
    listeners["alice"].wait_for(250 + 75)
    senders["alice"].feed(expected["alice"][225:300])
    senders["bob"].feed(expected["bob"][225:300])
    relay = relay.restart()
    cleanup.append(lambda: relay.kill())
    listeners["alice"].wait_for(250 + 150)
    listeners["bob"].wait_for(250 + 150)

    # Phase 3: Carol comes back, catches up, and sends again; the last 300 messages.
    carol = Listener(kits["carol"], args, home)
    cleanup.append(carol.kill)
    carol_runs.append(carol)
    caught_up = carol.wait_for(300)
    phase2 = {text(n, i) for n in ("alice", "bob") for i in range(150, 300)}
    assert phase2 <= {m["text"] for m in caught_up}, "Carol did not catch up"
    senders["carol"] = Sender(kits["carol"], args, home)
    cleanup.append(senders["carol"].kill)
    senders["carol"].feed(expected["carol"][100:])
    senders["alice"].feed(expected["alice"][300:])
    senders["bob"].feed(expected["bob"][300:])
    for name, sender in senders.items():
        assert sender.finish() == 0, (name, sender.stderr.lines[-5:])

    listeners["alice"].wait_for(plan["bob"] + plan["carol"])
    listeners["bob"].wait_for(plan["alice"] + plan["carol"])
    carol.wait_for(plan["alice"] + plan["bob"] - 300)
    for lst in [*listeners.values(), carol]:
        lst.kill()

    for name in NAMES:
        others = {n: expected[n] for n in NAMES if n != name}
        runs = carol_runs if name == "carol" else [listeners[name]]
        shown = [m for run in runs for m in run.messages]
        check_order_and_uniqueness(shown)
        for sender, texts in others.items():
            assert [m["text"] for m in shown if m["sender"] == sender] == texts
        assert all(
            {"sender", "sender_index", "counter", "sent_at", "seq", "text"} <= m.keys()
            for m in shown
        )
        for run in runs:
            assert not [line for line in run.stderr.lines if "rejected" in line]
        if name != "carol":  # it lived through the relay restart and reconnected
            assert any("reconnecting" in line for line in listeners[name].stderr.lines)
        # The durable history agrees: every message recorded exactly once, in order.
        received = [h for h in history(kits[name], home) if h["state"] == "received"]
        check_order_and_uniqueness(received)
        for sender, texts in others.items():
            assert [h["text"] for h in received if h["sender"] == sender] == texts


def _hold(kind: int, direction: str, sink: list[bytes]) -> Callable[[str, Frame], bytes | None]:
    """A proxy hook that records and swallows every frame of `kind` going `direction`."""

    def hook(d: str, frame: Frame) -> bytes | None:
        if d == direction and frame.type == kind:
            sink.append(frame.body)
            return b""
        return None

    return hook


@pytest.mark.parametrize("lost", ["publish", "accepted"])
def test_a_sender_killed_before_accepted_resends_the_same_bytes_and_it_shows_once(
    lost: str, tmp_path: Path, home: Path, cleanup: Cleanup
) -> None:
    """`publish`: the PUBLISH never reached the relay. `accepted`: the relay stored it but
    the ACCEPTED never came back. Either way the sealed message is durable in the outbox."""
    kits = kits_by_name(make_kit_set(tmp_path / "kits", NAMES))
    relay = RelayProcess(tmp_path / "relay.sqlite")
    cleanup.append(relay.kill)
    bob = Listener(kits["bob"], relay.relay_args(), home)
    cleanup.append(bob.kill)
    published: list[bytes] = []
    swallowed: list[bytes] = []
    if lost == "publish":
        hook = _hold(FrameType.PUBLISH, "up", published)
    else:
        swallow_accepted = _hold(FrameType.ACCEPTED, "down", swallowed)

        def hook(d: str, frame: Frame) -> bytes | None:
            if d == "up" and frame.type == FrameType.PUBLISH:
                published.append(frame.body)
            return swallow_accepted(d, frame)

    proxy = ThreadedProxy(relay.relay_port, hook)
    cleanup.append(proxy.close)
    first = Sender(kits["alice"], relay.relay_args(proxy.port), home)
    cleanup.append(first.kill)
    first.feed(["the plan is on"])
    wait_until(lambda: bool(published) and (lost == "publish" or bool(swallowed)), 20, "a PUBLISH")
    first.kill()  # SIGKILL: sealed and sent, never ACCEPTED

    outbox = [h for h in history(kits["alice"], home) if h["sender"] == "alice"]
    assert [(h["counter"], h["state"], h["text"]) for h in outbox] == [
        (0, "sealed", "the plan is on")
    ]

    # Restart: flush the outbox through a proxy that only watches.
    resent: list[bytes] = []

    def watch(d: str, frame: Frame) -> bytes | None:
        if d == "up" and frame.type == FrameType.PUBLISH:
            resent.append(frame.body)
        return None

    watcher = ThreadedProxy(relay.relay_port, watch)
    cleanup.append(watcher.close)
    done = ghostline(
        "send", str(kits["alice"]), "--flush", *relay.relay_args(watcher.port), home=home
    )
    assert done.returncode == 0, done.stderr
    assert resent == published[:1], "the restarted sender did not resend the same bytes"
    assert [h["state"] for h in history(kits["alice"], home) if h["sender"] == "alice"] != [
        "sealed"
    ]

    # A later message proves the order of arrival; the resent one is shown exactly once.
    done = ghostline(
        "send", str(kits["alice"]), "after the restart", *relay.relay_args(), home=home
    )
    assert done.returncode == 0, done.stderr
    # bob shows messages in relay order: a duplicate of the first would come before it.
    wait_until(lambda: "after the restart" in bob.texts(), 30, "the later message at bob")
    bob.kill()
    assert bob.texts() == ["the plan is on", "after the restart"]
    assert [m["seq"] for m in bob.messages] == [1, 2]


def test_a_frame_tampered_in_flight_is_rejected_and_later_messages_arrive(
    tmp_path: Path, home: Path, cleanup: Cleanup
) -> None:
    kits = kits_by_name(make_kit_set(tmp_path / "kits", NAMES))
    relay = RelayProcess(tmp_path / "relay.sqlite")
    cleanup.append(relay.kill)
    tamperer = Tamperer()
    tamperer.armed = 1
    proxy = ThreadedProxy(relay.relay_port, tamperer)
    cleanup.append(proxy.close)
    bob = Listener(kits["bob"], relay.relay_args(proxy.port), home, "--count", "2")
    cleanup.append(bob.kill)
    sender = Sender(kits["alice"], relay.relay_args(), home)
    cleanup.append(sender.kill)
    sender.feed(["forged on the wire", "second", "third"])
    assert sender.finish() == 0
    assert bob.proc.wait(30) == 0
    bob.kill()
    assert bob.texts() == ["second", "third"]
    rejected = [line for line in bob.stderr.lines if "rejected" in line]
    assert len(rejected) == 1 and "bad_tag" in rejected[0] and "seq 1" in rejected[0]
    assert not any("Traceback" in line for line in bob.stderr.lines)


def test_send_with_an_exhausted_pad_fails_in_one_line_and_consumes_nothing(
    tmp_path: Path, home: Path, cleanup: Cleanup
) -> None:
    kits = kits_by_name(make_kit_set(tmp_path / "kits", NAMES, slice_len=4096, auth_keys=2))
    relay = RelayProcess(tmp_path / "relay.sqlite")
    cleanup.append(relay.kill)
    for word in ("one", "two"):
        done = ghostline("send", str(kits["alice"]), word, *relay.relay_args(), home=home)
        assert done.returncode == 0, done.stderr
    relay.kill()

    def state() -> tuple[str, list[dict[str, Any]]]:
        return hashlib.sha256(kits["alice"].read_bytes()).hexdigest(), history(kits["alice"], home)

    before = state()
    # The relay is gone: exhaustion is found before any connection is tried.
    done = ghostline("send", str(kits["alice"]), "three", *relay.relay_args(), home=home)
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    assert lines[0].startswith("ghostline: error: ") and "no one-time keys left" in lines[0]
    assert len(lines) == 2 and lines[1].startswith("ghostline: hint: ")
    assert done.stdout == ""
    assert state() == before


def test_listen_with_a_count_leaves_the_messages_it_does_not_show_for_the_next_listen(
    tmp_path: Path, home: Path, cleanup: list[Callable[[], object]]
) -> None:
    kits = kits_by_name(make_kit_set(tmp_path / "kits", NAMES))
    relay = RelayProcess(tmp_path / "relay.sqlite")
    cleanup.append(relay.kill)
    lines = "".join(f"note {i}\n" for i in range(4))
    sent = ghostline(
        "send",
        str(kits["alice"]),
        "-",
        "--lines",
        "-q",
        *relay.relay_args(),
        home=home,
        input=lines,
    )
    assert sent.returncode == 0, sent.stderr

    def listen(count: int) -> list[str]:
        done = ghostline(
            "listen",
            str(kits["bob"]),
            "--json",
            "--count",
            str(count),
            "--timeout",
            "20",
            "-q",
            *relay.relay_args(),
            home=home,
        )
        assert done.returncode == 0, done.stderr
        return [json.loads(line)["text"] for line in done.stdout.splitlines()]

    assert listen(1) == ["note 0"]
    assert listen(3) == ["note 1", "note 2", "note 3"]
