"""The official ``openai`` Python SDK pointed at a gateway (``base_url``, a gateway key
as ``api_key``) with the built-in engines: speech in every format, streamed and not;
transcription in every response format and as server-sent events; every documented
error status with OpenAI's error body; usage in the ledger; the key's tier limits."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import openai
import pytest
import soundfile
import trio

from engines.engine_audio import ROUND_TRIP_MIN_HITS, recognised, round_trip_speech
from harness import Running, make_gateway, start_gateway
from slng_fast.config import DEFAULT_MODEL_ALIASES, DEFAULT_TIERS, Config
from slng_fast.engines.espeak import EspeakSynth
from slng_fast.openai_compat.audio_files import decode_upload
from wsclient import connect, recv, send

SENTENCES = "Hello from the gateway. This is the second sentence. And here is a third one."


def client(gw: Running, tier: str = "pro", key: str | None = None) -> openai.OpenAI:
    base = gw.url.replace("ws://", "http://") + "/v1"
    # No retries: the SDK would retry 429 and 5xx answers after Retry-After.
    return openai.OpenAI(base_url=base, api_key=key or gw.keys[tier], max_retries=0,
                         timeout=30)


async def in_thread(call, *args, **kwargs):
    return await trio.to_thread.run_sync(lambda: call(*args, **kwargs))


@pytest.fixture(scope="module")
def speech_wav() -> bytes:
    """Speech PocketSphinx hears reliably, as a 16 kHz WAV file."""
    pcm = np.frombuffer(round_trip_speech(EspeakSynth.shared()), "<i2")
    out = io.BytesIO()
    soundfile.write(out, pcm, 16000, format="WAV", subtype="PCM_16")
    return out.getvalue()


async def gateway_with(nursery, tmp_path, engines, **config) -> Running:
    urls, info = engines
    return await start_gateway(nursery, make_gateway(
        tmp_path, urls, info, config=Config(data_dir=tmp_path, **config)))


# ---- models -------------------------------------------------------------------------------

async def test_models_lists_endpoints_and_aliases(gw):
    models = {m.id: m for m in await in_thread(client(gw).models.list)}
    assert {"espeak", "pocketsphinx", "piper", "orpheus", "tts-1", "whisper-1"} <= set(models)
    assert models["whisper-1"].model_extra["alias_of"] == "pocketsphinx"
    assert models["espeak"].model_extra["available"] is True
    assert models["orpheus"].model_extra["available"] is False  # no upstream configured


async def test_aliases_name_the_realtime_endpoint_too(tmp_path):
    from slng_fast.gateway.routing import parse_path
    from slng_fast.gateway.transport import IncomingRequest

    gw = make_gateway(tmp_path, {}, {}, config=Config(
        data_dir=tmp_path, model_aliases={**DEFAULT_MODEL_ALIASES, "whisper-1": "whisper"},
        realtime_stt="kyutai"))

    async def unused(*args, **kwargs):
        raise AssertionError("not answered here")

    async def name(model: str) -> str:
        path = f"/v1/realtime?intent=transcription&model={model}"
        request = IncomingRequest(path, [], [], unused, unused)
        route = await gw.gateway._realtime_route(request, parse_path(path))
        return route.name

    assert await name("whisper-1") == "whisper"  # the alias
    assert await name("pocketsphinx") == "pocketsphinx"  # an endpoint
    assert await name("gpt-4o-transcribe") == "pocketsphinx"  # a default alias
    assert await name("nothing-known") == "kyutai"  # the configured default


# ---- speech -------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["pcm", "wav", "mp3", "opus", "flac"])
async def test_speech_in_each_format(gw, fmt):
    answer = await in_thread(client(gw).audio.speech.create, model="espeak", voice="alloy",
                             input="Hello from the gateway.", response_format=fmt)
    data = answer.content
    if fmt == "pcm":  # PCM16 at the model's rate: eSpeak's 22.05 kHz
        assert len(data) % 2 == 0 and len(data) > 22050  # more than half a second
        return
    pcm, rate, seconds = decode_upload(data)
    assert rate == (24000 if fmt == "opus" else 22050)
    assert 0.5 < seconds < 5 and np.abs(np.frombuffer(pcm, "<i2")).max() > 1000
    assert answer.response.headers["content-type"].startswith(
        {"wav": "audio/wav", "mp3": "audio/mpeg", "opus": "audio/ogg",
         "flac": "audio/flac"}[fmt])


async def test_speech_streams_in_pieces_as_it_is_made(gw):
    def stream() -> tuple[dict[str, str], list[bytes]]:
        with client(gw).audio.speech.with_streaming_response.create(
                model="espeak", voice="en-us", input=SENTENCES, response_format="pcm",
                speed=1.3) as response:
            return dict(response.headers), list(response.iter_bytes())

    headers, pieces = await in_thread(stream)
    assert headers["transfer-encoding"] == "chunked" and "content-length" not in headers
    assert len(pieces) > 1 and sum(map(len, pieces)) > 22050 * 2


async def test_speech_speed_changes_the_length(gw):
    async def seconds(speed: float) -> float:
        answer = await in_thread(client(gw).audio.speech.create, model="espeak",
                                 voice="en-us", input=SENTENCES, response_format="pcm",
                                 speed=speed)
        return len(answer.content) / 2 / 22050

    assert await seconds(2.0) < 0.75 * await seconds(1.0)


async def test_an_alias_from_the_config(nursery, tmp_path, engines):
    gw = await gateway_with(nursery, tmp_path, engines, model_aliases={"tts-1": "espeak"})
    answer = await in_thread(client(gw).audio.speech.create, model="tts-1", voice="nova",
                             input="Aliases work.", response_format="wav")
    assert decode_upload(answer.content)[1] == 22050


# ---- transcription --------------------------------------------------------------------------

async def test_transcription_in_each_response_format(gw, speech_wav):
    stt = client(gw).audio.transcriptions
    plain = await in_thread(stt.create, model="pocketsphinx", file=("a.wav", speech_wav))
    assert len(recognised(plain.text)) >= ROUND_TRIP_MIN_HITS, plain.text
    assert plain.usage.type == "duration" and plain.usage.seconds >= 4

    # The same speech at a rate the sessions do not take (resampled to 16 kHz) and as text.
    pcm = np.frombuffer(decode_upload(speech_wav)[0], "<i2")
    import soxr
    odd = io.BytesIO()
    soundfile.write(odd, soxr.resample(pcm, 16000, 19000).astype("<i2"), 19000, format="WAV",
                    subtype="PCM_16")
    text = await in_thread(stt.create, model="whisper-1", file=("b.wav", odd.getvalue()),
                           response_format="text", language="en")
    assert isinstance(text, str) and len(recognised(text)) >= ROUND_TRIP_MIN_HITS, text

    verbose = await in_thread(stt.create, model="pocketsphinx", file=("c.wav", speech_wav),
                              response_format="verbose_json")
    assert verbose.duration == pytest.approx(len(pcm) / 16000)
    assert verbose.segments and len(recognised(verbose.text)) >= ROUND_TRIP_MIN_HITS
    starts = [s.start for s in verbose.segments]
    assert starts == sorted(starts) and all(s.end > s.start for s in verbose.segments)
    assert verbose.segments[-1].end <= verbose.duration + 0.1

    srt = await in_thread(stt.create, model="pocketsphinx", file=("d.wav", speech_wav),
                          response_format="srt")
    assert isinstance(srt, str) and srt.startswith("1\n00:00:") and " --> " in srt
    assert len(recognised(srt)) >= ROUND_TRIP_MIN_HITS
    vtt = await in_thread(stt.create, model="pocketsphinx", file=("e.wav", speech_wav),
                          response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:")


async def test_transcription_streamed_as_server_sent_events(gw, speech_wav):
    def stream() -> list:
        return list(client(gw).audio.transcriptions.create(
            model="pocketsphinx", file=("a.wav", speech_wav), stream=True))

    events = await in_thread(stream)
    kinds = [e.type for e in events]
    assert kinds[-1] == "transcript.text.done" and set(kinds[:-1]) == {"transcript.text.delta"}
    assert len(kinds) >= 3  # a delta per stable segment: the two sentences at least
    assert "".join(e.delta for e in events[:-1]).split() == events[-1].text.split()
    assert len(recognised(events[-1].text)) >= ROUND_TRIP_MIN_HITS


async def test_compressed_uploads(gw, speech_wav):
    pcm = np.frombuffer(decode_upload(speech_wav)[0], "<i2")
    out = io.BytesIO()
    soundfile.write(out, pcm, 16000, format="FLAC")
    answer = await in_thread(client(gw).audio.transcriptions.create, model="pocketsphinx",
                             file=("a.flac", out.getvalue()))
    assert len(recognised(answer.text)) >= ROUND_TRIP_MIN_HITS


# ---- errors -----------------------------------------------------------------------------------

def error_body(exc: openai.APIStatusError) -> dict:
    body = exc.response.json()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["message"]
    return body


async def raised(kind: type[openai.APIStatusError], call, *args, **kwargs) -> openai.APIStatusError:
    with pytest.raises(kind) as caught:
        await in_thread(call, *args, **kwargs)
    return caught.value


async def test_bad_key_is_401(gw, speech_wav):
    bad = client(gw, key="not-a-key")
    exc = await raised(openai.AuthenticationError, bad.audio.speech.create, model="espeak",
                       voice="alloy", input="x")
    assert exc.status_code == 401 and error_body(exc)["code"] == "invalid_api_key"
    await raised(openai.AuthenticationError, bad.models.list)
    await raised(openai.AuthenticationError, bad.audio.transcriptions.create,
                 model="pocketsphinx", file=("a.wav", speech_wav))


async def test_bad_input_is_400(gw):
    speech = client(gw, "free").audio.speech
    exc = await raised(openai.BadRequestError, speech.create, model="espeak", voice="alloy",
                       input="")
    assert error_body(exc)["param"] == "input"
    exc = await raised(openai.BadRequestError, speech.create, model="espeak", voice="alloy",
                       input="x", response_format="aac")
    assert error_body(exc)["param"] == "response_format"
    # Over the free tier's 500 characters (OpenAI's own limit is 4096).
    exc = await raised(openai.BadRequestError, speech.create, model="espeak", voice="alloy",
                       input="word " * 120)
    assert error_body(exc)["code"] == "text_too_long"
    # A voice the engine does not have: refused by the session itself.
    exc = await raised(openai.BadRequestError, speech.create, model="espeak",
                       voice="no-such-voice", input="Hello.")
    assert error_body(exc)["code"] == "invalid_parameter"
    exc = await raised(openai.BadRequestError, client(gw).audio.transcriptions.create,
                       model="pocketsphinx", file=("a.wav", b"not audio" * 100))
    assert error_body(exc)["code"] == "invalid_file_format"


async def test_unknown_model_is_404(gw):
    exc = await raised(openai.NotFoundError, client(gw).audio.speech.create, model="gpt-9",
                       voice="alloy", input="x")
    assert error_body(exc)["code"] == "model_not_found"


async def test_provider_unavailable_is_503(gw, speech_wav):
    # tts-1 means piper, whose engine this gateway does not run; whisper has no upstream.
    exc = await raised(openai.InternalServerError, client(gw).audio.speech.create,
                       model="tts-1", voice="alloy", input="Hello.")
    assert exc.status_code == 503 and error_body(exc)["code"] == "provider_unavailable"
    assert exc.response.headers["retry-after"] == "1"
    exc = await raised(openai.InternalServerError, client(gw).audio.transcriptions.create,
                       model="whisper", file=("a.wav", speech_wav))
    assert exc.status_code == 503


async def test_rate_limit_is_429_with_retry_after(nursery, tmp_path, engines):
    tiers = {**DEFAULT_TIERS, "free": replace(DEFAULT_TIERS["free"], messages_per_minute=2)}
    gw = await gateway_with(nursery, tmp_path, engines, tiers=tiers)
    speech = client(gw, "free").audio.speech
    for _ in range(2):  # each request is one message of the tier
        await in_thread(speech.create, model="espeak", voice="alloy", input="One.",
                        response_format="pcm")
    exc = await raised(openai.RateLimitError, speech.create, model="espeak", voice="alloy",
                       input="Two.")
    assert error_body(exc)["code"] == "rate_limit_exceeded"
    assert int(exc.response.headers["retry-after"]) >= 1
    await raised(openai.RateLimitError, client(gw, "free").models.list)


async def test_concurrent_connections_are_429(gw, nursery):
    ws = await connect(gw.tts(), gw.keys["free"], nursery=nursery)  # the free tier's one
    await send(ws, type="init")
    assert (await recv(ws))["type"] == "ready"
    exc = await raised(openai.RateLimitError, client(gw, "free").audio.speech.create,
                       model="espeak", voice="alloy", input="Hello.")
    assert error_body(exc)["code"] == "too_many_connections"
    assert exc.response.headers["retry-after"] == "1"
    await ws.aclose()


async def test_upload_limits_413_and_the_tiers_session_length(nursery, tmp_path, engines,
                                                              speech_wav):
    tiers = {**DEFAULT_TIERS, "free": replace(DEFAULT_TIERS["free"], max_duration_s=2,
                                              messages_per_minute=2)}
    gw = await gateway_with(nursery, tmp_path, engines, tiers=tiers,
                            max_upload_bytes=len(speech_wav) + 2000)
    stt = client(gw, "free").audio.transcriptions
    exc = await raised(openai.APIStatusError, stt.create, model="pocketsphinx",
                       file=("a.wav", speech_wav + b"\0" * 10_000))
    assert exc.status_code == 413 and error_body(exc)["code"] == "request_too_large"
    # Audio longer than the free tier's sessions (2 s here): refused before any session.
    exc = await raised(openai.BadRequestError, stt.create, model="pocketsphinx",
                       file=("a.wav", speech_wav))
    assert error_body(exc)["code"] == "audio_too_long"
    exc = await raised(openai.RateLimitError, stt.create, model="pocketsphinx",
                       file=("a.wav", speech_wav))  # a third request this minute
    assert int(exc.response.headers["retry-after"]) >= 1


# ---- usage ------------------------------------------------------------------------------------

async def test_usage_is_in_the_ledger(gw, speech_wav):
    text = "Counted in the ledger."
    await in_thread(client(gw).audio.speech.create, model="espeak", voice="alloy", input=text,
                    response_format="pcm")
    await in_thread(client(gw).audio.transcriptions.create, model="pocketsphinx",
                    file=("a.wav", speech_wav))
    with trio.fail_after(10):
        while len(rows := [r for r in gw.store.usage_rows() if r["ended_at"]]) < 2:
            await trio.sleep(0.05)
    tts, stt = rows
    assert (tts["key_id"], tts["provider"], tts["characters"]) == (
        gw.key_ids["pro"], "espeak", len(text))
    assert tts["audio_ms"] > 500 and tts["reason"] == "client_closed"
    assert (stt["key_id"], stt["provider"]) == (gw.key_ids["pro"], "pocketsphinx")
    assert stt["audio_ms"] == pytest.approx(len(decode_upload(speech_wav)[0]) / 32, rel=0.01)
    metrics = gw.gateway.metrics.render()  # the sessions' metrics, as for a WebSocket's
    assert 'slng_sessions_total{provider="espeak",tier="pro"} 1' in metrics
    assert 'slng_sessions_total{provider="pocketsphinx",tier="pro"} 1' in metrics


async def test_a_client_that_goes_away_ends_its_session_and_frees_its_slot(gw):
    def first_piece_then_leave() -> bytes:
        with client(gw, "free").audio.speech.with_streaming_response.create(
                model="espeak", voice="en-us", input=SENTENCES * 3,
                response_format="pcm") as response:
            return next(response.iter_bytes())

    assert await in_thread(first_piece_then_leave)
    with trio.fail_after(10):
        while not [r for r in gw.store.usage_rows() if r["ended_at"]]:
            await trio.sleep(0.05)
    # The free tier's one connection is free again.
    answer = await in_thread(client(gw, "free").audio.speech.create, model="espeak",
                             voice="en-us", input="Again.", response_format="pcm")
    assert answer.content
