"""The Deepgram speak emulator alone, over real sockets in front of the real eSpeak engine,
and with Deepgram's official Python SDK (``deepgram-sdk``) pointed at it."""

from __future__ import annotations

import math
import struct

import numpy as np
import orjson
import pytest
import trio
import trio_websocket

from harness import EMULATOR_KEY
from slng_fast import _native
from slng_fast.emulators import deepgram as emulator

SENTENCE = "Hello from the Deepgram emulator."


async def start(nursery, engines, api_key: str | None = EMULATOR_KEY, **kw) -> int:
    urls, _ = engines
    return await nursery.start(lambda task_status: emulator.serve_emulator(
        "127.0.0.1", 0, engine_url=urls["espeak"], api_key=api_key, task_status=task_status,
        **kw))


async def connect(nursery, port: int, query: str = "", key: str | None = EMULATOR_KEY, **kw):
    headers = [(b"authorization", f"Token {key}".encode())] if key else []
    return await trio_websocket.connect_websocket_url(
        nursery, f"ws://127.0.0.1:{port}/v1/speak{query}", None, extra_headers=headers,
        max_message_size=8 * 1024 * 1024, **kw)


async def until(ws, kind: str) -> tuple[list[dict], bytes]:
    """JSON messages up to and including the first of ``kind``, and the audio before it."""
    messages, audio = [], bytearray()
    while True:
        frame = await ws.get_message()
        if isinstance(frame, bytes):
            audio += frame
            continue
        message = orjson.loads(frame)
        messages.append(message)
        if message["type"] == kind:
            return messages, bytes(audio)


async def synthesize(nursery, port: int, query: str, text: str = SENTENCE) -> tuple[dict, bytes]:
    ws = await connect(nursery, port, query)
    metadata = orjson.loads(await ws.get_message())
    await ws.send_message(orjson.dumps({"type": "Speak", "text": text}).decode())
    await ws.send_message('{"type":"Flush"}')
    messages, audio = await until(ws, "Flushed")
    assert messages == [{"type": "Flushed", "sequence_id": 0}]
    await ws.aclose()
    return metadata, audio


def rms(pcm: bytes) -> float:
    n = len(pcm) // 2
    samples = struct.unpack(f"<{n}h", pcm[: n * 2])
    return math.sqrt(sum(s * s for s in samples) / max(1, n))


def close_in_length(a: bytes, b: bytes) -> bool:
    """eSpeak's output for the same text and voice varies a little from call to call
    (a few samples); the same speech is within 1 % in length."""
    return abs(len(a) - len(b)) <= 0.01 * max(len(a), len(b))


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


async def closed_with(ws) -> tuple[int, str]:
    try:
        while True:
            await ws.get_message()
    except trio_websocket.ConnectionClosed as exc:
        return exc.reason.code, exc.reason.reason


# -- speech ---------------------------------------------------------------------------------

async def test_metadata_then_speak_flush_gives_speech_and_flushed(nursery, engines):
    port = await start(nursery, engines)
    metadata, audio = await synthesize(nursery, port, "?model=aura-asteria-en&encoding=linear16"
                                                      "&sample_rate=24000")
    assert metadata["type"] == "Metadata" and metadata["model_name"] == "aura-asteria-en"
    assert metadata["request_id"] and metadata["model_uuid"] and "model_version" in metadata
    seconds = len(audio) / 2 / 24000
    assert len(audio) % 2 == 0 and 1.0 < seconds < 6.0
    assert rms(audio) > 300  # speech, not silence


async def test_defaults_are_aura_asteria_linear16_24k(nursery, engines):
    port = await start(nursery, engines)
    metadata, audio = await synthesize(nursery, port, "")
    _, explicit = await synthesize(nursery, port, "?model=aura-asteria-en&encoding=linear16"
                                                  "&sample_rate=24000")
    assert metadata["model_name"] == "aura-asteria-en"
    # eSpeak's output varies a little from call to call; its length does not.
    assert close_in_length(audio, explicit) and rms(audio) > 300


