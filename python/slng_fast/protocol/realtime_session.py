"""A unified STT session spoken to in OpenAI's Realtime transcription protocol: the same
session (auth, limits, upstream, usage, ledger) with `openai_realtime` translating at
its edge. Client events become unified steps handed to `SttSession`; every unified frame
the session would send becomes the OpenAI events it means.

The translation of outgoing frames happens once, at the outermost entry point the I/O
layer calls (an inner call, e.g. ``end`` from ``fail``, leaves its frames to the outer
one). Frames this class builds itself are bytes (UTF-8 JSON, ``text=True``), which
the translation passes on untouched; the unified ones are str."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from slng_fast import errors
from slng_fast.errors import GatewayError
from slng_fast.protocol import openai_realtime as rt
from slng_fast.protocol.actions import Action, SendClient
from slng_fast.protocol.session import UNIFIED
from slng_fast.protocol.stt import SttSession

F = TypeVar("F", bound=Callable[..., list[Action]])

# The one client event that is audio: like a binary frame, not a message of the tier's
# messages per minute (PROTOCOL.md section 6).
APPEND = "input_audio_buffer.append"


def _translated(method: F) -> F:
    @functools.wraps(method)
    def wrapper(self: RealtimeSttSession, *args: Any, **kwargs: Any) -> list[Action]:
        self._depth += 1
        try:
            actions = method(self, *args, **kwargs)
        finally:
            self._depth -= 1
        return actions if self._depth else self._translate(actions)
    return wrapper  # type: ignore[return-value]


class RealtimeSttSession(SttSession):
    __slots__ = ("_depth", "_parsed", "translator")
    # Its audio comes base64 in JSON appends, which the data plane's uplink does not own.
    binary_audio = False

    def __init__(self, *, translator: rt.RealtimeTranscription, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.translator = translator
        self._depth = 0
        self._parsed: tuple[str | bytes, Any] | None = None

    # -- what the I/O layer asks besides the session's steps ---------------------------------
    def opening_frames(self) -> list[bytes]:
        """Sent as the connection opens, before any client event (``session.created``)."""
        return [orjson.dumps(self.translator.created())]

    def metered(self, frame: str | bytes) -> bool:
        """Whether a text frame counts against messages per minute: all but audio."""
        return bool(_type_of(self._parse(frame)) != APPEND)

    def _parse(self, frame: str | bytes) -> Any:
        cached = self._parsed
        if cached is not None and cached[0] is frame:
            return cached[1]
        try:
            value: Any = orjson.loads(frame)
        except orjson.JSONDecodeError:
            value = None
        self._parsed = (frame, value)
        return value

    # -- intake ------------------------------------------------------------------------------
    @_translated
    def receive_text(self, frame: str | bytes, now: float,
                     rate_wait: float | None = None) -> list[Action]:
        if self.ended:
            return []
        if isinstance(frame, bytes):
            try:
                frame.decode()
            except UnicodeDecodeError:
                return self._fatal(GatewayError(errors.INVALID_MESSAGE, "invalid UTF-8"),
                                   errors.CLOSE_PROTOCOL_ERROR, now, reason="error")
        event = self._parse(frame)
        self._parsed = None
        if self.mode is None:
            self._choose_mode(UNIFIED)
        client_event_id = event.get("event_id") if isinstance(event, dict) else None
        client_event_id = client_event_id if isinstance(client_event_id, str) else None
        if _type_of(event) != APPEND:
            if rate_wait is None and self._rate_limit is not None:
                rate_wait = self._rate_limit(now)
            if rate_wait is not None and rate_wait > 0:
                return [self._error(GatewayError(
                    errors.RATE_LIMITED, f"over {self.tier.messages_per_minute} messages per "
                    "minute", retry_after_ms=max(1, int(rate_wait * 1000 + 0.999))))]
            self.usage.messages += 1
        if not isinstance(event, dict):
            return [self._client_error("invalid_message", "a client event is a JSON object",
                                       None, client_event_id)]
        try:
            steps = self.translator.client(event)
        except rt.RealtimeError as err:
            return [self._client_error(err.code, err.message, err.param, client_event_id)]
        actions: list[Action] = []
        for step in steps:
            if isinstance(step, dict):
                actions.append(SendClient(orjson.dumps(step), text=True))
            elif isinstance(step, rt.Start):
                try:
                    actions += self.on_command("start", step.fields, now)
                except GatewayError as err:
                    self.translator.start_failed()
                    actions.append(self._client_error(err.code, err.message, None,
                                                      client_event_id))
                    break
            elif isinstance(step, rt.AudioIn):
                actions += self.on_audio(step.data, now)
            else:
                actions += self.on_command("finalize", {}, now)
        return actions

    def _client_error(self, code: str, message: str, param: str | None,
                      client_event_id: str | None) -> SendClient:
        self.observations.append(("error", code))
        return SendClient(orjson.dumps(self.translator.error(
            code, message, param=param, client_event_id=client_event_id)), text=True)

    @_translated
    def receive_binary(self, frame: bytes, now: float) -> list[Action]:
        if self.ended:
            return []
        if self.mode is None:
            self._choose_mode(UNIFIED)
        return [self._client_error("invalid_message", "binary frames are not part of the "
                                   "protocol; send input_audio_buffer.append", None, None)]

    # -- every other entry point of the I/O layer: translated -----------------------------------
    receive_upstream = _translated(SttSession.receive_upstream)
    upstream_failed = _translated(SttSession.upstream_failed)
    upstream_closed = _translated(SttSession.upstream_closed)
    message_too_large = _translated(SttSession.message_too_large)
    keepalive = _translated(SttSession.keepalive)
    drain = _translated(SttSession.drain)
    on_deadline = _translated(SttSession.on_deadline)
    end = _translated(SttSession.end)
    fail = _translated(SttSession.fail)

    def _translate(self, actions: list[Action]) -> list[Action]:
        out: list[Action] = []
        for action in actions:
            if isinstance(action, SendClient) and isinstance(action.frame, str):
                event = orjson.loads(action.frame)
                out += [SendClient(orjson.dumps(e), text=True)
                        for e in self.translator.server(event)]
            else:
                out.append(action)
        return out


def _type_of(event: Any) -> Any:
    return event.get("type") if isinstance(event, dict) else None
