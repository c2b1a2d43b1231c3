"""The TTS session's side of the data plane boundary, without sockets: when it lends a
stream (`StartRelay`), when it takes it back (`StopRelay`), how the data plane's reports
count, and, for the same upstream stream, that a session whose steady state runs through
`AudioRelay.feed` sends the client the same frames and the same `audio_end` totals as one
that sees every message (hypothesis: every codec, rate and cut of the reads)."""

from __future__ import annotations

import base64

import orjson
import pytest
from helpers import ORPHEUS, PRO, client_events, cmd
from hypothesis import given, settings
from hypothesis import strategies as st

from slng_fast import _native as native
from slng_fast.protocol.actions import SendClient, StartRelay, StopRelay
from slng_fast.protocol.tts import TtsSession
from slng_fast.providers.cartesia import CartesiaDialect
from slng_fast.providers.elevenlabs import ElevenLabsDialect
from slng_fast.providers.registry import ENDPOINTS
from slng_fast.providers.slng import SlngDialect
from slng_fast.vocabulary import RelayFraming

BINARY = RelayFraming("binary")

FLUSHED = '{"type":"flushed"}'
ELEVENLABS = ENDPOINTS["elevenlabs"]
CARTESIA = ENDPOINTS["cartesia"]


def make(codec: str = "pcm16", rate: int = 24000, utterances: int = 1,
         provider: str = "orpheus") -> TtsSession:
    if provider == "orpheus":
        s = TtsSession(endpoint=ORPHEUS, dialect=SlngDialect(ORPHEUS, "ws://model.invalid/ws"),
                       tier=PRO, now=0.0)
    elif provider == "elevenlabs":
        s = TtsSession(endpoint=ELEVENLABS, tier=PRO, now=0.0,
                       dialect=ElevenLabsDialect(ELEVENLABS, "wss://el.invalid", "k"))
    else:
        s = TtsSession(endpoint=CARTESIA, tier=PRO, now=0.0,
                       dialect=CartesiaDialect(CARTESIA, "wss://c.invalid", "k", context_prefix="t"))
    s.receive_text(cmd(type="init", codec=codec, sample_rate_hz=rate, context_id="c"), 0.0)
    for _ in range(utterances):
        s.receive_text(cmd(type="input_text", text="Hello there."), 0.0)
        s.receive_text(cmd(type="flush"), 0.0)
    return s


def relays(actions) -> list[StartRelay | StopRelay]:
    return [a for a in actions if isinstance(a, (StartRelay, StopRelay))]


def test_the_stream_is_lent_after_the_first_audio_and_taken_back_at_stop():
    s = make()
    epoch = s.upstream_epoch
    (start,) = relays(s.receive_upstream(epoch, bytes(960), 0.1))
    assert isinstance(start, StartRelay) and start.epoch == epoch
    assert s.relaying
    # A message that reaches the session means the data plane handed the stream back.
    (again,) = relays(s.receive_upstream(epoch, bytes(960), 0.2))
    assert isinstance(again, StartRelay) and again.relay is start.relay
    actions = s.receive_text(cmd(type="stop"), 0.3)
    assert isinstance(actions[0], StopRelay) and not s.relaying


def test_no_lending_before_audio_nor_at_the_utterances_end():
    s = make()
    epoch = s.upstream_epoch
    assert relays(s.receive_upstream(epoch, '{"type":"ready","sample_rate":24000}', 0.1)) == []
    s.receive_upstream(epoch, bytes(960), 0.2)
    assert relays(s.receive_upstream(epoch, FLUSHED, 0.3)) == []  # nothing in flight


def test_the_reports_count_as_the_sessions_own_audio():
    s = make()
    epoch = s.upstream_epoch
    s.receive_upstream(epoch, bytes(4800), 0.1)  # 100 ms, the session's own path
    report = start_relay_feed(s, epoch, [bytes(9600)])  # 200 ms through the relay
    s.relayed(epoch, report, 0.5)
    assert s.last_upstream == 0.5
    (end,) = [e for e in client_events(s.receive_upstream(epoch, FLUSHED, 0.6))
              if e["type"] == "audio_end"]
    assert end["total_duration_ms"] == 300
    assert s.usage.audio_ms == 300


