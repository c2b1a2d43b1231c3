"""The official ``openai`` Python SDK, unchanged but for its base URL and key (a gateway
key), transcribing through ``/v1/realtime?intent=transcription`` with the built-in
PocketSphinx engine: manual commits, server turns, the beta protocol, errors, the ledger
and the key's tier limits."""

from __future__ import annotations

import base64

import orjson
import pytest
import trio

from engines.engine_audio import ROUND_TRIP_MIN_HITS, recognised, round_trip_speech
from slng_fast import _native
from slng_fast.engines.espeak import EspeakSynth

openai = pytest.importorskip("openai")
pytest.importorskip("websockets")

INTENT = {"intent": "transcription"}
CHUNK = 4800  # 100 ms of 24 kHz PCM16


@pytest.fixture(scope="module")
def speech24k() -> bytes:
    return _native.Resampler(16000, 24000).process(round_trip_speech(EspeakSynth.shared()))


def client_for(gw, key: str):
    port = gw.url.rsplit(":", 1)[1]
    return openai.OpenAI(api_key=key, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0,
                         websocket_base_url=f"ws://127.0.0.1:{port}/v1")


def append_all(conn, audio: bytes) -> None:
    for pos in range(0, len(audio), CHUNK):
        conn.input_audio_buffer.append(audio=base64.b64encode(audio[pos:pos + CHUNK]).decode())


def events_until(conn, kind: str, limit: int = 2000) -> list:
    out = []
    for _ in range(limit):
        event = conn.recv()
        out.append(event)
        if event.type == kind:
            return out
    raise AssertionError(f"no {kind}")


async def ledger_row(gw) -> dict:
    for _ in range(200):
        rows = [r for r in gw.store.usage_rows() if r["ended_at"] is not None]
        if rows:
            return rows[-1]
        await trio.sleep(0.05)
    raise AssertionError("the session was not written to the ledger")


async def test_manual_commit_transcribes_the_buffer(gw, speech24k):
    client = client_for(gw, gw.keys["pro"])

    def run() -> tuple[list, list]:
        with client.realtime.connect(extra_query=INTENT) as conn:
            created = conn.recv()
            conn.session.update(session={
                "type": "transcription",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                    "transcription": {"model": "gpt-4o-transcribe",
                                                      "language": "en"},
                                    "turn_detection": None}}})
            updated = conn.recv()
            append_all(conn, speech24k)
            conn.input_audio_buffer.commit()
            events = events_until(conn, "conversation.item.input_audio_transcription.completed")
        return [created, updated], events

    (created, updated), events = await trio.to_thread.run_sync(run)
    assert created.type == "session.created" and created.session.type == "transcription"
    assert updated.type == "session.updated"
    assert updated.session.audio.input.turn_detection is None
    assert updated.session.audio.input.transcription.model == "gpt-4o-transcribe"
    kinds = [e.type for e in events]
    assert "input_audio_buffer.speech_started" not in kinds  # the client decides turns
    committed = next(e for e in events if e.type == "input_audio_buffer.committed")
    completed = events[-1]
    assert completed.item_id == committed.item_id and committed.previous_item_id is None
    deltas = [e for e in events if e.type.endswith(".delta")]
    assert deltas and all(d.item_id == committed.item_id for d in deltas)
    assert len(recognised(completed.transcript)) >= ROUND_TRIP_MIN_HITS, completed.transcript
    seconds = len(speech24k) / 48000
    assert completed.usage.seconds == pytest.approx(seconds, abs=0.01)
    row = await ledger_row(gw)
    assert row["key_id"] == gw.key_ids["pro"] and row["provider"] == "pocketsphinx"
    assert row["audio_ms"] == pytest.approx(seconds * 1000, abs=10)
    assert row["messages"] == 2  # session.update and commit; appends are audio


async def test_server_turns_follow_the_engines_utterances(gw, speech24k):
    client = client_for(gw, gw.keys["pro"])

    def run() -> list:
        with client.realtime.connect(extra_query=INTENT) as conn:
            assert conn.recv().type == "session.created"
            append_all(conn, speech24k)  # default turn detection: server_vad
            events = events_until(conn, "conversation.item.input_audio_transcription.completed")
            # The engine's segments are the turns: more of them follow without a commit.
            events += events_until(conn, "conversation.item.input_audio_transcription.completed")
        return events

    events = await trio.to_thread.run_sync(run)
    kinds = [e.type for e in events]
    first = kinds.index("conversation.item.input_audio_transcription.completed")
    turn = [k for k in kinds[:first + 1] if not k.endswith(".delta")]
    assert turn == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                    "input_audio_buffer.committed",
                    "conversation.item.input_audio_transcription.completed"]
    items = [e.item_id for e in events if e.type == "input_audio_buffer.committed"]
    assert len(items) == 2 and items[0] != items[1]
    second = [e for e in events if e.type == "input_audio_buffer.committed"][1]
    assert second.previous_item_id == items[0]
    text = " ".join(e.transcript for e in events if e.type.endswith(".completed"))
    assert recognised(text), text


