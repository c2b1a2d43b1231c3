"""The pocketsphinx engine over a real socket: the unified STT protocol, end to end."""

from __future__ import annotations

from functools import partial
from typing import Any

import orjson
import pytest
import trio
from engine_audio import (
    ROUND_TRIP_MIN_HITS,
    frames,
    recognised,
    round_trip_speech,
    silence_16k,
)
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from slng_fast.engines.espeak import EspeakSynth
from slng_fast.engines.sphinx import RecognizerPool
from slng_fast.engines.sphinx_server import serve_sphinx_engine

HANG_GUARD = 30  # seconds; only stops a broken test from hanging, never a threshold
START = {"type": "start", "sample_rate": 16000, "encoding": "pcm16", "language": "en"}
FINALIZE = {"type": "finalize"}


@pytest.fixture
async def url(nursery: trio.Nursery, recognizer_pool: RecognizerPool) -> str:
    port = await nursery.start(partial(serve_sphinx_engine, pool=recognizer_pool), "127.0.0.1", 0)
    return f"ws://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def speech(synth: EspeakSynth) -> bytes:
    return round_trip_speech(synth)


async def send_json(ws: WebSocketConnection, obj: dict[str, Any]) -> None:
    await ws.send_message(orjson.dumps(obj).decode())


async def recv_json(ws: WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(HANG_GUARD):
        message = await ws.get_message()
    assert isinstance(message, str)
    return orjson.loads(message)


async def until_final(ws: WebSocketConnection) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Transcript events up to the next final_transcript."""
    transcripts = []
    while True:
        event = await recv_json(ws)
        if event["type"] == "final_transcript":
            return transcripts, event
        assert event["type"] == "transcript", event
        transcripts.append(event)


async def stream_and_finalize(
    ws: WebSocketConnection, pcm: bytes
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Send audio in 20 ms frames and finalize, reading events all the while."""
    result: dict[str, Any] = {}

    async def reader() -> None:
        result["events"] = await until_final(ws)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        for frame in frames(pcm, 640):
            await ws.send_message(frame)
        await send_json(ws, FINALIZE)
    return result["events"]


async def test_start_ready_stream_finalize(url: str, speech: bytes) -> None:
    async with open_websocket_url(url) as ws:
        await send_json(ws, {**START, "context_id": "ctx-1"})
        ready = await recv_json(ws)
        assert ready["type"] == "ready"
        assert ready["model_id"] == "pocketsphinx-en-us"
        assert (ready["sample_rate"], ready["encoding"], ready["context_id"]) == (16000, "pcm16", "ctx-1")
        assert ready["capabilities"]["partial_transcripts"] is True

        transcripts, final = await stream_and_finalize(ws, speech)
        partials = [t for t in transcripts if not t["is_final"]]
        finals = [t for t in transcripts if t["is_final"]]
        assert partials and finals
        for t in transcripts:
            assert set(t) >= {"text", "is_final", "confidence", "timestamp", "context_id"}
            assert t["context_id"] == "ctx-1" and 0.0 <= t["confidence"] <= 1.0
        assert len(recognised(final["text"])) >= ROUND_TRIP_MIN_HITS, final
        assert final["text"] == " ".join(t["text"] for t in finals if t["text"])
        assert final["audio_duration_seconds"] == pytest.approx(len(speech) / 32000, abs=0.002)
        assert final["timestamp"] > 0 and final["context_id"] == "ctx-1"

        # finalize again: nothing new since the last one, the session stays open.
        await send_json(ws, FINALIZE)
        transcripts, again = await until_final(ws)
        assert transcripts == [] and again["text"] == "" and again["audio_duration_seconds"] == 0

        # ... and keeps recognising.
        transcripts, third = await stream_and_finalize(ws, speech)
        assert len(recognised(third["text"])) >= ROUND_TRIP_MIN_HITS, third
        assert third["audio_duration_seconds"] == pytest.approx(len(speech) / 32000, abs=0.002)


async def test_finalize_mid_sentence_returns_the_words(url: str, speech: bytes) -> None:
    cut = len(speech) - 16000  # half a second of trailing silence is cut
    async with open_websocket_url(url) as ws:
        await send_json(ws, START)
        await recv_json(ws)
        transcripts, final = await stream_and_finalize(ws, speech[:cut])
        assert transcripts[-1]["is_final"]
        assert len(recognised(final["text"])) >= ROUND_TRIP_MIN_HITS, final


async def test_silence_gives_an_empty_final(url: str) -> None:
    async with open_websocket_url(url) as ws:
        await send_json(ws, START)
        await recv_json(ws)
        transcripts, final = await stream_and_finalize(ws, silence_16k(2.0))
        assert transcripts == [] and final["text"] == ""
        assert final["audio_duration_seconds"] == pytest.approx(2.0)


@pytest.mark.parametrize(
    "start",
    [
        {**START, "sample_rate": 8000},
        {**START, "sample_rate": 24000},
        {**START, "encoding": "mulaw"},
        {**START, "language": "de"},
        {"type": "start", "sample_rate_hz": 48000, "codec": "pcm16"},
    ],
)
async def test_bad_start_is_refused_then_a_good_one_works(url: str, start: dict[str, Any]) -> None:
    async with open_websocket_url(url) as ws:
        await send_json(ws, start)
        error = await recv_json(ws)
        assert error["type"] == "error" and error["code"] == "invalid_parameter"
        assert error["message"] and error["retryable"] is False
        await send_json(ws, {"type": "start", "sample_rate_hz": 16000, "codec": "pcm16"})
        ready = await recv_json(ws)
        assert ready["type"] == "ready"


async def test_protocol_errors_are_not_fatal(url: str) -> None:
    async with open_websocket_url(url) as ws:
        await send_json(ws, {"type": "ping"})
        pong = await recv_json(ws)
        assert pong["type"] == "pong" and pong["timestamp"] > 0
        await send_json(ws, FINALIZE)
        assert (await recv_json(ws))["code"] == "invalid_message"
        await ws.send_message("plain text")
        assert (await recv_json(ws))["code"] == "invalid_message"
        await send_json(ws, {"type": "input_text", "text": "x"})
        assert (await recv_json(ws))["code"] == "unknown_command"
        await send_json(ws, START)
        ready = await recv_json(ws)
        await send_json(ws, START)
        error = await recv_json(ws)
        assert error["code"] == "already_initialized"
        assert error["context_id"] == ready["context_id"]
        await send_json(ws, {"type": "ping"})
        assert (await recv_json(ws))["type"] == "pong"


async def test_audio_before_start_implies_start(url: str, speech: bytes) -> None:
    async with open_websocket_url(url) as ws:
        await ws.send_message(speech[:640])
        ready = await recv_json(ws)
        assert ready["type"] == "ready" and ready["sample_rate"] == 16000
        transcripts, final = await stream_and_finalize(ws, speech[640:])
        assert len(recognised(final["text"])) >= ROUND_TRIP_MIN_HITS, final


async def test_stop_finalizes_and_ends_the_session(url: str, speech: bytes) -> None:
    async with open_websocket_url(url) as ws:
        await send_json(ws, START)
        await recv_json(ws)
        for frame in frames(speech, 640):
            await ws.send_message(frame)
        await send_json(ws, {"type": "stop"})
        _, final = await until_final(ws)
        assert len(recognised(final["text"])) >= ROUND_TRIP_MIN_HITS, final
        ended = await recv_json(ws)
        assert ended["type"] == "session_ended" and ended["reason"] == "client_closed"
        assert ended["usage"]["audio_ms"] == round(len(speech) / 32)
        with pytest.raises(ConnectionClosed) as closed:
            with trio.fail_after(HANG_GUARD):
                await ws.get_message()
        assert closed.value.reason.code == 1000


async def test_concurrent_sessions(url: str, speech: bytes) -> None:
    finals: list[dict[str, Any]] = []

    async def client() -> None:
        async with open_websocket_url(url) as ws:
            await send_json(ws, START)
            await recv_json(ws)
            finals.append((await stream_and_finalize(ws, speech))[1])

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(client)
    assert len(finals) == 3
    for final in finals:
        assert len(recognised(final["text"])) >= ROUND_TRIP_MIN_HITS, final
