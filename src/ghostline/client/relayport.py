"""The relay port, once joined: what the relay sends goes to the inbox (DELIVER) and the
outbox (ACCEPTED), each number checked first; what the outbox holds goes out; pings keep
the link and notice a silent relay; the inbox watches for holes. The first of these to
end ends the connection (client.py reconnects)."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ProtocolError
from ..protocol.frames import ErrorCode, FrameType, decode_accepted, decode_deliver
from .inbox import Inbox, Receiving
from .outbox import Outbox, OutQueue
from .session import Session, first_failure, refused_or_unexpected


async def serve(
    session: Session,
    rx: Receiving,
    queue: OutQueue,
    inbox: Inbox,
    outbox: Outbox,
    *,
    ping_interval: float,
    progress: Callable[[], None],
) -> None:
    """Run the joined relay-port session until something ends it (raises why).
    `progress` is called whenever the relay does its job (a frame that is not ERROR)."""
    loops = [
        read_loop(session, rx, inbox, outbox, progress),
        outbox.write_loop(session, queue),
        session.ping_loop(ping_interval),
    ]
    if inbox.receive:
        loops.append(inbox.gap_loop(rx))
    await first_failure(*loops)


async def read_loop(
    session: Session, rx: Receiving, inbox: Inbox, outbox: Outbox, progress: Callable[[], None]
) -> None:
    auth_keys = inbox.member.header.auth_keys
    while True:
        frame = await session.read()
        kind = frame.type
        if kind == FrameType.DELIVER:
            seq, sealed = decode_deliver(frame.body)
            rx.guard.check(seq)
            progress()
            await inbox.on_deliver(rx, seq, sealed)
        elif kind == FrameType.ACCEPTED:
            seq, counter = decode_accepted(frame.body)
            rx.guard.check(seq)
            if counter >= auth_keys:
                raise ProtocolError(
                    ErrorCode.MALFORMED,
                    f"the relay accepted message {counter}, which this kit cannot have sent",
                )
            progress()
            await outbox.on_accepted(
                counter, seq, store_id=rx.store_id, settle=inbox.receive, relay=rx.relay
            )
        elif kind == FrameType.PONG:
            progress()
        else:
            raise refused_or_unexpected(frame)
