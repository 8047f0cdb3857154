"""`ghostline chat`: the terminal chat app (Textual), with the same connection options
as `listen`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .connect import auto_give_option, connection_options, connection_settings, make_client
from .kits import KIT_ARGUMENT, open_member


def transport_label(opts: dict[str, Any]) -> str:
    """How the connection is protected, for the status bar."""
    if opts.get("tls_pin"):
        tls = "TLS (pinned cert)"
    elif opts.get("tls_ca"):
        tls = "TLS (CA file)"
    elif opts.get("tls"):
        tls = "TLS"
    else:
        tls = "no TLS"
    proxy = f"via {opts['proxy']}" if opts.get("proxy") else "no proxy"
    return f"{tls} · {proxy}"


@click.command()
@KIT_ARGUMENT
@connection_options
@auto_give_option
def chat(kit: Path, no_auto_give: bool, **opts: Any) -> None:
    """Chat with KIT's group in a terminal window.

    Enter sends, shift+enter or ctrl+j starts a new line, up/down recall what you sent.
    Commands: /file PATH, /info, /help, /quit. Received files are saved to your
    downloads folder (GHOSTLINE_HOME/downloads when GHOSTLINE_HOME is set).
    """
    from ..tui.app import ChatApp

    settings = connection_settings(opts)
    with open_member(kit) as member:
        client = make_client(member, settings, presence=True, auto_give=not no_auto_give)
        relays = ", ".join(opts["relays"])
        app = ChatApp(client, relay=relays, transport=transport_label(opts))
        app.run()
    for problem in app.closing_problems:
        click.echo(f"ghostline: warning: {problem}", err=True)
