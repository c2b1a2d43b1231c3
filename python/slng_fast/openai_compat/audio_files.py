"""Audio files for the OpenAI-compatible routes: speech encoded as it is made (PCM16
mono in, file bytes out, piece by piece), and uploaded files decoded to PCM16 mono.

Compressed formats come from libsndfile, bundled in the `soundfile` wheel: FLAC,
Ogg/Opus and MP3 (LAME and mpg123 inside it) encode here; AAC does not (no
wheel-installable encoder), so ``aac`` is refused. Uploads may be anything libsndfile
reads (WAV at any rate, FLAC, Ogg Vorbis and Opus, MP3, AIFF, ...)."""

from __future__ import annotations

import io
import struct

import numpy as np
import soundfile

CONTENT_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg; codecs=opus", "flac": "audio/flac",
                 "wav": "audio/wav", "pcm": "audio/pcm"}
# (libsndfile major format, subtype) of each compressed format.
_SNDFILE = {"mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS"), "flac": ("FLAC", "PCM_16")}
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
# Rates the STT session takes as they are; an upload at another rate is resampled to 16 kHz.
STT_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
STT_FALLBACK_RATE = 16000


class UnreadableAudio(ValueError):
    """An upload that is not audio libsndfile can read."""


class AudioTooLong(ValueError):
    """An upload longer than the caller allows (found while decoding: a few MB of a
    compressed format may hold hours, which are not decoded)."""

    def __init__(self, max_seconds: float) -> None:
        super().__init__(f"the audio is longer than {max_seconds:g} s")
        self.max_seconds = max_seconds


def speech_rate(response_format: str, model_rate: int) -> int:
    """The rate to ask the session for: the model's own, except where the format cannot
    carry it (Opus: 8, 12, 16, 24 or 48 kHz)."""
    if response_format == "opus" and model_rate not in OPUS_RATES:
        return 24000
    return model_rate


def wav_header(sample_rate: int) -> bytes:
    """A PCM16 mono WAV header for a stream of unknown length (sizes 0xFFFFFFFF, as
    OpenAI's streamed WAV)."""
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"fmt "
            + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", 0xFFFFFFFF))


class SpeechEncoder:
    """PCM16 mono in, the bytes of a ``response_format`` file out as they are ready."""

    def __init__(self, response_format: str, sample_rate: int) -> None:
        self.format = response_format
        self.sample_rate = sample_rate
        self._started = False
        self._odd = b""  # half a sample carried to the next push
        self._sink: io.BytesIO | None = None
        self._file: soundfile.SoundFile | None = None
        self._sent = 0
        if response_format in _SNDFILE:
            major, subtype = _SNDFILE[response_format]
            self._sink = io.BytesIO()
            options = {"bitrate_mode": "CONSTANT", "compression_level": 0.5} \
                if response_format == "mp3" else {}
            self._file = soundfile.SoundFile(self._sink, "w", sample_rate, 1, subtype,
                                             format=major, **options)
        # MP3: libsndfile's first frame is a placeholder for the Xing/LAME header,
        # filled in on close by seeking back; a stream leaves it out (and is constant
        # bit rate, so a decoder's length estimate holds without that header).
        self._skip_placeholder = response_format == "mp3"

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]

    def push(self, pcm: bytes) -> bytes:
        pcm = self._odd + pcm
        cut = len(pcm) - len(pcm) % 2
        pcm, self._odd = pcm[:cut], pcm[cut:]
        if self._file is None:
            head = b""
            if self.format == "wav" and not self._started:
                head = wav_header(self.sample_rate)
            self._started = True
            return head + pcm
        if pcm:
            self._file.write(np.frombuffer(pcm, dtype="<i2"))
        # FLAC's header holds the stream's length, which libsndfile writes on close by
        # seeking back (a FLAC sent before that does not read back with libsndfile):
        # it goes out whole at the end.
        return b"" if self.format == "flac" else self._take()

    def finish(self) -> bytes:
        if self._file is None:
            return b"" if self._started or self.format != "wav" else wav_header(self.sample_rate)
        self._file.close()
        return self._take()

    def _take(self) -> bytes:
        assert self._sink is not None
        data = self._sink.getbuffer()[self._sent:].tobytes()
        if self._skip_placeholder:
            following = data.find(data[:2], 4) if len(data) > 4 else -1
            if following < 0:
                return b""  # not past the placeholder yet
            self._skip_placeholder = False
            self._sent += following
            data = data[following:]
        self._sent += len(data)
        return data


def decode_upload(data: bytes, max_seconds: float = float("inf")
                  ) -> tuple[bytes, int, float]:
    """(PCM16 mono, its rate, seconds) of an uploaded file; channels are averaged, a
    rate the STT session does not take is resampled to 16 kHz (soxr). `AudioTooLong`
    as soon as more than ``max_seconds`` have been decoded."""
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as file:
            rate = file.samplerate
            blocks = []  # by blocks: a stream of unknown length says it is 2**63 frames
            frames = 0
            while len(block := file.read(65536, dtype="float32", always_2d=True)):
                frames += len(block)
                if frames > max_seconds * rate:
                    raise AudioTooLong(max_seconds)
                blocks.append(block)
        samples = np.concatenate(blocks) if blocks else np.zeros((0, 1), "float32")
    except AudioTooLong:
        raise
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise UnreadableAudio(f"not an audio file this gateway reads ({exc})") from None
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if rate not in STT_RATES:
        import soxr

        mono = soxr.resample(mono, rate, STT_FALLBACK_RATE)
        rate = STT_FALLBACK_RATE
    pcm = (np.clip(mono, -1.0, 1.0 - 1 / 32768) * 32768).astype("<i2").tobytes()
    return pcm, int(rate), len(mono) / rate


def readable_formats() -> list[str]:
    """The containers uploads may be in (libsndfile's list, as this build has it)."""
    return sorted(soundfile.available_formats())
