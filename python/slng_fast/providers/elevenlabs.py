"""The ElevenLabs dialect (PROTOCOL.md section 8), over the multi-context WebSocket
``/v1/text-to-speech/{voice_id}/multi-stream-input``, with ``xi-api-key``.

One context per utterance. ``flush`` opens a context, sends the whole utterance's text
on it with ``flush: true`` and closes it, so the provider finishes its audio and answers
``{"isFinal": true, "contextId": ...}``; that is the utterance's ``audio_end``. The
context's first message carries the settings in force then (``voice_settings`` from
``style``, ``generation_config`` and ``pronunciation_dictionary_locators`` from the
extras): that is how ``configure`` applies without a reconnect. Settings that live in
the URL (``voice_id``, ``model_id``, ``language_code``, ``output_format``) apply from the
next connection; ``configure_needs_reconnect`` tells a session that can act on it.

Text is held here until ``flush`` (as the SLNG dialect does), so ``clear`` is exact and
no half-written context ever sits on the provider. ``stop`` closes every context in
flight with ``close_context`` and swallows whatever the provider still sends for them.

Contexts may be generated concurrently: events are reported in utterance order, and a
later context's audio is held until every earlier one is final. ElevenLabs allows 5
live contexts a connection: a flush beyond ``MAX_CONTEXTS`` waits (a keep-alive goes
out in its place) and is sent, as a ``Reply``, when an earlier context is final. Audio is always raw
PCM (``pcm_16000|22050|24000|44100``, the client's rate when it is one of those, else
24 kHz), so nothing lossy is decoded. Character alignment (chunk-relative) is turned
into ``Words`` timed from the start of the utterance.

Keep-alive: ``{"text": " "}`` every 15 s, inside the provider's 20 s inactivity timeout.
Native mode uses the single-context ``stream-input`` endpoint and relays frames as they
are; ``passthrough_request`` maps the SDK's own paths onto the upstream. Native audio is
counted from the base64 in ``{"audio": ...}`` and the connection's ``output_format``
(the SDK's own, else ElevenLabs' default ``mp3_44100_128``)."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

import orjson

from slng_fast.providers.base import HeldText, base64_size, json_object
from slng_fast.vocabulary import (
    Audio,
    Capabilities,
    Endpoint,
    Frame,
    Ignored,
    RelayFraming,
    Reply,
    Settings,
    TtsDialect,
    UpstreamError,
    UpstreamEvent,
    UpstreamRequest,
    UtteranceDone,
    Words,
)

PCM_RATES = (16000, 22050, 24000, 44100)
DEFAULT_RATE = 24000
DEFAULT_OUTPUT_FORMAT = "mp3_44100_128"  # ElevenLabs' when a request names none
KEEPALIVE_INTERVAL = 15.0  # the provider closes after 20 s without input
# ElevenLabs allows 5 live contexts a connection; one is left for the default context
# that the keep-alive touches. Further utterances wait here for a free one.
MAX_CONTEXTS = 4
KEEPALIVE = '{"text":" "}'
# Settings extras that go in the URL, and those a context's first message carries.
QUERY_EXTRAS = ("model_id", "inactivity_timeout", "apply_text_normalization", "seed",
                "enable_ssml_parsing", "enable_logging", "auto_mode")
CONTEXT_EXTRAS = ("generation_config", "pronunciation_dictionary_locators")
# Query parameters a client must not smuggle to the provider (credentials).
# The sockets an ElevenLabs SDK opens on the drop-in route, exactly (the voice id is
# alphanumeric): anything else would reach the provider with the operator's key.
PASSTHROUGH_PATH = re.compile(r"/v1/text-to-speech/[A-Za-z0-9_-]+/(multi-)?stream-input")
SECRET_PARAMS = {"xi_api_key", "xi-api-key", "api_key", "authorization", "single_use_token"}

# Provider error words: non-retryable ones win (checked first).
NOT_RETRYABLE = ("quota", "auth", "api_key", "unauthori", "forbidden", "permission",
                 "payment", "invalid", "not_found", "not found", "unsupported")
RETRYABLE = ("rate", "too_many", "too many", "concurren", "busy", "overload", "capacity",
             "unavailable", "timeout", "internal", "try again")

CAPABILITIES = Capabilities(
    supports_stop=True, supports_clear=True, supports_configure=True,
    configure_reconnects=False, word_timestamps=True,
)


def _json(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


def ws_base(url: str) -> str:
    """The base URL with a WebSocket scheme and no trailing slash."""
    if url.startswith("https://"):
        url = "wss://" + url[len("https://"):]
    elif url.startswith("http://"):
        url = "ws://" + url[len("http://"):]
    return url.rstrip("/")


def ms_per_byte(output_format: str) -> float:
    """Milliseconds of audio in one byte of an ``output_format``: ``pcm_<rate>``,
    ``ulaw_8000``/``alaw_8000``, or a compressed ``<codec>_<rate>_<kbit/s>`` (``mp3_44100_128``,
    ``opus_48000_64``: counted at its bit rate). 0 for a format this does not know."""
    codec, *rest = output_format.split("_")
    if not rest or not all(part.isdigit() and int(part) > 0 for part in rest):
        return 0.0
    if len(rest) == 2:
        return 8.0 / int(rest[1])
    if len(rest) == 1 and codec == "pcm":
        return 1000.0 / (2 * int(rest[0]))
    if len(rest) == 1 and codec in ("ulaw", "alaw"):
        return 1000.0 / int(rest[0])
    return 0.0


def classify_error(message: dict[str, Any]) -> tuple[str, bool]:
    """The text to pass on and whether retrying may help."""
    error = str(message.get("error") or "")
    text = str(message.get("message") or error or "the provider reported an error")
    words = f"{error} {text}".lower()
    if any(w in words for w in NOT_RETRYABLE):
        return text, False
    return text, any(w in words for w in RETRYABLE)


@dataclass
class _Context:
    """One utterance on the provider, from flush to isFinal."""

    id: str
    frames: list[Frame] = field(default_factory=list)  # not sent yet: no free context
    held: list[UpstreamEvent] = field(default_factory=list)  # until it is the oldest
    final: bool = False
    offset_ms: float = 0.0  # audio so far: alignment is relative to each chunk
    carry: bytes = b""  # half a sample between chunks
    word: str = ""
    word_start: float = 0.0
    word_end: float = 0.0


class ElevenLabsDialect(HeldText, TtsDialect):
    """Sans-I/O translation between unified commands and ElevenLabs' WebSocket API."""

    capabilities = CAPABILITIES
    stop_by_reconnect = False
    keepalive_interval: float | None = KEEPALIVE_INTERVAL

    def __init__(self, endpoint: Endpoint, url: str, api_key: str | None = None) -> None:
        self.endpoint = endpoint
        self.url = ws_base(url)
        self.api_key = api_key
        self.sample_rate = DEFAULT_RATE
        self.settings = Settings()
        self._url_settings: tuple[Any, ...] | None = None  # what the open connection has
        HeldText.__init__(self)
        self._order: list[_Context] = []  # flushed, not yet final, in utterance order
        self._stopped: set[str] = set()  # closed by stop: late frames are swallowed
        self._counter = 0
        self._flushed_since_request = False
        self._native = False
        self._native_ms_per_byte = 0.0  # of the native connection's output_format

    # -- opening ------------------------------------------------------------------
    def prefer_output(self, sample_rate: int) -> None:
        """Ask for PCM at the client's rate when ElevenLabs offers it, else 24 kHz."""
        self.sample_rate = sample_rate if sample_rate in PCM_RATES else DEFAULT_RATE

    def _headers(self, api_key: str | None = None) -> tuple[tuple[str, str], ...]:
        key = api_key or self.api_key
        return (("xi-api-key", key),) if key else ()

    def _voice(self, settings: Settings) -> str:
        return settings.voice_id or self.endpoint.default_voice or ""

    def _query(self, settings: Settings, *, multi: bool) -> dict[str, Any]:
        query: dict[str, Any] = {"output_format": f"pcm_{self.sample_rate}"}
        for key in QUERY_EXTRAS:
            value = settings.extras.get(key)
            if value is not None:
                query[key] = str(value).lower() if isinstance(value, bool) else value
        if settings.language and "language_code" not in query:
            query["language_code"] = settings.language
        if multi:
            query["sync_alignment"] = "true"
        return query

    def _url(self, settings: Settings, endpoint: str, *, multi: bool) -> str:
        voice = quote(self._voice(settings), safe="")
        query = urlencode(self._query(settings, multi=multi))
        return f"{self.url}/v1/text-to-speech/{voice}/{endpoint}?{query}"

    def request(self, settings: Settings) -> UpstreamRequest:
        """A fresh connection: contexts of the previous one are gone. The session opens
        one at init or for the frames of a flush it has just asked for: that flush's
        context (the newest) goes on the new connection."""
        self.settings = settings
        self._order = self._order[-1:] if self._flushed_since_request else []
        self._flushed_since_request = False
        self._stopped.clear()
        self._url_settings = self._url_key(settings)
        return UpstreamRequest(url=self._url(settings, "multi-stream-input", multi=True),
                               headers=self._headers())

    def native_request(self, settings: Settings) -> UpstreamRequest:
        """Native mode: the single-context endpoint that clients of the seeds speak."""
        self._native = True
        self._native_ms_per_byte = ms_per_byte(f"pcm_{self.sample_rate}")
        return UpstreamRequest(url=self._url(settings, "stream-input", multi=False),
                               headers=self._headers())

    def passthrough_request(self, path: str, query: str, api_key: str | None) -> UpstreamRequest:
        """The gateway's drop-in SDK routes: the SDK's own path and query on the upstream,
        with the provider credential (``api_key``, else the configured one). Credentials
        in the client's query are dropped; only the text-to-speech sockets are allowed,
        matched after percent-decoding (``%2e%2e`` is ``..``)."""
        path = unquote(path)
        if not PASSTHROUGH_PATH.fullmatch(path):
            raise ValueError(f"not an ElevenLabs text-to-speech socket: {path!r}")
        params = [(k, v) for k, v in parse_qsl(query.lstrip("?"), keep_blank_values=True)
                  if k.lower() not in SECRET_PARAMS]
        self._native_ms_per_byte = ms_per_byte(
            dict(params).get("output_format") or DEFAULT_OUTPUT_FORMAT)
        url = self.url + path + (f"?{urlencode(params)}" if params else "")
        return UpstreamRequest(url=url, headers=self._headers(api_key))

    def open_frames(self, settings: Settings) -> list[Frame]:
        # Each context's first message carries the settings. A flush that was waiting
        # for a free context goes out now, on the new connection.
        return self._release()

    # -- unified commands -> frames -------------------------------------------------
    def _first_message(self, context_id: str) -> dict[str, Any]:
        message: dict[str, Any] = {"text": " ", "context_id": context_id}
        if self.settings.style:
            message["voice_settings"] = self.settings.style
        for key in CONTEXT_EXTRAS:
            if self.settings.extras.get(key) is not None:
                message[key] = self.settings.extras[key]
        return message

    def flush(self) -> list[Frame]:
        text = self.take_text()
        if not text.strip():
            return []  # nothing to say: the session answers at once
        if not text.endswith(" "):
            text += " "  # ElevenLabs wants every chunk to end with a space
        self._counter += 1
        context = _Context(f"u{self._counter}")
        free = self._live() < MAX_CONTEXTS
        self._order.append(context)
        self._flushed_since_request = True
        frames: list[Frame] = [
            _json(self._first_message(context.id)),
            _json({"text": text, "context_id": context.id, "flush": True}),
            _json({"context_id": context.id, "close_context": True}),
        ]
        if free:
            return frames
        context.frames = frames  # sent (as a Reply) when an earlier context is final
        return [KEEPALIVE]  # something to send now: the utterance is not empty

    def _live(self) -> int:
        """Contexts the provider holds: sent and not final, stopped and not final."""
        return sum(1 for c in self._order if not c.frames) + len(self._stopped)

    def _release(self) -> list[Frame]:
        frames: list[Frame] = []
        for context in self._order:
            if context.frames and self._live() < MAX_CONTEXTS:
                frames += context.frames
                context.frames = []
        return frames

    def clear(self) -> list[Frame]:
        self._buffer.clear()
        return []

    def stop(self) -> list[Frame]:
        sent = [c for c in self._order if not c.frames]  # the others never left
        self._stopped.update(c.id for c in sent)
        self._order.clear()
        return [_json({"context_id": c.id, "close_context": True}) for c in sent]

    def configure(self, settings: Settings) -> list[Frame]:
        self.settings = settings  # the next context opens with these
        return []

    @staticmethod
    def _url_key(settings: Settings) -> tuple[Any, ...]:
        return (settings.voice_id, settings.language,
                tuple(settings.extras.get(k) for k in QUERY_EXTRAS))

    def configure_needs_reconnect(self, settings: Settings) -> bool:
        """True when ``settings`` change something in the URL (voice, model, language),
        which only a new connection can apply."""
        return self._url_settings is not None and self._url_key(settings) != self._url_settings

    def keepalive(self) -> list[Frame]:
        # A single space: input that speaks nothing and resets the inactivity timer.
        # (An empty text would end a stream-input socket; on a context it could reopen
        # a context we closed.)
        return [_json({"text": " "})]

    def native_audio_ms(self, frame: Frame) -> float:
        """Milliseconds of audio in a native-mode frame (``{"audio": base64, ...}``)."""
        if not isinstance(frame, str) or '"audio"' not in frame:
            return 0.0
        message = json_object(frame)
        audio = message.get("audio") if message is not None else None
        return base64_size(audio) * self._native_ms_per_byte if isinstance(audio, str) else 0.0

    # -- frames -> events -------------------------------------------------------------
    @property
    def relay_framing(self) -> RelayFraming | None:
        """The oldest utterance's audio messages, once it was sent and while no half sample
        is carried: the data plane may then carry them (`relay.rs`, `Framing::ElevenLabs`)
        up to its ``isFinal``. Their alignment is not read there, nor the offset the word
        timings need kept: a session with word timestamps keeps every message."""
        head = self._order[0] if self._order else None
        if head is None or head.frames or head.carry or self._native:
            return None
        return RelayFraming("elevenlabs", head.id)

    def receive(self, frame: Frame) -> list[UpstreamEvent]:
        if isinstance(frame, bytes):
            return [Ignored("binary frame from ElevenLabs")]
        message = json_object(frame)
        if message is None:
            return [Ignored("text that is not a JSON object")]
        if message.get("error") or (message.get("message") and not message.get("audio")):
            return self._error(message)
        context_id = message.get("contextId", message.get("context_id"))
        final = bool(message.get("isFinal") or message.get("is_final"))
        if context_id in self._stopped:
            if not final:
                return [Ignored(f"late frame of stopped context {context_id}")]
            self._stopped.discard(context_id)
            return self._with_release([Ignored(f"stopped context {context_id} is final")])
        context = self._find(context_id)
        if context is None:
            return [Ignored(f"frame of unknown context {context_id!r}")]
        events = self._context_events(context, message, final)
        if context is not self._order[0]:
            context.held += events
            context.final = context.final or final
            return self._with_release([]) if final else []
        if not final:
            return events
        self._order.pop(0)
        while self._order:  # later contexts that were waiting for this one
            head = self._order[0]
            events += head.held
            head.held = []
            if not head.final:
                break
            self._order.pop(0)
        return self._with_release(events)

    def _with_release(self, events: list[UpstreamEvent]) -> list[UpstreamEvent]:
        frames = self._release()
        return events + [Reply(tuple(frames))] if frames else events

    def _find(self, context_id: Any) -> _Context | None:
        sent = [c for c in self._order if not c.frames]
        if context_id is None:  # a provider that does not name it: the oldest
            return sent[0] if sent else None
        for context in sent:
            if context.id == context_id:
                return context
        return None

    def _context_events(self, context: _Context, message: dict[str, Any],
                        final: bool) -> list[UpstreamEvent]:
        events: list[UpstreamEvent] = []
        audio = message.get("audio")
        chunk_ms = 0.0
        if isinstance(audio, str) and audio:
            try:
                pcm = context.carry + base64.b64decode(audio)
            except (binascii.Error, ValueError):
                return [UpstreamError("ElevenLabs sent audio that is not base64", retryable=True)]
            usable = len(pcm) - len(pcm) % 2
            context.carry = pcm[usable:]
            if usable:
                events.append(Audio(pcm[:usable], self.sample_rate))
                chunk_ms = usable / 2 / self.sample_rate * 1000.0
        alignment = message.get("alignment") or message.get("normalizedAlignment")
        words = self._words(context, alignment, final)
        context.offset_ms += chunk_ms
        if words is not None:
            events.append(words)
        if final:
            events.append(UtteranceDone())
        return events

    def _words(self, context: _Context, alignment: Any, final: bool) -> Words | None:
        """Whole words finished in this chunk (the last one at ``isFinal``)."""
        out: list[tuple[str, float, float]] = []
        if isinstance(alignment, dict):
            chars = alignment.get("chars") or []
            starts = alignment.get("charStartTimesMs") or []
            durations = alignment.get("charDurationsMs") or alignment.get("charsDurationsMs") or []
            for char, start, duration in zip(chars, starts, durations):
                begin = context.offset_ms + float(start)
                end = begin + float(duration)
                if not isinstance(char, str) or char.isspace():
                    if context.word:
                        out.append((context.word, context.word_start, context.word_end))
                        context.word = ""
                    continue
                if not context.word:
                    context.word_start = begin
                context.word += char
                context.word_end = end
        if final and context.word:
            out.append((context.word, context.word_start, context.word_end))
            context.word = ""
        if not out:
            return None
        return Words(tuple(w for w, _, _ in out), tuple(round(s, 3) for _, s, _ in out),
                     tuple(round(e, 3) for _, _, e in out))

    def _error(self, message: dict[str, Any]) -> list[UpstreamEvent]:
        text, retryable = classify_error(message)
        if "input_timeout" in str(message.get("error") or "") and not self._order:
            # The provider drops an idle socket; the session reopens it unseen.
            return [Ignored("inactivity timeout while idle")]
        return [UpstreamError(f"ElevenLabs: {text}", retryable=retryable, fatal=not retryable)]
