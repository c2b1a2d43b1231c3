"""What the upstream fault cases share: the clients, and a healthy session beside each
case (imported as ``faults.upstream``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import trio
import trio_websocket

from harness import Running
from wsclient import connect, recv, send

HANG_GUARD = 60  # seconds: a hang fails the case, it never blocks the suite
TEXT = "Hello there, this is a sentence long enough to take a few chunks of audio."
# Between the healthy session's utterances: it stays well under its key's messages a minute.
UTTERANCE_PAUSE_S = 0.3

async def events_until(ws: Any, *kinds: str) -> tuple[list[dict], int | None]:
    """Events up to the first of ``kinds`` (audio chunks and partials left out), and the
    close code if the gateway closed instead (None: still open)."""
    seen: list[dict] = []
    try:
        while True:
            event = orjson.loads(await ws.get_message())
            if event["type"] not in ("audio_chunk", "transcript", "word_timestamps"):
                seen.append(event)
            if event["type"] in kinds:
                return seen, None
    except trio_websocket.ConnectionClosed as exc:
        return seen, exc.reason.code


def errors_of(events: list[dict]) -> list[dict]:
    return [e for e in events if e["type"] == "error"]


async def still_open(ws: Any) -> bool:
    """Whether the session answers a ping; it is closed after (a session left open would
    hold the gateway's teardown for its close timeout)."""
    await send(ws, type="ping")
    answer = await recv(ws)
    await ws.aclose()
    return answer["type"] == "pong"


async def speak(gw: Running, nursery: trio.Nursery, provider: str = "espeak",
                tier: str = "pro") -> tuple[Any, list[dict], int | None]:
    """One TTS session: init, one utterance; the socket, its events, the close code."""
    ws = await connect(gw.tts(provider), gw.keys[tier], nursery=nursery)
    await send(ws, type="init")
    assert (await recv(ws))["type"] == "ready"
    await send(ws, type="input_text", text=TEXT)
    await send(ws, type="flush")
    events, code = await events_until(ws, "audio_end")
    return ws, events, code


async def transcribe(gw: Running, nursery: trio.Nursery, speech: bytes,
                     provider: str = "kyutai") -> tuple[Any, list[dict], int | None]:
    """One STT session: the speech as fast as it is taken, finalize; as `speak`."""
    ws = await connect(gw.stt(provider), gw.keys["pro"], nursery=nursery)
    await send(ws, type="start", sample_rate=16000, encoding="pcm16")
    assert (await recv(ws))["type"] == "ready"

    async def feed() -> None:
        try:
            for pos in range(0, len(speech), 640):
                await ws.send_message(speech[pos:pos + 640])
            await send(ws, type="finalize")
        except trio_websocket.ConnectionClosed:
            pass  # the gateway ended the session: what the case looks at

    async with trio.open_nursery() as feeding:
        feeding.start_soon(feed)
        events, code = await events_until(ws, "final_transcript")
    return ws, events, code


async def beside_a_healthy_session(gw: Running, nursery: trio.Nursery,
                                   case: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``case`` while another session on the same gateway (built-in eSpeak) speaks
    utterance after utterance; that session must see no error and no interruption, and a
    new session after the case must work. ``case``'s result. (It has a key of its own,
    so the case's key's limits stay the case's.)"""
    done = trio.Event()
    result: list[Any] = []

    async def neighbour() -> None:
        ws = await connect(gw.tts("espeak"), gw.keys["enterprise"], nursery=nursery)
        await send(ws, type="init")
        assert (await recv(ws))["type"] == "ready"
        spoken_after = 0  # utterances begun once the case was over
        while spoken_after < 1:
            after = done.is_set()
            await send(ws, type="input_text", text=TEXT)
            await send(ws, type="flush")
            events, code = await events_until(ws, "audio_end")
            assert code is None and errors_of(events) == [], events
            assert events[-1]["interrupted"] is False and events[-1]["total_duration_ms"] > 0
            spoken_after += after
            if not done.is_set():
                await trio.sleep(UTTERANCE_PAUSE_S)
        await ws.aclose()

    async def run_case() -> None:
        result.append(await case())
        done.set()

    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as both:
            both.start_soon(neighbour)
            both.start_soon(run_case)
        ws, events, code = await speak(gw, nursery, tier="enterprise")  # a new one works
    assert code is None and errors_of(events) == [] and events[-1]["interrupted"] is False
    await ws.aclose()
    return result[0]
