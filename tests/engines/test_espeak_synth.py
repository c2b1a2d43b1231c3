"""EspeakSynth: real eSpeak NG voices and audio, through ctypes."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from engine_audio import (
    ROUND_TRIP_MIN_HITS,
    frames,
    recognised,
    round_trip_speech,
    synthesize,
)

from slng_fast.engines.espeak import EspeakSynth, VoiceError
from slng_fast.engines.sphinx import SphinxRecognizer


def test_shared_instance_and_rate(synth: EspeakSynth) -> None:
    assert EspeakSynth.shared() is synth
    assert synth.sample_rate == 22050
    assert synth.version
    with pytest.raises(TypeError):
        EspeakSynth()


def test_voices_are_the_real_list(synth: EspeakSynth) -> None:
    voices = synth.voices()
    assert len(voices) > 50
    by_id = {v.id: v for v in voices}
    assert by_id["en-us"].identifier == "gmw/en-US"
    assert by_id["en-us"].name == "English (America)"
    assert "en" in by_id["en-us"].languages
    assert by_id["de"].languages[0] == "de"
    assert len(by_id) == len(voices), "voice ids are unique"
    assert all(v.to_json()["languages"] for v in voices)
    assert {"en", "en-us", "en-gb", "de", "fr", "es"} <= set(synth.languages())
    variants = {v.id for v in synth.variants()}
    assert {"f3", "m3", "klatt"} <= variants


@pytest.mark.parametrize(
    ("voice", "language", "expected"),
    [
        (None, None, "gmw/en-US"),
        ("en-us", None, "gmw/en-US"),
        ("EN-US", None, "gmw/en-US"),
        ("gmw/en-US", None, "gmw/en-US"),
        ("English (America)", None, "gmw/en-US"),
        ("en", None, "gmw/en"),
        ("zh", None, "sit/cmn"),
        ("es-mx", None, "roa/es-419"),
        ("en-us+f3", None, "gmw/en-US+f3"),
        ("de+Alicia", None, "gmw/de+Alicia"),
        ("en+alicia", None, "gmw/en+Alicia"),
        ("f3", None, "gmw/en-US+f3"),
        ("f3", "fr", "roa/fr+f3"),
        ("+klatt", "de", "gmw/de+klatt"),
        (None, "de", "gmw/de"),
        (None, "de-AT", "gmw/de"),
        (None, "en_US", "gmw/en-US"),
        ("de", "en", "gmw/de"),
    ],
)
def test_voice_mapping(
    synth: EspeakSynth, voice: str | None, language: str | None, expected: str
) -> None:
    assert synth.resolve_voice(voice, language).espeak_name == expected


@pytest.mark.parametrize(
    ("voice", "language"),
    [("klingon-x", None), ("en+nobody", None), ("en-us+", None), (None, "xx"), ("en", "xx"), ("+", None)],
)
def test_invalid_voice_is_a_clear_error(
    synth: EspeakSynth, voice: str | None, language: str | None
) -> None:
    with pytest.raises(VoiceError) as info:
        synth.resolve_voice(voice, language)
    assert str(info.value)
    with pytest.raises(VoiceError):
        synth.synthesize("hello", voice=voice, language=language)


@pytest.mark.parametrize("rate", [10, 1000, "fast", True])
def test_invalid_rate(synth: EspeakSynth, rate: object) -> None:
    with pytest.raises(VoiceError):
        synth.synthesize("hello", rate=rate)  # type: ignore[arg-type]


def test_streams_plausible_speech_in_small_pieces(synth: EspeakSynth) -> None:
    pieces: list[bytes] = []
    result = synth.synthesize("Hello world, this is a test.", on_audio=pieces.append)
    assert not result.cancelled
    audio = b"".join(pieces)
    assert result.samples * 2 == len(audio)
    seconds = len(audio) / 2 / synth.sample_rate
    assert 1.0 < seconds < 4.0
    # Streamed as eSpeak works, not in one block at the end.
    assert len(pieces) > 10
    assert len(pieces[0]) <= 0.1 * synth.sample_rate * 2
    assert all(len(p) % 2 == 0 for p in pieces)
    x = np.frombuffer(audio, dtype="<i2").astype(np.float64)
    assert np.sqrt(np.mean(x**2)) > 500, "not silence"


def test_rate_changes_duration(synth: EspeakSynth) -> None:
    text = "The rate setting makes this sentence shorter or longer."
    slow = len(synthesize(synth, text, rate=100))
    fast = len(synthesize(synth, text, rate=350))
    assert fast < slow * 0.6


def test_empty_text_gives_no_audio(synth: EspeakSynth) -> None:
    pieces: list[bytes] = []
    result = synth.synthesize("  \n", on_audio=pieces.append)
    assert pieces == [] and result.samples == 0 and not result.cancelled


def test_round_trip_through_pocketsphinx(synth: EspeakSynth) -> None:
    """eSpeak speech, resampled to 16 kHz, is recognised: it is speech, not noise."""
    recognizer = SphinxRecognizer()
    for frame in frames(round_trip_speech(synth)):
        recognizer.feed(frame)
    text = recognizer.finalize()
    assert len(recognised(text)) >= ROUND_TRIP_MIN_HITS, text


def test_cancel_event_stops_midway(synth: EspeakSynth) -> None:
    text = "This sentence is repeated to make a long text. " * 40
    cancel = threading.Event()
    pieces: list[bytes] = []

    def on_audio(pcm: bytes) -> None:
        pieces.append(pcm)
        if len(pieces) == 3:
            cancel.set()

    clean = len(synthesize(synth, "Hello."))
    result = synth.synthesize(text, on_audio=on_audio, cancel=cancel)
    assert result.cancelled
    assert len(pieces) == 3
    # The next synthesis starts clean: nothing of the aborted text leaks into it.
    # (eSpeak's output varies by a few samples from call to call.)
    again = synthesize(synth, "Hello.")
    assert abs(len(again) - clean) < 0.1 * clean


def test_cancel_before_start_speaks_nothing(synth: EspeakSynth) -> None:
    cancel = threading.Event()
    cancel.set()
    pieces: list[bytes] = []
    result = synth.synthesize("Hello there.", on_audio=pieces.append, cancel=cancel)
    assert result.cancelled and pieces == []


def test_on_audio_true_stops_and_exceptions_propagate(synth: EspeakSynth) -> None:
    count = 0

    def stop_after_two(pcm: bytes) -> bool:
        nonlocal count
        count += 1
        return count >= 2

    result = synth.synthesize("A fairly long sentence to speak here. " * 10, on_audio=stop_after_two)
    assert result.cancelled and count == 2

    def boom(pcm: bytes) -> None:
        raise RuntimeError("sink failed")

    with pytest.raises(RuntimeError, match="sink failed"):
        synth.synthesize("Hello world.", on_audio=boom)
    assert not synth.busy


def test_cancel_method_stops_the_running_synthesis(synth: EspeakSynth) -> None:
    started = threading.Event()
    pieces: list[bytes] = []

    def on_audio(pcm: bytes) -> None:
        pieces.append(pcm)
        if len(pieces) == 2:
            started.set()
            synth.cancel()

    result = synth.synthesize("Words and more words. " * 40, on_audio=on_audio)
    assert started.is_set() and result.cancelled and len(pieces) == 2
    synth.cancel()  # nothing running: no effect on the next call
    assert not synth.synthesize("Hello.", on_audio=lambda _: None).cancelled


def test_threads_are_serialised(synth: EspeakSynth) -> None:
    """Concurrent callers each get their own complete audio, one after the other."""
    order: list[int] = []
    audio: dict[int, list[bytes]] = {i: [] for i in range(4)}

    def worker(i: int) -> None:
        def on_audio(pcm: bytes) -> None:
            order.append(i)
            audio[i].append(pcm)

        synth.synthesize(f"Thread number {i} is speaking now.", on_audio=on_audio)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Each caller's pieces form one contiguous run: no interleaving.
    runs = [order[0]] + [b for a, b in zip(order, order[1:]) if a != b]
    assert sorted(runs) == [0, 1, 2, 3]
    for pieces in audio.values():
        seconds = sum(map(len, pieces)) / 2 / synth.sample_rate
        assert 1.0 < seconds < 5.0