async def test_beta_protocol(gw, speech24k):
    client = client_for(gw, gw.keys["pro"])

    def run() -> list:
        # The beta client sends OpenAI-Beta: realtime=v1 and needs a model in the URL.
        with client.beta.realtime.connect(model="whisper-1", extra_query=INTENT) as conn:
            events = [conn.recv()]
            conn.send({"type": "transcription_session.update", "session": {
                "input_audio_format": "pcm16", "turn_detection": None,
                "input_audio_transcription": {"model": "whisper-1"}}})
            events.append(conn.recv())
            append_all(conn, speech24k[:CHUNK * 20])
            conn.input_audio_buffer.commit()
            events += events_until(conn, "conversation.item.input_audio_transcription.completed")
        return events

    events = await trio.to_thread.run_sync(run)
    assert events[0].type == "transcription_session.created"
    assert events[1].type == "transcription_session.updated"
    assert events[1].session.turn_detection is None
    assert events[1].session.input_audio_transcription.model == "whisper-1"
    assert any(e.type == "input_audio_buffer.committed" for e in events)


async def test_browser_subprotocol_key(gw):
    from websockets.sync.client import connect

    port = gw.url.rsplit(":", 1)[1]
    url = f"ws://127.0.0.1:{port}/v1/realtime?intent=transcription"

    def run() -> tuple[str | None, dict]:
        protocols = ["realtime", f"openai-insecure-api-key.{gw.keys['pro']}"]
        with connect(url, subprotocols=protocols) as ws:
            return ws.subprotocol, orjson.loads(ws.recv(timeout=10))

    subprotocol, created = await trio.to_thread.run_sync(run)
    assert subprotocol == "realtime" and created["type"] == "session.created"


async def test_errors_keep_the_session_and_a_bad_key_closes_it(gw, speech24k):
    client = client_for(gw, gw.keys["pro"])

    def run() -> tuple[list, list]:
        with client.realtime.connect(extra_query=INTENT) as conn:
            conn.recv()
            conn.input_audio_buffer.commit(event_id="c1")  # nothing appended
            conn.send({"type": "response.create"})
            conn.send({"type": "session.update", "session": {
                "type": "transcription",
                "audio": {"input": {"transcription": {"model": "kyutai"}}}}})
            conn.send({"type": "input_audio_buffer.append", "audio": "***"})
            errors = [conn.recv() for _ in range(4)]
            conn.input_audio_buffer.clear()
            cleared = [conn.recv()]
        wrong = client_for(gw, "not-a-gateway-key")
        with wrong.realtime.connect(extra_query=INTENT) as conn:
            refused = [conn.recv()]
            try:
                conn.recv()
            except Exception as exc:
                refused.append(exc)
        return errors + cleared, refused

    events, refused = await trio.to_thread.run_sync(run)
    assert [e.type for e in events] == ["error"] * 4 + ["input_audio_buffer.cleared"]
    codes = [e.error.code for e in events[:4]]
    assert codes == ["input_audio_buffer_commit_empty", "unknown_command", "invalid_parameter",
                     "invalid_message"]
    assert events[0].error.event_id == "c1"
    assert "model=kyutai" in events[2].error.message
    assert refused[0].type == "error" and refused[0].error.code == "invalid_api_key"
    assert "4000" in repr(refused[1])


async def test_free_tier_limits_hold_on_the_realtime_route(gw, speech24k):
    client = client_for(gw, gw.keys["free"])  # 1 connection, 20 messages a minute

    def run() -> tuple[list, list]:
        with client.realtime.connect(extra_query=INTENT) as conn:
            conn.recv()
            with client.realtime.connect(extra_query=INTENT) as second:
                refused = [second.recv()]
                try:
                    second.recv()
                except Exception as exc:
                    refused.append(exc)
            for _ in range(21):
                conn.session.update(session={"type": "transcription"})
            updates = [conn.recv() for _ in range(21)]
            append_all(conn, speech24k[:CHUNK * 30])  # audio: not messages
            conn.input_audio_buffer.clear()
            after = [conn.recv()]
            # 12 KB of audio is 16 KB of base64: over the free tier's message size.
            conn.input_audio_buffer.append(audio=base64.b64encode(bytes(12288)).decode())
            after.append(conn.recv())
            try:
                conn.recv()
            except Exception as exc:
                after.append(exc)
        return refused, updates + after

    refused, events = await trio.to_thread.run_sync(run)
    assert refused[0].error.code == "too_many_connections" and "4001" in repr(refused[1])
    assert [e.type for e in events[:20]] == ["session.updated"] * 20
    assert events[20].type == "error" and events[20].error.code == "rate_limit_exceeded"
    assert events[20].error.retry_after_ms > 0
    # The clear is a message too, and the bucket refills slowly: refused, not audio's fault.
    assert events[21].type == "error" and events[21].error.code == "rate_limit_exceeded"
    assert events[22].type == "error" and events[22].error.code == "message_too_large"
    assert "4002" in repr(events[23])


async def test_other_intents_are_refused_at_the_handshake(gw):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    port = gw.url.rsplit(":", 1)[1]

    def run() -> InvalidStatus:
        try:
            connect(f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime",
                    additional_headers={"Authorization": f"Bearer {gw.keys['pro']}"})
        except InvalidStatus as exc:
            return exc
        raise AssertionError("a conversation session was accepted")

    exc = await trio.to_thread.run_sync(run)
    assert exc.response.status_code == 400
    assert orjson.loads(exc.response.body)["error"]["code"] == "unsupported_intent"