async def test_rates_and_encodings(nursery, engines):
    port = await start(nursery, engines)
    _, pcm8 = await synthesize(nursery, port, "?encoding=linear16&sample_rate=8000")
    _, pcm48 = await synthesize(nursery, port, "?encoding=linear16&sample_rate=48000")
    _, mulaw = await synthesize(nursery, port, "?encoding=mulaw&sample_rate=8000")
    _, alaw = await synthesize(nursery, port, "?encoding=alaw")  # 8000 by default
    assert abs(len(pcm48) / 2 - 6 * len(pcm8) / 2) <= 12  # same speech, six times the samples
    assert len(mulaw) == len(alaw) == len(pcm8) // 2  # one byte a sample
    assert rms(_native.mulaw_to_pcm16(mulaw)) > 300 and rms(_native.alaw_to_pcm16(alaw)) > 300


async def test_models_map_to_voices_deterministically(nursery, engines):
    assert emulator.espeak_voice("aura-asteria-en") == emulator.espeak_voice("aura-asteria-en")
    assert emulator.espeak_voice("aura-asteria-en").startswith("en-us+f")
    assert emulator.espeak_voice("aura-orion-en").startswith("en-us+m")
    assert emulator.espeak_voice("aura-2-thalia-en").startswith("en-us+f")
    assert emulator.espeak_voice("aura-2-nestor-es").startswith("es+m")
    assert emulator.espeak_voice("aura-2-x-zz", {"en-us", "es"}).startswith("en-us+")
    port = await start(nursery, engines)
    _, female = await synthesize(nursery, port, "?model=aura-asteria-en")
    _, male = await synthesize(nursery, port, "?model=aura-orion-en")
    _, again = await synthesize(nursery, port, "?model=aura-orion-en")
    assert close_in_length(male, again)
    assert pitch(female, 24000) > 1.2 * pitch(male, 24000)  # a female and a male voice


async def test_flushes_are_numbered_and_text_accumulates(nursery, engines):
    port = await start(nursery, engines)
    ws = await connect(nursery, port)
    await ws.get_message()
    await ws.send_message('{"type":"Speak","text":"One, "}')
    await ws.send_message('{"type":"Speak","text":"two."}')
    await ws.send_message('{"type":"Flush"}')
    await ws.send_message('{"type":"Speak","text":"Three."}')
    await ws.send_message('{"type":"Flush"}')
    first, audio1 = await until(ws, "Flushed")
    second, audio2 = await until(ws, "Flushed")
    assert first[-1]["sequence_id"] == 0 and second[-1]["sequence_id"] == 1
    assert audio1 and audio2
    await ws.aclose()


# -- clear, close, errors ------------------------------------------------------------------------

async def test_clear_drops_audio_in_flight_and_answers_cleared(nursery, engines):
    port = await start(nursery, engines)
    ws = await connect(nursery, port, "?sample_rate=48000")
    await ws.get_message()
    # Minutes of speech: far more than the socket buffers hold, so most of it is still
    # to be sent when Clear arrives.
    long_text = "This sentence is spoken again and again until it is cleared. " * 32
    for _ in range(3):
        await ws.send_message(orjson.dumps({"type": "Speak", "text": long_text[:2000]}).decode())
    await ws.send_message('{"type":"Flush"}')
    assert isinstance(await ws.get_message(), bytes)  # speech started
    await ws.send_message('{"type":"Speak","text":"never flushed"}')
    await ws.send_message('{"type":"Clear"}')
    messages, dropped_tail = await until(ws, "Cleared")
    assert [m["type"] for m in messages] == ["Cleared"]  # no Flushed for the cleared flush
    # The session goes on; the unflushed text was dropped too.
    await ws.send_message('{"type":"Speak","text":"After the clear."}')
    await ws.send_message('{"type":"Flush"}')
    messages, audio = await until(ws, "Flushed")
    assert messages == [{"type": "Flushed", "sequence_id": 1}] and audio
    _, reference = await synthesize(nursery, port, "?sample_rate=48000", "After the clear.")
    assert close_in_length(audio, reference)  # that text only, from its start
    await ws.aclose()


