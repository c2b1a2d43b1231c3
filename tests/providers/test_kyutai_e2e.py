"""Kyutai STT end to end: a client speaking unified STT (16 kHz PCM16) to the gateway,
which speaks moshi-server's asr-streaming protocol to the Kyutai emulator, which
recognises the speech with the real PocketSphinx engine. Native mode too: the client
speaks MessagePack itself and the gateway relays it."""

from __future__ import annotations

import numpy as np
import pytest
import trio_websocket

from engines.engine_audio import ROUND_TRIP_MIN_HITS, recognised, round_trip_speech

# The audio is resampled twice before PocketSphinx hears it (16 kHz to Kyutai's 24 kHz float
# by the gateway, back to 16 kHz by the emulator): its word count wobbles around the
# engines' threshold, so one word less is accepted (noise and silence give none).
KYUTAI_MIN_HITS = ROUND_TRIP_MIN_HITS - 1
from slng_fast import _native
from slng_fast.engines.espeak import EspeakSynth
from wsclient import connect, recv, recv_until, send

FRAME = 1920


@pytest.fixture(scope="module")
def speech() -> bytes:
    return round_trip_speech(EspeakSynth.shared())  # 16 kHz PCM16


async def stream(ws, audio: bytes, frame: int = 640) -> None:
    for pos in range(0, len(audio), frame):
        await ws.send_message(audio[pos:pos + frame])


async def test_unified_stt_of_real_speech(provider_gateway, nursery, speech):
    gw = await provider_gateway("kyutai")
    ws = await connect(gw.stt("kyutai"), gw.keys["pro"], nursery=nursery)
    await send(ws, type="start", sample_rate=16000, encoding="pcm16", context_id="k-1")
    ready = await recv(ws)
    assert ready == {"type": "ready", "model_id": "kyutai", "sample_rate": 16000,
                     "encoding": "pcm16", "context_id": "k-1"}
    await stream(ws, speech)
    await send(ws, type="finalize")
    events = await recv_until(ws, "final_transcript")
    assert all(e["context_id"] == "k-1" for e in events)
    assert not [e for e in events if e["type"] == "error"], events
    partials = [e for e in events if e["type"] == "transcript" and not e["is_final"]]
    finals = [e for e in events if e["type"] == "transcript" and e["is_final"]]
    assert partials and finals
    final = events[-1]
    assert len(recognised(final["text"])) >= KYUTAI_MIN_HITS, final
    # the final segments, in order and without repetition, make the final transcript
    assert final["text"] == " ".join(e["text"] for e in finals)
    # each partial grows its segment: it starts with the partial before it or a new one
    assert final["audio_duration_seconds"] == pytest.approx(len(speech) / 32000, abs=0.01)
    await send(ws, type="ping")
    assert (await recv(ws))["type"] == "pong"
    await ws.aclose()


async def test_finalize_twice_each_gets_its_own_final(provider_gateway, nursery, speech):
    gw = await provider_gateway("kyutai")
    ws = await connect(gw.stt("kyutai"), gw.keys["pro"], nursery=nursery)
    await send(ws, type="start", sample_rate=16000, encoding="pcm16")
    await recv(ws)
    half = len(speech) // 2 // 640 * 640
    await stream(ws, speech[:half])
    await send(ws, type="finalize")
    first = (await recv_until(ws, "final_transcript"))[-1]
    await stream(ws, speech[half:])
    await send(ws, type="finalize")
    second = (await recv_until(ws, "final_transcript"))[-1]
    assert first["audio_duration_seconds"] == pytest.approx(half / 32000, abs=0.01)
    assert second["audio_duration_seconds"] == pytest.approx((len(speech) - half) / 32000,
                                                             abs=0.01)
    heard = recognised(first["text"] + " " + second["text"])
    # Cut mid-stream, each half is decoded from a fresh start: PocketSphinx's hold on
    # eSpeak's voice is weaker there, so half the words (noise gives none) are asked for.
    assert len(heard) >= ROUND_TRIP_MIN_HITS // 2, (first, second)
    # nothing is said twice: the second holds only what came after the first
    assert first["text"] and first["text"] not in second["text"], (first, second)
    # a finalize with no new audio: an empty final, promptly
    await send(ws, type="finalize")
    third = (await recv_until(ws, "final_transcript"))[-1]
    assert third["text"] == ""
    await ws.aclose()


