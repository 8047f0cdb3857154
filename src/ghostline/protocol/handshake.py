"""The join handshake of both ports (docs/PROTOCOL.md section 8) as two sans-IO machines.

    client                           relay
    HELLO       ------------------>        checks it against the room's known roster
                <------------------ CHALLENGE (a nonce)
    PROVE       ------------------>        verifies it; then the room is bound (ADMIT)
                <------------------ WELCOME (head, store_id)

`ClientHandshake` and `RelayHandshake` move through one table, `TRANSITIONS`: for each
role and state, the steps it may take and the state each leads to. A step is a frame
(sent by one end and received by the other, which both move alike) or `ADMIT`, the
relay's own step once the room holds the HELLO's roster. A frame the table does not
expect from the peer is refused (`ProtocolError`, ERROR 3); a step the table does not
give this end is a bug of its caller (`LocalProtocolError`). A refusal, sent or
received, ends in `FAILED`.

The rules the relay keeps, in the order it keeps them: a HELLO must match the roster the
room is known with (checked before CHALLENGE: `challenge`); PROVE must verify, and one
made for the other port is told which port it reached (`receive`); only then may the
room be registered (`admit`, which checks the roster the room is bound to); WELCOME
comes last (`welcome`).

No sockets, no clock, no randomness: the nonce and the signer are passed in. The
adapters (client/session.py, relay/server.py) read frames with `frames.FrameSplitter`,
hand them to `receive`, and write what `data_to_send` returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..errors import LocalProtocolError, ProtocolError
from .frames import (
    NONCE_LEN,
    SEQ_LIMIT,
    SIGNATURE_LEN,
    ErrorCode,
    Frame,
    FrameType,
    Hello,
    Port,
    Welcome,
    decode_error,
    encode_frame,
    join_statement,
)
from .rules import (
    BAD_SIGNATURE,
    PROVE_BAD_LENGTH,
    PROVE_FOR_PRESENCE_PORT,
    PROVE_FOR_RELAY_PORT,
    ROSTER_MISMATCH,
)

Roster = tuple[bytes, ...]  # n Ed25519 verify keys, 32 bytes each, roster order


class Role(Enum):
    CLIENT = "client"
    RELAY = "relay"


class State(Enum):
    START = "start"  # nothing exchanged yet
    HELLO = "hello"  # HELLO exchanged: the relay checks it, then challenges
    CHALLENGE = "challenge"  # CHALLENGE exchanged: the client signs the nonce
    PROVE = "prove"  # PROVE exchanged (and, at the relay, verified): the room is bound
    ADMITTED = "admitted"  # the relay only: the room holds this roster; WELCOME is next
    JOINED = "joined"  # WELCOME exchanged: the port's own frames follow
    FAILED = "failed"  # refused, by either end: the connection closes


ADMIT = "admit"  # the relay's own step between PROVE and WELCOME

Step = FrameType | str

# role -> state -> step -> the state after. Every state but JOINED and FAILED can also
# end in FAILED, by a refusal either way.
TRANSITIONS: dict[Role, dict[State, dict[Step, State]]] = {
    Role.CLIENT: {
        State.START: {FrameType.HELLO: State.HELLO},  # sends
        State.HELLO: {FrameType.CHALLENGE: State.CHALLENGE},  # receives
        State.CHALLENGE: {FrameType.PROVE: State.PROVE},  # sends
        State.PROVE: {FrameType.WELCOME: State.JOINED},  # receives
    },
    Role.RELAY: {
        State.START: {FrameType.HELLO: State.HELLO},  # receives
        State.HELLO: {FrameType.CHALLENGE: State.CHALLENGE},  # sends
        State.CHALLENGE: {FrameType.PROVE: State.PROVE},  # receives
        State.PROVE: {ADMIT: State.ADMITTED},  # its own step
        State.ADMITTED: {FrameType.WELCOME: State.JOINED},  # sends
    },
}
# Who sends each handshake frame.
SENDER = {
    FrameType.HELLO: Role.CLIENT,
    FrameType.CHALLENGE: Role.RELAY,
    FrameType.PROVE: Role.CLIENT,
    FrameType.WELCOME: Role.RELAY,
}


# --- events --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JoinRequested:
    """The relay received a well-formed HELLO: look up the room's roster, then call
    `challenge`."""

    hello: Hello


@dataclass(frozen=True, slots=True)
class JoinProven:
    """The relay received a PROVE that verifies: the client holds roster[member]. The
    room may now be registered (bind it, then call `admit`)."""

    hello: Hello


@dataclass(frozen=True, slots=True)
class Joined:
    """The client received WELCOME: the port's own frames follow."""

    welcome: Welcome