async def test_close_speaks_what_is_buffered_then_closes_normally(nursery, engines):
    port = await start(nursery, engines)
    ws = await connect(nursery, port)
    await ws.get_message()
    await ws.send_message('{"type":"Speak","text":"Goodbye."}')
    await ws.send_message('{"type":"Close"}')
    audio = bytearray()
    try:
        while True:
            frame = await ws.get_message()
            assert isinstance(frame, bytes)
            audio += frame
    except trio_websocket.ConnectionClosed as exc:
        assert exc.reason.code == 1000
    assert len(audio) > 0


@pytest.mark.parametrize("frame, code, reason", [
    (b"\x00\x01", 1003, "MESSAGE-0000"),
    ("this is not json", 1008, "DATA-0000"),
    ('{"type":"Dance"}', 1008, "DATA-0001"),
    ('{"type":"Speak","text":5}', 1008, "DATA-0001"),
    (orjson.dumps({"type": "Speak", "text": "x" * 2001}).decode(), 1009, "BIG-0000"),
])
async def test_bad_messages_close_as_deepgram_does(nursery, engines, frame, code, reason):
    port = await start(nursery, engines)
    ws = await connect(nursery, port)
    await ws.get_message()
    await ws.send_message(frame)
    assert await closed_with(ws) == (code, reason)


async def test_more_than_20_flushes_a_minute_get_a_warning(nursery, engines):
    port = await start(nursery, engines)
    ws = await connect(nursery, port)
    await ws.get_message()
    for _ in range(21):
        await ws.send_message('{"type":"Flush"}')
    seen = [orjson.loads(await ws.get_message()) for _ in range(21)]
    assert [m["type"] for m in seen].count("Flushed") == 20
    (warning,) = [m for m in seen if m["type"] == "Warning"]
    assert warning["code"] and "Flush" in warning["description"]
    await ws.aclose()


async def test_idle_connections_are_closed(nursery, autojump_clock):
    # No engine needed: nothing is spoken (the emulator reaches it lazily).
    port = await nursery.start(lambda task_status: emulator.serve_emulator(
        "127.0.0.1", 0, engine_url="ws://127.0.0.1:9/", api_key=None, task_status=task_status))
    ws = await connect(nursery, port, key=None)
    assert orjson.loads(await ws.get_message())["type"] == "Metadata"
    start_time = trio.current_time()
    assert await closed_with(ws) == (1011, "NET-0001")
    assert trio.current_time() - start_time >= emulator.IDLE_TIMEOUT_S


async def test_drop_connections_closes_like_an_idle_timeout(nursery, engines):
    port = await start(nursery, engines)
    ws = await connect(nursery, port)
    await ws.get_message()
    assert await emulator.drop_connections(port) == 1
    assert await closed_with(ws) == (1011, "NET-0001")


# -- the handshake --------------------------------------------------------------------------------

@pytest.mark.parametrize("key", [None, "wrong-key"])
async def test_a_missing_or_wrong_key_is_refused_with_401(nursery, engines, key):
    port = await start(nursery, engines)
    headers = [(b"authorization", f"Token {key}".encode())] if key else []
    with pytest.raises(trio_websocket.ConnectionRejected) as info:
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/v1/speak",
                                                     extra_headers=headers):
            pass
    assert info.value.status_code == 401
    assert orjson.loads(info.value.body)["err_code"] == "INVALID_AUTH"
    assert any(k.lower() == b"dg-error" for k, _ in info.value.headers)