async def test_at_another_rate_and_codec(provider_gateway, nursery, speech):
    gw = await provider_gateway("kyutai")
    ws = await connect(gw.stt("kyutai"), gw.keys["pro"], nursery=nursery)
    audio = _native.Resampler(16000, 48000).process(speech)
    await send(ws, type="start", sample_rate=48000, encoding="pcm16")
    await recv(ws)
    await stream(ws, audio, 1920)
    await send(ws, type="finalize")
    final = (await recv_until(ws, "final_transcript"))[-1]
    assert len(recognised(final["text"])) >= KYUTAI_MIN_HITS, final
    await ws.aclose()


def f32_24k(pcm16k: bytes) -> bytes:
    resampler = _native.Resampler(16000, 24000, "pcm16", "f32")
    return resampler.process(pcm16k) + resampler.flush()


async def native_exchange(ws, speech: bytes) -> list[dict]:
    pcm = f32_24k(speech)
    for pos in range(0, len(pcm), 4 * FRAME):
        await ws.send_message(_native.kyutai_audio_frame(pcm[pos:pos + 4 * FRAME]))
    await ws.send_message(_native.kyutai_marker_frame(5))
    silence = _native.kyutai_audio_frame(bytes(4 * FRAME))
    for _ in range(10):
        await ws.send_message(silence)
    out = []
    while True:
        frame = await ws.get_message()
        assert isinstance(frame, bytes), frame  # no unified JSON in native mode
        msg = _native.msgpack_decode(frame)
        out.append(msg)
        if msg == {"type": "Marker", "id": 5}:
            return out


async def test_native_mode_relays_msgpack_both_ways(provider_gateway, nursery, speech):
    gw = await provider_gateway("kyutai")
    ws = await connect(gw.stt("kyutai"), gw.keys["pro"], nursery=nursery)
    # a text frame first makes the session native (moshi-server ignores text frames)
    await ws.send_message("kyutai native")
    messages = await native_exchange(ws, speech)
    kinds = {m["type"] for m in messages}
    assert {"Ready", "Step", "Word", "Marker"} <= kinds, kinds
    text = " ".join(m["text"] for m in messages if m["type"] == "Word")
    assert len(recognised(text)) >= KYUTAI_MIN_HITS, text
    await ws.aclose()


async def test_native_mode_when_the_first_frame_is_msgpack(provider_gateway, nursery, speech):
    gw = await provider_gateway("kyutai")
    ws = await connect(gw.stt("kyutai"), gw.keys["pro"], nursery=nursery)
    messages = await native_exchange(ws, speech[: 16000 * 2])
    assert messages[-1] == {"type": "Marker", "id": 5}
    await ws.aclose()


async def test_a_wrong_api_key_is_provider_unavailable(provider_gateway, nursery):
    """A gateway configured with the wrong key is refused by the emulator (401): the
    session fails with provider_unavailable."""
    gw = await provider_gateway("kyutai", api_key="wrong-key")
    ws = await connect(gw.stt("kyutai"), gw.keys["pro"], nursery=nursery)
    await send(ws, type="start", sample_rate=16000, encoding="pcm16")
    events = await recv_until(ws, "error")
    assert events[-1]["code"] == "provider_unavailable", events
    try:
        while True:
            await ws.get_message()
    except trio_websocket.ConnectionClosed as exc:
        assert exc.reason.code == 1013


def test_speech_fixture_is_16k_pcm16(speech):
    assert len(speech) % 2 == 0 and np.frombuffer(speech, "<i2").any()
