"""The SLNG-hosted model family (orpheus, orpheus-indic, kokoro, cosyvoice, chatterbox,
xtts) end to end: a client speaks to the gateway, the gateway to the SLNG model-server
emulator (one server, the model chosen by the path), the emulator to the real espeak
engine. What the emulator received is read from ``slng_fast.emulators.slng.RECORDS``."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import orjson
import pytest

from engines.engine_audio import ROUND_TRIP_SENTENCES, SYNTHESIS_ROUND_TRIP_MIN_HITS, recognised
from harness import EMULATOR_KEY, Running, make_gateway, start_emulator, start_gateway
from slng_fast.config import ProviderConfig
from slng_fast.emulators import slng
from wsclient import connect, recv, recv_until, send

FAMILY = {
    "orpheus": ("tara", "luna", "stella", "athena", "hera"),
    "orpheus-indic": ("kanak",),
    "kokoro": ("af", "af_bella", "af_sky", "am_adam"),
    "cosyvoice": ("emma",),
    "chatterbox": ("nova", "echo", "sky", "zara", "max"),
    "xtts": ("Claribel Dervla",),
}
LONG_TEXT = "This is a rather long sentence. " * 60  # under the pro tier's 2,000 characters


@dataclass
class Family:
    gw: Running
    port: int  # the emulator's

    def records(self) -> list[slng.SessionRecord]:
        return slng.RECORDS[self.port]

    def last(self, model: str) -> slng.SessionRecord:
        return [r for r in self.records() if r.model == model][-1]


@pytest.fixture
async def family(nursery, tmp_path, engines) -> Family:
    urls, info = engines
    base = await start_emulator(nursery, "slng", urls, api_key=EMULATOR_KEY)
    providers = {name: ProviderConfig(url=f"{base}/{name}", api_key=EMULATOR_KEY)
                 for name in FAMILY}
    gw = await start_gateway(nursery, make_gateway(tmp_path, urls, info, providers=providers))
    return Family(gw, int(base.rsplit(":", 1)[1]))


async def open_session(family: Family, nursery, model: str, **init):
    ws = await connect(family.gw.tts(model), family.gw.keys["pro"], nursery=nursery)
    await send(ws, type="init", **init)
    ready = await recv(ws)
    assert ready["type"] == "ready", ready
    return ws, ready


async def utterance(ws, text: str) -> tuple[list[dict], bytes]:
    await send(ws, type="input_text", text=text)
    await send(ws, type="flush")
    events = await recv_until(ws, "audio_end")
    audio = b"".join(base64.b64decode(e["data"]) for e in events if e["type"] == "audio_chunk")
    return events, audio


def check_utterance(events: list[dict], audio: bytes, rate: int, utterance_id: int) -> None:
    *chunks, end = events
    assert chunks and all(c["type"] == "audio_chunk" for c in chunks), events
    assert end["id"] == utterance_id and end["interrupted"] is False
    seconds = len(audio) / 2 / rate
    assert 0.3 < seconds < 10
    assert end["total_duration_ms"] == pytest.approx(seconds * 1000, abs=1)
    assert sum(c["duration_ms"] for c in chunks) == pytest.approx(seconds * 1000, abs=1)


@pytest.mark.parametrize("model", sorted(FAMILY))
async def test_every_voice_speaks_through_the_gateway(family, nursery, model):
    for voice in FAMILY[model]:
        ws, ready = await open_session(family, nursery, model, voice_id=voice)
        assert ready["session"]["provider"] == model
        assert ready["session"]["voice_id"] == voice
        assert ready["capabilities"]["voices"] == list(FAMILY[model])
        assert ready["capabilities"]["supports_stop"] is True
        events, audio = await utterance(ws, "Hello world")
        check_utterance(events, audio, 24000, 1)
        assert {e["type"] for e in events} == {"audio_chunk", "audio_end"}  # one audio_end
        await ws.aclose()
        record = family.last(model)
        assert record.settings[0]["voice"] == voice
        assert record.flushed_texts == ["Hello world"]


async def test_orpheus_indic_languages(family, nursery):
    ws, ready = await open_session(family, nursery, "orpheus-indic", voice_id="kanak",
                                   language="hi")
    assert ready["session"]["voice_id"] == "kanak"
    assert ready["capabilities"]["languages"] == list(slng.INDIC_LANGUAGES)
    events, audio = await utterance(ws, "namaste")
    check_utterance(events, audio, 24000, 1)
    assert family.last("orpheus-indic").settings[0] == {"voice": "kanak", "language": "hi"}
    # a language the model does not speak: a non-fatal error, the session goes on
    await send(ws, type="configure", language="fr")
    error = await recv(ws)
    assert error["type"] == "error" and error["code"] == "invalid_parameter"
    events, audio = await utterance(ws, "dhanyavaad")
    check_utterance(events, audio, 24000, 2)
    await ws.aclose()


async def test_orpheus_indic_refuses_an_unknown_language_at_init(family, nursery):
    ws = await connect(family.gw.tts("orpheus-indic"), family.gw.keys["pro"], nursery=nursery)
    await send(ws, type="init", voice_id="kanak", language="fr")
    error = await recv(ws)
    assert error["type"] == "error" and error["code"] == "invalid_parameter"
    assert error["retryable"] is False
    await send(ws, type="ping")  # the session stays
    assert (await recv(ws))["type"] == "pong"
    await send(ws, type="init", voice_id="kanak", language="ta")
    assert (await recv(ws))["type"] == "ready"
    events, audio = await utterance(ws, "vanakkam")
    check_utterance(events, audio, 24000, 1)
    assert family.last("orpheus-indic").settings[0]["language"] == "ta"
    await ws.aclose()


async def test_cosyvoice_22050_is_converted_to_the_clients_rate(family, nursery):
    durations = {}
    for rate in (24000, 22050, 16000):
        ws, ready = await open_session(family, nursery, "cosyvoice", sample_rate_hz=rate)
        assert ready["session"]["sample_rate_hz"] == rate
        events, audio = await utterance(ws, "one two three four five")
        check_utterance(events, audio, rate, 1)
        durations[rate] = len(audio) / 2 / rate
        await ws.aclose()
    # the same speech at every rate: the duration is kept (eSpeak varies by a few samples)
    assert durations[24000] == pytest.approx(durations[22050], rel=0.02)
    assert durations[16000] == pytest.approx(durations[22050], rel=0.02)


@pytest.mark.parametrize("model", sorted(FAMILY))
async def test_stop_mid_utterance_reconnects(family, nursery, model):
    """The public servers ignore stop: the gateway closes the upstream and opens a new
    one with the same settings. The utterance ends interrupted, nothing of it comes
    late, and the next utterance is spoken on the new connection."""
    voice = FAMILY[model][-1]
    before = len(family.records())
    ws, _ = await open_session(family, nursery, model, voice_id=voice, max_tokens=6144)
    await send(ws, type="input_text", text=LONG_TEXT)
    await send(ws, type="flush")
    first = await recv(ws)
    assert first["type"] == "audio_chunk"
    await send(ws, type="stop")
    events = await recv_until(ws, "audio_end")
    assert events[-1]["interrupted"] is True and events[-1]["id"] == 1
    await send(ws, type="ping")  # no late audio: the next event answers the ping
    assert (await recv(ws))["type"] == "pong"
    events, audio = await utterance(ws, "again")
    check_utterance(events, audio, 24000, 2)
    await ws.aclose()
    records = family.records()[before:]
    assert len(records) == 2  # the stopped connection and the new one
    stopped, fresh = records
    assert "stop" not in stopped.controls  # the gateway stops by closing, not by asking
    assert fresh.settings == stopped.settings
    assert fresh.settings[0]["voice"] == voice and fresh.settings[0]["max_tokens"] == 6144
    assert fresh.flushed_texts == ["again"]


async def test_configure_changes_the_voice(family, nursery):
    ws, ready = await open_session(family, nursery, "chatterbox", voice_id="nova")
    assert ready["capabilities"]["configure_reconnects"] is True
    events, audio = await utterance(ws, "Hello there")
    check_utterance(events, audio, 24000, 1)
    assert family.last("chatterbox").settings[0]["voice"] == "nova"
    await send(ws, type="configure", voice_id="zara")
    events, audio = await utterance(ws, "Hello there")
    check_utterance(events, audio, 24000, 2)
    assert family.last("chatterbox").settings[0]["voice"] == "zara"
    # a voice of another model is refused, the session goes on with zara
    await send(ws, type="configure", voice_id="tara")
    error = await recv(ws)
    assert error["type"] == "error" and error["code"] == "invalid_parameter"
    events, audio = await utterance(ws, "still here")
    check_utterance(events, audio, 24000, 3)
    assert family.last("chatterbox").settings[0]["voice"] == "zara"
    await ws.aclose()


@pytest.mark.parametrize("model", sorted(FAMILY))
async def test_extras_reach_the_model_server(family, nursery, model):
    extras = {"buffer_size": 10, "max_tokens": 6144, "repetition_penalty": 1.3,
              "temperature": 0.7, "top_p": 0.9}
    ws, _ = await open_session(family, nursery, model, voice_id=FAMILY[model][0], **extras)
    events, audio = await utterance(ws, "Hello world")
    check_utterance(events, audio, 24000, 1)
    await ws.aclose()
    settings = family.last(model).settings
    assert len(settings) == 1
    assert {k: settings[0][k] for k in extras} == extras
    assert settings[0]["voice"] == FAMILY[model][0]


async def test_native_frames_relay_unchanged(family, nursery):
    """The documents' Orpheus native format: plain text and a control flush; the
    server's own frames come back as they are."""
    ws = await connect(family.gw.tts("orpheus", "?voice=tara"), family.gw.keys["pro"],
                       nursery=nursery)
    await ws.send_message("Hello world")
    await ws.send_message(orjson.dumps({"type": "control", "action": "flush"}).decode())
    assert orjson.loads(await ws.get_message()) == {"type": "ready", "sample_rate": 24000}
    audio = 0
    while True:
        message = await ws.get_message()
        if isinstance(message, bytes):
            audio += len(message)
            continue
        assert orjson.loads(message) == {"type": "flushed"}
        break
    assert audio / 2 / 24000 > 0.3
    await ws.aclose()
    record = family.last("orpheus")
    assert record.query == {"voice": "tara"}
    assert record.settings == [] and record.flushed_texts == ["Hello world"]
    assert record.controls == ["flush"]


