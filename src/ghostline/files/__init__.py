"""File transfer, shared by the chat app and the web app: splitting a file into its
payloads (`split`) and sending them in sealed groups (`outgoing`), reassembling
(`assembly`) and saving incoming transfers (`incoming`), finding unfinished transfers in
the history (`history`), naming received files safely (`names`) and publishing a file
without ever overwriting another (`publish`). No user interface here: the apps show what
these report."""

from .assembly import DEFAULT_MAX_FILE_SIZE, FileAssembly
from .history import FileHistory, UnfinishedSend, replay_incoming, scan_file_history
from .incoming import IncomingFile, IncomingFiles, IncomingUpdate, RecordSaved, record_in
from .names import safe_file_name
from .outgoing import SEAL_GROUP, OutgoingFile, OutgoingFiles, prepare_file, send_file
from .publish import candidate_names, save_new_file
from .split import split_file

__all__ = [
    "DEFAULT_MAX_FILE_SIZE",
    "SEAL_GROUP",
    "FileAssembly",
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
    "safe_file_name",
    "save_new_file",
    "scan_file_history",
    "send_file",
    "split_file",
]
