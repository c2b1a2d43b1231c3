"""OpenAI Realtime transcription as a client-side dialect, without sockets: the
translation alone (client events to unified steps, unified events to OpenAI events), then
the session that runs it over the unified pass-through dialect."""

from __future__ import annotations

import base64
import itertools

import orjson
import pytest
from helpers import FREE, PRO, client_events, close_code, opened, upstream_frames

from slng_fast.protocol import openai_realtime as rt
from slng_fast.protocol.actions import SendClient
from slng_fast.protocol.realtime_session import RealtimeSttSession
from slng_fast.providers.registry import ENDPOINTS, known
from slng_fast.providers.unified import UnifiedSttDialect

SPHINX = ENDPOINTS["pocketsphinx"]
TRANSCRIPT = "conversation.item.input_audio_transcription"


def ids():
    counter = itertools.count(1)
    return lambda prefix: f"{prefix}_{next(counter)}"


def translator(**kw) -> rt.RealtimeTranscription:
    return rt.RealtimeTranscription(model="pocketsphinx", languages=("en",),
                                    stt_endpoints=known("stt"), new_id=ids(), **kw)


def b64(nbytes: int) -> str:
    return base64.b64encode(bytes(nbytes)).decode()


def manual(t: rt.RealtimeTranscription) -> None:
    t.client({"type": "session.update", "session": {"type": "transcription", "audio": {
        "input": {"turn_detection": None}}}})


def kinds(events) -> list[str]:
    return [e["type"] for e in events]


# -- the translation ------------------------------------------------------------------------