async def test_streamed_audio_takes_the_native_relay(family, nursery, monkeypatch):
    """Once an utterance's first chunk is out, its PCM goes through the data plane
    (`AudioRelay.feed`, checked byte for byte against the session's path in
    tests/native/test_ws_relay.py; on the worker's epoll plane here, both ends being
    plain sockets): the chunks keep their sequence, the utterance's duration counts
    the relayed audio, and the speech still round-trips
    (test_orpheus_speech_round_trips_through_pocketsphinx)."""
    from slng_fast.protocol.tts import TtsSession

    relayed: list[int] = []
    counted = TtsSession.relayed

    def counting(self, epoch, report, now):
        relayed.append(report.in_bytes)
        return counted(self, epoch, report, now)

    monkeypatch.setattr(TtsSession, "relayed", counting)
    ws, _ = await open_session(family, nursery, "orpheus", voice_id="tara")
    sequences: list[int] = []
    for utterance_id in (1, 2):  # the second starts on the session path again
        relayed.clear()
        events, audio = await utterance(ws, LONG_TEXT[:128])  # about 7 s of speech
        assert sum(relayed) > len(audio) // 2, "most of the audio should take the relay"
        sequences += [e["sequence"] for e in events if e["type"] == "audio_chunk"]
        check_utterance(events, audio, 24000, utterance_id)
    assert sequences == list(range(len(sequences)))  # one count for the session
    await ws.aclose()


