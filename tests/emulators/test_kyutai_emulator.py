"""The Kyutai STT emulator (moshi-server asr-streaming) in front of the real PocketSphinx
engine, driven the way moshi-server's own example clients drive it: MessagePack frames
of float32 at 24 kHz in 1920-sample chunks, a Marker, then silence until it returns."""

from __future__ import annotations

import pytest
import trio
import trio_websocket

from engines.engine_audio import ROUND_TRIP_MIN_HITS, recognised, round_trip_speech
from harness import EMULATOR_KEY, start_emulator
from slng_fast import _native
from slng_fast.emulators import kyutai as emulator
from slng_fast.engines.espeak import EspeakSynth

FRAME = 1920
pack = _native.msgpack_encode
unpack = _native.msgpack_decode


@pytest.fixture(scope="module")
def speech_24k_f32() -> bytes:
    pcm16k = round_trip_speech(EspeakSynth.shared())
    resampler = _native.Resampler(16000, 24000, "pcm16", "f32")
    return resampler.process(pcm16k) + resampler.flush()


@pytest.fixture
async def base(nursery, engines):
    urls, _ = engines
    return await start_emulator(nursery, "kyutai", urls)


async def connect(nursery, base, key=EMULATOR_KEY, path="/api/asr-streaming"):
    headers = [(b"kyutai-api-key", key.encode())] if key else []
    return await trio_websocket.connect_websocket_url(nursery, base + path, None,
                                                      extra_headers=headers)


def audio(pcm_f32: bytes) -> bytes:
    return _native.kyutai_audio_frame(pcm_f32)


SILENCE = audio(bytes(4 * FRAME))


async def recv(ws) -> dict:
    frame = await ws.get_message()
    assert isinstance(frame, bytes)
    return unpack(frame)


async def until_marker(ws, marker: int) -> list[dict]:
    out = []
    while True:
        msg = await recv(ws)
        out.append(msg)
        if msg["type"] == "Marker" and msg["id"] == marker:
            return out


def test_the_emulator_contract():
    assert emulator.ENGINE == "pocketsphinx"


@pytest.mark.parametrize("key, path, status", [
    (None, "/api/asr-streaming", 401), ("wrong", "/api/asr-streaming", 401),
    (EMULATOR_KEY, "/api/other", 404)])
async def test_refused_handshakes(nursery, base, key, path, status):
    headers = [(b"kyutai-api-key", key.encode())] if key else []
    with pytest.raises(trio_websocket.ConnectionRejected) as info:
        async with trio_websocket.open_websocket_url(base + path, extra_headers=headers):
            pass
    assert info.value.status_code == status


async def test_api_key_may_also_come_as_auth_id(nursery, base):
    ws = await trio_websocket.connect_websocket_url(
        nursery, f"{base}/api/asr-streaming?auth_id={EMULATOR_KEY}", None)
    assert (await recv(ws)) == {"type": "Ready"}
    await ws.aclose()


async def test_speech_gives_words_steps_and_the_marker_back(nursery, base, speech_24k_f32):
    ws = await connect(nursery, base)
    assert await recv(ws) == {"type": "Ready"}
    await ws.send_message(audio(bytes(4 * 24000)))  # a second of silence first, as the examples do
    n_bytes = len(speech_24k_f32)
    for pos in range(0, n_bytes, 4 * FRAME):
        await ws.send_message(audio(speech_24k_f32[pos:pos + 4 * FRAME]))
    for _ in range(5):
        await ws.send_message(SILENCE)
    await ws.send_message(_native.kyutai_marker_frame(7))
    for _ in range(35):
        await ws.send_message(SILENCE)
    messages = await until_marker(ws, 7)
    words = [m for m in messages if m["type"] == "Word"]
    steps = [m for m in messages if m["type"] == "Step"]
    text = " ".join(w["text"] for w in words)
    # float32 at 24 kHz, resampled back to 16 kHz for PocketSphinx: its word count wobbles
    # around the engines' threshold, so one word less is accepted (noise gives none).
    assert len(recognised(text)) >= ROUND_TRIP_MIN_HITS - 1, text
    assert all(set(w) == {"type", "text", "start_time"} for w in words)
    starts = [w["start_time"] for w in words]
    assert starts == sorted(starts)
    # words are placed in the audio: after the leading second of silence, inside the speech
    assert 1.0 <= starts[0] < starts[-1] <= 1.0 + n_bytes / 4 / 24000
    assert sum(m["type"] == "EndWord" for m in messages) == len(words)
    # one Step per 1920 samples, numbered from 0, up to the marker's delay past it
    assert [s["step_idx"] for s in steps] == list(range(len(steps)))
    assert all(set(s) == {"type", "step_idx", "prs", "buffered_pcm"} for s in steps)
    sent_steps = (24000 + n_bytes // 4) // FRAME + 5
    assert len(steps) >= sent_steps + emulator.DELAY_STEPS - 1
    # the rest of the silence still gives Steps, and the socket stays open
    more = [await recv(ws) for _ in range(3)]
    assert all(m["type"] == "Step" for m in more)
    await ws.aclose()


async def test_two_markers_come_back_in_order(nursery, base):
    ws = await connect(nursery, base)
    await recv(ws)
    await ws.send_message(_native.kyutai_marker_frame(1))
    await ws.send_message(_native.kyutai_marker_frame(2))
    for _ in range(emulator.DELAY_STEPS + 2):
        await ws.send_message(SILENCE)
    got = [m["id"] for m in await until_marker(ws, 2) if m["type"] == "Marker"]
    assert got == [1, 2]
    await ws.aclose()


async def test_a_marker_waits_for_the_delay(nursery, base):
    ws = await connect(nursery, base)
    await recv(ws)
    await ws.send_message(_native.kyutai_marker_frame(3))
    for _ in range(emulator.DELAY_STEPS - 1):
        await ws.send_message(SILENCE)
    seen = [await recv(ws) for _ in range(emulator.DELAY_STEPS - 1)]
    assert [m["type"] for m in seen] == ["Step"] * (emulator.DELAY_STEPS - 1)
    await ws.send_message(SILENCE)
    assert [m["type"] for m in await until_marker(ws, 3)] == ["Step", "Marker"]
    await ws.aclose()


async def test_bad_frames_get_errors_and_the_socket_stays_open(nursery, base):
    ws = await connect(nursery, base)
    await recv(ws)
    await ws.send_message("text is ignored")
    for frame in (b"\xc1", pack({"type": "OggOpus", "data": b""}), pack({"type": "Audio"}),
                  pack([1, 2])):
        await ws.send_message(frame)
        msg = await recv(ws)
        assert msg["type"] == "Error" and msg["message"], msg
    await ws.send_message(pack({"type": "Init"}))
    await ws.send_message(audio(bytes(4 * FRAME)))
    assert (await recv(ws))["type"] == "Step"
    await ws.aclose()


async def test_odd_sized_audio_counts_steps_across_frames(nursery, base):
    ws = await connect(nursery, base)
    await recv(ws)
    for _ in range(3):
        await ws.send_message(audio(bytes(4 * 1000)))  # 3000 samples: one step
    step = await recv(ws)  # after the second frame: 2000 samples, 80 left over
    assert step["type"] == "Step" and step["step_idx"] == 0 and step["buffered_pcm"] == 80
    with trio.move_on_after(0.3):
        extra = await recv(ws)
        raise AssertionError(f"unexpected {extra}")
    await ws.aclose()
