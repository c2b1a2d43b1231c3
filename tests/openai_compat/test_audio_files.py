"""Speech encoded piece by piece reads back whole with libsndfile, and streams (bytes
before the end) in every format but FLAC; uploads decode to PCM16 mono at a rate the
STT session takes."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile

from slng_fast.openai_compat.audio_files import (
    AudioTooLong,
    SpeechEncoder,
    UnreadableAudio,
    decode_upload,
    speech_rate,
)

RATE = 22050


def tone(seconds: float, rate: int = RATE) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()


@pytest.mark.parametrize("fmt", ["pcm", "wav", "mp3", "opus", "flac"])
def test_speech_encoded_in_pieces_reads_back(fmt):
    rate = speech_rate(fmt, RATE)
    assert rate == (24000 if fmt == "opus" else RATE)
    pcm = tone(2.0, rate)
    encoder = SpeechEncoder(fmt, rate)
    pieces = [encoder.push(pcm[i:i + 4001]) for i in range(0, len(pcm), 4001)]  # odd cuts
    pieces.append(encoder.finish())
    data = b"".join(pieces)
    if fmt == "pcm":
        assert data == pcm
        return
    before_end = sum(len(p) for p in pieces[:-1])
    assert (before_end > 0) == (fmt != "flac")  # FLAC's header needs the length: at the end
    decoded, decoded_rate, seconds = decode_upload(data)
    assert decoded_rate == rate
    # MP3 adds its encoder delay; Opus's pre-skip is trimmed by the decoder.
    assert 1.95 <= seconds <= 2.1
    if fmt in ("wav", "flac"):
        assert decoded == pcm  # lossless


def test_uploads_at_any_rate_and_channel_count():
    stereo = np.stack([np.frombuffer(tone(1.0, 11000), "<i2")] * 2, axis=1)
    out = io.BytesIO()
    soundfile.write(out, stereo, 11000, format="WAV", subtype="PCM_16")
    pcm, rate, seconds = decode_upload(out.getvalue())
    assert rate == 16000 and len(pcm) == 2 * 16000 and seconds == pytest.approx(1.0)
    out = io.BytesIO()
    soundfile.write(out, np.frombuffer(tone(0.5, 8000), "<i2"), 8000, format="WAV",
                    subtype="PCM_16")
    pcm, rate, _ = decode_upload(out.getvalue())
    assert rate == 8000 and pcm == tone(0.5, 8000)


def test_an_upload_that_is_not_audio_is_refused():
    with pytest.raises(UnreadableAudio):
        decode_upload(b"this is not audio at all" * 10)


def test_an_upload_is_decoded_only_up_to_the_longest_allowed():
    encoder = SpeechEncoder("mp3", 8000)
    mp3 = encoder.push(bytes(2 * 8000 * 60)) + encoder.finish()  # a minute of silence
    assert len(mp3) < 2 * 8000 * 60 / 3  # a compressed minute
    with pytest.raises(AudioTooLong):
        decode_upload(mp3, max_seconds=10)
    assert decode_upload(mp3, max_seconds=70)[2] > 59
