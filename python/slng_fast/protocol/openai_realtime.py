"""OpenAI's Realtime transcription protocol (``/v1/realtime?intent=transcription``) as a
client-side dialect. OpenAI client events in: the unified STT steps they mean out (a
``start``, audio, a ``finalize``) and the events answered at once (``session.updated``,
``input_audio_buffer.committed``, ``...cleared``, ``error``). Unified STT events in: the
OpenAI server events they mean out (transcription deltas and completions, voice
activity turns, errors). Pure: ids come from a function given at construction; no clock,
no socket.

Both shapes of the protocol are spoken: the GA one (``session.update`` with
``session.type = "transcription"`` and ``audio.input.*``) and the beta one
(``transcription_session.update`` with ``input_audio_format`` and
``input_audio_transcription``; a client that sends ``OpenAI-Beta: realtime=v1`` is greeted
with ``transcription_session.created``).

Items and turns (docs/decisions.md, "Realtime transcription"):

* **Manual turns** (``turn_detection: null``): ``commit`` closes the item that holds the
  audio since the previous commit (``input_audio_buffer.committed`` at once) and asks the
  provider for a ``finalize``; its ``final_transcript`` becomes that item's ``completed``.
  Transcripts that arrive while items wait for their final belong to the oldest of them
  (a unified ``finalize`` covers all the audio sent before it, in order).
* **Server turns** (``server_vad``/``semantic_vad``, the default as at OpenAI): the
  provider's own utterance boundaries are the turns. Its first transcript of a turn is
  ``speech_started``; its final segment (``is_final: true``) is ``speech_stopped``,
  ``committed`` and ``completed``. The VAD knobs (threshold, padding, silence) are kept
  and echoed but the provider's endpointer decides.
* **Deltas** carry the text of an item as it grows: a partial hypothesis that extends
  what was already sent sends the extension; one that revises it sends nothing (a delta
  cannot be taken back). ``completed.transcript`` is the authoritative text.
* ``clear`` drops the uncommitted audio: the provider has heard it already, so the item
  is finalized upstream and whatever the provider says of it is dropped.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from slng_fast.openai_compat.errors import error_object

GA = "ga"
BETA = "beta"

# Audio formats: GA ``format.type`` and beta ``input_audio_format`` -> (codec, rate).
FORMATS: dict[str, tuple[str, int]] = {
    "audio/pcm": ("pcm16", 24000), "pcm16": ("pcm16", 24000),
    "audio/pcmu": ("mulaw", 8000), "g711_ulaw": ("mulaw", 8000),
    "audio/pcma": ("alaw", 8000), "g711_alaw": ("alaw", 8000),
}
_GA_NAME = {"pcm16": "audio/pcm", "mulaw": "audio/pcmu", "alaw": "audio/pcma"}
_BETA_NAME = {"pcm16": "pcm16", "mulaw": "g711_ulaw", "alaw": "g711_alaw"}
_WIDTH = {"pcm16": 2, "mulaw": 1, "alaw": 1}
# OpenAI's defaults for a transcription session.
DEFAULT_TURN_DETECTION: dict[str, Any] = {
    "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500}
TURN_TYPES = ("server_vad", "semantic_vad")
# OpenAI refuses to commit less audio than this.
MIN_COMMIT_MS = 100.0

# Unified error codes -> (OpenAI error type, OpenAI code where it has its own).
_ERROR_TYPES: dict[str, tuple[str, str | None]] = {
    "auth_failed": ("invalid_request_error", "invalid_api_key"),
    "rate_limited": ("invalid_request_error", "rate_limit_exceeded"),
    "provider_unavailable": ("server_error", None),
    "provider_error": ("server_error", None),
    "internal_error": ("server_error", None),
}


@dataclass(frozen=True, slots=True)
class Start:
    """Open the unified STT session with these ``start`` fields."""

    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AudioIn:
    """Audio in the session's format, for the unified session's ``on_audio``."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Finalize:
    pass


Step = dict[str, Any] | Start | AudioIn | Finalize