async def transcribe(gw: Running, nursery, pcm16k: bytes) -> str:
    ws = await connect(gw.stt(), gw.keys["pro"], nursery=nursery)
    await send(ws, type="start", sample_rate=16000, encoding="pcm16")
    assert (await recv(ws))["type"] == "ready"
    for pos in range(0, len(pcm16k), 640):
        await ws.send_message(pcm16k[pos:pos + 640])
    await send(ws, type="finalize")
    events = await recv_until(ws, "final_transcript")
    await ws.aclose()
    return events[-1]["text"]


async def test_orpheus_speech_round_trips_through_pocketsphinx(family, nursery):
    """Orpheus (tara) at 16 kHz through the gateway, heard by the gateway's PocketSphinx
    endpoint: it would fail on silence, noise or garbled resampling."""
    pad = bytes(16000)  # 0.5 s at 16 kHz PCM16
    heard = []
    # eSpeak's output and PocketSphinx's hypotheses wobble around the threshold under load
    # (seen in CI: 2 of 6 words once); a second synthesis may make up for the first, and
    # silence, noise or garbled audio never reach it twice.
    for _attempt in range(2):
        speech = b""
        for sentence in ROUND_TRIP_SENTENCES:
            ws, ready = await open_session(family, nursery, "orpheus", voice_id="tara",
                                           sample_rate_hz=16000)
            assert ready["session"]["sample_rate_hz"] == 16000
            events, audio = await utterance(ws, sentence)
            check_utterance(events, audio, 16000, 1)
            await ws.aclose()
            speech += pad + audio + pad
        heard.append(await transcribe(family.gw, nursery, speech))
        if len(recognised(heard[-1])) >= SYNTHESIS_ROUND_TRIP_MIN_HITS:
            break
    assert len(recognised(heard[-1])) >= SYNTHESIS_ROUND_TRIP_MIN_HITS, heard
