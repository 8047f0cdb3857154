"""The member side of the network: one relay connection at a time, reconnecting,
resending the outbox, following presence (asyncio adapters around the pure protocol).

What the apps use is here: `Client`, its events, and the addresses and TLS options it
takes. The modules: client.py (the client and its state), session.py (one connection),
outbox.py, inbox.py, presence.py, durable.py (the worker thread for commits), events.py,
transport.py (opening a stream: TLS, SOCKS5)."""

from .client import Client, ClientState
from .events import (
    AlreadyReceived,
    ConnectionChanged,
    ConnectionState,
    Event,
    MessageAccepted,
    MessageReceived,
    MessageRejected,
    MessagesMissing,
    PadExhausted,
    PadGiven,
    PadLow,
    PresenceChanged,
    RelayError,
    RelayFailing,
    StoreChanged,
)
from .transport import RelayAddress, TlsOptions

__all__ = [
    "AlreadyReceived",
    "Client",
    "ClientState",
    "ConnectionChanged",
    "ConnectionState",
    "Event",
    "MessageAccepted",
    "MessageReceived",
    "MessageRejected",
    "MessagesMissing",
    "PadExhausted",
    "PadGiven",
    "PadLow",
    "PresenceChanged",
    "RelayAddress",
    "RelayError",
    "RelayFailing",
    "StoreChanged",
    "TlsOptions",
]
