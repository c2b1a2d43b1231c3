"""The Deepgram provider end to end: a client on the gateway's unified (and native) TTS
protocol, the gateway's Deepgram dialect, the Deepgram emulator, the real eSpeak engine."""

from __future__ import annotations

import base64
from urllib.parse import urlsplit

import numpy as np
import orjson
import trio
import trio.testing
import trio_websocket

from slng_fast.emulators import deepgram as emulator


async def connect(gw, nursery, query: str = ""):
    return await trio_websocket.connect_websocket_url(
        nursery, gw.tts("deepgram", query), None,
        extra_headers=[(b"authorization", f"Bearer {gw.keys['pro']}".encode())],
        max_message_size=8 * 1024 * 1024)


async def send(ws, **fields) -> None:
    await ws.send_message(orjson.dumps(fields).decode())


async def recv(ws) -> dict:
    return orjson.loads(await ws.get_message())


async def until(ws, kind: str) -> list[dict]:
    out = []
    while True:
        event = await recv(ws)
        out.append(event)
        if event["type"] == kind:
            return out


def audio(events: list[dict]) -> bytes:
    return b"".join(base64.b64decode(e["data"]) for e in events if e["type"] == "audio_chunk")


def rms(pcm: bytes) -> float:
    x = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(x ** 2))) if len(x) else 0.0


