"""Every error GhostLine raises on purpose.

One root, `GhostlineError`. Its subclasses say whose fault a failure is:

- `LocalError`: something on this machine is wrong or used wrongly (a corrupt kit, an
  exhausted pad, a missing state database, bad command-line input).
- `RemoteError`: a peer sent something we refuse (a forged or replayed message, a
  malformed frame, a relay that refused us).

The text of an error is what a user reads: `str(err)` is one sentence. What to do about
it is the apps' to say (`cli/kits.explain`, `cli/relaystatus.failure_hint`); `err.hint`
carries it when the code that words it raises the error itself. `cli.main` is the one
place that turns these into `ghostline: error: ...` lines and exit codes.
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


class KitReadOnlyError(KitError):
    """The kit file can be read but not written, and GhostLine erases used pad in it."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path}: the kit file is read-only")
        self.path = path


class KitDamagedError(KitError):
    """The kit file is damaged: its header checksum does not match."""


class KitHeaderChangedError(KitDamagedError):
    """The kit's header differs from the header this machine recorded when the kit was
    first used here (a v1 kit has no checksum; `kitrecord.py`): the file is damaged.
    `fields` name what differs, `recorded` and `found` hold those fields' values (as in
    the kit's JSON)."""

    def __init__(
        self, path: str, fields: tuple[str, ...], recorded: dict[str, object],
        found: dict[str, object],
    ) -> None:  # fmt: skip
        super().__init__(f"{path}: the kit header differs from the one recorded ({fields})")
        self.path = path
        self.fields = fields
        self.recorded = recorded
        self.found = found


class UnsupportedKitError(KitError):
    """This kit's format is not supported by this command."""


class JournalFullError(KitError):
    """The kit's grant journal is full: this member can make no more grants."""


class EntropyError(LocalError):
    """A randomness source failed its health test; no kit was written."""


class PadExhaustedError(LocalError):
    """Your pad is used up: you cannot send more messages with this kit."""


class ErasedKeyError(LocalError):
    """The key material for this message has already been erased."""


class StateError(LocalError):
    """The local state database is missing, damaged, or does not match the kit."""


class KitRecordError(StateError):
    """This machine's record of a kit's header (kitrecord.py) cannot be read."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class RecoveryNeeded(StateError):
    """The state database is missing or older than the kit's erasures: sending now
    could reuse pad. `ghostline pad recover` can rebuild it from the kit (`kit_path`)."""

    def __init__(self, message: str, *, kit_path: str) -> None:
        super().__init__(message)
        self.kit_path = kit_path


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
    """The peer broke the wire protocol (protocol-v1 section 8).

    `code` is the ERROR code that answers it; `rule`, when set, the stable name of the
    broken rule (`protocol.rules`)."""

    def __init__(self, code: int, message: str, *, rule: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.rule = rule


class LocalProtocolError(InternalError):
    """This side used a protocol state machine out of turn (a bug in GhostLine)."""


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

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"the relay refused: {reason} (code {code})")
        self.code = code
        self.reason = reason


class RelayUnreachable(RemoteError):
    """No relay could be reached."""
