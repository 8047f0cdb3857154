"""The chat screen's widgets. They display what they are given and hold no protocol state.

Every text another person could have written (message text, names, file names, reasons
quoted from the relay) is made safe by `ghostline.display` here, where it is drawn, and
is handed to Textual as a `Text`, never as a string Textual would read as markup: so
`[bold]` or `[link=...]` in a message is shown as typed, and no control character or
escape sequence reaches the terminal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import tzinfo
from typing import ClassVar, Literal

from rich.table import Table
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Label, ProgressBar, Static, TextArea

from ..display import body_lines, fold, one_line
from ..state.padlevel import PadLeft
from ..units import format_size
from .view import (
    OWN_COLOUR,
    clock_label,
    countdown,
    day_key,
    day_label,
    percent,
    sender_colour,
)

OwnState = Literal["sealed", "sending", "stored"]

PRESENCE_TOOLTIP = (
    "Online status comes from the relay and is not authenticated: a relay can claim "
    "anyone is online or offline. Only messages are authenticated (by the pad)."
)

# --- message pane --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChatLine:
    """One entry of the message pane, as the app describes it to the pane."""

    kind: Literal["message", "notice", "warning", "new"]  # "new": new since you left
    timestamp: float
    text: str
    sender: int = -1
    sender_name: str = ""
    own: bool = False
    counter: int | None = None
    state: OwnState | None = None
    seq: int | None = None  # the relay's, once known: messages are shown in its order


_STATE_STYLE: dict[str, tuple[str, str]] = {
    "sealed": ("sealed", "yellow"),
    "sending": ("sending…", "cyan"),
    "stored": ("stored ✓", "green"),
}


class MessageLine(Static):
    """A message, notice or warning; own messages show their delivery state."""

    DEFAULT_CSS = """
    MessageLine { height: auto; padding: 0 1; }
    MessageLine.-warning { background: $error 15%; color: $text; }
    MessageLine.-notice { color: $text-muted; }
    """

    def __init__(self, line: ChatLine, *, name_width: int, tz: tzinfo | None) -> None:
        self.line = line
        self._name_width = name_width
        self._tz = tz
        super().__init__(self._render_line(), classes=f"-{line.kind}")

    def set_state(self, state: OwnState, seq: int | None = None) -> None:
        if self.line.state == "stored":
            return  # stored at the relay is final: a later "sending" must not undo it
        self.line = replace(self.line, state=state, seq=seq if seq is not None else self.line.seq)
        self.update(self._render_line())

    def set_text(self, text: str, *, show_state: bool = True) -> None:
        self.line = replace(self.line, text=text, state=self.line.state if show_state else None)
        self.update(self._render_line())

    def _render_line(self) -> Table:
        # A grid, not one Text: a long line wraps under its own column (a hanging
        # indent), not back under the time.
        line = self.line
        grid = Table.grid(padding=(0, 1), expand=True)
        grid.add_column(width=5, no_wrap=True)
        body = Text()
        if line.kind == "message":
            colour = OWN_COLOUR if line.own else sender_colour(line.sender)
            grid.add_column(width=self._name_width, no_wrap=True, overflow="ellipsis")
            who = Text(one_line(line.sender_name), style=f"bold {colour}")
            # Each line of the text stays in this column (the grid below), so a line of
            # text can never sit where a time and a name would. A very long text is
            # folded: 100,000 lines would freeze the app for a minute.
            folded = fold(line.text)
            body.append("\n".join(body_lines(folded.shown)))
            if folded.folded:
                body.append(
                    f"\n… {folded.more()} not shown (`ghostline history` shows them)",
                    style="dim italic",
                )
            if line.own and line.state:
                label, style = _STATE_STYLE[line.state]
                body.append(f"  {label}", style=f"italic {style}")
        elif line.kind == "warning":
            grid.add_column(width=1, no_wrap=True)
            who = Text("⚠", style="bold red")
            body.append(one_line(line.text), style="bold")
        else:
            grid.add_column(width=1, no_wrap=True)
            who = Text("·", style="dim")
            body.append(one_line(line.text), style="italic")
        grid.add_column(ratio=1)
        grid.add_row(Text(clock_label(line.timestamp, self._tz), style="dim"), who, body)
        return grid


class DaySeparator(Static):
    DEFAULT_CSS = """
    DaySeparator { height: 1; content-align: center middle; color: $text-muted;
                   margin: 1 0 0 0; text-style: bold; }
    """


class NewSinceMarker(Static):
    """Where the messages received since the app was last closed begin."""

    DEFAULT_CSS = """
    NewSinceMarker { height: 1; content-align: center middle; color: $accent;
                     text-style: bold; }
    """

    def __init__(self) -> None:
        super().__init__("── new since you left ──")


class MessageLog(VerticalScroll):
    """The message pane: newest at the bottom, older history loaded on scroll-up."""

    class NeedOlder(Message):
        """The user scrolled to the top and older history may exist."""

    DEFAULT_CSS = """
    MessageLog { height: 1fr; }
    """

    def __init__(self, *, name_width: int, tz: tzinfo | None, id: str | None = None) -> None:
        super().__init__(id=id)
        self.can_focus = True
        self._name_width = name_width
        self._tz = tz
        self._first_day: str | None = None
        self._first_separator: DaySeparator | None = None
        self._last_day: str | None = None
        self.own_lines: dict[int, MessageLine] = {}
        self.more_above = False

    def _widgets_for(self, lines: Iterable[ChatLine], previous_day: str | None) -> list[Widget]:
        widgets: list[Widget] = []
        day = previous_day
        for line in lines:
            if line.kind == "new":
                widgets.append(NewSinceMarker())
                continue
            key = day_key(line.timestamp, self._tz)
            if key != day:
                widgets.append(DaySeparator(f"── {day_label(line.timestamp, self._tz)} ──"))
                day = key
            widget = MessageLine(line, name_width=self._name_width, tz=self._tz)
            if line.own and line.counter is not None:
                self.own_lines[line.counter] = widget
            widgets.append(widget)
        return widgets

    def on_mount(self) -> None:
        # Pinned to the newest line, through every line added and every line that finds
        # its height late, until the user scrolls up; back at the bottom, pinned again
        # (Textual's anchor). So the app always opens at the newest message.
        self.anchor()

    def append(self, lines: list[ChatLine]) -> None:
        """Add lines at the bottom (the view follows if it is at the bottom)."""
        if not lines:
            return
        widgets = self._widgets_for(lines, self._last_day)
        if self._first_day is None:
            self._first_day = day_key(lines[0].timestamp, self._tz)
            first = widgets[0]
            self._first_separator = first if isinstance(first, DaySeparator) else None
        self._last_day = day_key(lines[-1].timestamp, self._tz)
        self.mount_all(widgets)

    def prepend(self, lines: list[ChatLine]) -> None:
        """Add older lines at the top without moving what the user is reading."""
        if not lines:
            return
        if self._first_day is None:
            self.append(lines)
            return
        widgets = self._widgets_for(lines, None)
        if day_key(lines[-1].timestamp, self._tz) == self._first_day and self._first_separator:
            self._first_separator.remove()
        self._first_day = day_key(lines[0].timestamp, self._tz)
        first = widgets[0]
        self._first_separator = first if isinstance(first, DaySeparator) else None
        before_height = self.virtual_size.height
        before_y = self.scroll_y
        # Pinned to the newest line (the pane not full yet, or never scrolled up): the
        # anchor keeps it there; moving it would only unpin it.
        pinned = self.max_scroll_y <= 0 or self.is_vertical_scroll_end
        children = list(self.children)
        if children:
            self.mount_all(widgets, before=children[0])
        else:
            self.mount_all(widgets)

        def keep_place() -> None:
            grown = self.virtual_size.height - before_height
            self.scroll_to(y=before_y + grown, animate=False)

        if not pinned:
            self.call_after_refresh(keep_place)

    def add_received(self, line: ChatLine, *, new_since: bool = False) -> None:
        """Show a received message in relay order: at the bottom, but above any own
        message at the bottom that the relay stored after it (or has not confirmed yet),
        so that catching up never shows an older message below a newer own one. With
        `new_since`, the "new since you left" marker goes right above it."""
        later = self._own_after(line.seq)
        marker = [ChatLine("new", line.timestamp, "")] if new_since else []
        if later is None:
            self.append([*marker, line])
            return
        widget = MessageLine(line, name_width=self._name_width, tz=self._tz)
        self.mount(widget, before=later)
        if new_since:
            self.mount(NewSinceMarker(), before=widget)
        self._redo_days(widget)

    def _own_after(self, seq: int | None) -> MessageLine | None:
        """The first of the own messages at the bottom (notices between them aside)
        that come after relay seq `seq`."""
        if seq is None:
            return None
        first: MessageLine | None = None
        for widget in reversed(list(self.children)):
            if not isinstance(widget, MessageLine) or widget.line.kind != "message":
                continue
            own = widget.line
            if not own.own or (own.seq is not None and own.seq < seq):
                break
            first = widget
        return first

    def _redo_days(self, start: Widget) -> None:
        """Day separators from `start` to the bottom, after a line was put in there."""
        children = list(self.children)
        at = children.index(start)
        day: str | None = None
        for widget in reversed(children[:at]):
            if isinstance(widget, MessageLine):
                day = day_key(widget.line.timestamp, self._tz)
                break
        for widget in children[at:]:
            if isinstance(widget, DaySeparator):
                widget.remove()
            elif isinstance(widget, MessageLine):
                key = day_key(widget.line.timestamp, self._tz)
                if key != day:
                    label = day_label(widget.line.timestamp, self._tz)
                    separator = DaySeparator(f"── {label} ──")
                    self.mount(separator, before=widget)
                    if day is None:  # the very first line: prepend must know its separator
                        self._first_separator = separator
                        self._first_day = key
                    day = key
        self._last_day = day

    def set_state(self, counter: int, state: OwnState, seq: int | None = None) -> bool:
        line = self.own_lines.get(counter)
        if line is None:
            return False
        line.set_state(state, seq)
        return True

    def set_text(self, counter: int, text: str, *, show_state: bool = True) -> bool:
        """Reword own message `counter` (if it is on screen); `show_state=False` drops
        its delivery state for good."""
        line = self.own_lines.get(counter)
        if line is None:
            return False
        line.set_text(text, show_state=show_state)
        if not show_state:
            del self.own_lines[counter]
        return True

    def mark_unstored(self, state: OwnState) -> None:
        """Every own message not yet stored at the relay takes `state`."""
        for line in self.own_lines.values():
            if line.line.state != "stored":
                line.set_state(state)

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if new <= 0 < old:
            self.want_older()

    def _on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        if self.scroll_y <= 0:
            self.want_older()

    def want_older(self) -> None:
        """Ask for older history if there is more and the user is at the top."""
        if self.more_above:
            self.post_message(self.NeedOlder())

    def fill(self) -> None:
        """While the pane is not full yet, ask for older history to fill it."""
        if self.more_above and self.max_scroll_y == 0:
            self.post_message(self.NeedOlder())


# --- side panel ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemberRow:
    index: int
    name: str
    online: bool
    pad: PadLeft | None
    is_self: bool


class MemberList(Static):
    """Who is online (as the relay says) and how much of each member's slice is left."""

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
