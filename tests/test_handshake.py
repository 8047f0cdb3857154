"""The join handshake as two sans-IO machines (protocol/handshake.py), run against each
other over a fake wire: bytes out of one, through a FrameSplitter, into the other. The
socket tests of the same rules are tests/relay/test_relay_handshake.py."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ghostline.errors import LocalProtocolError, ProtocolError
from ghostline.protocol import rules
from ghostline.protocol.frames import (
    REASON_PRESENCE_PORT,
    REASON_RELAY_PORT,
    SEQ_LIMIT,
    ErrorCode,
    Frame,
    FrameSplitter,
    FrameType,
    Hello,
    Port,
    Welcome,
    encode_error,
    encode_frame,
    join_statement,
)
from ghostline.protocol.handshake import (
    ADMIT,
    SENDER,
    TRANSITIONS,
    ClientHandshake,
    Joined,
    JoinProven,
    JoinRequested,
    Refused,
    RelayHandshake,
    Role,
    State,
)

ROOM = bytes(range(16))
NONCE = bytes(range(100, 132))
STORE = b"s" * 16
KEYS = [Ed25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32) for i in range(3)]
ROSTER = tuple(k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) for k in KEYS)


def frames_of(data: bytes) -> list[Frame]:
    splitter = FrameSplitter()
    return splitter.take(splitter.feed(data))


def one(data: bytes) -> Frame:
    (frame,) = frames_of(data)
    return frame


def client(
    member: int = 1, port: Port = Port.RELAY, key: int | None = None, roster=ROSTER
) -> ClientHandshake:
    hello = Hello(ROOM, member, roster, 5)
    return ClientHandshake(port, hello, KEYS[member if key is None else key].sign)


def join(c: ClientHandshake, r: RelayHandshake, known=None, bound=ROSTER) -> Joined:
    """Run both machines to the end over the fake wire; returns the client's Joined."""
    event = r.receive(one(c.data_to_send()))
    assert isinstance(event, JoinRequested) and event.hello == c.hello
    r.challenge(NONCE, known)
    assert c.receive(one(r.data_to_send())) is None  # it answers with PROVE
    assert isinstance(r.receive(one(c.data_to_send())), JoinProven)
    r.admit(bound)
    r.welcome(9, STORE)
    joined = c.receive(one(r.data_to_send()))
    assert isinstance(joined, Joined)
    return joined


def test_both_machines_walk_the_table_to_joined_and_agree_on_every_frame() -> None:
    c, r = client(), RelayHandshake(Port.RELAY)
    assert r.state is State.START and r.expects_frame
    hello = one(c.data_to_send())  # queued as the client's machine is made
    assert hello.type == FrameType.HELLO and c.state is State.HELLO and c.expects_frame
    r.receive(hello)
    assert r.state is State.HELLO and not r.expects_frame  # its own step: the roster
    r.challenge(NONCE, None)
    challenge = one(r.data_to_send())
    assert challenge == Frame(FrameType.CHALLENGE, NONCE)  # the nonce passed in, as is
    c.receive(challenge)
    prove = one(c.data_to_send())
    assert prove.body == KEYS[1].sign(join_statement(Port.RELAY, ROOM, 1, NONCE))
    assert isinstance(r.receive(prove), JoinProven) and r.state is State.PROVE
    r.admit(ROSTER)
    assert r.state is State.ADMITTED
    r.welcome(9, STORE)
    assert c.receive(one(r.data_to_send())) == Joined(Welcome(9, STORE))
    assert c.state is State.JOINED is r.state
    assert c.data_to_send() == r.data_to_send() == b""


def test_the_table_gives_both_roles_the_same_frames_in_the_same_order() -> None:
    def conversation(role: Role) -> list[FrameType]:
        state, out = State.START, []
        while state in TRANSITIONS[role]:
            ((step, state),) = TRANSITIONS[role][state].items()
            if step != ADMIT:
                out.append(step)
        assert state is State.JOINED
        return out

    frames = [FrameType.HELLO, FrameType.CHALLENGE, FrameType.PROVE, FrameType.WELCOME]
    assert conversation(Role.CLIENT) == conversation(Role.RELAY) == frames
    assert [SENDER[f] for f in frames] == [Role.CLIENT, Role.RELAY, Role.CLIENT, Role.RELAY]


def test_a_known_room_is_joined_with_the_same_roster_on_the_presence_port() -> None:
    c, r = client(port=Port.PRESENCE), RelayHandshake(Port.PRESENCE)
    assert join(c, r, known=ROSTER).welcome == Welcome(9, STORE)
    assert r.room_known


def test_a_hello_that_does_not_match_the_known_roster_gets_no_challenge() -> None:
    c, r = client(), RelayHandshake(Port.RELAY)
    r.receive(one(c.data_to_send()))
    with pytest.raises(ProtocolError) as caught:
        r.challenge(NONCE, ROSTER[::-1])
    assert (caught.value.code, caught.value.rule) == (ErrorCode.ROSTER_MISMATCH, "roster_mismatch")
    assert r.state is State.FAILED and r.data_to_send() == b""


def test_a_room_bound_meanwhile_to_another_roster_is_not_joined() -> None:
    c, r = client(), RelayHandshake(Port.RELAY)
    r.receive(one(c.data_to_send()))
    r.challenge(NONCE, None)
    c.receive(one(r.data_to_send()))
    r.receive(one(c.data_to_send()))
    with pytest.raises(ProtocolError) as caught:
        r.admit(ROSTER[::-1])  # another connection registered the room first
    assert caught.value.code == ErrorCode.ROSTER_MISMATCH and r.state is State.FAILED


