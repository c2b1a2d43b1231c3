"""A session's lifecycle as declared state, the way h11 declares a connection's: one enum of
states, one table of the moves between them, and nothing else that says where a session
is. TTS and STT sessions drive the same machine; what a command may do in a state is
read from the table, and a move the table does not have is a local protocol error that
carries its own error kind (and so its close code, where it has one)."""

from __future__ import annotations

from enum import Enum

from slng_fast import errors
from slng_fast.errors import ErrorKind, GatewayError


class SessionState(Enum):
    IDLE = "idle"
    """Connected, nothing accepted yet: the first frame decides unified or native."""
    AWAITING_OPEN = "awaiting_open"
    """Unified; waiting for ``init`` (TTS) or ``start`` (STT)."""
    OPEN = "open"
    """Unified and opened: text, audio and the other commands are taken."""
    NATIVE = "native"
    """The provider's own protocol, passed through; the unified commands are not read."""
    ENDED = "ended"
    """``session_ended`` was decided; every later frame is ignored."""


class SessionEvent(Enum):
    UNIFIED_FRAME = "a unified command"
    NATIVE_FRAME = "a frame in the provider's own protocol"
    OPEN = "init/start"
    END = "the end of the session"


S, E = SessionState, SessionEvent

TRANSITIONS: dict[tuple[SessionState, SessionEvent], SessionState] = {
    (S.IDLE, E.UNIFIED_FRAME): S.AWAITING_OPEN,
    (S.IDLE, E.NATIVE_FRAME): S.NATIVE,
    (S.AWAITING_OPEN, E.OPEN): S.OPEN,
    **{(state, E.END): S.ENDED for state in (S.IDLE, S.AWAITING_OPEN, S.OPEN, S.NATIVE)},
}

# The error a move the table lacks is answered with; any other is an internal error.
_REFUSALS: dict[tuple[SessionState, SessionEvent], tuple[ErrorKind, str]] = {
    (S.OPEN, E.OPEN): (errors.ALREADY_INITIALIZED, "the session is already {opened}"),
}


class SessionProtocolError(GatewayError):
    """A move the table does not have: the client asked for something this state cannot
    do. Its kind says how it is answered (an ``error`` event, and the close code if the
    kind has one)."""


class SessionMachine:
    """Where one session is. ``opened`` names the open command in messages ("initialized"
    for TTS, "started" for STT)."""

    __slots__ = ("opened", "state")

    def __init__(self, opened: str = "initialized") -> None:
        self.state = SessionState.IDLE
        self.opened = opened

    def check(self, event: SessionEvent) -> None:
        """Raise SessionProtocolError unless the table has ``event`` from this state."""
        if (self.state, event) not in TRANSITIONS:
            kind, message = _REFUSALS.get((self.state, event), (
                errors.INTERNAL_ERROR, "{event} is not possible while the session is {state}"))
            raise SessionProtocolError(kind, message.format(
                opened=self.opened, event=event.value, state=self.state.value))

    def move(self, event: SessionEvent) -> SessionState:
        """Take ``event``; the new state, or SessionProtocolError when the table has no
        such move (the state is then unchanged)."""
        self.check(event)
        self.state = TRANSITIONS[self.state, event]
        return self.state

    def require(self, *states: SessionState, command: str, first: str) -> None:
        """A command that only some states take: otherwise ``invalid_message`` telling the
        client what to send ``first``."""
        if self.state not in states:
            raise SessionProtocolError(errors.INVALID_MESSAGE,
                                       f"send {first!r} before {command!r}")