def start_relay_feed(s: TtsSession, epoch: int, pcm: list[bytes]):
    assert s.audio is not None
    relay = s.audio.relay(BINARY, 24000)
    upstream, client = native.WsConnection(1 << 22, client=True), native.WsConnection(1 << 22)
    data = b"".join(native.ws_encode_frame(2, p) for p in pcm)
    _, report, _ = relay.feed(upstream, data, client)
    return report


def run(messages: list[str | bytes], codec: str, rate: int, cuts: list[int] | None,
        provider: str = "orpheus", utterances: int | None = None):
    """The client's frames and the audio_end totals; ``cuts`` None: the session sees every
    message, else a data plane as the bridge drives it, reads cut at ``cuts``."""
    s = make(codec, rate, messages.count(FLUSHED) if utterances is None else utterances,
             provider)
    epoch = s.upstream_epoch
    out: list[bytes] = []

    def apply(actions) -> StartRelay | None:
        lent = None
        for a in actions:
            if isinstance(a, SendClient):
                out.append(a.frame if isinstance(a.frame, bytes) else a.frame.encode())
            elif isinstance(a, StartRelay):
                lent = a
            elif isinstance(a, StopRelay):
                lent = None
        return lent

    if cuts is None:
        for m in messages:
            apply(s.receive_upstream(epoch, m, 1.0))
    else:
        upstream = native.WsConnection(1 << 22, client=True)
        client = native.WsConnection(1 << 22)
        data = b"".join(native.ws_encode_frame(2 if isinstance(m, bytes) else 1,
                                               m if isinstance(m, bytes) else m.encode())
                        for m in messages)
        lent, pos = None, 0
        for cut in [*cuts, len(data)]:
            piece, pos = data[pos:pos + cut], pos + cut
            if lent is None:
                events = upstream.receive_data(piece)
            else:
                assert lent.relay.framing == ("binary" if provider == "orpheus" else provider)
                wire, report, handed_back = lent.relay.feed(upstream, piece, client)
                s.relayed(epoch, report, 1.0)
                reader = native.WsConnection(1 << 22, client=True)
                out += [e.data.encode() for e in reader.receive_data(wire)]
                events = upstream.receive_data(b"") if handed_back else []
                if handed_back:
                    lent = None
            for event in events:
                # As the bridge: a message that reaches the session takes the stream back
                # (the session then lends it again, or not); a relay is engaged only from
                # the last message of a read (the transport refuses while it delivers).
                lent = apply(s.receive_upstream(epoch, event.data, 1.0))
    ends = [orjson.loads(f)["total_duration_ms"] for f in out if b'"audio_end"' in f]
    return [f for f in out if b'"audio_chunk"' in f], ends


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=2400).map(lambda b: b[:len(b) // 2 * 2]),
                          st.just(FLUSHED)), max_size=10),
       st.sampled_from(["pcm16", "mulaw", "alaw"]), st.sampled_from([8000, 16000, 24000, 48000]),
       st.lists(st.integers(1, 4000), max_size=6))
def test_the_data_plane_gives_the_client_what_the_session_would(messages, codec, rate, cuts):
    messages = [*messages, FLUSHED]
    chunks, ends = run(messages, codec, rate, cuts)
    expected_chunks, expected_ends = run(messages, codec, rate, None)
    assert chunks == expected_chunks
    assert ends == pytest.approx(expected_ends)


def elevenlabs_message(pcm: bytes, context: str, alignment: bool, final: bool) -> str:
    message: dict = {"audio": base64.b64encode(pcm).decode() if pcm else None,
                     "isFinal": True if final else None, "contextId": context}
    if alignment:
        message["alignment"] = {"chars": ["a", " "], "charStartTimesMs": [0, 10],
                                "charDurationsMs": [10, 10]}
    return orjson.dumps(message).decode()


elevenlabs_messages = st.lists(
    st.tuples(st.binary(max_size=2400), st.sampled_from(["u1", "u1", "u1", "u2", "u3"]),
              st.booleans(), st.integers(0, 9)),
    max_size=10,
).map(lambda items: [elevenlabs_message(pcm, ctx, alignment, final == 0)
                     for pcm, ctx, alignment, final in items]
      + [elevenlabs_message(b"", "u1", False, True), elevenlabs_message(b"", "u2", False, True),
         elevenlabs_message(b"", "u3", False, True)])


