"""The `ghostline` command. The one place where errors become messages and exit codes.

Each command group lives in its own module (`cli/pad.py`, `cli/relay.py`, ...) and is
registered in `_COMMANDS`; commands raise `GhostlineError`s and never print tracebacks.
"""

from __future__ import annotations

import importlib
import sys

import click

from ..errors import GhostlineError

# (module, attribute) of every sub-command, imported lazily so that `ghostline relay`
# never loads pad code and start-up stays quick.
_COMMANDS: dict[str, tuple[str, str]] = {
    "pad": ("ghostline.cli.pad", "pad"),
    "relay": ("ghostline.cli.relay", "relay"),
    "send": ("ghostline.cli.chatsend", "send"),
    "listen": ("ghostline.cli.chatlisten", "listen"),
    "history": ("ghostline.cli.history", "history"),
    "chat": ("ghostline.cli.chat", "chat"),
    "web": ("ghostline.cli.web", "web"),
    "demo": ("ghostline.cli.demo", "demo"),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module = importlib.import_module(target[0])
        command: click.Command = getattr(module, target[1])
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ghostline")
def cli() -> None:
    """GhostLine: one-time-pad group chat over a blind relay.

    \b
    Environment:
      GHOSTLINE_RELAY  default for --relay (HOST[:PORT], several separated by spaces)
      GHOSTLINE_HOME   keep all state and downloads under this folder
    """


def report(err: GhostlineError) -> None:
    """Print an error as `ghostline: error: ...` and its hint, on stderr. An error can
    quote what a relay or another member sent: it is shown, never interpreted."""
    from .kits import explain
    from .terminal import status

    message, hint = explain(err)
    status(message, "ghostline: error: ")
    if hint:
        status(hint, "ghostline: hint: ")


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="ghostline", standalone_mode=False)
    except GhostlineError as err:
        report(err)
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        click.echo("ghostline: aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        click.echo("ghostline: interrupted", err=True)
        sys.exit(130)
    sys.exit(0)
