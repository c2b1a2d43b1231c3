"""Every STT provider of the gateway, fed faster than real time: speech sent as fast as the
socket takes it in 20 ms frames, a second of silence, then ``finalize``. The
``final_transcript`` must hold the words: a finalize covers all the audio sent before it,
however fast it came (file transcription sends as fast as it can).

The providers: the built-in PocketSphinx engine (the unified dialect), Kyutai and
WhisperLive through their emulators (which hear with the same engine)."""

from __future__ import annotations

import pytest
import trio

from engines.engine_audio import (
    ROUND_TRIP_MIN_HITS,
    recognised,
    round_trip_speech,
    silence_16k,
)
from harness import EMULATOR_KEY, make_gateway, start_emulator, start_gateway
from slng_fast import _native
from slng_fast.config import ProviderConfig
from slng_fast.engines.espeak import EspeakSynth
from wsclient import connect, recv, recv_until, send

# Kyutai's audio is resampled twice more (to its 24 kHz float and back): one word less, as
# in test_kyutai_e2e.py.
MIN_HITS = {"pocketsphinx": ROUND_TRIP_MIN_HITS, "kyutai": ROUND_TRIP_MIN_HITS - 1,
            "whisper": ROUND_TRIP_MIN_HITS}


@pytest.fixture(scope="module")
def speech() -> bytes:
    """The round-trip sentences (about 4 s at 16 kHz PCM16), then a second of silence."""
    return round_trip_speech(EspeakSynth.shared()) + silence_16k(1.0)


@pytest.fixture
async def gateway(nursery, tmp_path, engines):
    urls, info = engines
    providers = {name: ProviderConfig(url=await start_emulator(nursery, name, urls),
                                      api_key=EMULATOR_KEY)
                 for name in ("kyutai", "whisper")}
    return await start_gateway(nursery, make_gateway(tmp_path, urls, info, providers=providers))


def at_rate(pcm16k: bytes, rate: int) -> bytes:
    if rate == 16000:
        return pcm16k
    resampler = _native.Resampler(16000, rate)
    return resampler.process(pcm16k) + resampler.flush()


async def transcribe_fast(gateway, nursery, model: str, rate: int, pcm16k: bytes) -> dict:
    """Start, the audio as fast as the socket takes it in 20 ms frames, finalize: the
    ``final_transcript``, checked against the segments and the audio sent."""
    ws = await connect(gateway.stt(model), gateway.keys["pro"], nursery=nursery)
    await send(ws, type="start", sample_rate=rate, encoding="pcm16", language="en")
    assert (await recv(ws))["type"] == "ready"
    audio = at_rate(pcm16k, rate)
    frame = rate * 2 // 50  # 20 ms of PCM16
    for pos in range(0, len(audio), frame):
        await ws.send_message(audio[pos:pos + frame])
    await send(ws, type="finalize")
    with trio.fail_after(60):  # only a hang hits this: the answer never came
        events = await recv_until(ws, "final_transcript")
    assert not [e for e in events if e["type"] == "error"], events
    final = events[-1]
    finals = [e["text"] for e in events if e["type"] == "transcript" and e["is_final"]]
    assert final["text"] == " ".join(t for t in finals if t), events
    assert final["audio_duration_seconds"] == pytest.approx(len(audio) / 2 / rate, abs=0.01)
    await ws.aclose()
    return final


@pytest.mark.parametrize("rate", [16000, 24000])
@pytest.mark.parametrize("model", ["pocketsphinx", "kyutai", "whisper"])
async def test_finalize_covers_audio_sent_faster_than_real_time(gateway, nursery, speech,
                                                                model, rate):
    final = await transcribe_fast(gateway, nursery, model, rate, speech)
    assert len(recognised(final["text"])) >= MIN_HITS[model], (model, rate, final)


@pytest.mark.parametrize("model", ["pocketsphinx", "kyutai", "whisper"])
async def test_finalize_after_a_long_silence_sent_fast(gateway, nursery, speech, model):
    """Speech ending long before the finalize: no update from a WhisperLive server, which
    sends nothing for silence, can tell that it has heard everything, so the answer waits
    for the time a real-time server would need (the dialect's deadline)."""
    final = await transcribe_fast(gateway, nursery, model, 16000, speech + silence_16k(2.5))
    assert len(recognised(final["text"])) >= MIN_HITS[model], (model, final)
