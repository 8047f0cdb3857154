"""Every error GhostLine raises on purpose.

One root, `GhostlineError`. Its subclasses say whose fault a failure is:

- `LocalError`: something on this machine is wrong or used wrongly (a corrupt kit, an
  exhausted pad, a missing state database, bad command-line input).
- `RemoteError`: a peer sent something we refuse (a forged or replayed message, a
  malformed frame, a relay that refused us).

The text of an error is what a user reads: `str(err)` is one sentence. What to do about
it is the apps' to say (`cli/kits.explain`, `wording/hints.failure_hint`); `err.hint`
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


class MessageTooLarge(UsageError):
    """A message is larger than a relay carries in this group (`limit`, for `n`
    members): sealed, it would burn its pad and then block the outbox for good."""

    def __init__(self, size: int, limit: int, n: int) -> None:
        super().__init__(
            f"message too large: {size} bytes, a relay carries at most {limit} in a "
            f"group of {n}; nothing was sent"
        )
        self.size = size
        self.limit = limit
        self.n = n


class GiftTooLarge(UsageError):
    """A grant of `size` bytes cannot be made: the most this member can give in one
    piece now is `largest` (one run of its unsealed pad, with room left for the grant
    message itself)."""

    def __init__(self, size: int, largest: int) -> None:
        super().__init__(
            f"cannot give {size} bytes of pad in one piece: the most you can give now is "
            f"{largest} bytes; nothing was given"
        )
        self.size = size
        self.largest = largest


class FileChanged(LocalError):
    """A file being sent is no longer the file that was read when it was offered (its
    size, times or inode moved, or what was read back does not match the header's
    SHA-256). Nothing more of it is sealed; `name` is the file's name as sent."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} changed after it was read")
        self.name = name


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


class JournalFullError(KitError):
    """The kit's grant journal is full: this member can make no more grants."""


class EntropyError(LocalError):
    """A randomness source failed its health test; no kit was written."""


class HealthTestFailure(EntropyError):
    """A raw randomness source failed an SP 800-90B health test; no kit was written."""

    def __init__(self, test: str, source: str, position: int, detail: str) -> None:
        super().__init__(
            f"{source} failed the SP 800-90B {test} test at byte {position}: {detail}; "
            "no kit was written"
        )
        self.test = test  # "repetition count" or "adaptive proportion"
        self.source = source
        self.position = position


class EntropySourceShort(EntropyError):
    """A sample file or device gave fewer bytes (`have`) than the kit set needs
    (`need`; None when a device ran dry in the middle); no kit was written."""

    def __init__(self, source: str, have: int, need: int | None) -> None:
        super().__init__(
            f"{source} ran out after {have} bytes; the kit set needs more. No kit was written."
            if need is None
            else f"{source} holds {have} bytes but the kit set needs {need}"
        )
        self.source = source
        self.have = have
        self.need = need


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


class StateOfAnotherKit(StateError):
    """The state database belongs to another kit: `found` and `wanted` are (pad_id,
    member index)."""

    def __init__(self, path: str, *, found: tuple[bytes, int], wanted: tuple[bytes, int]) -> None:
        super().__init__(
            f"{path}: this state database belongs to another kit (pad {found[0].hex()}, "
            f"member {found[1]}), not pad {wanted[0].hex()}, member {wanted[1]}"
        )
        self.path = path
        self.found = found
        self.wanted = wanted


class RecoveryNeeded(StateError):
    """The state database cannot say which pad is unused, so sending now could reuse
    pad. `ghostline pad recover` can rebuild it from the kit (`kit_path`, None when
    the layer that noticed does not know the kit). The subclasses say why."""

    def __init__(self, message: str, *, kit_path: str | None) -> None:
        super().__init__(message)
        self.kit_path = kit_path


class StateMissing(RecoveryNeeded):
    """There is no state database, but the kit has erased keys: it was used before.
    `erased_counter` is one erased key: an outbound one when `erased_from` is None,
    else one received from member `erased_from`."""

    def __init__(
        self, state_path: str, *, erased_counter: int, erased_from: int | None, kit_path: str
    ) -> None:
        which = (
            f"outbound key {erased_counter}"
            if erased_from is None
            else f"inbound key {erased_counter} from member {erased_from}"
        )
        super().__init__(
            f"no state database at {state_path}, but this kit has already erased {which}: "
            "it was used before, and sending now could reuse pad",
            kit_path=kit_path,
        )
        self.state_path = state_path
        self.erased_counter = erased_counter
        self.erased_from = erased_from


class StateBehindKit(RecoveryNeeded):
    """The state database is older than the kit (a restored backup, a copy): the kit
    has erased what the database calls unused. Either the keys of message
    `erased_counter` while the database would send `next_counter` next, or the pad at
    `next_offset` of the owner's slice, where the database would send from."""

    def __init__(
        self,
        *,
        kit_path: str,
        next_counter: int | None = None,
        erased_counter: int | None = None,
        next_offset: int | None = None,
    ) -> None:
        if next_offset is not None:
            what = (
                f"it would send from offset {next_offset} of your slice next, but the kit "
                "has already erased those bytes"
            )
        else:
            what = (
                f"it would send message {next_counter} next, but the kit has already "
                f"erased the keys of message {erased_counter}"
            )
        super().__init__(f"the state database is older than the kit: {what}", kit_path=kit_path)
        self.next_counter = next_counter
        self.erased_counter = erased_counter
        self.next_offset = next_offset


class OldStateLayout(RecoveryNeeded):
    """The state database was written by an older GhostLine, in a layout (`version`)
    this one no longer reads (it reads `current`)."""

    def __init__(
        self, state_path: str, version: int, current: int, *, kit_path: str | None = None
    ) -> None:
        super().__init__(
            f"{state_path}: the state database has layout {version}, written by an older "
            f"GhostLine; this one reads only layout {current}",
            kit_path=kit_path,
        )
        self.state_path = state_path
        self.version = version
        self.current = current


class InternalError(LocalError):
    """GhostLine hit an error it did not expect (a bug): please report it."""


# --- remote faults ------------------------------------------------------------------


class RejectedMessage(RemoteError):
    """A sealed message broke a rule of docs/PROTOCOL.md section 6 and was not accepted.

    `rule` is a short stable name for the broken rule (used in logs, test vectors
    and `listen --json`); the message text explains it to a person.
    """

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class ProtocolError(RemoteError):
    """The peer broke the wire protocol (docs/PROTOCOL.md section 8).

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