@pytest.mark.parametrize(
    ("client_port", "relay_port", "reason"),
    [
        (Port.PRESENCE, Port.RELAY, REASON_RELAY_PORT),
        (Port.RELAY, Port.PRESENCE, REASON_PRESENCE_PORT),
    ],
)
def test_a_prove_made_for_the_other_port_names_the_port_it_reached(
    client_port: Port, relay_port: Port, reason: str
) -> None:
    c, r = client(port=client_port), RelayHandshake(relay_port)
    r.receive(one(c.data_to_send()))
    r.challenge(NONCE, None)
    c.receive(one(r.data_to_send()))
    with pytest.raises(ProtocolError) as caught:
        r.receive(one(c.data_to_send()))
    assert (caught.value.code, caught.value.message) == (ErrorCode.BAD_HANDSHAKE, reason)
    assert r.state is State.FAILED


@pytest.mark.parametrize(
    ("prove", "rule"),
    [
        (lambda statement: KEYS[2].sign(statement), rules.BAD_SIGNATURE),  # another key
        (lambda statement: KEYS[1].sign(statement[:-1] + b"x"), rules.BAD_SIGNATURE),
        (lambda statement: bytes(63), rules.PROVE_BAD_LENGTH),
    ],
)
def test_a_prove_that_does_not_verify_is_refused_before_the_room_is_bound(prove, rule) -> None:  # type: ignore[no-untyped-def]
    c, r = client(), RelayHandshake(Port.RELAY)
    r.receive(one(c.data_to_send()))
    r.challenge(NONCE, None)
    body = prove(join_statement(Port.RELAY, ROOM, 1, NONCE))
    with pytest.raises(ProtocolError) as caught:
        r.receive(Frame(FrameType.PROVE, body))
    assert (caught.value.code, caught.value.rule) == (rule.code, rule.name)
    with pytest.raises(LocalProtocolError):
        r.admit(ROSTER)  # no room is registered after a failed PROVE


def test_frames_out_of_turn_are_bad_handshakes_at_either_end() -> None:
    r = RelayHandshake(Port.RELAY)
    with pytest.raises(ProtocolError, match="expected HELLO") as caught:
        r.receive(Frame(FrameType.PUBLISH, b"x"))
    assert caught.value.code == ErrorCode.BAD_HANDSHAKE and r.state is State.FAILED
    r = RelayHandshake(Port.RELAY)
    r.receive(one(client().data_to_send()))
    r.challenge(NONCE, None)
    with pytest.raises(ProtocolError, match="expected PROVE"):
        r.receive(Frame(FrameType.PING, b""))
    c = client()
    with pytest.raises(ProtocolError, match="expected CHALLENGE, got frame type 0x82") as caught:
        c.receive(one(Welcome(0, STORE).encode()))
    assert caught.value.code == ErrorCode.BAD_HANDSHAKE and c.state is State.FAILED


def test_a_malformed_hello_is_a_bad_handshake() -> None:
    r = RelayHandshake(Port.RELAY)
    with pytest.raises(ProtocolError) as caught:
        r.receive(Frame(FrameType.HELLO, client().hello.encode()[:-1]))
    assert caught.value.code == ErrorCode.BAD_HANDSHAKE and r.state is State.FAILED


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (encode_frame(FrameType.CHALLENGE, bytes(31)), "CHALLENGE must carry 32 bytes"),
        (None, "which no room has"),  # WELCOME with a head of 2^63
        ("short welcome", "WELCOME must carry 24 bytes"),
    ],
)
def test_the_client_refuses_a_challenge_or_welcome_it_cannot_use(reply, match: str) -> None:  # type: ignore[no-untyped-def]
    c = client()
    c.data_to_send()
    if reply is None or reply == "short welcome":
        c.receive(Frame(FrameType.CHALLENGE, NONCE))
        c.data_to_send()
        reply = (
            Welcome(SEQ_LIMIT, STORE).encode()
            if reply is None
            else encode_frame(FrameType.WELCOME, bytes(23))
        )
    with pytest.raises(ProtocolError, match=match) as caught:
        c.receive(one(reply))
    assert caught.value.code == ErrorCode.BAD_HANDSHAKE and c.state is State.FAILED


def test_an_error_from_the_relay_ends_the_clients_handshake_as_refused() -> None:
    c = client()
    c.data_to_send()
    refused = c.receive(one(encode_error(ErrorCode.RELAY_FULL, "relay full")))
    assert refused == Refused(ErrorCode.RELAY_FULL, "relay full") and c.state is State.FAILED
    with pytest.raises(LocalProtocolError):
        c.receive(Frame(FrameType.CHALLENGE, NONCE))


def test_steps_out_of_order_are_the_callers_bug_and_change_nothing() -> None:
    r = RelayHandshake(Port.RELAY)
    for misuse in (lambda: r.challenge(NONCE, None), lambda: r.welcome(0, STORE)):
        with pytest.raises(LocalProtocolError):
            misuse()
        assert r.state is State.START
    r.receive(one(client().data_to_send()))
    with pytest.raises(LocalProtocolError):
        r.receive(Frame(FrameType.PROVE, bytes(64)))  # the relay must challenge first
    with pytest.raises(LocalProtocolError):
        r.challenge(bytes(31), None)  # a nonce is 32 bytes
    r.challenge(NONCE, None)
    with pytest.raises(LocalProtocolError):
        r.welcome(0, STORE)  # not before the PROVE, nor before the room is bound
    assert r.state is State.CHALLENGE and r.data_to_send() == encode_frame(
        FrameType.CHALLENGE, NONCE
    )
