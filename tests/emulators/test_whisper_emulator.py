"""The WhisperLive emulator over a socket, driven by a client written from WhisperLive's
client protocol (collabora/WhisperLive ``whisper_live/client.py``: options message, float32
audio, ``END_OF_AUDIO``; segments handled as its ``process_segments`` does). The PyPI clients
are not used: ``whisper-live`` pulls in torch and faster-whisper, and ``whisper-live-client``
needs PyAudio (PortAudio) and PyAV for its import."""

from __future__ import annotations

from functools import partial

import numpy as np
import orjson
import pytest
import trio
import trio_websocket

from engines.engine_audio import ROUND_TRIP_MIN_HITS, recognised, round_trip_speech
from harness import EMULATOR_KEY, start_emulator
from slng_fast.emulators import whisper as emulator
from slng_fast.engines.espeak import EspeakSynth

UID = "client-uid-1"


@pytest.fixture(scope="module")
def speech() -> bytes:
    return round_trip_speech(EspeakSynth.shared())


def f32(pcm16: bytes) -> bytes:
    return (np.frombuffer(pcm16, dtype="<i2").astype("<f4") / 32768.0).tobytes()


def options(**over) -> str:
    return orjson.dumps({"uid": UID, "language": "en", "task": "transcribe",
                         "model": "small", "use_vad": True, **over}).decode()


async def connect(nursery, url: str, key: str | None = EMULATOR_KEY):
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    return await trio_websocket.connect_websocket_url(nursery, url, None, extra_headers=headers)


async def messages_until_close(ws) -> list[dict]:
    out = []
    try:
        while True:
            out.append(orjson.loads(await ws.get_message()))
    except trio_websocket.ConnectionClosed:
        return out


class Transcript:
    """What WhisperLive's own client keeps: completed segments, in order, each once."""

    def __init__(self) -> None:
        self.completed: list[dict] = []
        self.partials: list[str] = []

    def update(self, segments: list[dict]) -> None:
        for seg in segments:
            if seg["completed"]:
                if not self.completed or float(seg["start"]) >= float(self.completed[-1]["end"]):
                    self.completed.append(seg)
            else:
                self.partials.append(seg["text"])

    @property
    def text(self) -> str:
        return " ".join(s["text"] for s in self.completed)


async def test_speech_is_transcribed_as_resent_segments(nursery, engines, speech):
    url = await start_emulator(nursery, "whisper", engines[0])
    ws = await connect(nursery, url)
    await ws.send_message(options(language=None))
    ready = orjson.loads(await ws.get_message())
    assert ready == {"uid": UID, "message": "SERVER_READY", "backend": "faster_whisper"}
    audio = f32(speech)
    for pos in range(0, len(audio), 4096 * 4):  # the WhisperLive client's chunk: 4096 samples
        await ws.send_message(audio[pos:pos + 4096 * 4])
    await ws.send_message(b"END_OF_AUDIO")
    received = await messages_until_close(ws)
    assert all(m["uid"] == UID for m in received)
    assert received[-1] == {"uid": UID, "message": "DISCONNECT"}
    assert {"uid": UID, "language": "en", "language_prob": 1.0} in received
    updates = [m["segments"] for m in received if "segments" in m]
    assert updates and all(updates)
    seen = Transcript()
    for segments in updates:
        assert all(set(s) == {"start", "end", "text", "completed"} for s in segments)
        assert all(isinstance(s["start"], str) and isinstance(s["end"], str) for s in segments)
        # only the last segment may be incomplete
        assert all(s["completed"] for s in segments[:-1])
        seen.update(segments)
    assert seen.partials, "partials while PocketSphinx is still hearing a segment"
    assert len(seen.completed) >= 2  # one segment per sentence
    # completed segments are re-sent with later updates
    first = seen.completed[0]
    assert sum(first in segments for segments in updates) >= 2
    assert len(recognised(seen.text)) >= ROUND_TRIP_MIN_HITS, seen.text


async def test_server_full_answers_wait_and_closes(nursery, engines):
    port = await nursery.start(partial(emulator.serve_emulator, "127.0.0.1", 0,
                                       engine_url=engines[0]["pocketsphinx"], max_clients=1))
    url = f"ws://127.0.0.1:{port}"
    first = await connect(nursery, url, None)
    await first.send_message(options(uid="first"))
    assert orjson.loads(await first.get_message())["message"] == "SERVER_READY"
    second = await connect(nursery, url, None)
    await second.send_message(options(uid="second"))
    (wait,) = await messages_until_close(second)
    assert wait["uid"] == "second" and wait["status"] == "WAIT"
    assert 0 < wait["message"] <= 10  # minutes until the first reaches 600 s
    # the first goes on, and its slot is free once it ends
    await first.send_message(b"END_OF_AUDIO")
    assert (await messages_until_close(first))[-1]["message"] == "DISCONNECT"
    third = await connect(nursery, url, None)
    await third.send_message(options(uid="third"))
    assert orjson.loads(await third.get_message())["message"] == "SERVER_READY"
    await third.aclose()


async def test_max_connection_time_disconnects(nursery, engines):
    port = await nursery.start(partial(emulator.serve_emulator, "127.0.0.1", 0,
                                       engine_url=engines[0]["pocketsphinx"],
                                       max_connection_time=0.5))
    ws = await connect(nursery, f"ws://127.0.0.1:{port}", None)
    await ws.send_message(options())
    received = await messages_until_close(ws)
    assert received[0]["message"] == "SERVER_READY"
    assert received[-1] == {"uid": UID, "message": "DISCONNECT"}


async def test_language_it_cannot_hear_is_an_error(nursery, engines):
    url = await start_emulator(nursery, "whisper", engines[0])
    ws = await connect(nursery, url)
    await ws.send_message(options(language="de"))
    (error,) = await messages_until_close(ws)
    assert error["uid"] == UID and error["status"] == "ERROR" and "de" in error["message"]


@pytest.mark.parametrize("key", [None, "wrong"])
async def test_api_key_is_checked_when_configured(nursery, engines, key):
    url = await start_emulator(nursery, "whisper", engines[0])
    rejected = []
    try:
        async with trio.open_nursery() as inner:
            await connect(inner, url, key)
    except* trio_websocket.ConnectionRejected as group:
        rejected = list(group.exceptions)
    assert [r.status_code for r in rejected] == [401]


async def test_text_where_audio_belongs_ends_the_session(nursery, engines):
    url = await start_emulator(nursery, "whisper", engines[0])
    ws = await connect(nursery, url)
    await ws.send_message(options())
    assert orjson.loads(await ws.get_message())["message"] == "SERVER_READY"
    await ws.send_message("hello")
    assert await messages_until_close(ws) == []
