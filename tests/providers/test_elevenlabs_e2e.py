"""ElevenLabs end to end: a client on the unified (or native) protocol, the gateway, the
ElevenLabs emulator, the espeak engine; all real sockets on 127.0.0.1."""

from __future__ import annotations

import base64
import math

import orjson
import pytest
import trio

from wsclient import closed_code, connect, recv, recv_until, send


async def open_session(provider_gateway, nursery, gateway_settings=None, **init):
    gw = await provider_gateway("elevenlabs", **(gateway_settings or {}))
    ws = await connect(gw.tts("elevenlabs"), gw.keys["pro"], nursery=nursery)
    await send(ws, type="init", **init)
    ready = await recv(ws)
    assert ready["type"] == "ready", ready
    return ws, ready


async def utterance(ws, text: str) -> list[dict]:
    await send(ws, type="input_text", text=text)
    await send(ws, type="flush")
    return await recv_until(ws, "audio_end")


def pcm_of(events: list[dict]) -> bytes:
    return b"".join(base64.b64decode(e["data"]) for e in events if e["type"] == "audio_chunk")


async def test_unified_tts_gets_audio_chunks_then_audio_end(provider_gateway, nursery):
    ws, ready = await open_session(provider_gateway, nursery, sample_rate_hz=16000,
                                   voice_settings={"stability": 0.5},
                                   model_id="eleven_flash_v2_5")
    caps = ready["capabilities"]
    assert caps["supports_stop"] and not caps["configure_reconnects"] and caps["word_timestamps"]
    events = await utterance(ws, "Hello from ElevenLabs through the gateway.")
    assert [e["type"] for e in events if e["type"] != "audio_chunk"] == ["audio_end"]
    pcm = pcm_of(events)
    end = events[-1]
    assert end["id"] == 1 and end["interrupted"] is False
    assert len(pcm) > 16000  # over half a second at 16 kHz
    assert end["total_duration_ms"] == pytest.approx(len(pcm) / 32, abs=0.001)  # 16 kHz PCM16
    second = await utterance(ws, "And again.")
    assert second[-1]["id"] == 2 and pcm_of(second)
    await ws.aclose()


async def test_stop_interrupts_then_the_session_goes_on(provider_gateway, nursery):
    ws, _ = await open_session(provider_gateway, nursery)
    await send(ws, type="input_text", text="This is a rather long sentence that the user "
                                            "will interrupt before it has finished playing. " * 3)
    await send(ws, type="flush")
    first = await recv(ws)
    assert first["type"] == "audio_chunk"
    await send(ws, type="stop")
    events = await recv_until(ws, "audio_end")
    assert events[-1]["interrupted"] is True and events[-1]["id"] == 1
    after = await utterance(ws, "Next.")
    # nothing of the stopped utterance arrives after its audio_end
    assert [e["type"] for e in after if e["type"] != "audio_chunk"] == ["audio_end"]
    assert after[-1] == {**after[-1], "id": 2, "interrupted": False}
    assert pcm_of(after)
    await ws.aclose()


async def test_configure_applies_on_the_same_connection(provider_gateway, nursery):
    ws, _ = await open_session(provider_gateway, nursery, voice_settings={"speed": 1.0})
    normal = pcm_of(await utterance(ws, "The same words twice."))
    await send(ws, type="configure", voice_settings={"speed": 1.2})
    faster = await utterance(ws, "The same words twice.")
    assert [e["type"] for e in faster if e["type"] != "audio_chunk"] == ["audio_end"]
    assert 0 < len(pcm_of(faster)) < len(normal)  # espeak speaks faster: less audio
    await ws.aclose()


async def test_word_timestamps_when_asked(provider_gateway, nursery):
    ws, _ = await open_session(provider_gateway, nursery, word_timestamps=True)
    events = await utterance(ws, "Hello big world")
    stamps = [e for e in events if e["type"] == "word_timestamps"]
    words = [w for e in stamps for w in e["words"]]
    starts = [t for e in stamps for t in e["start_ms"]]
    ends = [t for e in stamps for t in e["end_ms"]]
    assert words == ["Hello", "big", "world"]
    assert starts == sorted(starts) and all(s < e for s, e in zip(starts, ends))
    assert ends[-1] <= events[-1]["total_duration_ms"] + 1
    await ws.aclose()


