"""File transfer, shared by the chat app and the web app: sending a file in sealed
groups (`outgoing`), reassembling and saving incoming transfers (`incoming`), finding
unfinished transfers in the history (`history`), and publishing a file without ever
overwriting another (`publish`). No user interface here: the apps show what these
report."""

from .history import FileHistory, UnfinishedSend, replay_incoming, scan_file_history
from .incoming import IncomingFile, IncomingFiles, IncomingUpdate, RecordSaved, record_in
from .outgoing import SEAL_GROUP, OutgoingFile, OutgoingFiles, prepare_file, send_file
from .publish import candidate_names, save_new_file

__all__ = [
    "SEAL_GROUP",
    "FileHistory",
    "IncomingFile",
    "IncomingFiles",
    "IncomingUpdate",
    "OutgoingFile",
    "OutgoingFiles",
    "RecordSaved",
    "UnfinishedSend",
    "candidate_names",
    "prepare_file",
    "record_in",
    "replay_incoming",
    "save_new_file",
    "scan_file_history",
    "send_file",
]
