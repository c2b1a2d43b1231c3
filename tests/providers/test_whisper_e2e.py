"""Unified and native STT through the gateway to the WhisperLive emulator, which hears with
the real PocketSphinx engine: eSpeak speech in, partial and final transcripts out.

The finalize is sent once the gateway has passed on a partial of the last sentence, whose
trailing silence is left out: the segment is then open upstream and can only close on the
silence the dialect sends for the finalize, so the run does not depend on how fast the
engine decodes."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
import trio_websocket

from engines.engine_audio import (
    ROUND_TRIP_MIN_HITS,
    ROUND_TRIP_SENTENCES,
    recognised,
    speech_16k,
    words,
)
from slng_fast import _native
from slng_fast.engines.espeak import EspeakSynth
from wsclient import closed_code, connect, recv, send

LAST_WORDS = words(ROUND_TRIP_SENTENCES[-1])
PAD = 16000  # bytes of 0.5 s at 16 kHz pcm16


@pytest.fixture(scope="module")
def sentences() -> list[bytes]:
    synth = EspeakSynth.shared()
    return [speech_16k(synth, text) for text in ROUND_TRIP_SENTENCES]


def open_ended(sentences: list[bytes]) -> bytes:
    """The sentences with the last one's trailing silence cut off."""
    return b"".join(sentences)[:-PAD]


def to_8k_mulaw(pcm16k: bytes) -> bytes:
    resampler = _native.Resampler(16000, 8000)
    return _native.pcm16_to_mulaw(resampler.process(pcm16k) + resampler.flush())


async def stream(ws, audio: bytes, size: int) -> None:
    for pos in range(0, len(audio), size):
        await ws.send_message(audio[pos:pos + size])


async def until_partial_of_last_sentence(ws, events: list[dict]) -> None:
    for _ in range(10_000):
        event = await recv(ws)
        events.append(event)
        assert event["type"] == "transcript", event
        if not event["is_final"] and words(event["text"]) & LAST_WORDS:
            return
    raise AssertionError("no partial of the last sentence")


async def until_partial_after_a_final(ws, events: list[dict]) -> None:
    """For speech the engine does not hear well: the first sentence's segment ended, and
    the open last one shows a partial."""
    for _ in range(10_000):
        event = await recv(ws)
        events.append(event)
        assert event["type"] == "transcript", event
        if not event["is_final"] and any(e["is_final"] for e in events):
            return
    raise AssertionError("no partial after a final transcript")


async def until_final(ws, events: list[dict]) -> dict:
    for _ in range(10_000):
        event = await recv(ws)
        events.append(event)
        if event["type"] == "final_transcript":
            return event
        assert event["type"] == "transcript", event
    raise AssertionError("no final_transcript")


async def transcribe_unified(gw, nursery, audio: bytes, *, codec: str, rate: int,
                             frame: int, sync=until_partial_of_last_sentence
                             ) -> tuple[dict, list[dict]]:
    ws = await connect(gw.stt("whisper"), gw.keys["pro"], nursery=nursery)
    await send(ws, type="start", sample_rate=rate, encoding=codec, language="en")
    ready = await recv(ws)
    assert ready["type"] == "ready" and ready["model_id"] == "whisper"
    assert ready["sample_rate"] == rate and ready["encoding"] == codec
    events: list[dict] = []
    await stream(ws, audio, frame)
    await sync(ws, events)
    await send(ws, type="finalize")
    final = await until_final(ws, events)
    await ws.aclose()
    return final, events


async def test_unified_16k_pcm16_gets_partial_and_final_transcripts(provider_gateway, nursery,
                                                                    sentences):
    gw = await provider_gateway("whisper")
    final, events = await transcribe_unified(gw, nursery, open_ended(sentences),
                                             codec="pcm16", rate=16000, frame=640)
    partials = [e for e in events if e["type"] == "transcript" and not e["is_final"]]
    finals = [e for e in events if e["type"] == "transcript" and e["is_final"]]
    assert partials and finals
    # each stable segment once, and the final transcript is made of them
    texts = [e["text"] for e in finals]
    assert len(texts) == len(set(texts))
    assert final["text"] == " ".join(texts)
    assert len(recognised(final["text"])) >= ROUND_TRIP_MIN_HITS, final["text"]
    # the audio the client sent (the finalize's silence is the gateway's own)
    sent = len(open_ended(sentences)) / 2 / 16000
    assert final["audio_duration_seconds"] == pytest.approx(sent, abs=0.01)


