"""The Cartesia provider end to end: a client, the gateway, the Cartesia emulator, and the
real eSpeak engine behind it, all on 127.0.0.1."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest
import trio

from slng_fast.emulators import cartesia as emulator
from wsclient import connect, recv, recv_until, send

VOICE = "694f9389-aac1-45b6-b726-9d9369183238"
OTHER_VOICE = "f786b574-daa5-4673-aa0c-cbe3e8534c02"
LONG = " ".join(["This sentence is long enough to keep the engine busy for a while,"] * 25)


def audio_of(events: list[dict]) -> bytes:
    return b"".join(base64.b64decode(e["data"]) for e in events if e["type"] == "audio_chunk")


def pitch(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, "<i2").astype(float)
    size = rate // 20
    found = []
    for i in range(0, len(x) - size, size // 2):
        w = x[i:i + size]
        if np.abs(w).mean() < 500:
            continue
        w = w - w.mean()
        ac = np.correlate(w, w, "full")[size - 1:]
        lo, hi = rate // 400, rate // 60
        found.append(rate / (lo + int(np.argmax(ac[lo:hi]))))
    return float(np.median(found))


async def session(gw, nursery, **init):
    ws = await connect(gw.tts("cartesia"), gw.keys["pro"], nursery=nursery)
    await send(ws, type="init", **init)
    ready = await recv(ws)
    assert ready["type"] == "ready", ready
    return ws, ready


async def say(ws, text: str) -> list[dict]:
    await send(ws, type="input_text", text=text)
    await send(ws, type="flush")
    return await recv_until(ws, "audio_end")


async def test_unified_speech_is_audio_chunks_then_one_audio_end(provider_gateway, nursery):
    gw = await provider_gateway("cartesia")
    ws, ready = await session(gw, nursery, voice_id=VOICE, sample_rate_hz=16000,
                              context_id="my-ctx", language="en")
    caps = ready["capabilities"]
    assert ready["session"]["provider"] == "cartesia"
    assert caps["supports_stop"] and caps["supports_configure"] and caps["word_timestamps"]
    assert caps["configure_reconnects"] is False
    events = await say(ws, "Hello from the Cartesia emulator.")
    end = events[-1]
    assert end["id"] == 1 and end["interrupted"] is False
    assert all(e["context_id"] == "my-ctx" for e in events)
    chunks = [e for e in events if e["type"] == "audio_chunk"]
    assert [c["sequence"] for c in chunks] == list(range(len(chunks)))
    pcm = audio_of(events)
    seconds = len(pcm) / 2 / 16000
    assert 1.0 < seconds < 6
    assert end["total_duration_ms"] == pytest.approx(seconds * 1000, abs=1)
    assert "word_timestamps" not in [e["type"] for e in events]  # not asked for
    second = await say(ws, "And a second utterance.")
    assert second[-1]["id"] == 2 and audio_of(second)
    await ws.aclose()


async def test_mulaw_at_8k(provider_gateway, nursery):
    gw = await provider_gateway("cartesia")
    ws, ready = await session(gw, nursery, codec="mulaw", sample_rate_hz=8000)
    events = await say(ws, "One two three.")
    data = audio_of(events)
    assert data and events[-1]["total_duration_ms"] == pytest.approx(len(data) / 8, abs=1)
    await ws.aclose()


async def test_stop_interrupts_and_the_session_goes_on(provider_gateway, nursery):
    gw = await provider_gateway("cartesia")
    ws, _ = await session(gw, nursery, sample_rate_hz=16000)
    reference = audio_of(await say(ws, "Next one."))
    await send(ws, type="input_text", text=LONG)
    await send(ws, type="flush")
    await send(ws, type="stop")
    events = await recv_until(ws, "audio_end")
    end = events[-1]
    assert end["id"] == 2 and end["interrupted"] is True
    after = await say(ws, "Next one.")
    assert [e["id"] for e in after if e["type"] == "audio_end"] == [3]
    assert after[-1]["interrupted"] is False
    # nothing of the stopped utterance leaked into the next one
    assert len(audio_of(after)) == pytest.approx(len(reference), rel=0.05)
    assert after[-1]["total_duration_ms"] < 5000
    await ws.aclose()


async def test_configure_changes_the_voice_without_a_reconnect(provider_gateway, nursery):
    gw = await provider_gateway("cartesia")
    ws, _ = await session(gw, nursery, voice_id=VOICE, sample_rate_hz=16000)
    first = audio_of(await say(ws, "Same words, said twice."))
    await send(ws, type="configure", voice_id=OTHER_VOICE)
    second_events = await say(ws, "Same words, said twice.")
    assert "error" not in [e["type"] for e in second_events]
    second = audio_of(second_events)
    assert abs(pitch(second, 16000) - pitch(first, 16000)) > 0.3 * pitch(first, 16000)
    await ws.aclose()


async def test_word_timestamps_when_init_asks(provider_gateway, nursery):
    gw = await provider_gateway("cartesia")
    ws, _ = await session(gw, nursery, word_timestamps=True)
    events = await say(ws, "Hello world. Timestamps please.")
    stamps = [e for e in events if e["type"] == "word_timestamps"]
    words = [w for e in stamps for w in e["words"]]
    assert words == ["Hello", "world.", "Timestamps", "please."]
    starts = [s for e in stamps for s in e["start_ms"]]
    ends = [s for e in stamps for s in e["end_ms"]]
    assert starts == sorted(starts) and all(s < e for s, e in zip(starts, ends))
    assert ends[-1] <= events[-1]["total_duration_ms"] + 1
    assert all(e["context_id"] == stamps[0]["context_id"] for e in events)
    await ws.aclose()


async def test_native_mode_relays_cartesia_s_own_answers(provider_gateway, nursery):
    gw = await provider_gateway("cartesia")
    ws = await connect(gw.tts("cartesia"), gw.keys["pro"], nursery=nursery)
    request = {"model_id": "sonic-3", "transcript": "Native speech.", "context_id": "n1",
               "voice": {"mode": "id", "id": VOICE}, "continue": False,
               "output_format": {"container": "raw", "encoding": "pcm_s16le",
                                 "sample_rate": 24000}}
    await ws.send_message(orjson.dumps(request).decode())
    messages = []
    while not messages or messages[-1]["type"] != "done":
        messages.append(orjson.loads(await ws.get_message()))
    assert {m["context_id"] for m in messages} == {"n1"}
    assert {m["type"] for m in messages} == {"chunk", "done"}
    pcm = b"".join(base64.b64decode(m["data"]) for m in messages if m["type"] == "chunk")
    assert pcm
    # a bad request is Cartesia's own error, and the session stays open
    await ws.send_message(orjson.dumps({**request, "context_id": "n2",
                                        "model_id": "nope"}).decode())
    err = orjson.loads(await ws.get_message())
    assert err["type"] == "error" and err["context_id"] == "n2"
    # another context in another format: 8 kHz mu-law
    mulaw = {"container": "raw", "encoding": "pcm_mulaw", "sample_rate": 8000}
    await ws.send_message(orjson.dumps({**request, "context_id": "n3",
                                        "output_format": mulaw}).decode())
    messages = []
    while not messages or messages[-1]["type"] != "done":
        messages.append(orjson.loads(await ws.get_message()))
    g711 = b"".join(base64.b64decode(m["data"]) for m in messages if m["type"] == "chunk")
    assert g711
    await ws.aclose()
    # The ledger counts the base64 audio inside the JSON, each context in its own format.
    with trio.fail_after(10):
        while not (rows := [r for r in gw.store.usage_rows() if r["ended_at"] is not None]):
            await trio.sleep(0.05)
    assert rows[-1]["audio_ms"] == pytest.approx(len(pcm) / 48 + len(g711) / 8, abs=0.01)


async def test_upstream_drop_between_utterances_is_invisible(provider_gateway, nursery,
                                                             monkeypatch):
    monkeypatch.setattr(emulator, "IDLE_TIMEOUT", 0.2)
    gw = await provider_gateway("cartesia")
    ws, _ = await session(gw, nursery, sample_rate_hz=16000)
    before = emulator.stats["idle_closed"]
    first = await say(ws, "Before the drop.")
    while emulator.stats["idle_closed"] == before:  # the emulator drops the idle socket
        await trio.sleep(0.05)
    second = await say(ws, "After the drop.")
    assert [e["type"] for e in second if e["type"] not in ("audio_chunk",)] == ["audio_end"]
    assert second[-1]["id"] == 2 and second[-1]["interrupted"] is False
    assert audio_of(first) and audio_of(second)
    await ws.aclose()
