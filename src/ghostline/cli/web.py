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

from ..errors import UsageError
from .chat import transport_label
from .connect import connection_options, connection_settings, make_client
from .kits import KIT_ARGUMENT, open_member


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
@click.option("--no-browser", is_flag=True, help="Print the address; do not open a browser.")
def web(kit: Path, port: int, host: str, allow_remote: bool, no_browser: bool, **opts: Any) -> None:
    """Chat with KIT's group in your web browser.

    Starts a small web server on this machine that holds the kit (the browser never
    sees pad or keys) and prints the address to open, with a secret token in it.
    Anyone who has that address can read and send as you while it runs: do not share
    it. Received files are saved to your downloads folder, as with `ghostline chat`.
    Stop it with Ctrl+C.
    """
    from ..web import security

    settings = connection_settings(opts)  # bad options are usage errors before the kit opens
    if not security.is_loopback(host) and not allow_remote:
        raise UsageError(
            f"--host {host} is not a loopback address: other machines could reach the page",
            hint="leave --host out (127.0.0.1), or add --allow-remote if you really mean it "
            "(see docs/SECURITY.md)",
        )
    from ..web import server

    try:
        sock = server.bind(host, port)
    except OSError as err:
        raise UsageError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    with sock, open_member(kit) as member:
        client = make_client(member, settings, presence=True)
        relays = ", ".join(opts["relays"])
        asyncio.run(_run(client, sock, relays, transport_label(opts), not no_browser))


async def _run(client: Any, sock: Any, relays: str, transport: str, browser: bool) -> None:
    from ..web import security, server
    from ..web.session import WebSession

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("ghostline web: %(message)s"))
    web_log = logging.getLogger("ghostline.web")
    web_log.addHandler(handler)
    web_log.setLevel(logging.INFO)
    host, port = sock.getsockname()[:2]
    gate = security.Gate.for_address(security.new_token(), host, port)
    session = WebSession(client, relay=relays, transport=transport)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await session.start()
    runner = await server.serve(session, sock, gate)
    shown = f"[{host}]" if ":" in host else host
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
