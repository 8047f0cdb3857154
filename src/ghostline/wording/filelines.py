"""A file in the conversation, in words: one received, one sent, one of your own whose
parts were not all sealed. The chat app and the web page show it alike."""

from __future__ import annotations

from ..files.names import safe_file_name
from ..protocol.payload import FileHeader
from ..units import format_size


def file_text(header: FileHeader, *, own: bool, unfinished: tuple[int, bool] | None = None) -> str:
    """The line for a file in the conversation. `unfinished`: (parts sealed, sent again
    in full later) for an own file whose parts were not all sealed."""
    size = format_size(header.total_size)
    if not own:
        return f"sends a file: {safe_file_name(header.name)} ({size})"
    if unfinished is None:
        return f"sent a file: {safe_file_name(header.name)} ({size})"
    sealed, sent_again = unfinished
    text = (
        f"did not finish sending a file: {safe_file_name(header.name)} ({size}), "
        f"{sealed} of {header.chunk_count} parts"
    )
    return text + ("; sent again in full later" if sent_again else "")
