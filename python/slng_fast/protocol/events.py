"""Builders for the unified events the gateway sends (PROTOCOL.md sections 4 and 5).
Each returns the JSON text of one frame; every event carries ``context_id``.
``audio_chunk`` frames are built by the native core (AudioChunker.push_frames)."""

from __future__ import annotations

from typing import Any

import orjson

from slng_fast.errors import GatewayError


def encode(event: dict[str, Any]) -> str:
    return orjson.dumps(event).decode()


def ready_tts(context_id: str, session: dict[str, Any], capabilities: dict[str, Any]) -> str:
    return encode({"type": "ready", "session": session, "capabilities": capabilities,
                   "context_id": context_id})


def ready_stt(context_id: str, model_id: str, sample_rate: int, encoding: str,
              extra: dict[str, Any] | None = None) -> str:
    event = {"type": "ready", "model_id": model_id, "sample_rate": sample_rate,
             "encoding": encoding, "context_id": context_id}
    if extra:
        event.update(extra)
    return encode(event)


def audio_end(context_id: str, utterance_id: int, total_duration_ms: float,
              interrupted: bool) -> str:
    return encode({"type": "audio_end", "id": utterance_id,
                   "total_duration_ms": round(total_duration_ms, 3),
                   "interrupted": interrupted, "context_id": context_id})


def _with_context(event: dict[str, Any], context_id: str | None) -> str:
    """Every event names its session; one answered before a session has an id (an
    engine's reply to a frame ahead of ``start``) leaves the field out."""
    if context_id is not None:
        event["context_id"] = context_id
    return encode(event)


def error(context_id: str | None, err: GatewayError) -> str:
    return _with_context({"type": "error", **err.event_fields()}, context_id)


def pong(context_id: str | None, timestamp: float) -> str:
    return _with_context({"type": "pong", "timestamp": timestamp}, context_id)


def word_timestamps(context_id: str, words: list[str], start_ms: list[float],
                    end_ms: list[float]) -> str:
    return encode({"type": "word_timestamps", "words": words, "start_ms": start_ms,
                   "end_ms": end_ms, "context_id": context_id})


def transcript(context_id: str, text: str, is_final: bool, confidence: float | None,
               timestamp: float, *, start: float | None = None,
               end: float | None = None) -> str:
    """``start``/``end`` (seconds into the session's audio) where the recogniser knows them."""
    event: dict[str, Any] = {"type": "transcript", "text": text, "is_final": is_final,
                             "confidence": confidence, "timestamp": timestamp}
    if start is not None:
        event["start"], event["end"] = start, end
    return _with_context(event, context_id)


def final_transcript(context_id: str, text: str, audio_duration_seconds: float,
                     timestamp: float) -> str:
    return encode({"type": "final_transcript", "text": text,
                   "audio_duration_seconds": round(audio_duration_seconds, 3),
                   "timestamp": timestamp, "context_id": context_id})


def session_ended(context_id: str | None, reason: str, usage: dict[str, Any]) -> str:
    return _with_context({"type": "session_ended", "reason": reason, "usage": usage}, context_id)
