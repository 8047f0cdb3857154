"""Every error GhostLine raises on purpose.

One root, `GhostlineError`. Its subclasses say whose fault a failure is:

- `LocalError`: something on this machine is wrong or used wrongly (a corrupt kit, an
  exhausted pad, a missing state database, bad command-line input).
- `RemoteError`: a peer sent something we refuse (a forged or replayed message, a
  malformed frame, a relay that refused us).

The text of an error is what a user reads: `str(err)` is one sentence, and `err.hint`,
when set, is one more line telling them what to do. `cli.main` is the one place that
turns these into `ghostline: error: ...` lines and exit codes.
"""

from __future__ import annotations


class GhostlineError(Exception):
    """Something went wrong in GhostLine."""

    hint: str | None = None
    exit_code: int = 1

    def __init__(self, message: str | None = None, *, hint: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip())
        if hint is not None:
            self.hint = hint

    @property
    def message(self) -> str:
        return str(self.args[0])


class LocalError(GhostlineError):
    """Something on this machine is wrong or was used wrongly."""


class RemoteError(GhostlineError):
    """A peer sent something GhostLine refuses."""


# --- local faults -------------------------------------------------------------------


class UsageError(LocalError):
    """The command was given input it cannot use."""

    exit_code = 2


class KitError(LocalError):
    """The kit file is missing, corrupt or does not belong here."""


class KitExistsError(KitError):
    """A kit file already exists at that path; GhostLine never overwrites a kit."""


class KitDamagedError(KitError):
    """The kit file is damaged: its header checksum does not match."""

    hint = "Use an undamaged copy of your kit; without one, the group needs a new kit set."


class UnsupportedKitError(KitError):
    """This kit's format is not supported by this command."""


class JournalFullError(KitError):
    """The kit's grant journal is full: this member can make no more grants."""


class EntropyError(LocalError):
    """A randomness source failed its health test; no kit was written."""


class PadExhaustedError(LocalError):
    """Your pad is used up: you cannot send more messages with this kit."""

    hint = "Meet the group in person and make a new kit set with `ghostline pad new`."


class ErasedKeyError(LocalError):
    """The key material for this message has already been erased."""


class StateError(LocalError):
    """The local state database is missing, damaged, or does not match the kit."""


class InternalError(LocalError):
    """GhostLine hit an error it did not expect (a bug): please report it."""


# --- remote faults ------------------------------------------------------------------


class RejectedMessage(RemoteError):
    """A sealed message broke a rule of protocol-v1 section 6 and was not accepted.

    `rule` is a short stable name for the broken rule (used in logs, test vectors
    and `listen --json`); the message text explains it to a person.
    """

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class ProtocolError(RemoteError):
    """The peer broke the wire protocol (protocol-v1 section 8)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class PayloadError(RemoteError):
    """A message opened correctly, but what it carries is malformed or of an unknown kind."""


class InvalidGrant(PayloadError):
    """A grant (payload kind 0x10) broke a rule of docs/PROTOCOL.md section 15; it moves
    nothing. `rule` is the rule's stable name, as for RejectedMessage."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class RelayRefused(RemoteError):
    """The relay answered with an ERROR frame and closed the connection."""

    def __init__(self, code: int, reason: str, *, hint: str | None = None) -> None:
        super().__init__(f"the relay refused: {reason} (code {code})", hint=hint)
        self.code = code
        self.reason = reason


class RelayUnreachable(RemoteError):
    """No relay could be reached."""

    hint = "Check the --relay address and that the relay is running."
