"""The SLNG model-server emulator alone, over a socket, in front of the real espeak engine:
the public servers' dialect (PROTOCOL.md section 8) for every model path."""

from __future__ import annotations

import orjson
import pytest
import trio
import trio_websocket

from harness import EMULATOR_KEY, start_emulator
from slng_fast.emulators import slng

FLUSH = orjson.dumps({"type": "control", "action": "flush"}).decode()
STOP = orjson.dumps({"type": "control", "action": "stop"}).decode()
RATES = {"orpheus": 24000, "orpheus-indic": 24000, "kokoro": 24000, "cosyvoice": 22050,
         "chatterbox": 24000, "xtts": 24000}
LONG_TEXT = "This is a rather long sentence. " * 20


@pytest.fixture
async def emulator(nursery, engines):
    urls, _ = engines
    return await start_emulator(nursery, "slng", urls, api_key=EMULATOR_KEY)


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


async def open_model(nursery, base: str, path: str, key: str | None = EMULATOR_KEY):
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    return await trio_websocket.connect_websocket_url(nursery, f"{base}/{path}", None,
                                                      extra_headers=headers)


async def ready(ws) -> dict:
    event = orjson.loads(await ws.get_message())
    assert event["type"] == "ready"
    return event


async def until_flushed(ws) -> tuple[list[bytes], dict]:
    """Binary frames up to the next JSON frame (which is returned)."""
    frames: list[bytes] = []
    while True:
        message = await ws.get_message()
        if isinstance(message, bytes):
            frames.append(message)
            continue
        return frames, orjson.loads(message)


async def close_code(ws) -> tuple[int, list]:
    received = []
    try:
        while True:
            received.append(await ws.get_message())
    except trio_websocket.ConnectionClosed as exc:
        return exc.reason.code, received


async def speak(nursery, base: str, path: str, text: str, settings: dict | None = None,
                *, stop: bool = False) -> list[bytes]:
    ws = await open_model(nursery, base, path)
    await ready(ws)
    if settings is not None:
        await ws.send_message(orjson.dumps(settings).decode())
    await ws.send_message(text)
    await ws.send_message(FLUSH)
    if stop:
        await ws.send_message(STOP)
    frames, event = await until_flushed(ws)
    assert event == {"type": "flushed"}
    await ws.aclose()
    return frames


@pytest.mark.parametrize("model", sorted(RATES))
async def test_ready_announces_the_models_rate_and_flush_speaks(nursery, emulator, model):
    ws = await open_model(nursery, emulator, model)
    assert await ready(ws) == {"type": "ready", "sample_rate": RATES[model]}
    await ws.send_message(orjson.dumps({"voice": slng.MODELS[model].default_voice}).decode())
    await ws.send_message("Hello ")
    await ws.send_message("world")
    await ws.send_message(FLUSH)
    frames, event = await until_flushed(ws)
    assert event == {"type": "flushed"}
    audio = b"".join(frames)
    assert len(audio) % 2 == 0 and all(frames)
    assert 0.3 < len(audio) / 2 / RATES[model] < 5
    # an empty flush is answered too, in order, with no audio
    await ws.send_message(FLUSH)
    assert await until_flushed(ws) == ([], {"type": "flushed"})
    await ws.aclose()
    (record,) = slng.RECORDS[port_of(emulator)]
    assert record.model == model and record.flushed_texts == ["Hello world", ""]


async def test_two_flushes_are_answered_in_order(nursery, emulator):
    ws = await open_model(nursery, emulator, "orpheus")
    await ready(ws)
    await ws.send_message("one")
    await ws.send_message(FLUSH)
    await ws.send_message("two three four")
    await ws.send_message(FLUSH)
    first, event1 = await until_flushed(ws)
    second, event2 = await until_flushed(ws)
    assert event1 == event2 == {"type": "flushed"}
    assert len(b"".join(second)) > len(b"".join(first)) > 0
    await ws.aclose()


async def test_plain_text_first_uses_the_query_and_the_defaults(nursery, emulator):
    """The documents' native example: text straight away, no settings message."""
    ws = await open_model(nursery, emulator, "chatterbox?voice=zara")
    await ready(ws)
    await ws.send_message("Hello world")
    await ws.send_message(FLUSH)
    frames, event = await until_flushed(ws)
    assert event == {"type": "flushed"} and frames
    await ws.aclose()
    (record,) = slng.RECORDS[port_of(emulator)]
    assert record.query == {"voice": "zara"} and record.settings == []


async def test_kokoro_sends_the_whole_utterance_at_once(nursery, emulator):
    """Kokoro makes all the audio before sending any: it arrives cut evenly from the
    complete utterance (200 ms frames, the last one shorter), where the streaming
    models pass on each piece as eSpeak makes it."""
    step = 24000 * 2 * slng.CHUNK_MS // 1000
    frames = await speak(nursery, emulator, "kokoro", LONG_TEXT)
    assert len(frames) > 3
    assert all(len(f) == step for f in frames[:-1]) and 0 < len(frames[-1]) <= step
    streamed = await speak(nursery, emulator, "orpheus", LONG_TEXT)
    assert len({len(f) for f in streamed[:-1]}) > 1


async def test_distinct_voices_sound_different(nursery, emulator):
    voices = slng.MODELS["orpheus"].voices
    assert len(set(voices.values())) == len(voices)
    tara = b"".join(await speak(nursery, emulator, "orpheus", "Hello world", {"voice": "tara"}))
    luna = b"".join(await speak(nursery, emulator, "orpheus", "Hello world", {"voice": "luna"}))
    assert tara and luna and tara != luna


