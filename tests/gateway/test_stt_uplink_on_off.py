"""The STT direction of the data plane over real sockets: the same speech through the
gateway to the Kyutai and WhisperLive emulators (in front of the real PocketSphinx
engine) and to the built-in engine, with the uplink on and with it off (the transport
refuses it, as one without a data plane does). The transcripts, the finals' durations
and the usage are the same; with it on, the data plane carried most of the audio."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from engines.engine_audio import ROUND_TRIP_SENTENCES, speech_16k
from harness import EMULATOR_KEY, make_gateway, start_emulator, start_engines, start_gateway
from slng_fast import _native
from slng_fast.config import Config, ProviderConfig
from slng_fast.engines.espeak import EspeakSynth
from slng_fast.gateway import data_plane
from slng_fast.gateway.native_transport import NativeWebSocketConnection
from slng_fast.protocol.stt import SttSession
from wsclient import connect, recv, recv_until, send

FRAME_MS = 20
PACE = 4.0  # times real time: the client streams, it does not dump its audio at once


@pytest.fixture(scope="module")
def speech() -> bytes:
    return speech_16k(EspeakSynth.shared(), ROUND_TRIP_SENTENCES[1])  # 16 kHz PCM16


@pytest.fixture
def fresh_gateway(nursery, tmp_path):
    """A gateway with engines and emulators of its own: PocketSphinx adapts to what it
    heard (its recogniser is reused from one session to the next), so each run of the
    comparison starts from an engine that has heard nothing."""
    runs = iter(range(100))

    async def start() -> Any:
        data = tmp_path / f"run{next(runs)}"
        data.mkdir()
        urls, info = await start_engines(nursery)
        providers = {name: ProviderConfig(url=await start_emulator(nursery, name, urls),
                                          api_key=EMULATOR_KEY) for name in ("kyutai", "whisper")}
        config = Config(data_dir=data, providers=providers)
        return await start_gateway(nursery, make_gateway(data, urls, info, config=config))

    return start


def same_speech(a: list[dict], b: list[dict]) -> bool:
    """The same words, finals and usage. Where a final segment ends may move with timing
    (the emulator's endpointer hears the audio as it arrives, which a loaded machine
    paces differently): segments are compared joined."""
    def words(events: list[dict]) -> str:
        return " ".join(e["text"] for e in events if e["type"] == "transcript")

    def rest(events: list[dict]) -> list[dict]:
        return [e for e in events if e["type"] != "transcript"]

    return words(a) == words(b) and rest(a) == rest(b)


def count_uplinked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The client audio bytes each report of the data plane's uplink counted."""
    carried: list[int] = []
    uplinked = SttSession.uplinked

    def counting(self: SttSession, epoch: int, report: _native.RelayReport, now: float) -> None:
        carried.append(report.in_bytes)
        uplinked(self, epoch, report, now)

    monkeypatch.setattr(SttSession, "uplinked", counting)
    return carried


def client_audio(speech: bytes, rate: int, codec: str) -> bytes:
    pcm = speech if rate == 16000 else _native.Resampler(16000, rate).process(speech)
    return {"pcm16": pcm, "mulaw": _native.pcm16_to_mulaw(pcm)}[codec]


async def transcribe(gw: Any, nursery: trio.Nursery, provider: str, audio: bytes, rate: int,
                     codec: str, pace: float | None = PACE) -> list[dict]:
    """Start, stream at ``pace`` times real time (None: every frame at once), finalize,
    stop: the events that do not depend on timing (final segments, the final
    transcript, the usage at the end)."""
    ws = await connect(gw.stt(provider), gw.keys["pro"], nursery=nursery)
    await send(ws, type="start", sample_rate=rate, encoding=codec, context_id="stt-uplink")
    assert (await recv(ws))["type"] == "ready"
    frame = rate * (1 if codec == "mulaw" else 2) * FRAME_MS // 1000

    async def stream() -> None:
        for pos in range(0, len(audio), frame):
            await ws.send_message(audio[pos:pos + frame])
            if pace is not None:
                await trio.sleep(FRAME_MS / 1000 / pace)
        await send(ws, type="finalize")

    with trio.fail_after(60):
        async with trio.open_nursery() as streaming:
            streaming.start_soon(stream)
            events = await recv_until(ws, "final_transcript")
        await send(ws, type="stop")
        events += await recv_until(ws, "session_ended")
    await ws.aclose()
    kept = [e for e in events if e["type"] in ("final_transcript", "session_ended")
            or (e["type"] == "transcript" and e["is_final"])]
    for event in kept:
        event.pop("timestamp", None)
        event.get("usage", {}).pop("duration_ms", None)
    return kept


@pytest.mark.parametrize("provider, rate, codec", [
    ("kyutai", 16000, "pcm16"), ("whisper", 8000, "mulaw"), ("pocketsphinx", 48000, "pcm16")])
async def test_transcripts_are_the_same_with_the_uplink_on(fresh_gateway, nursery, speech,
                                                           monkeypatch, provider, rate, codec):
    carried = count_uplinked(monkeypatch)
    lends: list[int] = []
    lend = data_plane.DataPlane.lend
    monkeypatch.setattr(data_plane.DataPlane, "lend",
                        lambda self, *args: lends.append(1) or lend(self, *args))
    audio = client_audio(speech, rate, codec)
    on = await transcribe(await fresh_gateway(), nursery, provider, audio, rate, codec)
    assert sum(carried) > len(audio) // 2, "the data plane carried most of the audio"
    if data_plane._NativePlane is not None:
        assert lends, "the worker's epoll plane carried it"

    carried.clear()
    monkeypatch.setattr(NativeWebSocketConnection, "start_uplink", lambda self, uplink: False)
    off = await transcribe(await fresh_gateway(), nursery, provider, audio, rate, codec)
    assert carried == []
    assert same_speech(on, off)
    width = 1 if codec == "mulaw" else 2
    assert on[-1]["usage"]["audio_ms"] == pytest.approx(len(audio) / width / rate * 1000,
                                                        abs=0.001)
    assert any(e["type"] == "final_transcript" and e["text"] for e in on), on


async def test_a_client_faster_than_the_session_still_gets_the_uplink(fresh_gateway, nursery,
                                                                    speech, monkeypatch):
    """Every frame at once: the session's first frame asks for the uplink while the rest
    of the read waits in the loop, so the bridge holds the client's reads, lets the
    session handle those frames, then starts the uplink (without the hold, a backlog that
    never empties kept every frame on the session's path). The order is kept: the same
    transcript and usage as with the uplink off."""
    carried = count_uplinked(monkeypatch)
    audio = client_audio(speech, 16000, "pcm16")
    on = await transcribe(await fresh_gateway(), nursery, "whisper", audio, 16000, "pcm16",
                          pace=None)
    assert sum(carried) > len(audio) // 2, "the uplink carried most of the burst"
    monkeypatch.setattr(NativeWebSocketConnection, "start_uplink", lambda self, uplink: False)
    off = await transcribe(await fresh_gateway(), nursery, "whisper", audio, 16000, "pcm16",
                           pace=None)
    assert same_speech(on, off)
