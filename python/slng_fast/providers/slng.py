"""The SLNG model-server dialect (Orpheus, Orpheus Indic, Kokoro, CosyVoice, Chatterbox,
XTTS, and the built-in eSpeak engine), PROTOCOL.md section 8.

Upstream: one JSON settings message, then plain-text frames; ``{"type":"control",
"action":"flush"}`` makes the server speak its buffer and answer ``{"type":"flushed"}``
after the audio; ``__END__`` ends input. Audio is binary PCM16 mono at the rate of the
server's first ``{"type":"ready","sample_rate":N}`` frame.

The public servers do not honour ``stop`` and have no ``clear``, so this dialect keeps
unflushed text itself (``clear`` is then exact) and stops by closing the upstream and
reopening it with the same settings; a settings change is a reconnect too."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson

from slng_fast.providers.base import HeldText, json_object, voice_ids
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

FLUSH = orjson.dumps({"type": "control", "action": "flush"}).decode()
END_OF_INPUT = "__END__"
# Settings a model server understands, besides voice and language.
SERVER_EXTRAS = ("buffer_size", "max_tokens", "repetition_penalty", "temperature", "top_p")

CAPABILITIES = Capabilities(
    supports_stop=True, supports_clear=True, supports_configure=True,
    configure_reconnects=True, word_timestamps=False,
)


class SlngDialect(HeldText, TtsDialect):
    """Sans-I/O translation between unified commands and an SLNG model server."""

    capabilities = CAPABILITIES
    stop_by_reconnect = True
    keepalive_interval: float | None = None

    def __init__(self, endpoint: Endpoint, url: str, api_key: str | None = None) -> None:
        self.endpoint = endpoint
        self.url = url
        self.api_key = api_key
        self.sample_rate = endpoint.sample_rate
        HeldText.__init__(self)

    # -- opening ------------------------------------------------------------------
    def request(self, settings: Settings) -> UpstreamRequest:
        headers: tuple[tuple[str, str], ...] = ()
        if self.api_key:
            headers = (("Authorization", f"Bearer {self.api_key}"),)
        voice = settings.voice_id or self.endpoint.default_voice
        url = self.url
        if voice:
            sep = "&" if "?" in url else "?"
            url = f"{url}{sep}{urlencode({'voice': voice})}"
        return UpstreamRequest(url=url, headers=headers)

    def native_request(self, settings: Settings) -> UpstreamRequest:
        return self.request(settings)

    def settings_message(self, settings: Settings) -> dict[str, Any]:
        message: dict[str, Any] = {"voice": settings.voice_id or self.endpoint.default_voice}
        if settings.language:
            message["language"] = settings.language
        for key in SERVER_EXTRAS:
            if key in settings.extras:
                message[key] = settings.extras[key]
        if "speed" in settings.extras and not self.endpoint.needs_url:
            # The built-in engines take a speaking-rate multiplier (engines/wire.py).
            message["speed"] = settings.extras["speed"]
        if settings.style:
            message["style"] = settings.style
        return message

    def open_frames(self, settings: Settings) -> list[Frame]:
        return [orjson.dumps(self.settings_message(settings)).decode()]

    # -- unified commands -> frames -------------------------------------------------
    def flush(self) -> list[Frame]:
        text = self.take_text()
        return [text, FLUSH] if text else []

    def clear(self) -> list[Frame]:
        self._buffer.clear()
        return []

    def stop(self) -> list[Frame]:
        return []  # stopped by closing the upstream (stop_by_reconnect)

    def configure(self, settings: Settings) -> list[Frame]:
        return []  # settings are the first message: a reconnect (configure_reconnects)

    def end_of_input(self) -> list[Frame]:
        return [END_OF_INPUT]

    def keepalive(self) -> list[Frame]:
        return []

    # -- frames -> events -------------------------------------------------------------
    @property
    def relay_framing(self) -> RelayFraming | None:
        """Every binary frame is PCM16 at `sample_rate` and nothing else: the data plane
        may carry it straight to the client."""
        return RelayFraming("binary")

    def receive(self, frame: Frame) -> list[UpstreamEvent]:
        if isinstance(frame, bytes):
            if not frame:
                return []
            return [Audio(frame, self.sample_rate)]
        message = json_object(frame)
        if message is None:
            return [Ignored("text that is not a JSON object")]
        kind = message.get("type")
        if kind == "ready":
            rate = message.get("sample_rate")
            if isinstance(rate, int) and rate > 0:
                self.sample_rate = rate
            voices = message.get("voices")
            languages = message.get("languages")
            return [UpstreamReady(
                sample_rate=self.sample_rate,
                voices=voice_ids(voices) or None,
                languages=tuple(str(v) for v in languages) if isinstance(languages, list) else None,
            )]
        if kind == "flushed":
            return [UtteranceDone()]
        if kind == "error":
            return [UpstreamError(str(message.get("message") or message.get("error") or message))]
        return [Ignored(f"upstream event {kind!r}")]