@dataclass(frozen=True, slots=True)
class Refused:
    """The client received ERROR: the relay refused and closes the connection."""

    code: int
    reason: str


# --- the machines --------------------------------------------------------------------


class _Handshake:
    role: Role

    def __init__(self, port: Port) -> None:
        self.port = port
        self.state = State.START
        self._out = bytearray()

    @property
    def expects_frame(self) -> bool:
        """Whether the next step is a frame from the peer (so `receive` may be called)."""
        steps = TRANSITIONS[self.role].get(self.state, {})
        return any(isinstance(s, FrameType) and SENDER[s] is not self.role for s in steps)

    def data_to_send(self) -> bytes:
        """The frames this end must send now, taken off its queue."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def _next(self, step: Step) -> State:
        """The state `step` (one of this end's own) leads to from the current state."""
        if isinstance(step, FrameType) and SENDER[step] is not self.role:
            raise LocalProtocolError(f"the {self.role.value} does not send {step.name}")
        after = TRANSITIONS[self.role].get(self.state, {}).get(step)
        if after is None:
            name = step.name if isinstance(step, FrameType) else step
            raise LocalProtocolError(
                f"{self.role.value} handshake: {name} is not a step of state {self.state.value}"
            )
        return after

    def _send(self, frame_type: FrameType, body: bytes) -> None:
        self.state = self._next(frame_type)
        self._out += encode_frame(frame_type, body)

    def _expect(self, frame: Frame) -> FrameType:
        """The frame type `frame` has, if it is the one the table expects from the peer;
        else refuse it."""
        steps = TRANSITIONS[self.role].get(self.state)
        if steps is None or not self.expects_frame:
            raise LocalProtocolError(
                f"{self.role.value} handshake: no frame is expected in state {self.state.value}"
            )
        (expected,) = (s for s in steps if isinstance(s, FrameType))
        if frame.type != expected:
            self.state = State.FAILED
            raise self._out_of_turn(expected, frame)
        self.state = steps[expected]
        return expected

    def _out_of_turn(self, expected: FrameType, frame: Frame) -> ProtocolError:
        raise NotImplementedError

    def _refuse(self, error: ProtocolError) -> ProtocolError:
        self.state = State.FAILED
        return error


class ClientHandshake(_Handshake):
    """The member's end: sends HELLO at once (`data_to_send`), signs the CHALLENGE with
    `sign` (the kit's Ed25519 key, passed in), and checks WELCOME."""

    role = Role.CLIENT

    def __init__(self, port: Port, hello: Hello, sign: Callable[[bytes], bytes]) -> None:
        super().__init__(port)
        self.hello = hello
        self._sign = sign
        self._send(FrameType.HELLO, hello.encode())

    def receive(self, frame: Frame) -> Joined | Refused | None:
        """Take the relay's next frame. Returns Joined once WELCOME came, Refused for an
        ERROR frame, None when there is something to send (PROVE); raises
        ProtocolError for anything the relay should not have sent."""
        if frame.type == FrameType.ERROR and self.expects_frame:
            self.state = State.FAILED
            return Refused(*decode_error(frame.body))
        kind = self._expect(frame)
        if kind == FrameType.CHALLENGE:
            if len(frame.body) != NONCE_LEN:
                raise self._refuse(
                    ProtocolError(ErrorCode.BAD_HANDSHAKE, "CHALLENGE must carry 32 bytes")
                )
            hello = self.hello
            statement = join_statement(self.port, hello.room, hello.member, frame.body)
            self._send(FrameType.PROVE, self._sign(statement))
            return None
        try:
            welcome = Welcome.decode(frame.body)
        except ProtocolError as err:
            raise self._refuse(err) from None
        if welcome.head >= SEQ_LIMIT:
            raise self._refuse(
                ProtocolError(
                    ErrorCode.BAD_HANDSHAKE, f"WELCOME names head {welcome.head}, which no room has"
                )
            )
        return Joined(welcome)

    def _out_of_turn(self, expected: FrameType, frame: Frame) -> ProtocolError:
        return ProtocolError(
            ErrorCode.BAD_HANDSHAKE,
            f"expected {expected.name}, got frame type 0x{frame.type:02x}",
        )


class RelayHandshake(_Handshake):
    """The relay's end, on the relay or the presence port (`port`): the byte a PROVE must
    sign for. The relay does the I/O between the steps (looking up and binding the
    room); this machine decides."""

    role = Role.RELAY

    def __init__(self, port: Port) -> None:
        super().__init__(port)
        self._hello: Hello | None = None
        self._nonce = b""
        self.room_known = False  # whether the room was registered when HELLO came

    @property
    def hello(self) -> Hello:
        """The client's HELLO (once received)."""
        if self._hello is None:
            raise LocalProtocolError("relay handshake: no HELLO yet")
        return self._hello

    def receive(self, frame: Frame) -> JoinRequested | JoinProven:
        """Take the client's next frame; raises ProtocolError (the ERROR to answer with)
        for anything else than the HELLO or the verifying PROVE the table expects."""
        kind = self._expect(frame)
        if kind == FrameType.HELLO:
            try:
                self._hello = Hello.decode(frame.body)
            except ProtocolError as err:
                raise self._refuse(err) from None
            return JoinRequested(self._hello)
        try:
            verify_prove(self.port, self.hello, self._nonce, frame.body)
        except ProtocolError as err:
            raise self._refuse(err) from None
        return JoinProven(self.hello)

    def challenge(self, nonce: bytes, known: Roster | None) -> None:
        """After HELLO: `known` is the roster the room is registered with (None: the
        relay does not know the room). Refuses a HELLO that does not match it; else
        queues CHALLENGE with `nonce` (32 random bytes the caller drew)."""
        self._next(FrameType.CHALLENGE)
        if len(nonce) != NONCE_LEN:
            raise LocalProtocolError(f"a nonce is {NONCE_LEN} bytes")
        if known is not None and self.hello.roster != known:
            raise self._refuse(ROSTER_MISMATCH.error())
        self._nonce = nonce
        self.room_known = known is not None
        self._send(FrameType.CHALLENGE, nonce)

    def admit(self, bound: Roster) -> None:
        """After JoinProven, once the room is bound: `bound` is the roster the room now
        holds (this HELLO's if it registered the room). Refuses a HELLO that does not
        match it (another connection registered the room first)."""
        after = self._next(ADMIT)
        if self.hello.roster != bound:
            raise self._refuse(ROSTER_MISMATCH.error())
        self.state = after

    def welcome(self, head: int, store_id: bytes) -> None:
        """Queue WELCOME: the room's newest seq and the store's identity."""
        self.state = self._next(FrameType.WELCOME)
        self._out += Welcome(head, store_id).encode()

    def _out_of_turn(self, expected: FrameType, frame: Frame) -> ProtocolError:
        return ProtocolError(ErrorCode.BAD_HANDSHAKE, f"expected {expected.name}")


def verify_prove(port: Port, hello: Hello, nonce: bytes, signature: bytes) -> None:
    """PROVE must be an Ed25519 signature by roster[member] over the join statement of
    `port`. One made for the other port (a client pointed at the wrong one) is told so,
    rather than blamed on its key."""
    if len(signature) != SIGNATURE_LEN:
        raise PROVE_BAD_LENGTH.error()
    try:
        key = Ed25519PublicKey.from_public_bytes(hello.roster[hello.member])
    except ValueError as err:
        raise BAD_SIGNATURE.error() from err
    if _verifies(key, signature, join_statement(port, hello.room, hello.member, nonce)):
        return
    other = Port.PRESENCE if port == Port.RELAY else Port.RELAY
    if _verifies(key, signature, join_statement(other, hello.room, hello.member, nonce)):
        raise (PROVE_FOR_RELAY_PORT if port == Port.PRESENCE else PROVE_FOR_PRESENCE_PORT).error()
    raise BAD_SIGNATURE.error()


def _verifies(key: Ed25519PublicKey, signature: bytes, statement: bytes) -> bool:
    try:
        key.verify(signature, statement)
    except InvalidSignature:
        return False
    return True