@settings(max_examples=60, deadline=None)
@given(elevenlabs_messages, st.sampled_from(["pcm16", "mulaw", "alaw"]),
       st.sampled_from([8000, 16000, 24000, 48000]), st.lists(st.integers(1, 4000), max_size=6))
def test_elevenlabs_json_audio_on_the_data_plane_is_what_the_session_would_send(
        messages, codec, rate, cuts):
    """Three utterances (contexts u1..u3); audio of any length (half samples carried by
    the dialect), alignment, audio of later contexts held until theirs is the oldest."""
    chunks, ends = run(messages, codec, rate, cuts, "elevenlabs", utterances=3)
    expected_chunks, expected_ends = run(messages, codec, rate, None, "elevenlabs", utterances=3)
    assert chunks == expected_chunks
    assert ends == pytest.approx(expected_ends)


def cartesia_message(kind: str, pcm: bytes, context: str) -> str:
    message: dict = {"type": kind, "context_id": context}
    if kind == "chunk":
        message.update(data=base64.b64encode(pcm).decode(), done=False, status_code=206)
    elif kind == "timestamps":
        message["word_timestamps"] = {"words": ["hi"], "start": [0.0], "end": [0.1]}
    return orjson.dumps(message).decode()


cartesia_messages = st.lists(
    st.tuples(st.sampled_from(["chunk", "chunk", "chunk", "timestamps", "done"]),
              st.binary(max_size=2400), st.sampled_from(["t-1", "t-1", "t-2", "t-3"])),
    max_size=12,
).map(lambda items: [cartesia_message(kind, pcm, ctx) for kind, pcm, ctx in items]
      + [cartesia_message("done", b"", c) for c in ("t-1", "t-2", "t-3")])


@settings(max_examples=60, deadline=None)
@given(cartesia_messages, st.sampled_from(["pcm16", "mulaw", "alaw"]),
       st.sampled_from([8000, 16000, 24000, 48000]), st.lists(st.integers(1, 4000), max_size=6))
def test_cartesia_chunks_on_the_data_plane_are_what_the_session_would_send(
        messages, codec, rate, cuts):
    """Three utterances (contexts t-1..t-3): audio of any length, timestamps, done, and
    chunks of later contexts held until theirs is the oldest."""
    chunks, ends = run(messages, codec, rate, cuts, "cartesia", utterances=3)
    expected_chunks, expected_ends = run(messages, codec, rate, None, "cartesia", utterances=3)
    assert chunks == expected_chunks
    assert ends == pytest.approx(expected_ends)


def test_deepgram_is_taken_back_at_stop_and_lent_again_after_cleared():
    """Deepgram's binary frames are audio except between a ``Clear`` and its ``Cleared``
    (the stopped flush's audio, which the dialect swallows): no lending then."""
    from slng_fast.providers.deepgram import DeepgramDialect

    deepgram = ENDPOINTS["deepgram"]
    s = TtsSession(endpoint=deepgram, tier=PRO, now=0.0,
                   dialect=DeepgramDialect(deepgram, "wss://dg.invalid", "k"))
    s.receive_text(cmd(type="input_text", text="Hello there."), 0.0)
    s.receive_text(cmd(type="flush"), 0.0)
    epoch = s.upstream_epoch
    (start,) = relays(s.receive_upstream(epoch, bytes(960), 0.1))
    assert isinstance(start, StartRelay) and start.relay.framing == "binary"
    stop = s.receive_text(cmd(type="stop"), 0.2)
    assert isinstance(stop[0], StopRelay)
    s.receive_text(cmd(type="input_text", text="Again."), 0.3)
    s.receive_text(cmd(type="flush"), 0.3)
    assert relays(s.receive_upstream(epoch, bytes(960), 0.4)) == []  # swallowed: clearing
    s.receive_upstream(epoch, '{"type":"Cleared","sequence_id":0}', 0.5)
    (again,) = relays(s.receive_upstream(epoch, bytes(960), 0.6))
    assert isinstance(again, StartRelay)
