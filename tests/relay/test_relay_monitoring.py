"""What an operator reads and does while a relay runs (issue 12, "Operating it"), with
real `ghostline relay` processes: /health and /metrics, `ghostline relay status`, a
certificate reloaded on SIGHUP, log times in UTC, the file-descriptor limit, and every
log event documented."""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from relaytest_client import Group, RawClient, joined

from ghostline.cli.relayops import parse_metrics
from helpers import self_signed_certificate
from waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
METRICS_LINE = re.compile(r"health and metrics on http://127\.0\.0\.1:(\d+)/health")
PIN_LINE = "ghostline relay: TLS certificate pin (for --tls-pin): "


def metrics_port(relay) -> int:
    for line in list(relay.stderr_lines):
        if match := METRICS_LINE.search(line):
            return int(match.group(1))
    raise AssertionError("no metrics line:\n" + "".join(relay.stderr_lines))


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    found = [v for n, lb, v in parse_metrics(text) if n == name and lb == labels]
    assert len(found) == 1, (name, labels, found)
    return found[0]


async def traffic(port: int) -> None:
    """A group of three: 5 messages from member 0, one resent, one refusal."""
    group = Group(3)
    members = [await joined(port, group, i) for i in range(3)]
    for counter in range(5):
        await members[0].publish(group.sealed(0, counter))
        await members[0].accepted()
    await members[0].publish(group.sealed(0, 2))  # a resend: answered with its seq
    await members[0].accepted()
    for other in members[1:]:
        for _ in range(5):
            await other.deliver()
    late = await joined(port, group, 1)  # replays the 5 from its cursor 0
    for _ in range(5):
        await late.deliver()
    bad = await RawClient.connect(port)
    await bad.send_raw(b"\x00\x00\x00\x00")
    await bad.expect_closed()
    for client in [*members, late]:
        await client.close()


