"""Unified STT through the gateway to the real PocketSphinx engine: partial and final
transcripts of real eSpeak speech, in any supported rate and codec, finalize more than once."""

from __future__ import annotations

import numpy as np
import pytest

from engines.engine_audio import ROUND_TRIP_MIN_HITS, recognised, round_trip_speech
from slng_fast import _native
from slng_fast.engines.espeak import EspeakSynth
from wsclient import closed_code, connect, recv, recv_until, send


@pytest.fixture(scope="module")
def speech() -> bytes:
    return round_trip_speech(EspeakSynth.shared())  # 16 kHz PCM16


def convert(pcm16k: bytes, rate: int, codec: str) -> bytes:
    pcm = pcm16k if rate == 16000 else _native.Resampler(16000, rate).process(pcm16k)
    if codec == "mulaw":
        return _native.pcm16_to_mulaw(pcm)
    if codec == "alaw":
        return _native.pcm16_to_alaw(pcm)
    return pcm


async def stream(ws, audio: bytes, frame: int) -> None:
    for pos in range(0, len(audio), frame):
        await ws.send_message(audio[pos:pos + frame])


# PocketSphinx's default en-us model is wideband (its filters reach 6.8 kHz): audio that was
# band-limited below that (8 and 11.025 kHz, telephone G.711) reaches it intact but is heard
# poorly, so for those rates the test checks that words arrive, not which.
@pytest.mark.parametrize("rate, codec, width, wideband", [
    (16000, "pcm16", 2, True), (48000, "pcm16", 2, True), (22050, "pcm16", 2, True),
    (8000, "mulaw", 1, False), (8000, "alaw", 1, False), (11025, "pcm16", 2, False)])
async def test_partials_and_final_in_any_rate_and_codec(gw, nursery, speech, rate, codec, width,
                                                        wideband):
    ws = await connect(gw.stt(), gw.keys["pro"], nursery=nursery)
    await send(ws, type="start", sample_rate=rate, encoding=codec, context_id="stt-1")
    ready = await recv(ws)
    assert ready == {"type": "ready", "model_id": "pocketsphinx", "sample_rate": rate,
                     "encoding": codec, "context_id": "stt-1"}
    audio = convert(speech, rate, codec)
    await stream(ws, audio, rate * width // 50)  # 20 ms frames
    await send(ws, type="finalize")
    events = await recv_until(ws, "final_transcript")
    partials = [e for e in events if e["type"] == "transcript" and not e["is_final"]]
    assert partials, "partial hypotheses arrive while audio streams"
    assert all(e["context_id"] == "stt-1" for e in events)
    final = events[-1]
    if wideband:
        assert len(recognised(final["text"])) >= ROUND_TRIP_MIN_HITS, final
    else:
        assert len(final["text"].split()) >= 3, final
    assert final["audio_duration_seconds"] == pytest.approx(len(audio) / width / rate, abs=0.01)
    await ws.aclose()


async def test_finalize_twice_each_gets_its_own_final(gw, nursery, speech):
    ws = await connect(gw.stt(), gw.keys["pro"], nursery=nursery)
    await send(ws, type="start", sample_rate=16000, encoding="pcm16")
    await recv(ws)
    half = len(speech) // 2 // 640 * 640
    await stream(ws, speech[:half], 640)
    await send(ws, type="finalize")
    first = (await recv_until(ws, "final_transcript"))[-1]
    await stream(ws, speech[half:], 640)
    await send(ws, type="finalize")
    second = (await recv_until(ws, "final_transcript"))[-1]
    assert first["audio_duration_seconds"] == pytest.approx(half / 32000, abs=0.01)
    assert second["audio_duration_seconds"] == pytest.approx((len(speech) - half) / 32000,
                                                             abs=0.01)
    heard = recognised(first["text"] + " " + second["text"])
    # Cut mid-stream, each half is decoded from a fresh start: PocketSphinx's hold on
    # eSpeak's voice is weaker there, so half the words (noise gives none) are asked for.
    assert len(heard) >= ROUND_TRIP_MIN_HITS // 2, (first, second)
    await send(ws, type="ping")  # the session stays open after finalize
    assert (await recv(ws))["type"] == "pong"
    await ws.aclose()


async def test_noise_is_not_transcribed_as_the_words(gw, nursery):
    ws = await connect(gw.stt(), gw.keys["pro"], nursery=nursery)
    noise = np.random.default_rng(3).normal(0, 3000, 48000).astype("<i2").tobytes()
    await stream(ws, noise, 640)  # binary before start implies 16 kHz pcm16
    await send(ws, type="finalize")
    events = await recv_until(ws, "final_transcript")
    assert events[0]["type"] == "ready" and events[0]["sample_rate"] == 16000
    assert len(recognised(events[-1]["text"])) < 2
    await ws.aclose()


@pytest.mark.parametrize("frame, code", [
    ('{"type":"finalize"}', "invalid_message"),  # before start
    ("hello", "invalid_message"),               # plain text is no STT protocol at all
])
async def test_text_before_start_is_invalid_message(gw, nursery, frame, code):
    ws = await connect(gw.stt(), gw.keys["pro"], nursery=nursery)
    await ws.send_message(frame)
    event = await recv(ws)
    assert event["type"] == "error" and event["code"] == code
    await send(ws, type="start")
    assert (await recv(ws))["type"] == "ready"
    await ws.aclose()


async def test_stop_ends_the_session_with_usage(gw, nursery, speech):
    ws = await connect(gw.stt(), gw.keys["pro"], nursery=nursery)
    await send(ws, type="start")
    await recv(ws)
    await stream(ws, speech[:32000], 640)
    await send(ws, type="stop")
    events = await recv_until(ws, "session_ended")
    assert events[-1]["reason"] == "client_closed"
    assert events[-1]["usage"]["audio_ms"] == pytest.approx(1000, abs=1)
    assert await closed_code(ws) == 1000
