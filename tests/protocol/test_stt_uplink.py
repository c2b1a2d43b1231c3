"""The STT session's side of the data plane boundary, without sockets: when it lends the
client's audio (`StartUplink`), when it takes it back (`StopUplink`), how the data
plane's reports count, and, for the same client stream, that a session whose steady
state runs through `AudioUplink.feed` sends the provider the same messages, answers with
the same final durations and counts the same usage as one that sees every frame
(hypothesis: every framing, codec, rate and cut of the reads)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from helpers import PRO, client_events, cmd, upstream_frames
from hypothesis import given, settings
from hypothesis import strategies as st

from slng_fast import _native as native
from slng_fast.protocol.actions import Action, StartUplink, StopUplink
from slng_fast.protocol.fallback import Failover
from slng_fast.protocol.realtime_session import RealtimeSttSession
from slng_fast.protocol.stt import SttSession
from slng_fast.providers.kyutai import SILENCE_FRAME, KyutaiDialect
from slng_fast.providers.registry import ENDPOINTS
from slng_fast.providers.unified import UnifiedSttDialect
from slng_fast.providers.whisper import WhisperDialect
from slng_fast.vocabulary import SttDialect

SPHINX = ENDPOINTS["pocketsphinx"]


def dialect(name: str) -> SttDialect:
    if name == "kyutai":
        return KyutaiDialect(ENDPOINTS["kyutai"], "ws://k.invalid")
    if name == "whisper":
        return WhisperDialect(ENDPOINTS["whisper"], "ws://w.invalid")
    return UnifiedSttDialect(SPHINX, "ws://sphinx.invalid/")


def make(name: str = "pocketsphinx", codec: str = "pcm16", rate: int = 16000) -> SttSession:
    endpoint = ENDPOINTS[name if name != "pocketsphinx" else "pocketsphinx"]
    s = SttSession(endpoint=endpoint, dialect=dialect(name), tier=PRO, now=0.0)
    s.receive_text(cmd(type="start", sample_rate=rate, encoding=codec, context_id="c"), 0.0)
    return s


def uplinks(actions: list[Action]) -> list[StartUplink | StopUplink]:
    return [a for a in actions if isinstance(a, (StartUplink, StopUplink))]


def test_the_audio_is_lent_after_a_frame_and_taken_back_at_finalize():
    s = make()
    (start,) = uplinks(s.receive_binary(bytes(640), 0.1))
    assert isinstance(start, StartUplink) and start.epoch == s.upstream_epoch
    assert start.uplink is s.audio.uplink and s.uplinking
    # A frame that reaches the session means the data plane handed the audio back.
    stop, again = uplinks(s.receive_binary(bytes(640), 0.2))
    assert isinstance(stop, StopUplink) and isinstance(again, StartUplink)
    actions = s.receive_text(cmd(type="finalize"), 0.3)
    assert isinstance(actions[0], StopUplink) and not s.uplinking
    assert upstream_frames(actions) == ['{"type":"finalize"}']
    # Not while the finalize waits (its answer may need the session), again after it.
    assert uplinks(s.receive_binary(bytes(640), 0.4)) == []
    final = orjson.dumps({"type": "final_transcript", "text": "x"}).decode()
    s.receive_upstream(s.upstream_epoch, final, 0.5)
    assert isinstance(uplinks(s.receive_binary(bytes(640), 0.6))[0], StartUplink)
    (stop,) = uplinks(s.end("client_closed", 0.7))
    assert isinstance(stop, StopUplink)


def test_no_lending_with_a_fallback_chain_nor_in_openai_realtime_nor_native_mode():
    def resolve(name):
        return ENDPOINTS[name], dialect(name)

    chained = SttSession(endpoint=SPHINX, dialect=dialect("pocketsphinx"), tier=PRO, now=0.0)
    chained.failover = Failover(resolve, replay_s=10.0)
    chained.receive_text(cmd(type="start", sample_rate=16000, fallback=["whisper"]), 0.0)
    assert uplinks(chained.receive_binary(bytes(640), 0.1)) == []  # its replay keeps audio

    realtime = RealtimeSttSession.__new__(RealtimeSttSession)
    assert realtime.binary_audio is False  # its audio is base64 in JSON appends

    native_mode = SttSession(endpoint=ENDPOINTS["kyutai"], dialect=dialect("kyutai"), tier=PRO,
                             now=0.0)
    assert uplinks(native_mode.receive_binary(SILENCE_FRAME, 0.1)) == []
    assert native_mode.mode == "native"


def test_a_frame_over_the_limit_still_ends_the_session():
    s = make()
    s.receive_binary(bytes(640), 0.1)
    actions = s.receive_binary(bytes(PRO.max_audio_chunk_bytes + 2), 0.2)
    assert [type(a) for a in uplinks(actions)] == [StopUplink]
    assert [e["type"] for e in client_events(actions)] == ["error", "session_ended"]


def test_reports_count_as_the_sessions_own_audio():
    s = make("whisper", "mulaw", 8000)
    s.receive_binary(bytes(800), 0.1)  # 100 ms, the session's own path
    before = s.dialect.sent_bytes
    report = feed(s, [bytes(1600)], 0.2)  # 200 ms through the data plane
    assert report.messages == 1 and report.out_bytes == s.dialect.sent_bytes - before > 0
    assert s.usage.audio_ms == pytest.approx(300.0)
    assert s.audio.received_seconds == pytest.approx(0.3)
    # A report for an older upstream counts nothing.
    s.uplinked(s.upstream_epoch - 1, report, 0.3)
    assert s.usage.audio_ms == pytest.approx(300.0)


def test_kyutai_keepalive_takes_the_held_audio_back_and_lends_again():
    s = make("kyutai", "pcm16", 24000)
    s.receive_binary(bytes(1000), 0.1)  # 500 samples: held, nothing sent
    assert s.audio.uplink.held == bytes(2000) and not s.dialect._held
    feed(s, [bytes(1000)], 0.2)  # 500 more, held by the data plane
    actions = s.keepalive(5.0)
    stop, *_, start = actions
    assert isinstance(stop, StopUplink) and isinstance(start, StartUplink)
    # Nothing went up since the last keepalive: the held audio, padded, then silence.
    frames = upstream_frames(actions)
    assert len(frames) == 2 and frames[1] == SILENCE_FRAME
    pcm = native.msgpack_decode(frames[0])["pcm"]
    assert len(pcm) == 1920 and pcm[:1000] == [0.0] * 1000


def feed(s: SttSession, messages: list[bytes], now: float,
         cuts: list[int] | None = None) -> native.RelayReport:
    """Run the client's messages through the uplink the session lent, as the transport
    does, reporting each read; returns the last report."""
    client, upstream = native.WsConnection(1 << 22), native.WsConnection(1 << 22, client=True)
    data = b"".join(native.ws_encode_frame(2, m, True, b"\x01\x02\x03\x04") for m in messages)
    report = None
    for piece in _pieces(data, cuts or []):
        _, report, _ = s.audio.uplink.feed(client, piece, upstream)
        s.uplinked(s.upstream_epoch, report, now)
    assert report is not None
    return report


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    pieces, pos = [], 0
    for cut in [*cuts, len(data)]:
        pieces.append(data[pos:pos + cut])
        pos += cut
    return pieces


# -- the same stream on both paths ------------------------------------------------------

def _reads(data: bytes, sizes: list[int]) -> list[bytes]:
    """`data` as socket reads of these sizes, in turn (one read without any)."""
    if not sizes:
        return [data]
    reads, pos, i = [], 0, 0
    while pos < len(data):
        reads.append(data[pos:pos + sizes[i % len(sizes)]])
        pos += sizes[i % len(sizes)]
        i += 1
    return reads


def run(name: str, codec: str, rate: int, script: list[tuple[str, bytes]], cuts: list[int],
        lend: bool) -> tuple[list[bytes], list[float], float]:
    """The session handles `script` (audio frames and finalizes; the provider answers
    each finalize at once), lending its audio whenever it asks (``lend``) or never.
    Returns the audio messages sent upstream, the final durations and the usage."""
    s = make(name, codec, rate)
    sent: list[bytes] = []
    durations: list[float] = []
    client, upstream = native.WsConnection(1 << 22), native.WsConnection(1 << 22, client=True)
    lent = False

    def carry(actions: list[Action]) -> None:
        nonlocal lent
        for a in actions:
            if isinstance(a, StartUplink):
                lent = lend
            elif isinstance(a, StopUplink):
                lent = False
        sent.extend(f for f in upstream_frames(actions) if isinstance(f, bytes))
        durations.extend(e["audio_duration_seconds"] for e in client_events(actions)
                         if e["type"] == "final_transcript")

    queued: list[bytes] = []  # client frames of the current burst (one "read" per cut)

    def flush_burst() -> None:
        nonlocal lent
        if not queued:
            return
        data = b"".join(native.ws_encode_frame(2, m, True, b"\x01\x02\x03\x04") for m in queued)
        queued.clear()
        for piece in _reads(data, cuts):
            if lent:
                wire, report, handed_back = s.audio.uplink.feed(client, piece, upstream)
                s.uplinked(s.upstream_epoch, report, 1.0)
                sent.extend(e.data for e in native.WsConnection(1 << 24).receive_data(wire))
                events = client.receive_data(b"") if handed_back else []
                lent = lent and not handed_back
            else:
                events = client.receive_data(piece)
            for event in events:
                assert isinstance(event, native.BinaryMessage)
                carry(s.receive_binary(event.data, 1.0))

    for kind, payload in script:
        if kind == "audio":
            queued.append(payload)
            continue
        flush_burst()
        carry(s.receive_text(cmd(type="finalize"), 1.0))
        carry(answer_finalize(s))
    flush_burst()
    return sent, durations, s.usage.audio_ms


def answer_finalize(s: SttSession) -> list[Action]:
    """The provider's answer to the finalize just sent, in its own dialect."""
    d = s.dialect
    if isinstance(d, KyutaiDialect):
        marker = native.msgpack_encode({"type": "Marker", "id": d._markers[-1]})
        return s.receive_upstream(s.upstream_epoch, marker, 1.0)
    if isinstance(d, WhisperDialect):
        return s.on_deadline(1e9)
    final = orjson.dumps({"type": "final_transcript", "text": ""}).decode()
    return s.receive_upstream(s.upstream_epoch, final, 1.0)


# Client frames of any length up to 1500 bytes (noise: hypothesis's own binaries are short).
frame = st.tuples(st.integers(0, 1500), st.integers(0, 2**32 - 1)).map(
    lambda n_seed: np.random.default_rng(n_seed[1]).bytes(n_seed[0]))
step = st.one_of(*[st.tuples(st.just("audio"), frame)] * 5,
                 st.tuples(st.just("finalize"), st.just(b"")))


@settings(max_examples=120, deadline=None)
@given(st.lists(step, max_size=16), st.sampled_from(["pocketsphinx", "whisper", "kyutai"]),
       st.sampled_from(["pcm16", "mulaw", "alaw"]), st.sampled_from([8000, 16000, 44100, 48000]),
       st.lists(st.integers(1, 400), max_size=4))
def test_the_same_stream_on_both_paths(script, name, codec, rate, cuts):
    on = run(name, codec, rate, script, cuts, lend=True)
    off = run(name, codec, rate, script, cuts, lend=False)
    assert on[0] == off[0]
    assert on[1] == pytest.approx(off[1], abs=1e-9)
    assert on[2] == pytest.approx(off[2], abs=1e-9)
