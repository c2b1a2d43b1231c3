"""SphinxRecognizer: PocketSphinx with its endpointer, partial and final results."""

from __future__ import annotations

import pytest
from engine_audio import (
    ROUND_TRIP_MIN_HITS,
    ROUND_TRIP_WORDS,
    frames,
    recognised,
    round_trip_speech,
    silence_16k,
    white_noise_16k,
    words,
)

from slng_fast.engines.espeak import EspeakSynth
from slng_fast.engines.sphinx import RecognizerPool, SphinxRecognizer, Transcript


@pytest.fixture
def recognizer(recognizer_pool: RecognizerPool):
    rec = recognizer_pool.acquire()
    yield rec
    recognizer_pool.release(rec)


@pytest.fixture(scope="module")
def speech(synth: EspeakSynth) -> bytes:
    return round_trip_speech(synth)


def feed_all(rec: SphinxRecognizer, pcm: bytes, size: int = 640) -> list[Transcript]:
    events: list[Transcript] = []
    for frame in frames(pcm, size):
        events.extend(rec.feed(frame))
    return events


def test_speech_gives_partials_then_finals(recognizer: SphinxRecognizer, speech: bytes) -> None:
    events = feed_all(recognizer, speech)
    partials = [e for e in events if not e.is_final]
    finals = [e for e in events if e.is_final]
    assert partials, "partial hypotheses while speaking"
    # One final per sentence (each is surrounded by silence).
    assert len(finals) == 2
    assert all(0.0 <= e.confidence <= 1.0 for e in finals)
    assert all(e.confidence == 0.0 for e in partials)
    # Segments are in order and inside the audio.
    assert 0 < finals[0].start < finals[0].end <= finals[1].start < finals[1].end
    assert finals[1].end <= recognizer.audio_seconds
    # A partial is sent only when its text changed.
    for a, b in zip(events, events[1:]):
        if not a.is_final and not b.is_final:
            assert a.text != b.text
    text = recognizer.finalize()
    assert text == " ".join(e.text for e in finals if e.text)
    assert len(recognised(text)) >= ROUND_TRIP_MIN_HITS, text


def test_finalize_ends_an_open_segment(recognizer: SphinxRecognizer, speech: bytes) -> None:
    # Cut the trailing silence: the second sentence is still "being spoken".
    cut = len(speech) - 2 * 16000 * 5 // 10
    events = feed_all(recognizer, speech[:cut])
    assert sum(e.is_final for e in events) == 1
    assert recognizer.in_segment
    closing = recognizer.end_segment()
    assert len(closing) == 1 and closing[0].is_final
    assert not recognizer.in_segment
    text = recognizer.finalize()
    assert len(recognised(text)) >= ROUND_TRIP_MIN_HITS, text


def test_finalize_twice_and_keep_going(recognizer: SphinxRecognizer, speech: bytes) -> None:
    feed_all(recognizer, speech)
    first = recognizer.finalize()
    assert recognised(first)
    assert recognizer.seconds_since_finalize == 0.0
    assert recognizer.finalize() == ""
    # The session goes on after finalize: new audio belongs to the next one.
    feed_all(recognizer, speech)
    assert recognizer.seconds_since_finalize == pytest.approx(len(speech) / 32000)
    second = recognizer.finalize()
    assert len(recognised(second)) >= ROUND_TRIP_MIN_HITS, second
    assert recognizer.audio_seconds == pytest.approx(2 * len(speech) / 32000)


def test_arbitrary_byte_counts(recognizer: SphinxRecognizer, speech: bytes) -> None:
    """Odd sizes, single bytes and big blocks are buffered to whole frames."""
    events: list[Transcript] = []
    sizes = [1, 3, 641, 17, 5000, 959, 961, 2]
    at = 0
    i = 0
    while at < len(speech):
        n = sizes[i % len(sizes)]
        events.extend(recognizer.feed(speech[at : at + n]))
        at += n
        i += 1
    assert recognizer.audio_seconds == pytest.approx(len(speech) / 32000)
    assert sum(e.is_final for e in events) == 2
    text = recognizer.finalize()
    assert len(recognised(text)) >= ROUND_TRIP_MIN_HITS, text


def test_silence_gives_nothing(recognizer: SphinxRecognizer) -> None:
    assert feed_all(recognizer, silence_16k(3.0)) == []
    assert recognizer.end_segment() == []
    assert recognizer.finalize() == ""


def test_white_noise_gives_no_expected_words(recognizer: SphinxRecognizer) -> None:
    events = feed_all(recognizer, white_noise_16k(3.0))
    events += recognizer.end_segment()
    text = recognizer.finalize()
    assert not (words(text) & ROUND_TRIP_WORDS)
    assert not any(words(e.text) & ROUND_TRIP_WORDS for e in events)


def test_sessions_do_not_leak_into_each_other(recognizer_pool: RecognizerPool, speech: bytes) -> None:
    """A pooled recognizer is reset, its normalisation included."""
    rec = recognizer_pool.acquire()
    feed_all(rec, white_noise_16k(2.0) + speech[: len(speech) // 2])
    recognizer_pool.release(rec)
    again = recognizer_pool.acquire()
    try:
        assert again.audio_seconds == 0.0 and not again.in_segment
        fresh = SphinxRecognizer()
        reused_cmn = again._decoder.get_cmn(False)
        assert reused_cmn == fresh._decoder.get_cmn(False)
    finally:
        recognizer_pool.release(again)


def test_a_recognizer_the_full_pool_does_not_keep_frees_its_model_at_once() -> None:
    """Even while something still holds it (a reference cycle, a worker thread's last
    result): the model is freed when it is released, not when the collector runs."""
    pool = RecognizerPool(max_idle=1)
    kept, dropped = pool.acquire(), pool.acquire()
    pool.release(kept)
    pool.release(dropped)
    assert kept.loaded and not dropped.loaded
    assert pool.acquire() is kept



_RESETS = """
from slng_fast.engines.sphinx import SphinxRecognizer

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

rec = SphinxRecognizer()
for _ in range(200):
    rec.reset()
before = rss_mib()
for _ in range(3000):
    rec.reset()
print(before, rss_mib())
"""


def test_endpointers_are_freed_when_a_recognizer_resets() -> None:
    """Every reset (each session) and finalize makes a new endpointer; the old one is
    freed. The wheel's own Endpointer never frees its C side (about 20 KiB each):
    3,000 resets grew the process by about 60 MiB."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _RESETS], capture_output=True, text=True,
                         timeout=240, check=True).stdout.split()
    before, after = float(out[0]), float(out[1])
    assert after - before < 16, (before, after)
