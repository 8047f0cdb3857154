"""The chat screen's side panel, status bar and input (the message pane is
messagelog.py). They display what they are given and hold no protocol state.

Every text another person could have written (message text, names, file names, reasons
quoted from the relay) is made safe by `ghostline.display` here, where it is drawn, and
is handed to Textual as a `Text`, never as a string Textual would read as markup: so
`[bold]` or `[link=...]` in a message is shown as typed, and no control character or
escape sequence reaches the terminal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Label, ProgressBar, Static, TextArea

from ..display import one_line
from ..state.usage import PadLeft
from ..units import format_size
from ..wording.padleft import percent
from ..wording.padtalk import failed_checks
from .view import OWN_COLOUR, countdown, sender_colour

PRESENCE_TOOLTIP = (
    "Online status comes from the relay and is not authenticated: a relay can claim "
    "anyone is online or offline. Only messages are authenticated (by the pad)."
)


@dataclass(frozen=True, slots=True)
class MemberRow:
    index: int
    name: str
    online: bool
    pad: PadLeft | None
    is_self: bool
    failed: int = 0  # their messages whose tag failed here


class MemberList(Static):
    """Who is online (as the relay says), how much of each member's pad is left, and how
    many of their messages failed their check here (when any did)."""

    DEFAULT_CSS = """
    MemberList { height: auto; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.tooltip = PRESENCE_TOOLTIP
        self.rows: list[MemberRow] = []

    def show(self, rows: list[MemberRow], *, presence_known: bool = True) -> None:
        """`presence_known=False`: the presence connection is down, so "?" not "○"."""
        self.rows = rows
        text = Text()
        for i, row in enumerate(rows):
            if i:
                text.append("\n")
            if row.is_self:
                text.append("● ", style="bold green")
            elif not presence_known:
                text.append("? ", style="dim yellow")
            elif row.online:
                text.append("● ", style="green")
            else:
                text.append("○ ", style="dim")
            name = f"{one_line(row.name)} (you)" if row.is_self else one_line(row.name)
            colour = OWN_COLOUR if row.is_self else sender_colour(row.index)
            text.append(name, style=f"bold {colour}")
            if row.pad is not None:
                text.append(f"\n  {percent(row.pad.fraction_left)} left", style="dim")
                text.append(f" · {format_size(row.pad.bytes_left)}", style="dim")
            if row.failed:
                text.append(f"\n  ⚠ {failed_checks(row.failed)}", style="bold red")
        self.update(text)


class PadGauge(Vertical):
    """Your own pad: a bar of what is left, bytes and messages, and the warning level."""

    DEFAULT_CSS = """
    PadGauge { height: auto; padding: 0 1; }
    PadGauge ProgressBar { width: 100%; }
    PadGauge ProgressBar Bar { width: 1fr; }
    PadGauge #pad-numbers { color: $text-muted; }
    PadGauge.-low #pad-numbers { color: $warning; }
    PadGauge.-critical #pad-numbers, PadGauge.-exhausted #pad-numbers { color: $error; }
    PadGauge.-low Bar > .bar--bar { color: $warning; }
    PadGauge.-critical Bar > .bar--bar { color: $error; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.pad: PadLeft | None = None

    def compose(self):  # type: ignore[no-untyped-def]
        yield ProgressBar(total=1000, show_eta=False, show_percentage=False, id="pad-bar")
        yield Label("", id="pad-numbers")

    def show(self, pad: PadLeft) -> None:
        self.pad = pad
        bar = self.query_one("#pad-bar", ProgressBar)
        bar.update(total=1000, progress=round(pad.fraction_left * 1000))
        self.query_one("#pad-numbers", Label).update(
            f"{percent(pad.fraction_left)} left\n"
            f"{format_size(pad.bytes_left)} of {format_size(pad.bytes_total)}\n"
            f"{pad.msgs_left:,} of {pad.msgs_total:,} messages"
        )
        for level in ("ok", "low", "critical", "exhausted"):
            self.set_class(pad.level == level, f"-{level}")


class Banner(Static):
    """A one-line warning above the input (pad level, relay refusal)."""

    DEFAULT_CSS = """
    Banner { height: auto; padding: 0 1; display: none; }
    Banner.-shown { display: block; }
    Banner.-low { background: $warning 25%; }
    Banner.-critical, Banner.-exhausted, Banner.-error { background: $error 30%; text-style: bold; }
    """

    def show(self, text: str, level: str) -> None:
        for cls in ("-low", "-critical", "-exhausted", "-error"):
            self.remove_class(cls)
        self.set_class(bool(text), "-shown")
        if text:
            self.add_class(f"-{level}")
        self.update(Text(one_line(text)))


class TransferRow(Vertical):
    """One file on its way in or out."""

    DEFAULT_CSS = """
    TransferRow { height: auto; padding: 0 1; margin-bottom: 1; }
    TransferRow .transfer-title { width: 100%; }
    TransferRow ProgressBar { width: 100%; }
    TransferRow ProgressBar Bar { width: 1fr; }
    TransferRow.-failed .transfer-title { color: $error; }
    TransferRow.-done .transfer-title { color: $success; }
    """

    def __init__(self, title: str, total: int, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._title = one_line(title)  # it names a file and its sender
        self._total = max(1, total)
        # Built here, not in compose, so progress can be set before the row is mounted.
        self._label = Label(Text(self._title), classes="transfer-title")
        self._bar = ProgressBar(total=self._total, show_eta=False, classes="transfer-bar")

    def compose(self):  # type: ignore[no-untyped-def]
        yield self._label
        yield self._bar

    def advance_to(self, done: int, note: str | None = None) -> None:
        self._bar.update(progress=done)
        if note is not None:
            self._label.update(Text(f"{self._title}\n{one_line(note)}"))

    def finish(self, note: str, *, ok: bool) -> None:
        self.set_class(ok, "-done")
        self.set_class(not ok, "-failed")
        if ok:
            self._bar.update(progress=self._total)
        self._label.update(Text(f"{self._title}\n{one_line(note)}"))


class StatusBar(Static):
    """Connection state, relay address, and how the connection is protected."""

    DEFAULT_CSS = """
    StatusBar { height: 1; padding: 0 1; background: $panel; }
    """

    def __init__(self, *, relay: str, transport: str, id: str | None = None) -> None:
        super().__init__(id=id)
        self.relay = relay
        self.transport = transport
        self.state = "connecting"
        self.retry_in: float | None = None
        self.detail = ""
        self.presence_problem: str | None = None

    def show(
        self,
        state: str,
        *,
        relay: str | None = None,
        retry_in: float | None = None,
        detail: str = "",
    ) -> None:
        self.state = state
        if relay:
            self.relay = relay
        self.retry_in = retry_in
        self.detail = detail
        self.refresh_text()

    def show_presence(self, problem: str | None) -> None:
        """`problem` is why the presence connection is down; None when it is up."""
        self.presence_problem = problem
        self.refresh_text()

    def refresh_text(self) -> None:
        text = Text()
        marks = {
            "connected": ("● connected", "bold green"),
            "connecting": ("◌ connecting…", "yellow"),
            "reconnecting": ("◌ reconnecting", "bold yellow"),
            "stopped": ("○ offline", "red"),
        }
        label, style = marks.get(self.state, (self.state, ""))
        text.append(label, style=style)
        if self.state == "reconnecting" and self.retry_in is not None:
            text.append(f" (next try in {countdown(self.retry_in)})", style="yellow")
        text.append("  relay ", style="dim")
        text.append(one_line(self.relay))
        text.append("  ", style="dim")
        text.append(self.transport)
        if self.presence_problem is not None and self.state == "connected":
            # Only worth saying when messaging works: else the relay's state says it all.
            text.append("  ○ presence down: who is online is unknown", style="yellow")
        if self.detail and self.state != "connected":
            # The detail can quote the relay (an ERROR reason).
            text.append(f"  {one_line(self.detail)}", style="dim italic")
        self.update(text)


# --- input ---------------------------------------------------------------------------


class ChatInput(TextArea):
    """The message box: enter sends, shift+enter (or ctrl+j) starts a new line,
    up/down on the first/last line walk through what you sent before."""

    NEWLINE_KEYS: ClassVar[frozenset[str]] = frozenset({"shift+enter", "ctrl+j", "alt+enter"})

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "submit", "Send"),
        Binding("shift+enter", "newline", "New line", key_display="shift+enter/ctrl+j"),
    ]

    DEFAULT_CSS = """
    ChatInput { height: auto; max-height: 8; min-height: 3; }
    """

    class Submitted(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(
            id=id,
            soft_wrap=True,
            show_line_numbers=False,
            tab_behavior="focus",
            placeholder="Message · enter sends · /help for commands and keys",
        )
        self.sent: list[str] = []
        self._browse: int | None = None
        self._draft = ""

    async def _on_key(self, event: events.Key) -> None:
        key = event.key
        handled = True
        if key == "enter":
            self.action_submit()
        elif key in self.NEWLINE_KEYS:
            self.action_newline()
        elif key == "up" and self.cursor_location[0] == 0 and self.sent:
            self.action_history_back()
        elif key == "down" and self.cursor_location[0] == self.document.line_count - 1:
            handled = self._history_forward()
        else:
            handled = False
        if handled:
            event.stop()
            event.prevent_default()
            return
        await super()._on_key(event)

    def action_submit(self) -> None:
        if self.disabled:
            return
        text = self.text.strip("\n")
        if not text.strip():
            return
        if not self.sent or self.sent[-1] != text:
            self.sent.append(text)
        self._browse = None
        self._draft = ""
        self.load_text("")
        self.post_message(self.Submitted(text))

    def action_newline(self) -> None:
        self.insert("\n")

    def action_history_back(self) -> None:
        if not self.sent:
            return
        if self._browse is None:
            self._draft = self.text
            self._browse = len(self.sent)
        if self._browse > 0:
            self._browse -= 1
        self._show(self.sent[self._browse])

    def _history_forward(self) -> bool:
        if self._browse is None:
            return False
        self._browse += 1
        if self._browse >= len(self.sent):
            self._browse = None
            self._show(self._draft)
        else:
            self._show(self.sent[self._browse])
        return True

    def _show(self, text: str) -> None:
        self.load_text(text)
        self.move_cursor(self.document.end)
