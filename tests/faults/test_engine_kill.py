"""A built-in engine killed with ``kill -9`` mid-utterance, under ``slng-fast serve`` run as
a user runs it (a row of docs/decisions.md, "Faults and what the client sees")."""

from __future__ import annotations

import os
import signal

import trio

from engines.engine_audio import recognised
from harness import engine_pids, run_cli
from wsclient import connect, recv, send

HANG_GUARD = 90  # seconds; the serve process and its engines start within it too
LONG_TEXT = "The quick brown fox jumps over the lazy dog, again and again. " * 90  # ~5,500
TEXT = "one two three four five"
FRAME = 640  # 20 ms at 16 kHz


async def events_until(ws, kind: str) -> list[dict]:
    seen = []
    while True:
        event = await recv(ws)
        if event["type"] != "audio_chunk":
            seen.append(event)
        if event["type"] in (kind, "session_ended"):
            return seen


async def test_a_killed_engine_ends_only_its_utterances_and_comes_back(served, tmp_path, nursery,
                                                                        speech):
    created = run_cli("keys", "create", "--tier", "enterprise", data_dir=tmp_path)
    key = created.stdout.strip().splitlines()[-1]
    before = engine_pids(served.proc.pid)
    assert set(before) == {"espeak", "piper", "pocketsphinx"}
    killed = trio.Event()
    heard: list[str] = []

    async def recognising_beside() -> None:
        """A session on the other engine, on the same worker: it streams on, in real time,
        before, across and after the kill."""
        ws = await connect(f"{served.url}/v1/stt/pocketsphinx-websocket-stream", key,
                           nursery=nursery)
        await send(ws, type="start", sample_rate=16000, encoding="pcm16")
        assert (await recv(ws))["type"] == "ready"
        while not killed.is_set() or len(heard) < 2:
            for pos in range(0, len(speech), FRAME):
                await ws.send_message(speech[pos:pos + FRAME])
                await trio.sleep(0.02)  # real-time pace
            await send(ws, type="finalize")
            events = await events_until(ws, "final_transcript")
            assert [e for e in events if e["type"] == "error"] == [], events
            heard.append(events[-1]["text"])
        await ws.aclose()

    async def speaking_through_the_kill() -> None:
        ws = await connect(f"{served.url}/v1/tts/espeak-websocket-stream", key, nursery=nursery)
        await send(ws, type="init")
        assert (await recv(ws))["type"] == "ready"
        await send(ws, type="input_text", text=LONG_TEXT)
        await send(ws, type="flush")
        assert (await recv(ws))["type"] == "audio_chunk"  # mid-utterance now
        os.kill(before["espeak"], signal.SIGKILL)
        killed.set()
        events = await events_until(ws, "audio_end")
        [error] = [e for e in events if e["type"] == "error"]
        assert error["code"] == "provider_error" and error["retryable"] is True, error
        assert events[-1] == {**events[-1], "type": "audio_end", "interrupted": True}
        await send(ws, type="ping")  # the session itself is still open
        assert (await recv(ws))["type"] == "pong"
        await ws.aclose()

    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as both:
            both.start_soon(recognising_beside)
            both.start_soon(speaking_through_the_kill)
        # Every finalize was answered with words, and the speech was heard in one pass at
        # least (what one pass recognises wobbles on a loaded machine).
        assert all(text.strip() for text in heard), heard
        assert any(len(recognised(text)) >= 2 for text in heard), heard

        # The engine is restarted, and a new session speaks once it is up; until then a
        # session gets the documented `provider_unavailable`, close 1013.
        while True:
            ws = await connect(f"{served.url}/v1/tts/espeak-websocket-stream", key,
                               nursery=nursery)
            await send(ws, type="init")
            assert (await recv(ws))["type"] == "ready"
            await send(ws, type="input_text", text=TEXT)
            await send(ws, type="flush")
            events = await events_until(ws, "audio_end")
            await ws.aclose()
            if events[-1]["type"] == "audio_end":
                assert events[-1]["interrupted"] is False and events[-1]["total_duration_ms"] > 0
                break
            [error] = [e for e in events if e["type"] == "error"]
            assert error["code"] == "provider_unavailable", error
            await trio.sleep(0.2)
    after = engine_pids(served.proc.pid)
    assert after["espeak"] != before["espeak"] and after["pocketsphinx"] == before["pocketsphinx"]