async def test_the_key_may_come_as_a_subprotocol(nursery, engines):
    port = await start(nursery, engines)
    ws = await connect(nursery, port, key=None, subprotocols=["token", EMULATOR_KEY])
    assert ws.subprotocol == "token"
    assert orjson.loads(await ws.get_message())["type"] == "Metadata"
    await ws.aclose()


async def test_no_key_needed_when_the_emulator_has_none(nursery, engines):
    port = await start(nursery, engines, api_key=None)
    ws = await connect(nursery, port, key=None)
    assert orjson.loads(await ws.get_message())["type"] == "Metadata"
    await ws.aclose()


@pytest.mark.parametrize("path, status", [
    ("/v1/speak?encoding=opus", 400),
    ("/v1/speak?sample_rate=44100", 400),
    ("/v1/speak?encoding=mulaw&sample_rate=24000", 400),
    ("/v1/speak?model=nova-2", 400),
    ("/v1/listen", 404),
])
async def test_bad_parameters_are_refused_at_the_handshake(nursery, engines, path, status):
    port = await start(nursery, engines)
    with pytest.raises(trio_websocket.ConnectionRejected) as info:
        async with trio_websocket.open_websocket_url(
                f"ws://127.0.0.1:{port}{path}",
                extra_headers=[(b"authorization", f"Token {EMULATOR_KEY}".encode())]):
            pass
    assert info.value.status_code == status


# -- Deepgram's official SDK -----------------------------------------------------------------------

def sdk_client(port: int, key: str):
    deepgram = pytest.importorskip("deepgram")
    from deepgram.environment import DeepgramClientEnvironment

    environment = DeepgramClientEnvironment(
        base=f"http://127.0.0.1:{port}", production=f"ws://127.0.0.1:{port}",
        agent=f"ws://127.0.0.1:{port}", agent_rest=f"http://127.0.0.1:{port}")
    return deepgram.DeepgramClient(api_key=key, environment=environment, reconnect=False)


def sdk_speak(port: int, text: str) -> tuple[list, bytes]:
    from deepgram.speak.v1 import SpeakV1Text

    client = sdk_client(port, EMULATOR_KEY)
    messages, audio = [], bytearray()
    with client.speak.v1.connect(model="aura-asteria-en", encoding="linear16",
                                 sample_rate="16000") as connection:
        connection.send_text(SpeakV1Text(type="Speak", text=text))
        connection.send_flush()
        for message in connection:
            if isinstance(message, bytes):
                audio += message
                continue
            messages.append(message)
            if getattr(message, "type", None) == "Flushed":
                break
        connection.send_clear()
        for message in connection:
            if not isinstance(message, bytes):
                messages.append(message)
                if getattr(message, "type", None) == "Cleared":
                    break
        connection.send_close()
    return messages, bytes(audio)


async def test_the_official_sdk_speaks_through_the_emulator(nursery, engines):
    pytest.importorskip("deepgram")
    port = await start(nursery, engines)
    messages, audio = await trio.to_thread.run_sync(sdk_speak, port, SENTENCE)
    assert [m.type for m in messages] == ["Metadata", "Flushed", "Cleared"]
    assert messages[0].model_name == "aura-asteria-en"
    assert messages[1].sequence_id == 0
    _, reference = await synthesize(nursery, port, "?sample_rate=16000")
    assert close_in_length(audio, reference) and rms(audio) > 300


async def test_the_official_sdk_sees_a_wrong_key_as_401(nursery, engines):
    pytest.importorskip("deepgram")
    from deepgram.core.api_error import ApiError

    port = await start(nursery, engines)

    def attempt() -> int:
        client = sdk_client(port, "not-the-key")
        try:
            with client.speak.v1.connect(model="aura-asteria-en"):
                return 101
        except ApiError as err:  # the SDK's own error, when it recognises the refusal
            return int(err.status_code or 0)
        except Exception as err:  # websockets' InvalidStatus, which this SDK lets through
            response = getattr(err, "response", None)
            return int(getattr(response, "status_code", 0))

    assert await trio.to_thread.run_sync(attempt) == 401
