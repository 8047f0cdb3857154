"""Modal screens: confirm a file's pad cost, help, and the pad info table."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Markdown, Static

HELP_TEXT = """\
# GhostLine chat

Every message is sealed with your one-time pad *before* it leaves this machine; the
relay only stores and forwards sealed bytes.

## Keys

| Key | Does |
| --- | --- |
| `enter` | send the message |
| `shift+enter` / `ctrl+j` | new line (`ctrl+j` works in every terminal) |
| `up` / `down` | earlier messages you sent (on the first / last line) |
| `pageup` / `pagedown` | scroll the messages (older history loads at the top) |
| `f1` | this help |
| `f2` | pad info |
| `ctrl+q` | quit |

## Commands

- `/file PATH`: send a file (a path in quotes, or dragged in, works too). Shows what
  it costs from your pad and asks first. Files you receive are saved to your
  downloads folder, never over an existing file. If the app closes mid-send, it tells
  you when it opens again: send the file again.
- `/info`: the pad info table (what is left for every member).
- `/help`: this help.
- `/quit`: quit.

## What the screen tells you

- Your own messages are **sealed** (written to your outbox, pad used), **sending**
  (connected, on its way) or **stored ✓** (the relay has stored it for the group).
- A **⚠ rejected** line is a message that broke a protocol rule (forged, replayed,
  damaged). It was not shown and used none of your pad; the rule is named.
- **Online** dots come from the relay and are **not authenticated**: a relay can claim
  anyone is online or offline. Messages themselves are authenticated by the pad.
- The pad gauge shows what is left of *your* slice. At 10% and at 1% a warning
  appears; when it is used up you can still read, but to send again the group must
  meet in person and make a new kit set (`ghostline pad new`).
"""


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; dismisses with True for yes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, *, yes: str = "Send") -> None:
        super().__init__()
        self._question = question
        self._yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(Text(self._question), id="question")
            with Horizontal(id="buttons"):
                yield Button(f"{self._yes} (y)", variant="primary", id="yes")
                yield Button("Cancel (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#yes", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class TextScreen(ModalScreen[None]):
    """Help text (Markdown) or a table, closed with escape or q."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,f1,f2", "close", "Close"),
    ]

    def __init__(self, title: str, body: str | Table) -> None:
        super().__init__()
        self._title = title
        self._body = body

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="wide"):
            yield Label(self._title, id="dialog-title")
            with VerticalScroll():
                if isinstance(self._body, str):
                    yield Markdown(self._body)
                else:
                    yield Static(self._body)
            yield Label("escape: close", id="dialog-hint")

    def action_close(self) -> None:
        self.dismiss(None)