async def test_native_mode_relays_the_providers_own_answers(provider_gateway, nursery):
    gw = await provider_gateway("elevenlabs")
    ws = await connect(gw.tts("elevenlabs", "?voice_id=21m00Tcm4TlvDq8ikWAM"), gw.keys["pro"],
                       nursery=nursery)
    await ws.send_message(orjson.dumps({"text": " ", "voice_settings": {"stability": 0.5}}).decode())
    await ws.send_message(orjson.dumps({"text": "Hello world. ", "flush": True}).decode())
    await ws.send_message(orjson.dumps({"text": ""}).decode())
    answers = []
    while not (answers and answers[-1].get("isFinal")):
        answers.append(orjson.loads(await ws.get_message()))
    assert answers[-1] == {"isFinal": True}
    spoken = [a for a in answers if a.get("audio")]
    assert spoken and all("alignment" in a and "type" not in a for a in spoken)
    assert await closed_code(ws) == 1000  # the provider ended the stream
    # The ledger counts the base64 audio inside the JSON: PCM16 at 24 kHz here.
    pcm = b"".join(base64.b64decode(a["audio"]) for a in spoken)
    row = await ended_row(gw)
    assert row["audio_ms"] == pytest.approx(len(pcm) / 48, abs=0.01) and row["audio_ms"] > 500


def upstream_sockets(monkeypatch) -> list:
    """The connections the ElevenLabs emulator serves, as they open."""
    from slng_fast.emulators import elevenlabs as emulator

    sockets = []
    real_run = emulator.Connection.run

    async def counted(self):
        sockets.append(self)
        await real_run(self)

    monkeypatch.setattr(emulator.Connection, "run", counted)
    return sockets


async def ended_row(gw) -> dict:
    with trio.fail_after(10):
        while True:
            rows = [r for r in gw.store.usage_rows() if r["ended_at"] is not None]
            if rows:
                return rows[-1]
            await trio.sleep(0.05)


async def test_an_idle_upstream_drop_is_invisible(provider_gateway, nursery, mock_clock,
                                                   monkeypatch):
    # A 5 s inactivity timeout (under the 15 s keep-alive) makes the emulator drop the
    # idle socket; the next utterance reopens it without the client seeing anything.
    # The fake clock moves only while the session is idle: had it jumped while the real
    # engine speaks (work trio does not see), every deadline on the way (the client's
    # idle timeout, the provider's) could pass in the middle of an utterance.
    sockets = upstream_sockets(monkeypatch)
    ws, _ = await open_session(provider_gateway, nursery, inactivity_timeout=5)
    first = await utterance(ws, "Before the drop.")
    assert first[-1]["interrupted"] is False
    mock_clock.autojump_threshold = 0
    await trio.sleep(30)
    mock_clock.autojump_threshold = math.inf
    await send(ws, type="ping")
    assert (await recv(ws))["type"] == "pong"  # nothing else came meanwhile
    second = await utterance(ws, "After the drop.")
    assert [e["type"] for e in second if e["type"] != "audio_chunk"] == ["audio_end"]
    assert second[-1]["id"] == 2 and second[-1]["interrupted"] is False and pcm_of(second)
    assert len(sockets) == 2  # the upstream did drop, and was reopened
    await ws.aclose()


async def test_an_idle_upstream_is_kept_alive_with_no_task_of_its_own(
        provider_gateway, nursery, mock_clock, monkeypatch):
    """The provider closes after 20 s without input; a space every 15 s keeps the same
    upstream socket through a minute of silence. The keep-alive is a clock on the
    worker's timer heap, not a task per session."""
    sockets = upstream_sockets(monkeypatch)
    ws, _ = await open_session(provider_gateway, nursery)
    first = await utterance(ws, "Before the silence.")
    assert first[-1]["interrupted"] is False
    start = trio.current_time()
    mock_clock.autojump_threshold = 0
    await trio.sleep(61)
    mock_clock.autojump_threshold = math.inf
    tasks = []
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        tasks.append(task.name)
        for child in task.child_nurseries:
            stack.extend(child.child_tasks)
    assert not [name for name in tasks if name.endswith("_every")], tasks
    assert trio.current_time() - start >= 60
    second = await utterance(ws, "After the silence.")
    assert second[-1]["interrupted"] is False and pcm_of(second)
    assert len(sockets) == 1  # kept alive: never dropped, never reopened
    await ws.aclose()
