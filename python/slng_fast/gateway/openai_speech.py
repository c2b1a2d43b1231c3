"""``POST /v1/audio/speech``: one TTS session per request, driven through
`HttpSessionConnection` by ``init``, ``input_text`` and ``flush``; its audio is encoded
as it arrives and sent chunked, so the first bytes leave while the rest of the text is
still being spoken. An error before the first audio is an HTTP error (OpenAI's body);
after it, the stream is cut (the client sees an incomplete body), as OpenAI does."""

from __future__ import annotations

import base64
import uuid
from functools import partial
from typing import Any

import orjson

from slng_fast.gateway.http import HttpExchange
from slng_fast.gateway.http_session import HttpSessionConnection
from slng_fast.gateway.openai_routes import Admitted, OpenAiRoutes, answer_from, run_session
from slng_fast.openai_compat.audio_files import SpeechEncoder, speech_rate
from slng_fast.openai_compat.errors import bad_request
from slng_fast.openai_compat.requests import SpeechRequest, parse_speech
from slng_fast.protocol.commands import TTS_SAMPLE_RATES
from slng_fast.vocabulary import Endpoint

# The built-in engines' speaking rates (80 to 450 words a minute, 175 their own pace).
ENGINE_SPEED = (80 / 175, 450 / 175)
# Dialects that take ``speed`` (a multiplier): the built-in engines (slng dialect,
# no upstream URL needed), Deepgram and Cartesia.
SPEED_DIALECTS = ("deepgram", "cartesia")


def init_command(request: SpeechRequest, endpoint: Endpoint, rate: int) -> dict[str, object]:
    """The unified ``init`` that asks the session for this request's audio."""
    init: dict[str, object] = {"type": "init", "codec": "pcm16", "sample_rate_hz": rate}
    if request.voice is not None:
        init["voice_id"] = request.voice
    if request.speed != 1.0:
        if endpoint.dialect == "slng" and not endpoint.needs_url:
            init["speed"] = min(max(request.speed, ENGINE_SPEED[0]), ENGINE_SPEED[1])
        elif endpoint.dialect in SPEED_DIALECTS:
            init["speed"] = request.speed
    return init


async def serve_speech(api: OpenAiRoutes, http: HttpExchange, admitted: Admitted) -> None:
    gateway, tier = api.gateway, admitted.tier
    # The request is one message of the key's tier: its size limit holds for the body.
    body = await http.read_body(tier.max_message_bytes, gateway.config.http_body_timeout_s)
    registry = gateway.registry
    resolve = api.resolve

    def voices(name: str) -> tuple[str, ...]:
        endpoint = registry.endpoint("tts", name)
        return endpoint.voices if endpoint is not None else ()

    request = parse_speech(body, resolve, voices)
    if len(request.input) > tier.max_text_chars:
        raise bad_request(f"`input` is {len(request.input)} characters; the {tier.name} tier "
                          f"allows {tier.max_text_chars}", "input", "text_too_long")
    endpoint = registry.endpoint("tts", request.endpoint)
    assert endpoint is not None  # resolved above
    model_rate = endpoint.sample_rate if endpoint.sample_rate in TTS_SAMPLE_RATES else 24000
    rate = speech_rate(request.response_format, model_rate)
    script = [orjson.dumps(init_command(request, endpoint, rate)).decode(),
              orjson.dumps({"type": "input_text", "text": request.input}).decode(),
              '{"type":"flush"}']
    conn = HttpSessionConnection(script)
    encoder = SpeechEncoder(request.response_format, rate)
    context_id = str(uuid.uuid4())
    await run_session(api, conn, endpoint, admitted, context_id,
                      partial(_answer, http, conn, encoder, context_id))


async def _answer(http: HttpExchange, conn: HttpSessionConnection, encoder: SpeechEncoder,
                  context_id: str) -> None:
    headers = [("x-request-id", context_id)]

    async def on_event(event: dict[str, Any]) -> bool:
        kind = event.get("type")
        if kind == "audio_chunk":
            out = encoder.push(base64.b64decode(event["data"]))
            if not http.started:
                await http.start(200, encoder.content_type, headers=headers)
            await http.write(out)
        elif kind == "audio_end":
            if not http.started:
                await http.start(200, encoder.content_type, headers=headers)
            await http.write(encoder.finish())
            await http.end()
            return True
        return False

    await answer_from(http, conn, on_event, "the speech session ended without audio")
