"""The chat screen's message pane: the lines of the conversation, day separators, the
"new since you left" marker, own messages' delivery states, and loading older pages
when scrolled to the top. It displays what it is given and holds no protocol state.

Every text another person could have written (message text, names, file names) is
made safe by `ghostline.display` here, where it is drawn, and is handed to Textual as
a `Text`, never as a string Textual would read as markup.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import tzinfo
from typing import Literal

from rich.table import Table
from rich.text import Text
from textual import events
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Static

from ..display import body_lines, fold, one_line
from .view import OWN_COLOUR, clock_label, day_key, day_label, sender_colour

OwnState = Literal["sealed", "sending", "stored"]


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