def test_created_is_the_ga_or_beta_session_object():
    ga = translator().created()
    assert ga["type"] == "session.created"
    assert ga["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert ga["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    beta = translator(flavour=rt.BETA).created()
    assert beta["type"] == "transcription_session.created"
    assert beta["session"]["input_audio_format"] == "pcm16"


def test_an_update_is_answered_in_its_own_shape():
    t = translator()
    (beta,) = t.client({"type": "transcription_session.update", "session": {
        "input_audio_transcription": {"model": "whisper-1"}, "turn_detection": None}})
    assert beta["type"] == "transcription_session.updated"
    assert beta["session"]["input_audio_transcription"]["model"] == "whisper-1"
    (ga,) = t.client({"type": "session.update", "session": {"type": "transcription"}})
    assert ga["session"]["audio"]["input"]["turn_detection"] is None


def test_first_append_starts_the_unified_session_at_24k_pcm16():
    t = translator()
    t.client({"type": "session.update", "session": {"type": "transcription", "audio": {
        "input": {"transcription": {"model": "whisper-1", "language": "en"}}}}})
    steps = t.client({"type": "input_audio_buffer.append", "audio": b64(4800)})
    assert steps == [rt.Start({"sample_rate": 24000, "encoding": "pcm16", "language": "en"}),
                     rt.AudioIn(bytes(4800))]
    assert t.client({"type": "input_audio_buffer.append", "audio": b64(480)}) == [
        rt.AudioIn(bytes(480))]
    assert t.buffer_ms == pytest.approx(110.0)


def test_beta_formats_map_to_unified_codecs():
    t = translator(flavour=rt.BETA)
    (updated,) = t.client({"type": "transcription_session.update",
                           "session": {"input_audio_format": "g711_ulaw"}})
    assert updated["type"] == "transcription_session.updated"
    assert updated["session"]["input_audio_format"] == "g711_ulaw"
    (start, _) = t.client({"type": "input_audio_buffer.append", "audio": b64(800)})
    assert start == rt.Start({"sample_rate": 8000, "encoding": "mulaw"})


def test_manual_commit_answers_committed_then_the_final_completes_that_item():
    t = translator()
    manual(t)
    t.client({"type": "input_audio_buffer.append", "audio": b64(9600)})  # 200 ms
    committed, finalize = t.client({"type": "input_audio_buffer.commit"})
    assert committed["type"] == "input_audio_buffer.committed" and finalize == rt.Finalize()
    item = committed["item_id"]
    assert committed["previous_item_id"] is None
    out = t.server({"type": "transcript", "text": "hello", "is_final": False})
    out += t.server({"type": "transcript", "text": "hello world", "is_final": False})
    out += t.server({"type": "transcript", "text": "hello word", "is_final": True})
    out += t.server({"type": "final_transcript", "text": "hello word"})
    assert kinds(out) == [f"{TRANSCRIPT}.delta"] * 2 + [f"{TRANSCRIPT}.completed"]
    assert [e["delta"] for e in out[:2]] == ["hello", " world"]  # a revision sends nothing
    assert {e["item_id"] for e in out} == {item}
    assert out[-1]["transcript"] == "hello word"
    assert out[-1]["usage"] == {"type": "duration", "seconds": 0.2}
    # The next item follows the first.
    t.client({"type": "input_audio_buffer.append", "audio": b64(9600)})
    second, _ = t.client({"type": "input_audio_buffer.commit"})
    assert second["previous_item_id"] == item and second["item_id"] != item


def test_commit_needs_100_ms_of_audio():
    t = translator()
    t.client({"type": "input_audio_buffer.append", "audio": b64(4000)})  # 83 ms
    with pytest.raises(rt.RealtimeError) as info:
        t.client({"type": "input_audio_buffer.commit"})
    assert info.value.code == "input_audio_buffer_commit_empty"


def test_server_turns_come_from_the_providers_segments():
    t = translator()  # server_vad by default
    t.client({"type": "input_audio_buffer.append", "audio": b64(48000)})  # 1 s
    out = t.server({"type": "transcript", "text": "good", "is_final": False})
    out += t.server({"type": "transcript", "text": "good morning", "is_final": True})
    assert kinds(out) == ["input_audio_buffer.speech_started", f"{TRANSCRIPT}.delta",
                          f"{TRANSCRIPT}.delta", "input_audio_buffer.speech_stopped",
                          "input_audio_buffer.committed", f"{TRANSCRIPT}.completed"]
    assert out[0]["audio_start_ms"] == 0 and out[3]["audio_end_ms"] == 1000
    assert out[-1]["transcript"] == "good morning" and out[-1]["usage"]["seconds"] == 1.0
    t.client({"type": "input_audio_buffer.append", "audio": b64(24000)})
    nxt = t.server({"type": "transcript", "text": "bye", "is_final": False})
    assert nxt[0]["type"] == "input_audio_buffer.speech_started"
    assert nxt[0]["audio_start_ms"] == 1000 and nxt[0]["item_id"] != out[0]["item_id"]


def test_commit_during_a_server_turn_completes_it_from_the_final():
    t = translator()
    t.client({"type": "input_audio_buffer.append", "audio": b64(9600)})
    started = t.server({"type": "transcript", "text": "one", "is_final": False})
    committed, _ = t.client({"type": "input_audio_buffer.commit"})
    assert committed["item_id"] == started[0]["item_id"]
    out = t.server({"type": "transcript", "text": "one two", "is_final": True})
    out += t.server({"type": "final_transcript", "text": "earlier turn one two"})
    assert kinds(out) == [f"{TRANSCRIPT}.delta", f"{TRANSCRIPT}.completed"]
    assert out[-1]["transcript"] == "one two"  # its own segments, not earlier turns'


def test_clear_drops_what_the_provider_says_of_the_cleared_audio():
    t = translator()
    manual(t)
    t.client({"type": "input_audio_buffer.append", "audio": b64(9600)})
    cleared, finalize = t.client({"type": "input_audio_buffer.clear"})
    assert cleared["type"] == "input_audio_buffer.cleared" and finalize == rt.Finalize()
    assert t.server({"type": "transcript", "text": "gone", "is_final": True}) == []
    assert t.server({"type": "final_transcript", "text": "gone"}) == []
    # Nothing appended since: cleared, and nothing for the provider to finalize.
    assert kinds(t.client({"type": "input_audio_buffer.clear"})) == [
        "input_audio_buffer.cleared"]


@pytest.mark.parametrize("event, code", [
    ({"type": "response.create"}, "unknown_command"),
    ({"session": {}}, "invalid_message"),
    ({"type": "session.update", "session": {"type": "realtime"}}, "invalid_parameter"),
    ({"type": "session.update", "session": {"audio": {"input": {"format": {
        "type": "audio/pcm", "rate": 16000}}}}}, "invalid_parameter"),
    ({"type": "session.update", "session": {"audio": {"input": {"transcription": {
        "model": "kyutai"}}}}}, "invalid_parameter"),
    ({"type": "session.update", "session": {"audio": {"input": {"transcription": {
        "language": "fr"}}}}}, "invalid_parameter"),
    ({"type": "input_audio_buffer.append", "audio": "not base64!"}, "invalid_message"),
    ({"type": "input_audio_buffer.append", "audio": b64(3)}, "invalid_message"),
])
def test_refused_client_events(event, code):
    t = translator()
    before = t.session_object()
    with pytest.raises(rt.RealtimeError) as info:
        t.client(event)
    assert info.value.code == code
    assert t.session_object() == before  # a refused update changes nothing


def test_unified_errors_become_openai_errors():
    (err,) = translator().server({"type": "error", "code": "provider_unavailable",
                                  "message": "down", "retryable": True})
    assert err["error"]["type"] == "server_error" and err["error"]["code"] == "provider_unavailable"
    event = rt.error_event("auth_failed", "no key")
    assert event["error"]["code"] == "invalid_api_key"
    assert translator().server({"type": "ready"}) == []


# -- the session over the unified pass-through dialect ------------------------------------------

def session(tier=PRO, rate_limit=None) -> RealtimeSttSession:
    return RealtimeSttSession(
        translator=translator(), endpoint=SPHINX,
        dialect=UnifiedSttDialect(SPHINX, "ws://engine.invalid/"), tier=tier, now=0.0,
        rate_limit=rate_limit)


def send(s: RealtimeSttSession, now: float = 0.0, **event):
    return s.receive_text(orjson.dumps(event).decode(), now)


def test_session_opens_the_upstream_and_resamples_24k_to_the_models_16k():
    s = session()
    out = send(s, type="input_audio_buffer.append", audio=b64(4800))
    assert client_events(out) == []  # no `ready`: OpenAI has none
    assert opened(out)
    start = orjson.loads(upstream_frames(out)[0])
    assert start["sample_rate"] == 16000 and start["encoding"] == "pcm16"
    pcm = b"".join(f for f in upstream_frames(out) if isinstance(f, bytes))
    assert 3000 <= len(pcm) <= 3200  # 100 ms at 16 kHz, less the filter's look-ahead
    assert s.usage.audio_ms == pytest.approx(100.0) and s.usage.messages == 0


def test_session_commit_finalizes_upstream_and_translates_the_providers_events():
    s = session()
    send(s, type="session.update", session={"audio": {"input": {"turn_detection": None}}})
    send(s, type="input_audio_buffer.append", audio=b64(9600))
    out = send(s, type="input_audio_buffer.commit")
    assert [e["type"] for e in client_events(out)] == ["input_audio_buffer.committed"]
    assert upstream_frames(out) == ['{"type":"finalize"}']
    epoch = s.upstream_epoch
    got = s.receive_upstream(epoch, '{"type":"ready","sample_rate":16000}', 0.1)
    got += s.receive_upstream(epoch, '{"type":"transcript","text":"hi","is_final":true}', 0.2)
    got += s.receive_upstream(epoch, '{"type":"final_transcript","text":"hi"}', 0.3)
    assert all(isinstance(a, SendClient) and a.text for a in got)
    events = client_events(got)
    assert [e["type"] for e in events] == [f"{TRANSCRIPT}.delta", f"{TRANSCRIPT}.completed"]
    assert events[1]["transcript"] == "hi"
    assert s.usage.messages == 2


def test_session_rate_limit_spares_appends_and_upstream_loss_is_an_openai_error():
    waits = iter([0.0, 2.5])
    s = session(tier=FREE, rate_limit=lambda now: next(waits))
    assert not s.metered(orjson.dumps({"type": "input_audio_buffer.append", "audio": ""}))
    send(s, type="session.update", session={})
    (limited,) = client_events(send(s, type="session.update", session={}))
    assert limited["error"]["code"] == "rate_limit_exceeded"
    assert limited["error"]["retry_after_ms"] == 2500
    send(s, type="input_audio_buffer.append", audio=b64(4800))  # not asked of the bucket
    out = s.upstream_closed(s.upstream_epoch, 1.0)
    (err,) = client_events(out)  # no session_ended: OpenAI has none
    assert err["type"] == "error" and err["error"]["type"] == "server_error"
    assert close_code(out) == 1013


def test_session_binary_frames_and_invalid_json_are_errors_not_the_end():
    s = session()
    (binary,) = client_events(s.receive_binary(b"\x00\x00", 0.0))
    assert binary["error"]["code"] == "invalid_message"
    (text,) = client_events(s.receive_text("not json", 0.0))
    assert text["error"]["code"] == "invalid_message"
    assert not s.ended
