"""``POST /v1/audio/transcriptions``: the uploaded file is decoded to PCM16 mono and
fed to one STT session through `HttpSessionConnection` (``start``, the audio in frames
of the tier's audio chunk size, ``finalize``); the ``final_transcript`` is the answer.
``stream=true`` sends each stable segment as a ``transcript.text.delta`` server-sent
event as it comes, then ``transcript.text.done``."""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

import orjson
import trio

from slng_fast.gateway.http import HttpExchange
from slng_fast.gateway.http_session import HttpSessionConnection
from slng_fast.gateway.openai_routes import Admitted, OpenAiRoutes, answer_from, run_session
from slng_fast.openai_compat.audio_files import AudioTooLong, UnreadableAudio, decode_upload
from slng_fast.openai_compat.errors import bad_request
from slng_fast.openai_compat.requests import TranscriptionRequest, parse_transcription
from slng_fast.openai_compat.transcripts import answer_body, segment, sse


def script(pcm: bytes, rate: int, language: str | None, chunk_bytes: int) -> list[str | bytes]:
    """The unified commands of one transcription: start, the audio, finalize."""
    start: dict[str, Any] = {"type": "start", "sample_rate": rate, "encoding": "pcm16"}
    if language:
        start["language"] = language
    step = max(2, chunk_bytes - chunk_bytes % 2)
    frames: list[str | bytes] = [orjson.dumps(start).decode()]
    frames += [pcm[i:i + step] for i in range(0, len(pcm), step)]
    return [*frames, '{"type":"finalize"}']


async def serve_transcription(api: OpenAiRoutes, http: HttpExchange,
                              admitted: Admitted) -> None:
    gateway, tier = api.gateway, admitted.tier
    body = await http.read_body(gateway.config.max_upload_bytes,
                                gateway.config.http_body_timeout_s)
    request = parse_transcription(http.head_value("content-type"), body, api.resolve)
    try:
        pcm, rate, seconds = await trio.to_thread.run_sync(
            decode_upload, request.file, tier.max_duration_s)
    except UnreadableAudio as exc:
        raise bad_request(f"{request.filename}: {exc}", "file", "invalid_file_format") from None
    except AudioTooLong:
        raise bad_request(f"the audio is longer than the {tier.name} tier's sessions "
                          f"({tier.max_duration_s:g} s)", "file", "audio_too_long") from None
    endpoint = gateway.registry.endpoint("stt", request.endpoint)
    assert endpoint is not None  # resolved above
    conn = HttpSessionConnection(script(pcm, rate, request.language, tier.max_audio_chunk_bytes))
    context_id = str(uuid.uuid4())
    await run_session(api, conn, endpoint, admitted, context_id,
                      partial(_answer, http, conn, request, seconds, context_id))


async def _answer(http: HttpExchange, conn: HttpSessionConnection,
                  request: TranscriptionRequest, seconds: float, context_id: str) -> None:
    headers = [("x-request-id", context_id)]
    segments: list[dict[str, Any]] = []
    deltas = 0

    async def send_event(data: dict[str, Any]) -> None:
        if not http.started:
            await http.start(200, "text/event-stream",
                             headers=[("cache-control", "no-cache"), *headers])
        await http.write(sse(data))

    async def on_event(event: dict[str, Any]) -> bool:
        nonlocal deltas
        kind = event.get("type")
        if kind == "transcript" and event.get("is_final") and event.get("text"):
            text = str(event["text"])
            if isinstance(event.get("start"), (int, float)):
                segments.append(segment(len(segments), event["start"], event["end"], text))
            if request.stream:
                delta = " " + text if deltas else text
                deltas += 1
                await send_event({"type": "transcript.text.delta", "delta": delta})
        elif kind == "final_transcript":
            text = str(event.get("text", ""))
            if request.stream:
                await send_event({"type": "transcript.text.done", "text": text})
                await http.end()
            else:
                body, content_type = answer_body(request, text, seconds, segments)
                await http.respond(200, body, content_type, headers=headers)
            return True
        return False

    await answer_from(http, conn, on_event, "the transcription session ended without a transcript")
