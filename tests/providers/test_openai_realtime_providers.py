"""The official ``openai`` SDK's realtime transcription through the gateway to the STT
providers other than the built-in engine, each chosen by the URL's ``model``: the Kyutai
emulator (moshi-server's protocol, float32 at 24 kHz) with manual commits and server turns,
and the WhisperLive emulator (float32 at 16 kHz) with a manual commit."""

from __future__ import annotations

import base64
import time

import pytest
import trio

from engines.engine_audio import ROUND_TRIP_MIN_HITS, recognised, round_trip_speech
from slng_fast import _native
from slng_fast.engines.espeak import EspeakSynth

openai = pytest.importorskip("openai")
pytest.importorskip("websockets")

COMPLETED = "conversation.item.input_audio_transcription.completed"
CHUNK = 4800  # 100 ms of 24 kHz PCM16
HALF = 40 * CHUNK  # 4 s: the first sentences
SILENCE = 40 * CHUNK


@pytest.fixture(scope="module")
def speech24k() -> bytes:
    return _native.Resampler(16000, 24000).process(round_trip_speech(EspeakSynth.shared()))


def events_until(conn, kind: str, limit: int = 2000) -> list:
    out = []
    for _ in range(limit):
        out.append(conn.recv())
        if out[-1].type == kind:
            return out
    raise AssertionError(f"no {kind}")


async def test_kyutai_through_the_realtime_route(provider_gateway, speech24k):
    gw = await provider_gateway("kyutai")
    port = gw.url.rsplit(":", 1)[1]
    client = openai.OpenAI(api_key=gw.keys["pro"], base_url=f"http://127.0.0.1:{port}/v1",
                           websocket_base_url=f"ws://127.0.0.1:{port}/v1", max_retries=0)

    def run() -> tuple[list, list]:
        with client.realtime.connect(model="kyutai", extra_query={"intent": "transcription"}
                                     ) as conn:
            assert conn.recv().type == "session.created"
            conn.session.update(session={"type": "transcription", "audio": {"input": {
                "transcription": {"model": "kyutai"}, "turn_detection": None}}})
            assert conn.recv().type == "session.updated"
            for pos in range(0, len(speech24k), CHUNK):
                conn.input_audio_buffer.append(
                    audio=base64.b64encode(speech24k[pos:pos + CHUNK]).decode())
            conn.input_audio_buffer.commit()
            manual = events_until(conn, COMPLETED)
            # Server turns: Kyutai's pauses close them, no commit needed.
            conn.session.update(session={"type": "transcription", "audio": {"input": {
                "turn_detection": {"type": "server_vad"}}}})
            # A live microphone: the first sentences, then silence that goes on streaming
            # while the provider catches up (Kyutai counts a pause in model steps, which
            # only audio drives).
            for pos in range(0, HALF, CHUNK):
                conn.input_audio_buffer.append(
                    audio=base64.b64encode(speech24k[pos:pos + CHUNK]).decode())
            silence = base64.b64encode(bytes(CHUNK)).decode()
            for _ in range(SILENCE // CHUNK):
                conn.input_audio_buffer.append(audio=silence)
                time.sleep(0.025)
            turns = events_until(conn, COMPLETED)
        return manual, turns

    manual, turns = await trio.to_thread.run_sync(run)
    assert not [e for e in manual + turns if e.type == "error"]
    committed = next(e for e in manual if e.type == "input_audio_buffer.committed")
    assert manual[-1].item_id == committed.item_id
    # Resampled twice before PocketSphinx hears it (see test_kyutai_e2e): one word less.
    assert len(recognised(manual[-1].transcript)) >= ROUND_TRIP_MIN_HITS - 1, manual[-1]
    kinds = [e.type for e in turns if not e.type.endswith(".delta")]
    assert kinds[-4:] == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                          "input_audio_buffer.committed", COMPLETED]
    assert turns[-1].transcript
    for _ in range(200):
        rows = [r for r in gw.store.usage_rows() if r["ended_at"] is not None]
        if rows:
            break
        await trio.sleep(0.05)
    assert rows[-1]["provider"] == "kyutai"
    assert rows[-1]["audio_ms"] == pytest.approx((len(speech24k) + HALF + SILENCE) / 48, abs=1)


async def test_whisper_through_the_realtime_route(provider_gateway, speech24k):
    gw = await provider_gateway("whisper")
    port = gw.url.rsplit(":", 1)[1]
    client = openai.OpenAI(api_key=gw.keys["pro"], base_url=f"http://127.0.0.1:{port}/v1",
                           websocket_base_url=f"ws://127.0.0.1:{port}/v1", max_retries=0)

    def run() -> list:
        with client.realtime.connect(model="whisper", extra_query={"intent": "transcription"}
                                     ) as conn:
            assert conn.recv().type == "session.created"
            conn.session.update(session={"type": "transcription", "audio": {"input": {
                "turn_detection": None}}})
            for pos in range(0, HALF, CHUNK):
                conn.input_audio_buffer.append(
                    audio=base64.b64encode(speech24k[pos:pos + CHUNK]).decode())
            conn.input_audio_buffer.commit()
            return events_until(conn, COMPLETED)

    events = await trio.to_thread.run_sync(run)
    assert not [e for e in events if e.type == "error"]
    committed = next(e for e in events if e.type == "input_audio_buffer.committed")
    assert events[-1].item_id == committed.item_id
    assert recognised(events[-1].transcript), events[-1]
