"""The emulators' fault injection (`slng_fast.emulators.faults`), seen from a plain client of
the ElevenLabs and Kyutai emulators, and parsed from `slng-fast emulate`'s command line."""

from __future__ import annotations

import base64
import re
import subprocess
import sys

import orjson
import pytest
import trio
import trio_websocket

from harness import start_emulator
from slng_fast import _native
from slng_fast.cli import build_parser
from slng_fast.emulators.faults import OVERSIZED_BYTES, FaultPlan

VOICE_PATH = "/v1/text-to-speech/voice-1/stream-input?output_format=pcm_16000"
CHUNK_BYTES = 16000 * 2 // 4  # the ElevenLabs emulator's 250 ms answers at 16 kHz


def parse(*argv: str) -> FaultPlan:
    return FaultPlan.from_args(build_parser().parse_args(["emulate", "elevenlabs", *argv]))


def test_the_flags_make_one_plan():
    assert parse() == FaultPlan()
    assert not parse().active
    plan = parse("--fail-after-ms", "250", "--close-code", "4000", "--stall-after-bytes", "9",
                 "--handshake-delay-ms", "40", "--garbage", "wrong-types", "--refuse")
    assert plan == FaultPlan(refuse=True, handshake_delay_ms=40, fail_after_ms=250,
                             close_code=4000, stall_after_bytes=9, garbage="wrong-types")
    assert parse("--close-code", "1011").fails_after == 0  # alone: at the first audio
    assert parse("--fail-after-ms", "500").fails_after == 0.5
    with pytest.raises(ValueError):
        parse("--close-code", "1006")  # cannot be sent
    with pytest.raises(SystemExit):
        parse("--garbage", "confetti")


async def elevenlabs(nursery, engines, **faults) -> str:
    urls, _ = engines
    return await start_emulator(nursery, "elevenlabs", urls, api_key=None,
                                faults=FaultPlan(**faults)) + VOICE_PATH


async def speak(ws: trio_websocket.WebSocketConnection) -> None:
    await ws.send_message('{"text": " "}')
    await ws.send_message('{"text": "Hello there, how are you today? ", "flush": true}')


async def test_refuse_answers_the_upgrade_with_503(nursery, engines):
    url = await elevenlabs(nursery, engines, refuse=True)
    with pytest.raises(trio_websocket.ConnectionRejected) as refused:
        async with trio_websocket.open_websocket_url(url):
            pass
    assert refused.value.status_code == 503


async def test_handshake_delay_holds_the_upgrade(nursery, engines):
    url = await elevenlabs(nursery, engines, handshake_delay_ms=60_000)
    with trio.move_on_after(1) as waited:
        async with trio_websocket.open_websocket_url(url):
            pass
    assert waited.cancelled_caught
    url = await elevenlabs(nursery, engines, handshake_delay_ms=50)
    with trio.fail_after(30):
        async with trio_websocket.open_websocket_url(url) as ws:
            await speak(ws)
            assert "audio" in orjson.loads(await ws.get_message())


@pytest.mark.parametrize("faults, code", [
    ({"close_code": 4000}, 4000),  # alone: at the first audio, with that code
    ({"close_code": 1011, "fail_after_ms": 0}, 1011),
    ({"fail_after_ms": 0}, 1006),  # no code: reset, no close frame
])
async def test_failure_ends_the_connection_at_the_first_audio(nursery, engines, faults, code):
    url = await elevenlabs(nursery, engines, **faults)
    with trio.fail_after(30):
        async with trio_websocket.open_websocket_url(url) as ws:
            await speak(ws)
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                message = await ws.get_message()
                raise AssertionError(f"got {message[:80]!r}")
    assert closed.value.reason.code == code


async def test_stall_stops_sending_and_keeps_the_socket_open(nursery, engines):
    url = await elevenlabs(nursery, engines, stall_after_bytes=CHUNK_BYTES + 1)
    audio = b""
    async with trio_websocket.open_websocket_url(url) as ws:
        await speak(ws)
        with trio.fail_after(30):  # two answers pass the threshold...
            while len(audio) <= CHUNK_BYTES:
                audio += base64.b64decode(orjson.loads(await ws.get_message())["audio"])
        with trio.move_on_after(1) as quiet:  # ...and nothing comes after them
            await ws.get_message()
        assert quiet.cancelled_caught and len(audio) == 2 * CHUNK_BYTES
        assert ws.closed is None
        await ws.send_message('{"text": "still reading. "}')


@pytest.mark.parametrize("kind", ["malformed-json", "wrong-types", "binary", "oversized"])
async def test_garbage_stands_in_for_the_first_audio(nursery, engines, kind):
    url = await elevenlabs(nursery, engines, garbage=kind)
    with trio.fail_after(30):
        async with trio_websocket.open_websocket_url(url, max_message_size=2 * OVERSIZED_BYTES) \
                as ws:
            await speak(ws)
            first = await ws.get_message()
            second = orjson.loads(await ws.get_message())  # then the emulator goes on
    assert "audio" in second
    if kind == "malformed-json":
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(first)
    elif kind == "wrong-types":
        message = orjson.loads(first)
        assert isinstance(message["audio"], int) and isinstance(message["alignment"], list)
    elif kind == "binary":
        assert isinstance(first, bytes)
    else:
        assert isinstance(first, str) and len(first) > OVERSIZED_BYTES


async def test_an_stt_emulator_counts_the_audio_it_receives(nursery, engines):
    """Kyutai: the clock starts at the first audio frame the client sends; garbage comes
    instead of the next message after it (the Ready before it is untouched)."""
    urls, _ = engines
    base = await start_emulator(nursery, "kyutai", urls, api_key=None,
                                faults=FaultPlan(garbage="wrong-types"))
    silence = _native.msgpack_encode({"type": "Audio", "pcm": [0.0] * 1920}, single_float=True)
    with trio.fail_after(30):
        async with trio_websocket.open_websocket_url(base + "/api/asr-streaming") as ws:
            assert _native.msgpack_decode(await ws.get_message()) == {"type": "Ready"}
            for _ in range(10):
                await ws.send_message(silence)
            message = _native.msgpack_decode(await ws.get_message())
    assert not isinstance(message.get("type"), int) and len(message) > 0
    assert all(not isinstance(v, (int, float)) or isinstance(v, bool) or k == "type"
               for k, v in message.items())


async def test_slng_fast_emulate_takes_the_flags():
    proc = subprocess.Popen([sys.executable, "-m", "slng_fast", "emulate", "elevenlabs",
                             "--port", "0", "--refuse"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = await trio.to_thread.run_sync(proc.stdout.readline)
        match = re.search(r"listening on (ws://\S+)", line)
        assert match, line
        with pytest.raises(trio_websocket.ConnectionRejected) as refused:
            async with trio_websocket.open_websocket_url(match.group(1) + VOICE_PATH):
                pass
        assert refused.value.status_code == 503
    finally:
        proc.kill()
        proc.wait()
