"""Audio helpers for the engine tests: real eSpeak speech, resampled for PocketSphinx."""

from __future__ import annotations

import numpy as np

from slng_fast.engines.espeak import EspeakSynth

# Speech that PocketSphinx's default model reliably recognises from eSpeak's
# synthetic voice, even from a fresh decoder: each sentence is its own segment
# (half a second of silence around it). eSpeak's output varies by a few samples
# from call to call and recognition of its voice is imperfect, so the tests
# require most, not all, of the expected words.
ROUND_TRIP_VOICE = "en-us"
ROUND_TRIP_SENTENCES = ("Please open the door.", "one two three four five")
ROUND_TRIP_WORDS = {"opened", "door", "two", "three", "four", "five"}
ROUND_TRIP_MIN_HITS = 4
# Speech that went through the gateway's TTS path (resampled, chunked) before being heard:
# eSpeak's output and PocketSphinx's hypotheses wobble from run to run around the threshold,
# so these round trips ask for half the words, which noise, silence or garbled audio never give.
SYNTHESIS_ROUND_TRIP_MIN_HITS = 3


def synthesize(synth: EspeakSynth, text: str, **kwargs: object) -> bytes:
    pieces: list[bytes] = []
    synth.synthesize(text, on_audio=pieces.append, **kwargs)  # type: ignore[arg-type]
    return b"".join(pieces)


def to_16k(pcm: bytes, rate: int = 22050) -> bytes:
    """Resample PCM16 mono to 16 kHz by linear interpolation (good enough for a test)."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    n = int(round(len(x) * 16000 / rate))
    y = np.interp(np.arange(n) * (rate / 16000), np.arange(len(x)), x)
    return np.clip(np.round(y), -32768, 32767).astype("<i2").tobytes()


def silence_16k(seconds: float) -> bytes:
    return bytes(2 * int(16000 * seconds))


def white_noise_16k(seconds: float, *, seed: int = 7, level: float = 3000.0) -> bytes:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(int(16000 * seconds)) * level
    return np.clip(noise, -32768, 32767).astype("<i2").tobytes()


# Each text's first rendering in the process, kept: eSpeak's output drifts with what it
# said before (a few samples; the same from a fresh start), so what a test hears would
# otherwise depend on which tests ran before it, and how many utterances their healthy
# neighbours happened to speak. `tests/conftest.py` renders the round-trip sentences
# before any test, so the whole suite hears what a test run alone hears.
_FIRST_RENDERING: dict[tuple[int, str, str], bytes] = {}


def speech_16k(synth: EspeakSynth, text: str, voice: str = ROUND_TRIP_VOICE) -> bytes:
    """Synthesized speech at 16 kHz with half a second of silence on both sides."""
    key = (id(synth), text, voice)
    if key not in _FIRST_RENDERING:
        pad = silence_16k(0.5)
        _FIRST_RENDERING[key] = pad + to_16k(synthesize(synth, text, voice=voice),
                                             synth.sample_rate) + pad
    return _FIRST_RENDERING[key]


def round_trip_speech(synth: EspeakSynth) -> bytes:
    return b"".join(speech_16k(synth, text) for text in ROUND_TRIP_SENTENCES)


def recognised(text: str) -> set[str]:
    """The expected round-trip words found in ``text``."""
    return ROUND_TRIP_WORDS & words(text)


def words(text: str) -> set[str]:
    return set(text.lower().split())


def frames(pcm: bytes, size: int = 640) -> list[bytes]:
    """Cut audio into frames of ``size`` bytes (640 = 20 ms at 16 kHz)."""
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]