async def test_unified_8k_mulaw_is_converted_by_the_gateway(provider_gateway, nursery,
                                                            sentences):
    """8 kHz mu-law in, 16 kHz float32 to WhisperLive. The words are not checked here:
    PocketSphinx's only model (en-US, 16 kHz wideband) does not recognise speech band-limited
    to 4 kHz (the same audio resampled 16k -> 8k -> 16k without the gateway gives "you are
    what we what are you"), so this checks the stream: partials, segments and one final."""
    gw = await provider_gateway("whisper")
    audio = to_8k_mulaw(open_ended(sentences))
    final, events = await transcribe_unified(gw, nursery, audio, codec="mulaw", rate=8000,
                                             frame=320, sync=until_partial_after_a_final)
    partials = [e for e in events if e["type"] == "transcript" and not e["is_final"]]
    finals = [e["text"] for e in events if e["type"] == "transcript" and e["is_final"]]
    assert partials and finals
    assert final["text"] == " ".join(t for t in finals if t) and final["text"].strip()
    assert final["audio_duration_seconds"] == pytest.approx(len(audio) / 8000, abs=0.01)


async def test_finalize_twice_each_holds_its_own_speech(provider_gateway, nursery, sentences):
    gw = await provider_gateway("whisper")
    ws = await connect(gw.stt("whisper"), gw.keys["pro"], nursery=nursery)
    await send(ws, type="start", sample_rate=16000, encoding="pcm16")
    assert (await recv(ws))["type"] == "ready"
    events: list[dict] = []
    await stream(ws, open_ended(sentences), 640)
    await until_partial_of_last_sentence(ws, events)
    await send(ws, type="finalize")
    first = await until_final(ws, events)
    assert len(recognised(first["text"])) >= ROUND_TRIP_MIN_HITS, first["text"]
    # the session stays open: the last sentence again, then a second finalize
    await stream(ws, sentences[-1][:-PAD], 640)
    await until_partial_of_last_sentence(ws, events)
    await send(ws, type="finalize")
    second = await until_final(ws, events)
    heard = recognised(second["text"])
    assert len(heard) >= 2 and heard <= LAST_WORDS, second["text"]
    assert second["audio_duration_seconds"] == pytest.approx(len(sentences[-1][:-PAD]) / 32000,
                                                             abs=0.01)
    await send(ws, type="stop")
    assert await closed_code(ws) == 1000


async def test_native_whisperlive_frames_relay_both_ways(provider_gateway, nursery, sentences):
    gw = await provider_gateway("whisper")
    ws = await connect(gw.stt("whisper"), gw.keys["pro"], nursery=nursery)
    options = orjson.dumps({"uid": "native-1", "language": "en", "task": "transcribe",
                            "model": "small", "use_vad": True}).decode()
    await ws.send_message(options)
    ready = orjson.loads(await ws.get_message())  # the emulator's own frame, unchanged
    assert ready == {"uid": "native-1", "message": "SERVER_READY", "backend": "faster_whisper"}
    pcm = b"".join(sentences)
    audio = (np.frombuffer(pcm, dtype="<i2").astype("<f4") / 32768.0).tobytes()
    await stream(ws, audio, 4096 * 4)
    await ws.send_message(b"END_OF_AUDIO")
    received = []
    try:
        while True:
            received.append(orjson.loads(await ws.get_message()))
    except trio_websocket.ConnectionClosed as exc:
        assert exc.reason.code == 1000
    assert all(m["uid"] == "native-1" and "type" not in m for m in received)
    assert received[-1] == {"uid": "native-1", "message": "DISCONNECT"}
    completed: dict[str, str] = {}
    for m in received:
        for s in m.get("segments", []):
            if s["completed"]:
                completed[s["start"]] = s["text"]
    assert len(recognised(" ".join(completed.values()))) >= ROUND_TRIP_MIN_HITS, completed
