"""The Cartesia TTS WebSocket dialect, PROTOCOL.md section 8.

Upstream: ``wss://api.cartesia.ai/tts/websocket`` with the ``Cartesia-Version`` and
API-key headers. Every request is a JSON object that repeats all the settings
(``model_id``, ``voice``, ``output_format``, ``language``, ...) together with a
``context_id``, a ``transcript`` and ``continue``. Cartesia answers per context:
``chunk`` (base64 ``data``), ``timestamps`` (``word_timestamps`` in seconds),
``flush_done``, ``done`` and ``error`` (the socket stays open after an error).
``{"context_id": ..., "cancel": true}`` cancels a context.

How the unified session maps onto that:

- One Cartesia context per utterance, named ``<prefix>-<n>`` by this dialect (the
  client's ``context_id`` belongs to the gateway). ``input_text`` is sent at once with
  ``continue: true`` so Cartesia can start early; ``flush`` ends the context with
  ``"transcript": "", "continue": false`` and its ``done`` is the ``UtteranceDone``.
- Contexts are generated concurrently upstream, but events come out of ``receive`` in
  utterance order: a context's events are held until every earlier context is done
  and its own utterance was flushed.
- ``stop`` cancels every context in flight; their late frames are swallowed.
  ``clear`` cancels the unflushed context (the cancel frame goes out with the next
  frames this dialect returns, since the session does not send what ``clear``
  returns).
- Settings travel with every request, so ``configure`` needs no frames and no
  reconnect: the next context uses them.
- Native mode relays frames as they are; its audio is counted from each ``chunk``'s
  base64 ``data`` in the ``output_format`` that the client's request for that context
  named (``native_client_frame`` sees the requests).
- Cartesia closes a socket after about five minutes without traffic. There is no
  harmless keep-alive message, so none is sent: the session reopens the upstream
  lazily, and ``open_frames`` re-sends the text of the unflushed context that the old
  socket took with it.

Sans-I/O: no sockets, no clock, no randomness unless no context prefix is given."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

import orjson

from slng_fast.providers.base import base64_size, json_object
from slng_fast.vocabulary import (
    Audio,
    Capabilities,
    Endpoint,
    Frame,
    Ignored,
    RelayFraming,
    Settings,
    TtsDialect,
    UpstreamError,
    UpstreamEvent,
    UpstreamRequest,
    UtteranceDone,
    Words,
)

# The API version this dialect was written against (the one the official Python SDK,
# cartesia 4.x, sends). The client's own ``cartesia_version`` wins on the passthrough route.
CARTESIA_VERSION = "2026-08-14"
DEFAULT_MODEL = "sonic-3"
PATH = "/tts/websocket"
# Output rates Cartesia documents for raw PCM; other client rates get 24 kHz, resampled.
OUTPUT_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
DEFAULT_RATE = 24000
# Provider extras copied into every request as they are.
REQUEST_EXTRAS = ("max_buffer_delay_ms", "pronunciation_dict_id", "speed",
                  "use_normalized_timestamps")
# ``style`` keys that are Cartesia generation controls.
GENERATION_KEYS = ("speed", "volume", "emotion")
EXPERIMENTAL = "__experimental_controls"
RETRYABLE_WORDS = ("rate limit", "rate-limit", "ratelimit", "rate_limit", "overload",
                   "timeout", "timed out", "capacity", "too many", "try again", "busy")
RETRYABLE_STATUS = (408, 429, 500, 502, 503, 504)
# Query parameters of the passthrough route that carry the client's gateway credential.
CLIENT_CREDENTIALS = ("api_key", "access_token")

# Bytes per sample of the raw encodings.
SAMPLE_WIDTHS = {"pcm_s16le": 2, "pcm_f32le": 4, "pcm_mulaw": 1, "pcm_alaw": 1}
NATIVE_CONTEXTS = 256  # output formats remembered by context id in native mode


def ms_per_byte(output_format: Any) -> float:
    """Milliseconds of audio in one byte of an ``output_format``: raw (or wav) by its
    encoding and rate, mp3 by its ``bit_rate``; 0 for one this does not know."""
    if not isinstance(output_format, dict):
        return 0.0
    rate, bit_rate = output_format.get("sample_rate"), output_format.get("bit_rate")
    if output_format.get("container") == "mp3":
        return 8000.0 / bit_rate if isinstance(bit_rate, int) and bit_rate > 0 else 0.0
    width = SAMPLE_WIDTHS.get(str(output_format.get("encoding")))
    if width is None or not isinstance(rate, int) or rate <= 0:
        return 0.0
    return 1000.0 / (width * rate)


CAPABILITIES = Capabilities(
    supports_stop=True, supports_clear=True, supports_configure=True,
    configure_reconnects=False, word_timestamps=True,
)


@dataclass
class _Context:
    id: str
    base: dict[str, Any]   # the settings part of every request, fixed for the context
    rate: int
    transcript: str = ""   # all text sent for it
    flushed: bool = False  # its end (continue: false) was sent: the session waits for it
    done: bool = False     # Cartesia said done (or error)
    held: list[UpstreamEvent] = field(default_factory=list)


class CartesiaDialect(TtsDialect):
    """Sans-I/O translation between unified commands and Cartesia's TTS WebSocket."""

    capabilities = CAPABILITIES
    stop_by_reconnect = False
    keepalive_interval: float | None = None  # lazy reopen instead (see the module doc)

    def __init__(self, endpoint: Endpoint, url: str, api_key: str | None = None, *,
                 context_prefix: str | None = None) -> None:
        self.endpoint = endpoint
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.sample_rate = DEFAULT_RATE
        self.prefix = context_prefix or f"slng-{uuid.uuid4().hex[:12]}"
        self._settings = Settings()
        self._counter = 0
        self._queue: deque[_Context] = deque()  # contexts in utterance order
        self._current: _Context | None = None    # the unflushed one (the queue's tail)
        self._cancelled: dict[str, None] = {}     # late frames of these are dropped
        self._outbox: list[Frame] = []           # cancels waiting for the next frames
        self._in_hand: tuple[_Context, str] | None = None  # see open_frames
        # Native mode: ms per byte of each context's output format, and of the latest.
        self._native_formats: dict[str, float] = {}
        self._native_latest = 0.0

    # -- opening ------------------------------------------------------------------
    def _ws_url(self, path: str = PATH, query: str = "") -> str:
        base = self.url
        if base.endswith(PATH):
            base = base[: -len(PATH)]
        url = base + (path if path.startswith("/") else "/" + path)
        return f"{url}?{query}" if query else url

    def _headers(self, api_key: str | None) -> tuple[tuple[str, str], ...]:
        headers = [("Cartesia-Version", CARTESIA_VERSION)]
        if api_key:
            # X-API-Key is the documented WebSocket header; current API versions document
            # Authorization: Bearer. Both carry the same provider key.
            headers += [("X-API-Key", api_key), ("Authorization", f"Bearer {api_key}")]
        return tuple(headers)

    def request(self, settings: Settings) -> UpstreamRequest:
        self._settings = settings
        return UpstreamRequest(url=self._ws_url(), headers=self._headers(self.api_key))

    def native_request(self, settings: Settings) -> UpstreamRequest:
        return UpstreamRequest(url=self._ws_url(), headers=self._headers(self.api_key))

    def passthrough_request(self, path: str, query: str, api_key: str | None) -> UpstreamRequest:
        """The upstream for the drop-in SDK route: the TTS socket (the only path
        allowed, after percent-decoding) and the client's query (minus its gateway
        credential) with the provider's key (``api_key`` if given, else this dialect's)."""
        if unquote(path or PATH) != PATH:
            raise ValueError(f"not Cartesia's TTS socket {PATH}: {path!r}")
        kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True)
                if k not in CLIENT_CREDENTIALS]
        return UpstreamRequest(url=self._ws_url(PATH, urlencode(kept)),
                               headers=self._headers(api_key or self.api_key))

    def open_frames(self, settings: Settings) -> list[Frame]:
        """A new socket. Contexts of the old one are gone (the session has ended their
        utterances), except the unflushed context and the one whose frames the session
        is about to send on this socket: their text sent on the old socket is re-sent."""
        self._settings = settings
        self._cancelled.clear()
        self._outbox.clear()  # cancels for the old socket are moot
        hand, hand_text = self._in_hand if self._in_hand else (None, "")
        keep = [c for c in self._queue if c is self._current or c is hand]
        self._queue = deque(keep)
        frames: list[Frame] = []
        for ctx in keep:
            ctx.held.clear()
            lost = ctx.transcript
            if ctx is hand and hand_text:
                lost = lost[: len(lost) - len(hand_text)]
            if lost:
                frames.append(self._request(ctx, lost, True))
        return frames

    def prefer_output(self, sample_rate: int) -> None:
        """Ask Cartesia for PCM at the client's rate when it offers that rate."""
        self.sample_rate = sample_rate if sample_rate in OUTPUT_RATES else DEFAULT_RATE

    # -- requests -----------------------------------------------------------------------
    def base_request(self, settings: Settings) -> dict[str, Any]:
        """The settings every request of a context repeats."""
        extras = settings.extras
        style = dict(settings.style or {})
        voice: dict[str, Any] = {"mode": "id",
                                 "id": settings.voice_id or self.endpoint.default_voice}
        experimental = style.pop(EXPERIMENTAL, None) or extras.get(EXPERIMENTAL)
        if isinstance(experimental, dict):
            voice[EXPERIMENTAL] = experimental
        message: dict[str, Any] = {
            "model_id": str(extras.get("model_id") or self.endpoint.extras.get("model_id")
                            or DEFAULT_MODEL),
            "voice": voice,
            "output_format": {"container": "raw", "encoding": "pcm_s16le",
                              "sample_rate": self.sample_rate},
        }
        if settings.language:
            message["language"] = settings.language.split("-")[0].split("_")[0].lower()
        generation = {k: v for k, v in style.items() if k in GENERATION_KEYS}
        if isinstance(extras.get("generation_config"), dict):
            generation.update(extras["generation_config"])
        if generation:
            message["generation_config"] = generation
        for key in REQUEST_EXTRAS:
            if key in extras:
                message[key] = extras[key]
        message["add_timestamps"] = True
        return message

    def _request(self, ctx: _Context, transcript: str, more: bool) -> str:
        message = {**ctx.base, "context_id": ctx.id, "transcript": transcript, "continue": more}
        return orjson.dumps(message).decode()

    def _cancel(self, ctx: _Context) -> str:
        self._cancelled[ctx.id] = None
        while len(self._cancelled) > 256:
            del self._cancelled[next(iter(self._cancelled))]
        return orjson.dumps({"context_id": ctx.id, "cancel": True}).decode()

    def _take_outbox(self) -> list[Frame]:
        frames, self._outbox = self._outbox, []
        return frames

    def _forget(self, ctx: _Context) -> None:
        if ctx in self._queue:
            self._queue.remove(ctx)
        if ctx is self._current:
            self._current = None

    # -- unified commands -> frames -------------------------------------------------
    def input_text(self, text: str) -> list[Frame]:
        self._in_hand = None
        if not text:
            return []
        frames = self._take_outbox()
        ctx = self._current
        if ctx is None:
            self._counter += 1
            ctx = _Context(f"{self.prefix}-{self._counter}", self.base_request(self._settings),
                           self.sample_rate)
            self._queue.append(ctx)
            self._current = ctx
        ctx.transcript += text
        frames.append(self._request(ctx, text, True))
        self._in_hand = (ctx, text)
        return frames

    @property
    def has_buffered_text(self) -> bool:
        return self._current is not None

    def flush(self) -> list[Frame]:
        self._in_hand = None
        ctx = self._current
        if ctx is None:
            return []  # nothing to say (pending cancels wait: they are no utterance)
        frames = self._take_outbox() + [self._request(ctx, "", False)]
        ctx.flushed = True
        self._current = None
        self._in_hand = (ctx, "")
        return frames

    def clear(self) -> list[Frame]:
        self._in_hand = None
        if self._current is not None:
            self._outbox.append(self._cancel(self._current))
            self._forget(self._current)
        return []

    def stop(self) -> list[Frame]:
        self._in_hand = None
        frames = self._take_outbox()
        for ctx in self._queue:
            if not ctx.done:
                frames.append(self._cancel(ctx))
        self._queue.clear()
        self._current = None
        return frames

    def configure(self, settings: Settings) -> list[Frame]:
        self._in_hand = None
        self._settings = settings  # settings travel with each request: the next context
        return []

    def keepalive(self) -> list[Frame]:
        self._in_hand = None
        return self._take_outbox()

    # -- native mode usage -------------------------------------------------------------
    def native_client_frame(self, frame: Frame) -> None:
        """A client's native request: remember the output format its context asked for."""
        if not isinstance(frame, str) or '"output_format"' not in frame:
            return
        message = json_object(frame)
        if message is None or "output_format" not in message:
            return
        per_byte = ms_per_byte(message["output_format"])
        self._native_latest = per_byte
        context_id = message.get("context_id")
        if isinstance(context_id, str):
            if len(self._native_formats) >= NATIVE_CONTEXTS:
                del self._native_formats[next(iter(self._native_formats))]
            self._native_formats[context_id] = per_byte

    def native_audio_ms(self, frame: Frame) -> float:
        """Milliseconds of audio in a native-mode frame (a ``chunk``'s base64 ``data``)."""
        if not isinstance(frame, str) or '"data"' not in frame:
            return 0.0
        message = json_object(frame)
        if message is None or message.get("type") != "chunk":
            return 0.0
        data, context_id = message.get("data"), message.get("context_id")
        if not isinstance(data, str):
            return 0.0
        per_byte = self._native_formats.get(context_id, self._native_latest) if isinstance(
            context_id, str) else self._native_latest
        return base64_size(data) * per_byte

    # -- frames -> events -------------------------------------------------------------
    @property
    def relay_framing(self) -> RelayFraming | None:
        """The oldest context's audio chunks, once it is flushed and nothing of it is held
        back: the data plane may carry them (`relay.rs`, `Framing::Cartesia`); anything
        else (timestamps, done, errors, other contexts) comes to this dialect."""
        head = self._queue[0] if self._queue else None
        if (head is None or not head.flushed or head.done or head.held
                or head.id in self._cancelled or head.rate != self.sample_rate):
            return None
        return RelayFraming("cartesia", head.id)

    def receive(self, frame: Frame) -> list[UpstreamEvent]:
        self._in_hand = None
        if isinstance(frame, bytes):
            return [Ignored("binary frame from Cartesia")]
        message = json_object(frame)
        if message is None:
            return [Ignored("text that is not a JSON object")]
        kind = message.get("type")
        cid = message.get("context_id")
        if isinstance(cid, str) and cid in self._cancelled:
            if kind in ("done", "error"):
                del self._cancelled[cid]
            return [Ignored(f"late {kind!r} of a cancelled context")]
        ctx = next((c for c in self._queue if c.id == cid), None)
        if ctx is None:
            if kind == "error":
                return [self._error(message)]
            return [Ignored(f"{kind!r} for an unknown context")]
        now: list[UpstreamEvent] = []
        if kind == "chunk":
            audio = self._audio(message, ctx)
            if audio is not None:
                ctx.held.append(audio)
            elif message.get("data"):
                now.append(UpstreamError("Cartesia sent audio that is not valid base64"))
        elif kind == "timestamps":
            words = self._words(message.get("word_timestamps"))
            if words is not None:
                ctx.held.append(words)
        elif kind == "done":
            ctx.done = True
        elif kind == "error":
            if ctx is self._current:  # its utterance was not flushed: nothing waits for it
                self._forget(ctx)
                return [self._error(message)]
            ctx.held.append(self._error(message))
            ctx.done = True
        else:  # flush_done (we never ask for one), phoneme_timestamps, ...
            return [Ignored(f"upstream event {kind!r}")]
        return now + self._release()

    def _release(self) -> list[UpstreamEvent]:
        """The head context's events, once its utterance was flushed; its end, once done."""
        out: list[UpstreamEvent] = []
        while self._queue and self._queue[0].flushed:
            head = self._queue[0]
            out += head.held
            head.held = []
            if not head.done:
                break
            self._queue.popleft()
            out.append(UtteranceDone())
        return out

    def _audio(self, message: dict[str, Any], ctx: _Context) -> Audio | None:
        data = message.get("data")
        if not isinstance(data, str) or not data:
            return None
        try:
            pcm = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            return None
        return Audio(pcm, ctx.rate) if pcm else None

    @staticmethod
    def _words(timings: Any) -> Words | None:
        if not isinstance(timings, dict):
            return None
        words, start, end = timings.get("words"), timings.get("start"), timings.get("end")
        if not (isinstance(words, list) and isinstance(start, list) and isinstance(end, list)):
            return None
        n = min(len(words), len(start), len(end))
        if n == 0:
            return None
        try:
            return Words(tuple(str(w) for w in words[:n]),
                         tuple(round(float(s) * 1000.0, 3) for s in start[:n]),
                         tuple(round(float(e) * 1000.0, 3) for e in end[:n]))
        except (TypeError, ValueError):
            return None

    @staticmethod
    def _error(message: dict[str, Any]) -> UpstreamError:
        text = message.get("message") or message.get("error") or message.get("title") or message
        text = str(text)
        title = message.get("title")
        if isinstance(title, str) and title and title not in text:
            text = f"{title}: {text}"
        status = message.get("status_code")
        lowered = f"{text} {message.get('error_code') or ''}".lower()
        retryable = status in RETRYABLE_STATUS or any(w in lowered for w in RETRYABLE_WORDS)
        return UpstreamError(f"Cartesia: {text}", retryable=retryable)