def test_metrics_count_what_the_relay_did_and_health_says_ok(relay_process, tmp_path):
    relay = relay_process(tmp_path / "relay.sqlite", "--metrics-port", "0")
    port = metrics_port(relay)
    assert get(port, "/health") == (200, "ok\n")
    asyncio.run(traffic(relay.relay_port))
    status, text = get(port, "/metrics")
    assert status == 200
    g = "ghostline_relay_"
    assert sample(text, g + "up", backend="sqlite") == 1
    assert sample(text, g + "publishes_total") == 6
    assert sample(text, g + "stored_total") == 5
    assert sample(text, g + "duplicates_total") == 1
    assert sample(text, g + "deliveries_total") == 10  # 5 messages to 2 other members
    assert sample(text, g + "replayed_total") == 5
    assert sample(text, g + "refusals_total", code="1", cause="empty frame (length N)") == 1
    assert sample(text, g + "store_seconds_count") >= 1
    assert sample(text, g + "max_connections") == 4096
    assert sample(text, "process_open_fds") > 0
    assert get(port, "/nothing")[0] == 404

    done = subprocess.run(
        [sys.executable, "-m", "ghostline", "relay", "status", "--metrics-port", str(port)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"relay at http://127.0.0.1:{port}: healthy" in done.stdout
    assert "6 published, 5 stored, 1 duplicates, 10 delivered live, 5 replayed" in done.stdout

    relay.kill()
    gone = subprocess.run(
        [sys.executable, "-m", "ghostline", "relay", "status", "--metrics-port", str(port)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert gone.returncode == 1
    assert gone.stderr.startswith("ghostline: error: cannot read the relay's status at http://")


def test_sighup_reloads_the_certificate_for_new_connections(relay_process, tmp_path):
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    cert, key, first_der = self_signed_certificate(first_dir)
    new_cert, new_key, second_der = self_signed_certificate(second_dir)
    relay = relay_process(tmp_path / "relay.sqlite", "--tls-cert", str(cert), "--tls-key", str(key))
    first_pin, second_pin = (hashlib.sha256(d).hexdigest() for d in (first_der, second_der))
    assert [x.strip() for x in relay.stderr_lines if x.startswith(PIN_LINE)] == [
        PIN_LINE + first_pin
    ]

    assert asyncio.run(_served_pin(relay.relay_port)) == first_pin
    shutil.copyfile(new_cert, cert)  # the operator renews the certificate in place
    shutil.copyfile(new_key, key)
    relay.proc.send_signal(signal.SIGHUP)
    reloaded = f"event=tls_reloaded cert={cert} pin={second_pin}"
    wait_until(lambda: any(reloaded in x for x in list(relay.stderr_lines)),
               what="the reload logged")  # fmt: skip
    assert asyncio.run(_served_pin(relay.relay_port)) == second_pin
    asyncio.run(_join_pinned(relay.relay_port, second_pin))  # a client pinned to it joins

    key.write_text("not a key")  # a broken renewal keeps the certificate that works
    relay.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: any("event=tls_reload_failed" in x for x in list(relay.stderr_lines)),
               what="the failed reload logged")  # fmt: skip
    assert asyncio.run(_served_pin(relay.relay_port)) == second_pin


async def _tls_stream(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    """A TLS connection that accepts any certificate, and the pin of the one it got (a
    pinning client checks that pin instead of a CA)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
    )
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return reader, writer, hashlib.sha256(der).hexdigest()


async def _served_pin(port: int) -> str:
    _, writer, pin = await _tls_stream(port)
    writer.close()
    return pin


async def _join_pinned(port: int, pin: str) -> None:
    reader, writer, served = await _tls_stream(port)
    assert served == pin
    client = RawClient(reader, writer)
    assert await client.join(Group(2), 0) == 0
    await client.close()


def test_log_lines_carry_utc_times_with_their_offset(relay_process, tmp_path):
    relay = relay_process(tmp_path / "relay.sqlite")
    asyncio.run(RawClient.connect(relay.relay_port))
    wait_until(lambda: any("event=connect" in x for x in list(relay.stderr_lines)))
    line = next(x for x in list(relay.stderr_lines) if "event=connect" in x)
    match = re.match(r"ts=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00) level=info ", line)
    assert match, line
    stamp = datetime.fromisoformat(match.group(1))
    assert abs(stamp - datetime.now(UTC)) < timedelta(minutes=5)


def test_a_file_limit_below_what_max_connections_needs_is_said_in_one_line(tmp_path):
    # A hard limit of 256 (set for the child only): the relay cannot raise past it.
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (64, 256));"
        "from ghostline.cli import main; main(sys.argv[1:])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "relay", "--port", "0", "--presence-port", "0",
         "--store", str(tmp_path / "relay.sqlite"), "--max-connections", "1000"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr or []), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("may open only" in x for x in list(lines)) or proc.poll(),
                   timeout=30, what="the warning")  # fmt: skip
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        reader.join(5)
    warning = next(x for x in lines if "may open only" in x)
    assert "may open only 256 files, fewer than the 1064 that --max-connections 1000" in warning
    assert "LimitNOFILE" in warning


def test_the_relay_raises_its_own_file_limit_to_the_hard_limit(relay_process, tmp_path):
    relay = relay_process(tmp_path / "relay.sqlite")
    limits = Path(f"/proc/{relay.proc.pid}/limits").read_text()
    row = next(x for x in limits.splitlines() if x.startswith("Max open files"))
    soft, hard = row.split()[3:5]
    assert soft == hard, row


def test_every_log_event_of_the_relay_is_listed_in_deployment_md():
    source = ROOT / "src" / "ghostline"
    files = [*(source / "relay").rglob("*.py"), source / "cli" / "relay.py"]
    # log_event(log, "NAME", ...) and the limited ones: ....log(KEY, "NAME", ...)
    called = re.compile(r"log_event\(\s*log,\s*\"([a-z_]+)\"")
    limited = re.compile(r"\.log\(\s*(?:f?\"[^\"]*\"|[\w.]+),\s*\"([a-z_]+)\"")
    events: set[str] = set()
    for path in files:
        text = path.read_text()
        events |= set(called.findall(text)) | set(limited.findall(text))
    assert {"connect", "joined", "refused", "nats_error", "tls_reloaded"} <= events
    doc = (ROOT / "docs" / "DEPLOYMENT.md").read_text()
    missing = sorted(e for e in events if f"`{e}`" not in doc)
    assert not missing, f"log events not in docs/DEPLOYMENT.md: {missing}"