async def test_stop_is_not_honoured(nursery, emulator):
    """As on the public servers, stop changes nothing: the whole utterance comes, then
    flushed (the gateway stops these servers by closing the socket)."""
    plain = b"".join(await speak(nursery, emulator, "orpheus", LONG_TEXT))
    stopped = b"".join(await speak(nursery, emulator, "orpheus", LONG_TEXT, stop=True))
    assert len(stopped) == pytest.approx(len(plain), rel=0.02)
    record = slng.RECORDS[port_of(emulator)][-1]
    assert record.controls == ["flush", "stop"]


async def test_end_speaks_what_remains_then_closes_1000(nursery, emulator):
    ws = await open_model(nursery, emulator, "xtts")
    await ready(ws)
    await ws.send_message(orjson.dumps({"voice": "Claribel Dervla"}).decode())
    await ws.send_message("Goodbye for now")
    await ws.send_message("__END__")
    code, received = await close_code(ws)
    assert code == 1000
    assert received and all(isinstance(m, bytes) for m in received)  # audio, no flushed
    assert len(b"".join(received)) / 2 / 24000 > 0.3
    assert slng.RECORDS[port_of(emulator)][-1].ended


@pytest.mark.parametrize("model, settings", [
    ("orpheus", {"voice": "nova"}),
    ("chatterbox", {"voice": "tara"}),
    ("xtts", {"voice": "claribel dervla"}),
    ("orpheus-indic", {"voice": "kanak", "language": "fr"}),
    ("orpheus-indic", {"language": "en"}),
    ("kokoro", {"voice": "af", "top_p": 2}),
    ("cosyvoice", {"voice": "emma", "max_tokens": "many"}),
])
async def test_invalid_settings_error_then_close(nursery, emulator, model, settings):
    ws = await open_model(nursery, emulator, model)
    await ready(ws)
    await ws.send_message(orjson.dumps(settings).decode())
    code, received = await close_code(ws)
    assert code == 1008
    (error,) = [orjson.loads(m) for m in received]
    assert error["type"] == "error" and error["message"]


async def test_unknown_voice_in_the_query_is_refused(nursery, emulator):
    ws = await open_model(nursery, emulator, "orpheus?voice=nobody")
    await ready(ws)
    code, received = await close_code(ws)
    assert code == 1008 and orjson.loads(received[0])["type"] == "error"


@pytest.mark.parametrize("language", slng.INDIC_LANGUAGES)
async def test_indic_languages_speak_with_their_espeak_voice(nursery, emulator, language):
    frames = await speak(nursery, emulator, "orpheus-indic", "namaste",
                         {"voice": "kanak", "language": language})
    assert frames
    assert slng.MODELS["orpheus-indic"].espeak_voice("kanak", language) == language


async def test_extras_are_received_and_accepted(nursery, emulator):
    settings = {"voice": "tara", "buffer_size": 10, "max_tokens": 6144,
                "repetition_penalty": 1.3, "temperature": 0.6, "top_p": 0.9}
    assert await speak(nursery, emulator, "orpheus", "Hello", settings)
    assert slng.RECORDS[port_of(emulator)][-1].settings == [settings]


async def rejected(url: str, key: str | None) -> int:
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    with pytest.raises(trio_websocket.ConnectionRejected) as info:
        async with trio_websocket.open_websocket_url(url, extra_headers=headers):
            pass
    return info.value.status_code


async def test_auth_and_paths(nursery, emulator):
    assert await rejected(f"{emulator}/orpheus", None) == 401
    assert await rejected(f"{emulator}/orpheus", "wrong") == 401
    assert await rejected(f"{emulator}/v1/tts/nothing", EMULATOR_KEY) == 404
    ws = await open_model(nursery, emulator, "orpheus/")  # trailing slash accepted
    await ready(ws)
    await ws.aclose()


async def test_without_api_key_no_auth_is_needed(nursery, engines):
    urls, _ = engines
    base = await start_emulator(nursery, "slng", urls, api_key=None)
    ws = await open_model(nursery, base, "cosyvoice", key=None)
    assert (await ready(ws))["sample_rate"] == 22050
    await ws.aclose()


def test_the_emulator_never_loads_espeak():
    """eSpeak NG is GPL: the emulator reaches the engine over WebSocket only."""
    import subprocess
    import sys

    code = ("import sys, slng_fast.emulators.slng\n"
            "bad = [m for m in sys.modules if 'espeak' in m]\n"
            "print(bad)\nsys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("ending", ["end_of_input", "client_leaves"])
async def test_a_session_ends_without_corrupting_trio_nursery_stack(nursery, engines, ending):
    """The engine socket (a nursery of its own) is opened and closed by the same task:
    before, it was entered in the speaking task and exited by the session's, which trio
    reports as "Nursery stack corrupted" once the session ends."""
    urls, _ = engines
    outcome: list[BaseException | None] = []

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        record = slng.SessionRecord("orpheus", {})
        try:
            await slng._Session(ws, slng.MODELS["orpheus"], urls["espeak"], record).run()
        except* trio_websocket.ConnectionClosed:
            outcome.append(None)  # the client went away: how clients stop
        except* BaseException as exc:
            outcome.append(exc)
            raise
        else:
            outcome.append(None)

    server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
    ws = await trio_websocket.connect_websocket_url(
        nursery, f"ws://127.0.0.1:{server.port}/", None)
    await ready(ws)
    await ws.send_message("Hello there.")
    await ws.send_message(FLUSH)
    assert isinstance(await ws.get_message(), bytes)  # the engine socket is open now
    if ending == "end_of_input":
        await ws.send_message("And goodbye.")
        await ws.send_message(slng.END_OF_INPUT)
        code, _ = await close_code(ws)
        assert code == 1000
    else:
        await ws.aclose()
    with trio.fail_after(10):
        while not outcome:
            await trio.sleep(0.01)
    assert outcome == [None], outcome
