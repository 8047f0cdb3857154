"""`ghostline web`: the chat in a browser, served to this machine only."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import webbrowser
from pathlib import Path
from typing import Any

import click

from ..display import CONTINUATION, one_line, quote
from ..errors import UsageError
from .chat import transport_label
from .connect import auto_give_option, connection_options, connection_settings, make_client
from .kits import KIT_ARGUMENT, open_member
from .terminal import STATUS_LIMIT, echo_lines


@click.command()
@KIT_ARGUMENT
@connection_options
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Local port for the page (0: any free port).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to serve on. Anything but a loopback address needs --allow-remote.",
)
@click.option(
    "--allow-remote",
    is_flag=True,
    help=(
        "Serve on a --host other machines can reach. Dangerous: the page is plain HTTP, "
        "so anyone on the path sees the token and every message. See docs/SECURITY.md."
    ),
)
@click.option(
    "--allow-host",
    "allow_hosts",
    multiple=True,
    metavar="NAME",
    help=(
        "With --allow-remote: also answer to this host name (or address), as typed in the "
        "browser. Repeatable. Other names are refused (DNS rebinding)."
    ),
)
@click.option("--no-browser", is_flag=True, help="Print the address; do not open a browser.")
@auto_give_option
def web(
    kit: Path,
    port: int,
    host: str,
    allow_remote: bool,
    allow_hosts: tuple[str, ...],
    no_browser: bool,
    no_auto_give: bool,
    **opts: Any,
) -> None:
    """Chat with KIT's group in your web browser.

    Starts a small web server on this machine that holds the kit (the browser never
    sees pad or keys) and prints the address to open, with a secret token in it.
    Anyone who has that address can read and send as you while it runs: do not share
    it. Received files are saved to your downloads folder, as with `ghostline chat`.
    Stop it with Ctrl+C.
    """
    from ..web import hosts, security

    settings = connection_settings(opts)  # bad options are usage errors before the kit opens
    if not security.is_loopback(host) and not allow_remote:
        raise UsageError(
            f"--host {host} is not a loopback address: other machines could reach the page",
            hint="leave --host out (127.0.0.1), or add --allow-remote if you really mean it "
            "(see docs/SECURITY.md)",
        )
    if allow_hosts and not allow_remote:
        raise UsageError("--allow-host goes with --allow-remote (the page on another machine)")
    allowed = [hosts.allowed_name(name) for name in allow_hosts]
    from ..web import server

    try:
        sock = server.bind(host, port)
    except OSError as err:
        raise UsageError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    with sock, open_member(kit) as member:
        client = make_client(member, settings, presence=True, auto_give=not no_auto_give)
        relays = ", ".join(opts["relays"])
        browser = not no_browser
        asyncio.run(_run(client, sock, relays, transport_label(opts), browser, allowed))


class _StatusHandler(logging.Handler):
    """The server's log on stderr as status lines: a refused request's path comes from
    whoever sent it, so every line is made one line, capped and fitted to the terminal
    (a traceback's lines marked as continuations)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            first, *rest = self.format(record).split("\n")
            lines = [quote(first, STATUS_LIMIT), *(CONTINUATION + one_line(x) for x in rest)]
            echo_lines(lines, err=True)
        except Exception:
            self.handleError(record)


async def _run(
    client: Any, sock: Any, relays: str, transport: str, browser: bool, allowed: list[Any]
) -> None:
    from ..web import hosts, security, server
    from ..web.session import WebSession

    handler = _StatusHandler()
    handler.setFormatter(logging.Formatter("ghostline web: %(message)s"))
    web_log = logging.getLogger("ghostline.web")
    web_log.addHandler(handler)
    web_log.setLevel(logging.INFO)
    host, port = sock.getsockname()[:2]
    gate = security.Gate.for_address(security.new_token(), host, port, allow=allowed)
    session = WebSession(client, relay=relays, transport=transport)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await session.start()
    runner = await server.serve(session, sock, gate)
    shown = hosts.url_host(host, gate.addresses, [str(name) for name in allowed])
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"  # an IPv6 address given with --allow-host
    url = f"http://{shown}:{port}/?{security.TOKEN_PARAM}={gate.token}"
    click.echo(f"ghostline web: open {url}", err=False)
    click.echo(
        "ghostline web: anyone with this address can read and send as you while this "
        "runs; do not share it. Ctrl+C stops.",
        err=True,
    )
    if browser:
        # Some browsers block until they exit: never on the event loop.
        threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
    try:
        await stop.wait()
    finally:
        click.echo("ghostline web: stopping", err=True)
        with contextlib.suppress(Exception):
            await runner.cleanup()
        await session.stop()
