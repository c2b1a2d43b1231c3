"""What every session shares, TTS or STT: taking client frames in (size, UTF-8, rate
limit, the unified/native decision), usage, and ending. Pure: no I/O, time passed in."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slng_fast import _native, errors
from slng_fast._native import RelayReport
from slng_fast.config import TierLimits
from slng_fast.errors import GatewayError
from slng_fast.protocol import events
from slng_fast.protocol.actions import Action, CloseClient, CloseUpstream, SendClient
from slng_fast.protocol.state import SessionEvent, SessionMachine, SessionState
from slng_fast.vocabulary import Endpoint

UNIFIED = "unified"
NATIVE = "native"
PROVIDER_TIMEOUT_S = 10.0

# `type` values that providers' own protocols use: in a unified session they are
# `mixed_protocol`, not `unknown_command` (PROTOCOL.md section 3).
NATIVE_TYPES = frozenset({
    "control", "Speak", "Flush", "Clear", "Close", "KeepAlive", "CloseStream", "Finalize",
    "Audio", "Marker", "text", "transcript",
})


@dataclass
class Usage:
    characters: int = 0
    audio_ms: float = 0.0
    messages: int = 0

    def as_dict(self, duration_ms: float) -> dict[str, Any]:
        return {"characters": self.characters, "audio_ms": round(self.audio_ms, 3),
                "messages": self.messages, "duration_ms": round(duration_ms, 3)}


class SessionCore:
    """Shared intake and lifecycle; subclasses handle commands and upstream events."""
    __slots__ = ("_end_reason", "_mode_at_end", "_rate_limit", "context_id", "draining", "endpoint", "last_upstream", "machine", "observations", "passthrough", "provider_timeout_s", "session_id", "started_at", "tier", "upstream_epoch", "upstream_open", "connected_epoch", "usage", "dialect", "defaults", "audio")

    endpoint_kind = "tts"
    opened_word = "initialized"  # what the open command did, for messages

    # -- where the session is: read from its machine ------------------------------------
    @property
    def state(self) -> SessionState:
        return self.machine.state

    @property
    def mode(self) -> str | None:
        """The protocol the first frame chose: UNIFIED, NATIVE, or None before it."""
        state = self.machine.state
        if state is SessionState.NATIVE:
            return NATIVE
        if state in (SessionState.AWAITING_OPEN, SessionState.OPEN):
            return UNIFIED
        return self._mode_at_end if state is SessionState.ENDED else None

    @property
    def ended(self) -> str | None:
        """Why the session ended (the ``session_ended`` reason), or None while it runs."""
        return self._end_reason

    @property
    def opened(self) -> bool:
        """``init`` (TTS) or ``start`` (STT) was taken, explicitly or implied."""
        return self.machine.state is SessionState.OPEN

    def _choose_mode(self, mode: str) -> None:
        self.machine.move(SessionEvent.NATIVE_FRAME if mode == NATIVE
                          else SessionEvent.UNIFIED_FRAME)

    def __init__(self, *, endpoint: Endpoint, tier: TierLimits, now: float,
                 context_id: str | None = None,
                 rate_limit: Callable[[float], float] | None = None,
                 provider_timeout_s: float = PROVIDER_TIMEOUT_S) -> None:
        self.endpoint = endpoint
        self.tier = tier
        self.started_at = now
        self.context_id = context_id or str(uuid.uuid4())
        self.session_id = str(uuid.uuid4())
        self.machine = SessionMachine(self.opened_word)
        self._mode_at_end: str | None = None
        self._end_reason: str | None = None
        self.usage = Usage()
        # What happened, for the I/O layer's metrics: ("error", code), ("first_audio",
        # seconds). The I/O layer drains it after every step.
        self.observations: list[tuple[str, Any]] = []
        self._rate_limit = rate_limit
        self.upstream_epoch = 0
        self.upstream_open = False
        # The upstream whose connection is open (the I/O layer says so): until then, the
        # connect budget, not the provider's silence, bounds the wait for it.
        self.connected_epoch = -1
        # A drop-in SDK route: native from the first frame, upstream by this request.
        self.passthrough: Any = None
        # While the client waits on the provider (an utterance, a finalize), a provider
        # that sends nothing for this long is given up on (`on_deadline`).
        self.provider_timeout_s = provider_timeout_s
        self.draining = False
        self.last_upstream = now  # when the current upstream last sent anything

    # -- intake ---------------------------------------------------------------------
    def receive_text(self, frame: str | bytes, now: float,
                     rate_wait: float | None = None) -> list[Action]:
        """A client text frame. ``rate_wait``: the messages-per-minute answer for it when
        the I/O layer asked the limits backend already (else ``rate_limit`` is asked)."""
        if self.ended:
            return []
        kind, name, payload = _native.classify_frame(
            frame, self.tier.max_message_bytes, self.endpoint_kind)
        if kind == "invalid" and name == "invalid_utf8":
            return self._fatal(GatewayError(errors.INVALID_MESSAGE, str(payload)),
                               errors.CLOSE_PROTOCOL_ERROR, now, reason="error")
        if kind == "invalid" and name == "message_too_large":
            return self._fatal(GatewayError(errors.MESSAGE_TOO_LARGE, str(payload)),
                               errors.CLOSE_MESSAGE_TOO_LARGE, now, reason="error")
        if rate_wait is None and self._rate_limit is not None:
            rate_wait = self._rate_limit(now)
        if rate_wait is not None:
            wait = rate_wait
            if wait > 0:
                err = GatewayError(errors.RATE_LIMITED,
                                   f"over {self.tier.messages_per_minute} messages per minute",
                                   retry_after_ms=max(1, int(wait * 1000 + 0.999)))
                if self.mode is None:
                    if not self._speaks_unified(kind, frame):
                        return self._fatal(err, errors.CLOSE_RATE_LIMITED, now,
                                           reason="error")
                    # The client heard a unified error: its session is unified, or a
                    # binary frame next would make it native.
                    self._choose_mode(UNIFIED)
                if self.mode == NATIVE:
                    return self._fatal(err, errors.CLOSE_RATE_LIMITED, now, reason="error")
                return [self._error(err)]
        self.usage.messages += 1
        if self.mode is None:
            self._choose_mode(UNIFIED if self._speaks_unified(kind, frame) else NATIVE)
            if self.mode == NATIVE:
                return self.start_native(now) + self.native_from_client(frame, now)
        if self.mode == NATIVE:
            return self.native_from_client(frame, now)
        if kind == "command":
            try:
                return self.on_command(str(name), payload, now)
            except GatewayError as err:
                if err.fatal_close_code is not None:  # an impossible move: not the client's
                    return self.fail(err, now)
                return [self._error(err)]
        if kind == "invalid":
            return [self._error(GatewayError(errors.INVALID_MESSAGE, str(payload)))]
        if name is None or name in NATIVE_TYPES:
            what = "plain text" if payload is None else (
                "a JSON object without 'type'" if name is None else f"type {name!r}")
            return [self._error(GatewayError(
                errors.MIXED_PROTOCOL,
                f"{what} is the provider's own protocol; this session speaks the unified one"))]
        return [self._error(GatewayError(errors.UNKNOWN_COMMAND,
                                         f"unknown command type {name!r}"))]

    def _speaks_unified(self, kind: str, frame: str | bytes) -> bool:
        """Whether a first text frame makes the session unified: a unified command,
        also one the classifier refused for a value in it (a lone surrogate escape,
        deep nesting, a huge integer), which then gets ``invalid_message``."""
        if self.passthrough is not None:
            return False
        if kind == "command":
            return True
        return kind == "invalid" and _native.refused_command(
            frame, self.endpoint_kind) is not None

    def message_too_large(self, what: str, now: float) -> list[Action]:
        """The frame layer refused a message over the tier's size from its header (the
        connection cannot be read further): ``message_too_large`` and close 4002."""
        if self.ended:
            return []
        limit = max(self.tier.max_message_bytes, self.tier.max_audio_chunk_bytes)
        err = GatewayError(errors.MESSAGE_TOO_LARGE,
                           f"{what}: the {self.tier.name} tier allows {limit} bytes per message")
        return self._fatal(err, errors.CLOSE_MESSAGE_TOO_LARGE, now, reason="error")

    def receive_binary(self, frame: bytes, now: float) -> list[Action]:
        if self.ended:
            return []
        if len(frame) > self.tier.max_audio_chunk_bytes:
            err = GatewayError(errors.MESSAGE_TOO_LARGE,
                               f"binary frame of {len(frame)} bytes exceeds the "
                               f"{self.tier.max_audio_chunk_bytes}-byte audio frame limit")
            return self._fatal(err, errors.CLOSE_MESSAGE_TOO_LARGE, now, reason="error")
        if self.mode is None:
            self._choose_mode(NATIVE if self.passthrough is not None
                              else self.mode_for_first_binary(frame))
            if self.mode == NATIVE:
                return self.start_native(now) + self.native_from_client(frame, now)
        if self.mode == NATIVE:
            return self.native_from_client(frame, now)
        return self.on_audio(frame, now)

    # -- subclass hooks ----------------------------------------------------------------
    def metered(self, frame: str | bytes) -> bool:
        """Whether a text frame counts against messages per minute (asked by the I/O
        layer before it asks the limits backend). A protocol whose audio travels in text
        frames (OpenAI Realtime's appends) leaves those out, as binary audio is."""
        return True

    def mode_for_first_binary(self, frame: bytes) -> str:
        return NATIVE

    def on_command(self, name: str, fields: dict[str, Any], now: float) -> list[Action]:
        raise NotImplementedError

    def on_audio(self, frame: bytes, now: float) -> list[Action]:
        return [self._error(GatewayError(errors.INVALID_MESSAGE,
                                         "binary frames are not accepted on a TTS session"))]

    def start_native(self, now: float) -> list[Action]:
        raise NotImplementedError

    def native_from_client(self, frame: str | bytes, now: float) -> list[Action]:
        raise NotImplementedError

    def on_upstream_closed(self, now: float, code: int | None = None,
                           reason: str | None = None) -> list[Action]:
        raise NotImplementedError

    def deadline(self) -> float | None:
        """When the I/O layer should call ``on_deadline`` (a time on the clock ``now``
        comes from), or None. Read after every step; ``on_deadline`` moves or clears it."""
        return None

    def on_deadline(self, now: float) -> list[Action]:
        return []

    def relayed(self, epoch: int, report: RelayReport, now: float) -> None:
        """What the data plane carried of a stream this session lent it (`StartRelay`);
        a session that lends none has nothing to count."""
        return None

    def uplinked(self, epoch: int, report: RelayReport, now: float) -> None:
        """What the data plane carried of the client's audio this session lent it
        (`StartUplink`, STT); a session that lends none has nothing to count."""
        return None

    # -- upstream lifecycle (called by the I/O layer) -------------------------------------
    def upstream_connected(self, epoch: int, now: float) -> list[Action]:
        """The upstream's connection is open: its silence counts from now."""
        if not self.ended and epoch == self.upstream_epoch and self.upstream_open:
            self.connected_epoch = epoch
            self.last_upstream = max(self.last_upstream, now)
        return []

    @property
    def upstream_connecting(self) -> bool:
        """An upstream was asked for and its connection is not open yet."""
        return self.upstream_open and self.connected_epoch != self.upstream_epoch

    def upstream_failed(self, epoch: int, message: str, now: float,
                        status: int | None = None) -> list[Action]:
        """The upstream could not be opened (or has no credentials); ``status``: the HTTP
        status of a refused handshake, None for a network fault or a timeout."""
        if self.ended or epoch != self.upstream_epoch:
            return []
        self.upstream_open = False
        err = GatewayError(errors.PROVIDER_UNAVAILABLE, message)
        return self._fatal(err, errors.CLOSE_TRY_AGAIN_LATER, now, reason="error")

    def upstream_closed(self, epoch: int, now: float, code: int | None = None,
                        reason: str | None = None) -> list[Action]:
        """The upstream went away (``code``/``reason``: its close frame, when it sent one;
        no code but a reason: the gateway dropped it, and the reason says why)."""
        if self.ended or epoch != self.upstream_epoch or not self.upstream_open:
            return []
        self.upstream_open = False
        if self.mode == NATIVE:
            if code is None and reason:  # the gateway dropped it (it broke the protocol)
                return self.end("upstream_closed", now, close_code=errors.CLOSE_INTERNAL_ERROR,
                                close_reason=reason[:120])
            # A provider's error close (1003, 1008, 1009, 1011, ...) is passed on as it is.
            passed_on = code if code is not None and code >= 1002 and code != 1005 and code != 1006 else None
            return self.end("upstream_closed", now, close_code=passed_on or errors.CLOSE_NORMAL,
                            close_reason=(reason or "")[:120] if passed_on else "")
        return self.on_upstream_closed(now, code, reason) + self._ended_if_drained(now)

    # -- draining (a rolling deploy) -------------------------------------------------------
    def drain(self, now: float) -> list[Action]:
        """The gateway is draining: end now if nothing is in flight, else once the work in
        flight is done (`_ended_if_drained` after each step that may finish it). A native
        session's state is the provider's, so it runs until the drain's deadline."""
        self.draining = True
        return self._ended_if_drained(now)

    def in_flight(self) -> bool:
        """Work the client waits for (an utterance, a finalize); native mode: always."""
        return self.mode == NATIVE

    def _ended_if_drained(self, now: float) -> list[Action]:
        if not self.draining or self.ended or self.in_flight():
            return []
        return self.end("server_shutdown", now, close_code=errors.CLOSE_GOING_AWAY)

    # -- ending --------------------------------------------------------------------------
    def end(self, reason: str, now: float, *, close_code: int = errors.CLOSE_NORMAL,
            close_reason: str = "") -> list[Action]:
        """End the session: `session_ended` (unified only), close upstream and client."""
        if self.ended:
            return []
        self._mode_at_end = self.mode
        self._end_reason = reason
        self.machine.move(SessionEvent.END)
        actions: list[Action] = []
        if self.mode != NATIVE:
            actions.append(SendClient(events.session_ended(
                self.context_id, reason, self.usage_dict(now))))
        if self.upstream_open:
            actions.append(CloseUpstream(self.upstream_epoch))
            self.upstream_open = False
        actions.append(CloseClient(close_code, close_reason or reason))
        return actions

    def usage_dict(self, now: float) -> dict[str, Any]:
        return self.usage.as_dict((now - self.started_at) * 1000.0)

    def _error(self, err: GatewayError) -> SendClient:
        self.observations.append(("error", err.kind.code))
        return SendClient(events.error(self.context_id, err))

    def _fatal(self, err: GatewayError, code: int, now: float, *, reason: str) -> list[Action]:
        actions: list[Action] = []
        if self.mode != NATIVE:
            actions.append(self._error(err))
        return actions + self.end(reason, now, close_code=code, close_reason=err.message[:120])

    def fail(self, err: GatewayError, now: float) -> list[Action]:
        """End the session because of `err` (its close code, or 1011)."""
        return self._fatal(err, err.fatal_close_code or errors.CLOSE_INTERNAL_ERROR, now,
                           reason="error")
