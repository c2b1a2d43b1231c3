"""The Deepgram Aura streaming TTS dialect (PROTOCOL.md section 8, "Deepgram").

Upstream: ``wss://api.deepgram.com/v1/speak?model=...&encoding=linear16&sample_rate=N``
with ``Authorization: Token <key>``. Client messages are JSON text frames
``{"type":"Speak","text":...}``, ``{"type":"Flush"}``, ``{"type":"Clear"}`` and
``{"type":"Close"}``; Deepgram answers ``Metadata`` on connect, binary audio, ``Flushed``
``{sequence_id}`` after a flush's audio, ``Cleared`` ``{sequence_id}`` after a clear, and
``Warning`` ``{description, code}``. Fatal errors are WebSocket close frames (1003
``MESSAGE-*``, 1008 ``DATA-*``, 1009 ``BIG-*``, 1011 ``NET-*``).

Decisions (the unified side is PROTOCOL.md section 4):

* **Text is held until ``flush``**, as in ``slng.py``: ``input_text`` sends nothing,
  ``flush`` sends the buffered text as ``Speak`` messages (cut on whitespace into pieces
  of at most ``MAX_SPEAK_CHARS``, Deepgram's per-message limit) followed by one ``Flush``.
  So unified ``clear`` (drop unflushed text) is exact and costs no upstream traffic, and
  each ``Flushed`` answers one unified utterance (but see the flush limit below).
* **``stop`` is native**: ``stop_by_reconnect = False``; ``stop()`` returns ``Clear``
  (Deepgram drops its text and audio buffers). Until the matching ``Cleared`` arrives the
  dialect drops all audio and swallows ``Flushed`` (they belong to cleared flushes, which
  the session has already ended with ``interrupted: true``). Deepgram handles messages in
  order, so audio of a flush sent after the ``Clear`` comes after ``Cleared``.
* **``configure`` reconnects**: model, encoding and sample rate are query parameters, so
  ``capabilities.configure_reconnects`` is True and the session reopens the socket;
  ``configure()`` itself returns nothing.
* **Voice**: ``voice_id`` is the Deepgram model name (``aura-asteria-en``,
  ``aura-2-thalia-en``, ...). The extras ``speed`` and ``mip_opt_out`` are passed on as
  query parameters when given.
* **Output**: always ``linear16``. ``prefer_output(rate)`` asks Deepgram for the client's
  rate when Deepgram offers it (8000, 16000, 24000, 32000, 48000), else 24000; the
  gateway converts the rest, and ``Audio`` events carry the rate actually requested.
* **Keep-alive**: Deepgram's ``/v1/speak`` has no keep-alive message (only ``Speak``,
  ``Flush``, ``Clear``, ``Close``), and sending text would be billed, so
  ``keepalive_interval`` is None and ``keepalive()`` returns nothing. When Deepgram
  closes an idle socket the session reopens it lazily at the next flush, unseen by the
  client (``TtsSession.on_upstream_closed``).
* **Limits not enforced here** (they need a clock, and Deepgram enforces them
  itself): about 2,400 characters a minute and 20 flushes a minute per
  connection.
* **Errors**: ``Warning`` becomes a non-fatal ``UpstreamError`` (retryable when it is
  about a limit); a JSON ``Error`` message likewise. Over the flush limit (20 a
  minute) Deepgram answers a ``Flush`` with a ``Warning`` instead of processing it, and
  its text stays buffered until the next accepted flush. The warning cannot say which
  flush it refused, so the next ``Flushed`` ends one more utterance: every flush still
  gets exactly one ``audio_end`` and none waits forever, but the refused text's audio
  comes inside a later utterance. ``close_error(code, reason)`` maps a
  close frame to an ``UpstreamError`` for the I/O layer (1011 ``NET-*`` retryable; 1003,
  1008, 1009 not), or None for a normal close.
* **Native mode**: ``native_request`` opens the same speak URL; frames are relayed as they
  are. ``passthrough_request(path, query, api_key)`` serves the gateway's drop-in route
  for Deepgram's own SDKs: the SDK's path and query on the configured base URL."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

import orjson

from slng_fast.providers.base import HeldText, json_object
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
    UpstreamReady,
    UpstreamRequest,
    UtteranceDone,
)

SPEAK_PATH = "/v1/speak"
DEFAULT_MODEL = "aura-asteria-en"
DEFAULT_RATE = 24000
LINEAR16_RATES = (8000, 16000, 24000, 32000, 48000)
MAX_SPEAK_CHARS = 2000  # Deepgram's limit on the text of one Speak message
# Extras that Deepgram takes as query parameters of /v1/speak.
QUERY_EXTRAS = ("speed", "mip_opt_out")

FLUSH = orjson.dumps({"type": "Flush"}).decode()
CLEAR = orjson.dumps({"type": "Clear"}).decode()
CLOSE = orjson.dumps({"type": "Close"}).decode()

CAPABILITIES = Capabilities(
    supports_stop=True, supports_clear=True, supports_configure=True,
    configure_reconnects=True, word_timestamps=False,
)

# Close codes Deepgram uses for errors, and whether trying again may help.
ERROR_CLOSES = {
    1003: ("the provider refused a message it cannot read", False),
    1008: ("the provider refused invalid data", False),
    1009: ("the provider refused a message that is too large", False),
    1011: ("the provider had a network or timeout error", True),
}


def speak_message(text: str) -> str:
    return orjson.dumps({"type": "Speak", "text": text}).decode()


def split_text(text: str, limit: int = MAX_SPEAK_CHARS) -> list[str]:
    """Pieces of at most ``limit`` characters, cut after whitespace where there is some;
    joined they give ``text`` back exactly."""
    pieces = []
    while len(text) > limit:
        cut = max(text.rfind(" ", 0, limit), text.rfind("\n", 0, limit))
        cut = cut + 1 if cut > 0 else limit
        pieces.append(text[:cut])
        text = text[cut:]
    if text:
        pieces.append(text)
    return pieces


class DeepgramDialect(HeldText, TtsDialect):
    """Sans-I/O translation between unified commands and Deepgram's speak WebSocket."""

    capabilities = CAPABILITIES
    stop_by_reconnect = False
    keepalive_interval: float | None = None  # /v1/speak has no keep-alive message

    def __init__(self, endpoint: Endpoint, url: str, api_key: str | None = None) -> None:
        self.endpoint = endpoint
        base = url.rstrip("/")
        if base.endswith(SPEAK_PATH):  # a full speak URL was configured: keep its base
            base = base[: -len(SPEAK_PATH)]
        self.base = base
        self.api_key = api_key
        self.sample_rate = DEFAULT_RATE
        HeldText.__init__(self)
        self._clearing = 0  # Clears sent on the current socket whose Cleared is to come
        self._refused = 0  # Flushes Deepgram refused (flush limit) since the last Flushed

    # -- opening ------------------------------------------------------------------
    def prefer_output(self, sample_rate: int) -> None:
        """Ask Deepgram for the client's rate when it offers it, else 24 kHz."""
        self.sample_rate = sample_rate if sample_rate in LINEAR16_RATES else DEFAULT_RATE

    def _headers(self, api_key: str | None) -> tuple[tuple[str, str], ...]:
        return (("Authorization", f"Token {api_key}"),) if api_key else ()

    def query(self, settings: Settings) -> dict[str, str]:
        query = {
            "model": settings.voice_id or self.endpoint.default_voice or DEFAULT_MODEL,
            "encoding": "linear16",
            "sample_rate": str(self.sample_rate),
        }
        for key in QUERY_EXTRAS:
            value = settings.extras.get(key)
            if isinstance(value, bool):
                query[key] = "true" if value else "false"
            elif isinstance(value, (int, float, str)):
                query[key] = str(value)
        return query

    def request(self, settings: Settings) -> UpstreamRequest:
        # A fresh socket: no Clear is outstanding on it (the session drops whatever the
        # old one still sends).
        self._clearing = 0
        self._refused = 0
        url = f"{self.base}{SPEAK_PATH}?{urlencode(self.query(settings))}"
        return UpstreamRequest(url=url, headers=self._headers(self.api_key))

    def native_request(self, settings: Settings) -> UpstreamRequest:
        return self.request(settings)

    def passthrough_request(self, path: str, query: str, api_key: str | None) -> UpstreamRequest:
        """The upstream for a Deepgram SDK talking to the gateway as if it were Deepgram:
        its own path (``/v1/speak``) and query on the configured base URL, with the
        provider credential. The gateway's own ``api_key`` query parameter is not passed
        on. The rate in the query becomes ``sample_rate`` (used to count audio)."""
        path = "/" + unquote(path).lstrip("/")
        if path != SPEAK_PATH:
            raise ValueError(f"{path!r} is not Deepgram's speak endpoint {SPEAK_PATH}")
        pairs = [(k, v) for k, v in parse_qsl(query.lstrip("?"), keep_blank_values=True)
                 if k != "api_key"]
        params = dict(pairs)
        rate = params.get("sample_rate", "")
        if rate.isdigit() and params.get("encoding", "linear16") == "linear16":
            self.sample_rate = int(rate)
        url = f"{self.base}{SPEAK_PATH}"
        if pairs:
            url += "?" + urlencode(pairs)
        return UpstreamRequest(url=url, headers=self._headers(api_key))

    def open_frames(self, settings: Settings) -> list[Frame]:
        return []  # every setting is in the URL

    # -- unified commands -> frames -------------------------------------------------
    def flush(self) -> list[Frame]:
        text = self.take_text()
        if not text:
            return []
        frames: list[Frame] = [speak_message(piece) for piece in split_text(text)]
        return frames + [FLUSH]

    def clear(self) -> list[Frame]:
        self._buffer.clear()  # nothing unflushed was sent upstream
        return []

    def stop(self) -> list[Frame]:
        """Called by the session while flushes are in flight: ``Clear`` them. Their
        audio and ``Flushed`` are swallowed until ``Cleared``."""
        self._buffer.clear()
        self._clearing += 1
        self._refused = 0  # Clear drops the text of refused flushes too
        return [CLEAR]

    def configure(self, settings: Settings) -> list[Frame]:
        return []  # settings are query parameters: a reconnect (configure_reconnects)

    def end_of_input(self) -> list[Frame]:
        return [CLOSE]

    def keepalive(self) -> list[Frame]:
        return []

    # -- frames -> events -------------------------------------------------------------
    @property
    def relay_framing(self) -> RelayFraming | None:
        """Binary frames are linear16 at `sample_rate`, except while a Clear is answered
        (they are then the cleared flush's audio, which the session drops)."""
        return None if self._clearing else RelayFraming("binary")

    def receive(self, frame: Frame) -> list[UpstreamEvent]:
        if isinstance(frame, bytes):
            if not frame or self._clearing:
                return []  # audio of a cleared flush
            return [Audio(frame, self.sample_rate)]
        message = json_object(frame)
        if message is None:
            return [Ignored("text that is not a JSON object")]
        kind = message.get("type")
        if kind == "Metadata":
            return [UpstreamReady(sample_rate=self.sample_rate)]
        if kind == "Flushed":
            if self._clearing:
                return [Ignored("Flushed of a cleared flush")]
            # A refused flush gets no Flushed of its own: end its utterance with this one.
            done = 1 + self._refused
            self._refused = 0
            return [UtteranceDone() for _ in range(done)]
        if kind == "Cleared":
            self._clearing = max(0, self._clearing - 1)
            return [Ignored("Cleared")]
        if kind == "Warning":
            error = warning_error(message)
            if "flush" in error.message.lower() and not self._clearing:
                self._refused += 1  # over the flush limit: that Flush was not processed
            return [error]
        if kind == "Error":
            text = str(message.get("description") or message.get("err_msg")
                       or message.get("message") or message)
            code = str(message.get("code") or message.get("err_code") or "")
            return [UpstreamError(f"{code}: {text}" if code else text,
                                  retryable=is_limit(code, text))]
        return [Ignored(f"upstream event {kind!r}")]

    # -- closes -----------------------------------------------------------------------
    def close_error(self, code: int | None, reason: str | None = None) -> UpstreamError | None:
        """The error a close frame from Deepgram stands for, or None for a normal close."""
        return close_error(code, reason)


def is_limit(code: str, text: str) -> bool:
    words = f"{code} {text}".lower()
    return any(w in words for w in ("limit", "rate", "too many", "exceed", "throttl"))


def warning_error(message: dict[str, Any]) -> UpstreamError:
    description = str(message.get("description") or message.get("message") or "warning")
    code = str(message.get("code") or "")
    text = f"Deepgram warning {code}: {description}" if code else f"Deepgram warning: {description}"
    return UpstreamError(text, retryable=is_limit(code, description))


def close_error(code: int | None, reason: str | None = None) -> UpstreamError | None:
    reason = (reason or "").strip()
    if code in ERROR_CLOSES:
        what, retryable = ERROR_CLOSES[code]
        prefix = reason.split(" ", 1)[0].upper()
        if prefix.startswith("NET-"):
            retryable = True
        elif prefix.startswith(("DATA-", "BIG-", "MESSAGE-")):
            retryable = False
        detail = f": {reason}" if reason else ""
        return UpstreamError(f"{what} (close {code}{detail})", retryable=retryable)
    if code in (None, 1000, 1001, 1005, 1006) or not reason:
        return None
    return UpstreamError(f"the provider closed the connection (close {code}: {reason})",
                         retryable=code >= 1012 if code else False)