class RealtimeError(Exception):
    """A client event this protocol refuses: an OpenAI ``error`` event, the session
    goes on."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


@dataclass
class _Item:
    """One user audio item: the audio between two turns (or commits)."""

    id: str
    start_ms: float
    segments: list[str] = field(default_factory=list)
    sent: str = ""  # what the deltas carried so far
    speech: bool = False  # speech_started was sent
    discard: bool = False  # cleared: the provider's words for it are dropped
    audio_ms: float = 0.0


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:22]}"


class RealtimeTranscription:
    """The translation for one connection. ``model``: the gateway STT endpoint serving it;
    ``stt_endpoints``: every STT endpoint name (a ``transcription.model`` naming another
    one is refused: the endpoint is chosen at connection, see the module doc)."""

    def __init__(self, *, model: str, flavour: str = GA, languages: Sequence[str] = (),
                 stt_endpoints: Sequence[str] = (),
                 new_id: Callable[[str], str] = _new_id) -> None:
        self.flavour = flavour
        self.model = model
        self.model_label = model  # as the client last named it (an alias is echoed)
        self.languages = tuple(languages)
        self.stt_endpoints = frozenset(stt_endpoints)
        self.new_id = new_id
        self.session_id = new_id("sess")
        self.codec, self.rate = "pcm16", 24000
        self.language: str | None = None
        self.prompt = ""
        self.turn_detection: dict[str, Any] | None = dict(DEFAULT_TURN_DETECTION)
        self.noise_reduction: Any = None
        self.include: list[str] = []
        self.started = False
        self.audio_ms = 0.0  # all audio appended
        self.buffer_ms = 0.0  # audio since the last commit, clear or turn
        self.current: _Item | None = None
        self.awaiting: deque[_Item] = deque()  # committed or cleared, final not in yet
        self.previous_item_id: str | None = None

    @property
    def vad(self) -> bool:
        return self.turn_detection is not None

    # -- the session object ------------------------------------------------------------
    def session_object(self, flavour: str | None = None) -> dict[str, Any]:
        """The session as ``flavour``'s events show it (default: the connection's)."""
        transcription = {"model": self.model_label, "language": self.language,
                         "prompt": self.prompt}
        if (flavour or self.flavour) == BETA:
            return {"id": self.session_id, "object": "realtime.transcription_session",
                    "input_audio_format": _BETA_NAME[self.codec],
                    "input_audio_transcription": transcription,
                    "turn_detection": self.turn_detection,
                    "input_audio_noise_reduction": self.noise_reduction,
                    "include": self.include, "client_secret": None}
        fmt: dict[str, Any] = {"type": _GA_NAME[self.codec]}
        if self.codec == "pcm16":
            fmt["rate"] = self.rate
        return {"type": "transcription", "id": self.session_id,
                "object": "realtime.transcription_session",
                "audio": {"input": {"format": fmt, "transcription": transcription,
                                    "turn_detection": self.turn_detection,
                                    "noise_reduction": self.noise_reduction}},
                "include": self.include}

    def created(self) -> dict[str, Any]:
        """The first server event, sent as the connection opens."""
        kind = "transcription_session.created" if self.flavour == BETA else "session.created"
        return self._event(kind, session=self.session_object())

    # -- client events -----------------------------------------------------------------
    def client(self, event: dict[str, Any]) -> list[Step]:
        """One client event; raises RealtimeError for one this protocol refuses."""
        kind = event.get("type")
        if not isinstance(kind, str):
            raise RealtimeError("invalid_message", "an event needs a string 'type'", "type")
        if kind in ("session.update", "transcription_session.update"):
            session = event.get("session")
            if not isinstance(session, dict):
                raise RealtimeError("invalid_message", "'session' must be an object", "session")
            self._update(session)
            # The answer is in the shape of the question, whichever the connection began in.
            if kind.startswith("transcription"):
                return [self._event("transcription_session.updated",
                                    session=self.session_object(BETA))]
            return [self._event("session.updated", session=self.session_object(GA))]
        if kind == "input_audio_buffer.append":
            return self._append(event.get("audio"))
        if kind == "input_audio_buffer.commit":
            return self._commit()
        if kind == "input_audio_buffer.clear":
            return self._clear()
        raise RealtimeError("unknown_command",
                            f"a transcription session does not take {kind!r}; it takes "
                            "session.update, input_audio_buffer.append, .commit and .clear",
                            "type")

    def _update(self, session: dict[str, Any]) -> None:
        """Check every field first, then apply them all: a refused update changes nothing."""
        kind = session.get("type")
        if kind is not None and kind != "transcription":
            raise RealtimeError("invalid_parameter",
                                "this connection is a transcription session "
                                "(session.type must be 'transcription')", "session.type")
        audio = session.get("audio")
        ga_input = audio.get("input") if isinstance(audio, dict) else None
        ga_input = ga_input if isinstance(ga_input, dict) else {}
        changes: dict[str, Any] = {}
        fmt = ga_input.get("format", session.get("input_audio_format"))
        if fmt is not None:
            name = fmt.get("type") if isinstance(fmt, dict) else fmt
            if name not in FORMATS:
                raise RealtimeError("invalid_parameter",
                                    f"audio format {name!r} is not supported; use audio/pcm "
                                    "(24 kHz), audio/pcmu or audio/pcma", "session.audio.input.format")
            rate = fmt.get("rate") if isinstance(fmt, dict) else None
            if rate is not None and rate != FORMATS[name][1]:
                raise RealtimeError("invalid_parameter", f"{name} is taken at "
                                    f"{FORMATS[name][1]} Hz only", "session.audio.input.format.rate")
            if self.started and FORMATS[name] != (self.codec, self.rate):
                raise RealtimeError("invalid_parameter", "the audio format is fixed once audio "
                                    "was appended", "session.audio.input.format")
            changes["format"] = FORMATS[name]
        for key in ("transcription", "input_audio_transcription"):
            if key in ga_input or key in session:
                transcription = ga_input.get(key) if key in ga_input else session.get(key)
                if transcription is not None and not isinstance(transcription, dict):
                    raise RealtimeError("invalid_message", f"'{key}' must be an object", key)
                changes.update(self._transcription(transcription or {}))
        for source in (ga_input, session):
            if "turn_detection" in source:
                turns = source["turn_detection"]
                if turns is not None and (not isinstance(turns, dict)
                                          or turns.get("type", "server_vad") not in TURN_TYPES):
                    raise RealtimeError("invalid_parameter", "turn_detection must be null or "
                                        "of type server_vad or semantic_vad", "turn_detection")
                changes["turn_detection"] = None if turns is None else {
                    "type": "server_vad", **turns}
                break
        for key in ("noise_reduction", "input_audio_noise_reduction"):
            source = ga_input if key == "noise_reduction" else session
            if key in source:
                changes["noise_reduction"] = source[key]
        if isinstance(session.get("include"), list):
            changes["include"] = [str(x) for x in session["include"]]
        # Apply.
        if "format" in changes:
            self.codec, self.rate = changes["format"]
        for name in ("language", "prompt", "model_label", "turn_detection", "noise_reduction",
                     "include"):
            if name in changes:
                setattr(self, name, changes[name])

    def _transcription(self, transcription: dict[str, Any]) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        model = transcription.get("model")
        if model is not None:
            if not isinstance(model, str):
                raise RealtimeError("invalid_message", "'model' must be a string",
                                    "transcription.model")
            if model in self.stt_endpoints and model != self.model:
                raise RealtimeError(
                    "invalid_parameter",
                    f"this connection is served by {self.model!r}; for {model!r} open "
                    f"/v1/realtime?intent=transcription&model={model}", "transcription.model")
            changes["model_label"] = model
        language = transcription.get("language")
        if language is not None:
            if not isinstance(language, str):
                raise RealtimeError("invalid_message", "'language' must be a string",
                                    "transcription.language")
            if self.languages and language not in self.languages:
                raise RealtimeError("invalid_parameter",
                                    f"language {language!r} is not offered by {self.model}; "
                                    f"languages: {', '.join(self.languages)}",
                                    "transcription.language")
            if self.started and language != self.language:
                raise RealtimeError("invalid_parameter", "the language is fixed once audio "
                                    "was appended", "transcription.language")
            changes["language"] = language
        if isinstance(transcription.get("prompt"), str):
            changes["prompt"] = transcription["prompt"]
        return changes

    def start_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"sample_rate": self.rate, "encoding": self.codec}
        if self.language:
            fields["language"] = self.language
        return fields

    def _append(self, audio: Any) -> list[Step]:
        if not isinstance(audio, str):
            raise RealtimeError("invalid_message", "'audio' must be a base64 string", "audio")
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise RealtimeError("invalid_message", "'audio' is not valid base64", "audio") from None
        width = _WIDTH[self.codec]
        if len(data) % width:
            raise RealtimeError("invalid_message", f"{self.codec} audio comes in whole "
                                f"{width}-byte samples", "audio")
        if not data:
            return []
        steps: list[Step] = []
        if not self.started:
            self.started = True
            steps.append(Start(self.start_fields()))
        ms = len(data) / width / self.rate * 1000.0
        self.audio_ms += ms
        self.buffer_ms += ms
        return [*steps, AudioIn(data)]

    def start_failed(self) -> None:
        """The unified ``start`` was refused: the next append tries again."""
        self.started = False

    def _commit(self) -> list[Step]:
        if self.buffer_ms < MIN_COMMIT_MS:
            raise RealtimeError(
                "input_audio_buffer_commit_empty",
                f"Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS:.0f}ms of audio, but buffer only has {self.buffer_ms:.2f}ms "
                "of audio.")
        item = self.current or self._item()
        item.audio_ms = self.buffer_ms
        self.current = None
        self.buffer_ms = 0.0
        self.awaiting.append(item)
        return [self._committed(item), Finalize()]

    def _clear(self) -> list[Step]:
        steps: list[Step] = []
        if self.buffer_ms > 0 or self.current is not None:
            item = self.current or self._item()
            item.discard = True
            self.awaiting.append(item)
            steps.append(Finalize())
        self.current = None
        self.buffer_ms = 0.0
        return [self._event("input_audio_buffer.cleared"), *steps]

    # -- unified events from the provider ----------------------------------------------------
    def server(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """One unified event (as sent to a unified client): the OpenAI events it means."""
        kind = event.get("type")
        if kind == "transcript":
            return self._transcript(str(event.get("text") or ""), bool(event.get("is_final")))
        if kind == "final_transcript":
            return self._final(str(event.get("text") or ""))
        if kind == "error":
            return [self.error(str(event.get("code", "internal_error")),
                               str(event.get("message", "")),
                               retry_after_ms=event.get("retry_after_ms"))]
        return []  # ready, pong, session_ended: the OpenAI protocol has none

    def _item(self) -> _Item:
        return _Item(self.new_id("item"), start_ms=self.audio_ms - self.buffer_ms)

    def _transcript(self, text: str, is_final: bool) -> list[dict[str, Any]]:
        if self.awaiting:
            item = self.awaiting[0]
        else:
            if self.current is None:
                self.current = self._item()
            item = self.current
        if item.discard:
            return []
        out: list[dict[str, Any]] = []
        turn = self.vad and item is self.current
        if turn and not item.speech:
            item.speech = True
            out.append(self._event("input_audio_buffer.speech_started",
                                   audio_start_ms=int(item.start_ms), item_id=item.id))
        if is_final and text:
            item.segments.append(text)
        out += self._delta(item, " ".join(item.segments if is_final else [*item.segments, text]))
        if is_final and turn:
            item.audio_ms = self.buffer_ms
            self.current = None
            self.buffer_ms = 0.0
            out += [self._event("input_audio_buffer.speech_stopped",
                                audio_end_ms=int(self.audio_ms), item_id=item.id),
                    self._committed(item),
                    self._completed(item, " ".join(item.segments))]
        return out

    def _delta(self, item: _Item, text: str) -> list[dict[str, Any]]:
        if len(text) <= len(item.sent) or not text.startswith(item.sent):
            return []
        delta = text[len(item.sent):]
        item.sent = text
        return [self._event("conversation.item.input_audio_transcription.delta",
                            item_id=item.id, content_index=0, delta=delta)]

    def _final(self, text: str) -> list[dict[str, Any]]:
        if not self.awaiting:
            return []
        item = self.awaiting.popleft()
        if item.discard:
            return []
        # With server turns, the provider's final text also holds the turns it closed
        # since the previous finalize: the item's own segments are its text.
        own = " ".join(item.segments)
        transcript = own if self.vad or not text else text
        return self._delta(item, transcript) + [self._completed(item, transcript)]

    # -- building events ---------------------------------------------------------------------
    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "event_id": self.new_id("event"), **fields}

    def _committed(self, item: _Item) -> dict[str, Any]:
        event = self._event("input_audio_buffer.committed",
                            previous_item_id=self.previous_item_id, item_id=item.id)
        self.previous_item_id = item.id
        return event

    def _completed(self, item: _Item, transcript: str) -> dict[str, Any]:
        return self._event("conversation.item.input_audio_transcription.completed",
                           item_id=item.id, content_index=0, transcript=transcript,
                           usage={"type": "duration",
                                  "seconds": round(item.audio_ms / 1000.0, 3)})

    def error(self, code: str, message: str, *, param: str | None = None,
              client_event_id: str | None = None,
              retry_after_ms: Any = None) -> dict[str, Any]:
        """An OpenAI ``error`` event for a unified error code (or one of OpenAI's own)."""
        error = _error(code, message, param, client_event_id)
        if isinstance(retry_after_ms, int):
            error["retry_after_ms"] = retry_after_ms
        return self._event("error", error=error)


def error_event(code: str, message: str) -> dict[str, Any]:
    """An OpenAI ``error`` event outside a session (a refused connection)."""
    return {"type": "error", "event_id": _new_id("event"), "error": _error(code, message)}


def _error(code: str, message: str, param: str | None = None,
           client_event_id: str | None = None) -> dict[str, Any]:
    """The ``error`` object of an event for a unified error code (or one of OpenAI's own)."""
    kind, openai_code = _ERROR_TYPES.get(code, ("invalid_request_error", None))
    return {**error_object(message, kind, openai_code or code, param),
            "event_id": client_event_id}
