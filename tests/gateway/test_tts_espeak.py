"""Unified and native TTS through the gateway to the real eSpeak NG engine, checked by
ear: the audio goes back through the gateway's PocketSphinx endpoint."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest
import trio

from engines.engine_audio import (
    ROUND_TRIP_SENTENCES,
    ROUND_TRIP_VOICE,
    SYNTHESIS_ROUND_TRIP_MIN_HITS,
    recognised,
)
from wsclient import closed_code, connect, recv, recv_until, send


async def synthesize(gw, nursery, text: str, **init) -> tuple[list[dict], bytes]:
    ws = await connect(gw.tts(), gw.keys["pro"], nursery=nursery)
    await send(ws, type="init", **init)
    ready = await recv(ws)
    assert ready["type"] == "ready"
    await send(ws, type="input_text", text=text)
    await send(ws, type="flush")
    events = await recv_until(ws, "audio_end")
    await ws.aclose()
    audio = b"".join(base64.b64decode(e["data"]) for e in events if e["type"] == "audio_chunk")
    return [ready] + events, audio


async def transcribe(gw, nursery, pcm16k: bytes) -> str:
    ws = await connect(gw.stt(), gw.keys["pro"], nursery=nursery)
    await send(ws, type="start", sample_rate=16000, encoding="pcm16")
    assert (await recv(ws))["type"] == "ready"
    for pos in range(0, len(pcm16k), 640):
        await ws.send_message(pcm16k[pos:pos + 640])
    await send(ws, type="finalize")
    events = await recv_until(ws, "final_transcript")
    await ws.aclose()
    return events[-1]["text"]


async def test_espeak_speech_round_trips_through_pocketsphinx(gw, nursery):
    """eSpeak's voice through the gateway at 16 kHz, heard by PocketSphinx through the
    gateway: it would fail on silence, noise or garbled audio. Sentences and padding as in
    the engine tests (PocketSphinx's default model needs both for eSpeak's voice)."""
    pad = bytes(16000)  # 0.5 s at 16 kHz PCM16
    speech = b""
    for n, sentence in enumerate(ROUND_TRIP_SENTENCES):
        events, audio = await synthesize(gw, nursery, sentence, sample_rate_hz=16000,
                                         voice_id=ROUND_TRIP_VOICE, context_id=f"rt-{n}")
        ready, end = events[0], events[-1]
        assert ready["capabilities"]["voices"], "espeak reports its real voices"
        assert "en-us" in ready["capabilities"]["voices"]
        assert all(e["context_id"] == f"rt-{n}" for e in events)
        assert end["type"] == "audio_end" and end["id"] == 1 and not end["interrupted"]
        seconds = len(audio) / 2 / 16000
        assert 0.5 < seconds < 6
        assert end["total_duration_ms"] == pytest.approx(seconds * 1000, abs=1)
        speech += pad + audio + pad
    text = await transcribe(gw, nursery, speech)
    assert len(recognised(text)) >= SYNTHESIS_ROUND_TRIP_MIN_HITS, text


async def test_silence_and_noise_are_not_heard_as_those_words(gw, nursery):
    silence = bytes(16000 * 2 * 2)
    noise = (np.random.default_rng(1).normal(0, 3000, 32000).astype("<i2")).tobytes()
    for audio in (silence, noise):
        text = await transcribe(gw, nursery, audio)
        assert not ({"hello", "world", "test"} & set(text.lower().split())), text


@pytest.mark.parametrize("codec, rate, width", [("mulaw", 8000, 1), ("alaw", 8000, 1),
                                                 ("pcm16", 48000, 2), ("pcm16", 22050, 2)])
async def test_codec_and_rate_conversion(gw, nursery, codec, rate, width):
    events, audio = await synthesize(gw, nursery, "one two three", codec=codec,
                                     sample_rate_hz=rate)
    assert events[0]["session"]["codec"] == codec
    chunks = [e for e in events if e["type"] == "audio_chunk"]
    assert [c["sequence"] for c in chunks] == list(range(len(chunks)))
    ms = sum(c["duration_ms"] for c in chunks)
    assert len(audio) / width / rate * 1000 == pytest.approx(ms, abs=1)
    assert all(len(base64.b64decode(c["data"])) <= 32 * 1024 for c in chunks)


async def test_stop_interrupts_and_the_session_goes_on(gw, nursery):
    ws = await connect(gw.tts(), gw.keys["pro"], nursery=nursery)
    await send(ws, type="init")
    await recv(ws)
    await send(ws, type="input_text", text="This is a rather long sentence. " * 20)
    await send(ws, type="flush")
    first = await recv(ws)
    assert first["type"] == "audio_chunk"
    await send(ws, type="stop")
    events = await recv_until(ws, "audio_end")
    assert events[-1]["interrupted"] is True and events[-1]["id"] == 1
    # nothing more from the stopped utterance: the next event answers the ping
    await send(ws, type="ping")
    assert (await recv(ws))["type"] == "pong"
    await send(ws, type="input_text", text="again")
    await send(ws, type="flush")
    events = await recv_until(ws, "audio_end")
    assert events[-1]["id"] == 2 and events[-1]["interrupted"] is False
    assert any(e["type"] == "audio_chunk" for e in events)
    await ws.aclose()


async def test_clear_and_configure(gw, nursery):
    ws = await connect(gw.tts(), gw.keys["pro"], nursery=nursery)
    await send(ws, type="init", voice_id="en")
    ready = await recv(ws)
    voices = ready["capabilities"]["voices"]
    other = next(v for v in voices if v != "en")
    await send(ws, type="input_text", text="forgotten words")
    await send(ws, type="clear")
    await send(ws, type="flush")
    (end,) = await recv_until(ws, "audio_end")
    assert end["total_duration_ms"] == 0
    await send(ws, type="configure", voice_id=other)
    await send(ws, type="input_text", text="new voice")
    await send(ws, type="flush")
    events = await recv_until(ws, "audio_end")
    assert events[-1]["total_duration_ms"] > 100
    await ws.aclose()


async def test_native_slng_frames_relay_unchanged(gw, nursery):
    ws = await connect(gw.tts(query="?voice=en"), gw.keys["pro"], nursery=nursery)
    # The first frame decides the mode, so the upstream opens when it arrives.
    await ws.send_message(orjson.dumps({"voice": "en"}).decode())
    ready = orjson.loads(await ws.get_message())  # the engine's own ready frame
    assert ready["type"] == "ready" and ready["sample_rate"] > 0
    await ws.send_message("Hello world")
    await ws.send_message(orjson.dumps({"type": "control", "action": "flush"}).decode())
    audio = 0
    while True:
        message = await ws.get_message()
        if isinstance(message, bytes):
            audio += len(message)
            continue
        assert orjson.loads(message) == {"type": "flushed"}
        break
    assert audio > 10_000
    await ws.aclose()


async def test_bad_frames_do_not_end_the_session_or_touch_another(gw, nursery):
    ws = await connect(gw.tts(), gw.keys["pro"], nursery=nursery)
    other = await connect(gw.tts(), gw.keys["enterprise"], nursery=nursery)
    await send(ws, type="init")
    await recv(ws)
    await send(other, type="init")
    await recv(other)
    for frame, code in [("not json", "mixed_protocol"), ("[1]", "invalid_message"),
                        ('{"type":"nope"}', "unknown_command"),
                        ('{"type":"input_text","text":7}', "invalid_message"),
                        ('{"type":"init"}', "already_initialized")]:
        await ws.send_message(frame)
        event = await recv(ws)
        assert event["type"] == "error" and event["code"] == code, (frame, event)
    await ws.send_message(b"\x00\x01")
    assert (await recv(ws))["code"] == "invalid_message"
    await send(ws, type="input_text", text="x" * 33 * 1024)
    assert [e["type"] for e in await recv_until(ws, "session_ended")] == ["error", "session_ended"]
    assert await closed_code(ws) == 4002
    await send(other, type="ping")
    assert (await recv(other))["type"] == "pong"
    await other.aclose()


async def test_a_refused_first_command_keeps_the_session_unified(gw, nursery):
    """A first `input_text` whose text holds a lone surrogate escape is refused by the
    classifier; the session stays unified: `invalid_message`, then it speaks as usual
    (the engine's own `ready` would come first had it been relayed as native)."""
    ws = await connect(gw.tts(), gw.keys["pro"], nursery=nursery)
    await ws.send_message('{"type":"input_text","text":"caf\\udfff"}')
    event = await recv(ws)
    assert event["type"] == "error" and event["code"] == "invalid_message", event
    await send(ws, type="init")
    assert (await recv(ws))["type"] == "ready"
    await send(ws, type="input_text", text="Hello")
    await send(ws, type="flush")
    assert (await recv_until(ws, "audio_end"))[-1]["interrupted"] is False
    await ws.aclose()


async def raw_session(gw, path: str) -> tuple[trio.SocketStream, bytes]:
    """A hand-made client: the handshake, then frames of our choosing. Returns the stream
    and whatever arrived after the handshake's response."""
    host, port = gw.url.removeprefix("ws://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {gw.keys['pro']}\r\n\r\n".encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += await stream.receive_some(4096)
    assert response.startswith(b"HTTP/1.1 101")
    return stream, response.split(b"\r\n\r\n", 1)[1]


def masked_frame(opcode: int, payload: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


async def read_close_code(stream: trio.SocketStream, data: bytes = b"") -> int:
    with trio.fail_after(10):
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise AssertionError(f"no close frame in {data!r}")
            data += chunk
            pos = 0
            while pos + 2 <= len(data):  # server frames are unmasked, short here
                opcode, length = data[pos] & 0x0F, data[pos + 1] & 0x7F
                if length == 126:
                    length = int.from_bytes(data[pos + 2:pos + 4], "big")
                    header = 4
                else:
                    header = 2
                if pos + header + length > len(data):
                    break
                if opcode == 0x8:
                    return int.from_bytes(data[pos + header:pos + header + 2], "big")
                pos += header + length


async def test_invalid_utf8_is_a_protocol_violation_1008(gw, nursery):
    stream, early = await raw_session(gw, "/v1/tts/espeak-websocket-stream")
    await stream.send_all(masked_frame(0x1, b'{"type":"ping"}'))
    await stream.send_all(masked_frame(0x1, b'{"type":"input_text","text":"\xff\xfe"}'))
    assert await read_close_code(stream, early) == 1008
    await stream.aclose()
