"""The client's state, named: one value at a time, moved only along `MOVES`."""

from __future__ import annotations

from enum import Enum

from .events import ConnectionState


class ClientState(Enum):
    IDLE = "idle"  # made, not started
    CONNECTING = "connecting"  # the first attempt
    CONNECTED = "connected"  # joined the relay port: sending and receiving
    RECONNECTING = "reconnecting"  # waiting to try again, or trying again
    STOPPED = "stopped"  # `stop` was called
    FAILED = "failed"  # stopped by `failure`, which retrying cannot fix

    @property
    def shown(self) -> ConnectionState:
        """The state as ConnectionChanged carries it."""
        return _SHOWN[self]


_SHOWN: dict[ClientState, ConnectionState] = {
    ClientState.IDLE: "stopped",
    ClientState.CONNECTING: "connecting",
    ClientState.CONNECTED: "connected",
    ClientState.RECONNECTING: "reconnecting",
    ClientState.STOPPED: "stopped",
    ClientState.FAILED: "stopped",
}
# The moves a client makes; any other is a bug.
MOVES: dict[ClientState, frozenset[ClientState]] = {
    ClientState.IDLE: frozenset({ClientState.CONNECTING}),
    ClientState.CONNECTING: frozenset(
        {ClientState.CONNECTED, ClientState.RECONNECTING, ClientState.STOPPED, ClientState.FAILED}
    ),
    ClientState.CONNECTED: frozenset(
        {ClientState.RECONNECTING, ClientState.STOPPED, ClientState.FAILED}
    ),
    ClientState.RECONNECTING: frozenset(
        {ClientState.RECONNECTING, ClientState.CONNECTED, ClientState.STOPPED, ClientState.FAILED}
    ),
    ClientState.STOPPED: frozenset({ClientState.CONNECTING}),
    ClientState.FAILED: frozenset({ClientState.CONNECTING}),  # started again after `stop`
}