def pitch(pcm: bytes, rate: int) -> float:
    """Median fundamental frequency (Hz) of the loud 40 ms frames, by autocorrelation."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    n = rate * 40 // 1000
    lo, hi = rate // 400, rate // 70
    loud = np.sqrt(np.mean(x ** 2))
    found = []
    for pos in range(0, len(x) - n, n):
        frame = x[pos:pos + n] - x[pos:pos + n].mean()
        if np.sqrt(np.mean(frame ** 2)) < loud:
            continue
        ac = np.correlate(frame, frame, "full")[n - 1:]
        found.append(rate / (lo + int(np.argmax(ac[lo:hi]))))
    return float(np.median(found))


async def utterance(ws, text: str) -> list[dict]:
    await send(ws, type="input_text", text=text)
    await send(ws, type="flush")
    return await until(ws, "audio_end")


def emulator_port(gw) -> int:
    return urlsplit(gw.gateway.config.providers["deepgram"].url).port


async def test_unified_speech_comes_as_audio_chunks_and_one_audio_end(provider_gateway, nursery):
    gw = await provider_gateway("deepgram")
    ws = await connect(gw, nursery)
    await send(ws, type="init", voice_id="aura-asteria-en", sample_rate_hz=16000, context_id="dg-1")
    ready = await recv(ws)
    assert ready["type"] == "ready" and ready["session"]["provider"] == "deepgram"
    caps = ready["capabilities"]
    assert caps["supports_stop"] and caps["supports_clear"] and caps["configure_reconnects"]
    events = await utterance(ws, "Hello from Deepgram through the gateway.")
    chunks = [e for e in events if e["type"] == "audio_chunk"]
    assert [c["sequence"] for c in chunks] == list(range(len(chunks)))
    end = events[-1]
    assert end["id"] == 1 and end["interrupted"] is False and end["context_id"] == "dg-1"
    pcm = audio(events)
    assert 1.0 < len(pcm) / 2 / 16000 < 8.0 and rms(pcm) > 300
    assert abs(end["total_duration_ms"] - len(pcm) / 32) < 1.0
    # A second utterance on the same session.
    again = await utterance(ws, "And once more.")
    assert again[-1]["id"] == 2 and audio(again)
    await ws.aclose()


async def test_a_rate_deepgram_lacks_is_converted_by_the_gateway(provider_gateway, nursery):
    gw = await provider_gateway("deepgram")
    ws = await connect(gw, nursery)
    await send(ws, type="init", sample_rate_hz=22050, codec="mulaw")
    await recv(ws)
    events = await utterance(ws, "Converted audio.")
    data = audio(events)
    seconds = len(data) / 22050  # one byte a sample
    assert abs(events[-1]["total_duration_ms"] / 1000 - seconds) < 0.01 and seconds > 0.5
    await ws.aclose()


async def test_stop_interrupts_and_the_session_goes_on(provider_gateway, nursery):
    gw = await provider_gateway("deepgram")
    ws = await connect(gw, nursery)
    await send(ws, type="init")
    await recv(ws)
    await send(ws, type="input_text", text="This is a long story that will be interrupted. " * 40)
    await send(ws, type="flush")
    first = await recv(ws)
    assert first["type"] == "audio_chunk"
    await send(ws, type="stop")
    events = await until(ws, "audio_end")
    assert events[-1]["id"] == 1 and events[-1]["interrupted"] is True
    # The next utterance gets its own audio and a normal audio_end; nothing of the
    # stopped one, and no error.
    after = await utterance(ws, "After the stop.")
    assert [e["type"] for e in after if e["type"] not in ("audio_chunk",)] == ["audio_end"]
    assert after[-1]["id"] == 2 and after[-1]["interrupted"] is False
    pcm = audio(after)
    assert 0.3 < len(pcm) / 2 / 24000 < 4.0
    await ws.aclose()


async def test_clear_drops_unflushed_text(provider_gateway, nursery):
    gw = await provider_gateway("deepgram")
    ws = await connect(gw, nursery)
    await send(ws, type="init")
    await recv(ws)
    await send(ws, type="input_text", text="Forget all of this text, it is long and dropped. " * 5)
    await send(ws, type="clear")
    kept = await utterance(ws, "Keep.")
    await send(ws, type="input_text", text="Keep.")
    await send(ws, type="flush")
    reference = await until(ws, "audio_end")
    assert abs(len(audio(kept)) - len(audio(reference))) <= 0.01 * len(audio(reference))
    await ws.aclose()


async def test_configure_changes_the_voice_after_a_reconnect(provider_gateway, nursery):
    gw = await provider_gateway("deepgram")
    ws = await connect(gw, nursery)
    await send(ws, type="init", voice_id="aura-asteria-en")
    await recv(ws)
    text = "The quick brown fox jumps over the lazy dog."
    female = audio(await utterance(ws, text))
    await send(ws, type="configure", voice_id="aura-orion-en")
    male = audio(await utterance(ws, text))
    assert pitch(female, 24000) > 1.2 * pitch(male, 24000)
    await ws.aclose()


async def test_native_mode_relays_deepgrams_own_messages(provider_gateway, nursery):
    gw = await provider_gateway("deepgram")
    ws = await connect(gw, nursery, "?voice_id=aura-luna-en")
    await ws.send_message('{"type":"Speak","text":"Native mode speech."}')
    await ws.send_message('{"type":"Flush"}')
    metadata = await recv(ws)
    assert metadata["type"] == "Metadata" and metadata["model_name"] == "aura-luna-en"
    pcm = bytearray()
    while True:
        frame = await ws.get_message()
        if isinstance(frame, bytes):
            pcm += frame
            continue
        assert orjson.loads(frame) == {"type": "Flushed", "sequence_id": 0}
        break
    assert len(pcm) / 2 / 24000 > 0.5 and rms(bytes(pcm)) > 300
    await ws.send_message('{"type":"Clear"}')
    assert await recv(ws) == {"type": "Cleared", "sequence_id": 0}
    await ws.aclose()


async def test_an_upstream_drop_between_utterances_is_invisible(provider_gateway, nursery):
    gw = await provider_gateway("deepgram")
    ws = await connect(gw, nursery)
    await send(ws, type="init", voice_id="aura-hera-en")
    await recv(ws)
    first = await utterance(ws, "Before the drop.")
    assert first[-1]["interrupted"] is False
    # Deepgram closes idle sockets (1011 NET-0001): do it now, and let the gateway see it.
    assert await emulator.drop_connections(emulator_port(gw)) == 1
    await trio.testing.wait_all_tasks_blocked()
    second = await utterance(ws, "After the drop.")
    assert [e["type"] for e in second if e["type"] != "audio_chunk"] == ["audio_end"]
    assert second[-1]["id"] == 2 and second[-1]["interrupted"] is False and audio(second)
    await ws.aclose()
