"""A finished transcription as OpenAI's ``response_format`` wants it (``json``,
``text``, ``verbose_json``, ``srt``, ``vtt``), and the server-sent events of a
streamed one."""

from __future__ import annotations

import math
from typing import Any

import orjson

from slng_fast.openai_compat.requests import TranscriptionRequest


def segment(index: int, start: float, end: float, text: str) -> dict[str, Any]:
    """One ``verbose_json`` segment: the fields the gateway knows (no log-probabilities)."""
    return {"id": index, "seek": 0, "start": start, "end": end, "text": text, "tokens": [],
            "temperature": 0.0}


def _stamp(t: float, separator: str) -> str:
    ms = round(t * 1000)
    h, m, s = ms // 3_600_000, ms // 60_000 % 60, ms // 1000 % 60
    return f"{h:02}:{m:02}:{s:02}{separator}{ms % 1000:03}"


def subtitles(segments: list[dict[str, Any]], text: str, seconds: float, *,
              vtt: bool) -> str:
    """SubRip or WebVTT cues: one per timed segment; the whole text over the whole audio
    when the provider gave no times."""
    cues = [(s["start"], s["end"], s["text"]) for s in segments] or (
        [(0.0, seconds, text)] if text else [])
    separator = "." if vtt else ","
    blocks = []
    for number, (start, end, words) in enumerate(cues, 1):
        timing = f"{_stamp(start, separator)} --> {_stamp(end, separator)}"
        blocks.append(f"{timing}\n{words}\n" if vtt else f"{number}\n{timing}\n{words}\n")
    return ("WEBVTT\n\n" if vtt else "") + "\n".join(blocks)


def answer_body(request: TranscriptionRequest, text: str, seconds: float,
                segments: list[dict[str, Any]]) -> tuple[bytes, str]:
    """The body and content type of a finished transcription, by ``response_format``."""
    usage = {"type": "duration", "seconds": math.ceil(seconds)}
    if request.response_format == "text":
        return text.encode() + b"\n", "text/plain; charset=utf-8"
    if request.response_format in ("srt", "vtt"):
        vtt = request.response_format == "vtt"
        return (subtitles(segments, text, seconds, vtt=vtt).encode(),
                "text/vtt; charset=utf-8" if vtt else "text/plain; charset=utf-8")
    if request.response_format == "verbose_json":
        return orjson.dumps({
            "task": "transcribe", "language": request.language or "en", "duration": seconds,
            "text": text, "segments": segments, "usage": usage}), "application/json"
    return orjson.dumps({"text": text, "usage": usage}), "application/json"


def sse(event: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``event`` as its data."""
    return b"data: " + orjson.dumps(event) + b"\n\n"
