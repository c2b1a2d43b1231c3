"""The unified pass-through dialect: the upstream speaks this very protocol (the built-in
PocketSphinx engine, or another slng-fast gateway). Commands pass through; the gateway
keeps what it owns (its own ``context_id``, limits, the audio format the model wants)."""

from __future__ import annotations

from typing import Any

import orjson

from slng_fast.providers.base import json_object
from slng_fast.vocabulary import (
    Endpoint,
    FinalTranscript,
    Frame,
    Ignored,
    SttDialect,
    Transcript,
    UpstreamError,
    UpstreamEvent,
    UpstreamReady,
    UpstreamRequest,
)


class UnifiedSttDialect(SttDialect):
    model_format = "pcm16"
    keepalive_interval: float | None = None

    def __init__(self, endpoint: Endpoint, url: str, api_key: str | None = None) -> None:
        self.endpoint = endpoint
        self.url = url
        self.api_key = api_key
        self.model_rate = endpoint.sample_rate

    @property
    def uplink_framing(self) -> str | None:
        return "binary"

    def request(self) -> UpstreamRequest:
        headers: tuple[tuple[str, str], ...] = ()
        if self.api_key:
            headers = (("Authorization", f"Bearer {self.api_key}"),)
        return UpstreamRequest(url=self.url, headers=headers)

    def open_frames(self, language: str | None, extras: dict[str, Any]) -> list[Frame]:
        start: dict[str, Any] = {"type": "start", "sample_rate": self.model_rate,
                                 "encoding": "pcm16"}
        if language:
            start["language"] = language
        return [orjson.dumps({**extras, **start}).decode()]

    def audio(self, pcm: bytes, now: float) -> list[Frame]:
        return [pcm] if pcm else []

    def finalize(self, now: float) -> list[Frame]:
        return ['{"type":"finalize"}']

    def keepalive(self) -> list[Frame]:
        return []

    def receive(self, frame: Frame) -> list[UpstreamEvent]:
        if isinstance(frame, bytes):
            return [Ignored("binary frame from a unified STT upstream")]
        event = json_object(frame)
        if event is None:
            return [Ignored("text that is not a JSON object")]
        kind = event.get("type")
        if kind == "ready":
            rate = event.get("sample_rate")
            return [UpstreamReady(sample_rate=rate if isinstance(rate, int) else None)]
        if kind == "transcript":
            confidence = event.get("confidence")
            start, end = event.get("start"), event.get("end")
            if not (isinstance(start, (int, float)) and isinstance(end, (int, float))):
                start = end = None
            return [Transcript(str(event.get("text", "")), bool(event.get("is_final")),
                               float(confidence) if isinstance(confidence, (int, float)) else None,
                               start, end)]
        if kind == "final_transcript":
            seconds = event.get("audio_duration_seconds")
            return [FinalTranscript(str(event.get("text", "")),
                                    float(seconds) if isinstance(seconds, (int, float)) else None)]
        if kind == "error":
            fatal = event.get("code") in {"provider_unavailable", "internal_error"}
            return [UpstreamError(str(event.get("message", "upstream error")),
                                  retryable=bool(event.get("retryable")), fatal=fatal,
                                  code=str(event.get("code", "provider_error")))]
        return [Ignored(f"upstream event {kind!r}")]
