"""Provider audio to client audio: resample to the session's rate, encode to its codec,
cut into chunks no larger than the tier allows, wrap as ``audio_chunk`` frames. All the
work is in the native core; this only wires it together per session."""

from __future__ import annotations

from array import array
from collections.abc import Callable

from slng_fast import _native
from slng_fast.protocol.commands import CODEC_SAMPLE_WIDTH, STT_SAMPLE_RATES, TTS_SAMPLE_RATES

# A seam between two providers' audio in one utterance: the first ramps down to silence
# and the second fades in over this long, so the jump between them makes no click.
SEAM_MS = 5.0

_ENCODERS: dict[str, Callable[[bytes], bytes] | None] = {
    "pcm16": None,
    "mulaw": _native.pcm16_to_mulaw,
    "alaw": _native.pcm16_to_alaw,
}
_DECODERS: dict[str, Callable[[bytes], bytes] | None] = {
    "pcm16": None,
    "mulaw": _native.mulaw_to_pcm16,
    "alaw": _native.alaw_to_pcm16,
}


def prewarm_resamplers() -> int:
    """Design the filters of every rate pair a session can ask for, once per process.

    The native core designs a pair's minimum-phase filters on first use (up to tens of
    milliseconds) and caches them; a serving process calls this in a worker thread at start
    so that no session's first conversion stalls the event loop. Returns the pairs built."""
    rates = sorted(set(TTS_SAMPLE_RATES) | set(STT_SAMPLE_RATES))
    pairs = [(a, b) for a in rates for b in rates if a != b]
    for a, b in pairs:
        _native.Resampler(a, b)
    return len(pairs)


class AudioOut:
    """Turns provider PCM into client frames for one TTS session."""

    def __init__(self, *, codec: str, sample_rate: int, max_chunk_bytes: int,
                 context_id: str) -> None:
        self.codec = codec
        self.sample_rate = sample_rate
        self._encode = _ENCODERS[codec]
        width = CODEC_SAMPLE_WIDTH[codec]
        self._bytes_per_ms = sample_rate * width / 1000.0
        self._chunker = _native.AudioChunker(max_chunk_bytes, width, sample_rate, context_id)
        self._resampler: _native.Resampler | None = None
        self._source: tuple[int, str] | None = None
        self._last = 0  # the last PCM16 sample converted (for a seam's ramp)
        self._fade_left = 0  # samples of a fade-in still to apply after a seam
        self._fade_len = 0

    def _resampler_for(self, rate: int, sample_format: str) -> _native.Resampler:
        if self._resampler is None or self._source != (rate, sample_format):
            self._resampler = _native.Resampler(rate, self.sample_rate, sample_format, "pcm16")
            self._source = (rate, sample_format)
        return self._resampler

    def push(self, data: bytes, rate: int, sample_format: str = "pcm16") -> tuple[list[bytes], float]:
        """Frames for this piece of provider audio, and the milliseconds they carry."""
        if rate == self.sample_rate and sample_format == "pcm16" and self._resampler is None:
            return self._frames(data)  # already what the client asked for: no copy
        pcm = self._resampler_for(rate, sample_format).process(data)
        return self._frames(pcm)

    def relay_chunker(self, rate: int) -> _native.AudioChunker | None:
        """The chunker, when audio at ``rate`` (PCM16) needs only cutting and wrapping:
        the client takes PCM16 at that rate and no resampler holds audio back."""
        if self._encode is None and rate == self.sample_rate and self._resampler is None:
            return self._chunker
        return None

    def credit(self, nbytes: int) -> float:
        """The milliseconds in ``nbytes`` of client audio sent without `push`."""
        return nbytes / self._bytes_per_ms

    def end_utterance(self) -> tuple[list[bytes], float]:
        """Emit what the resampler holds back at the end of an utterance."""
        frames: list[bytes] = []
        ms = 0.0
        if self._resampler is not None:
            frames, ms = self._frames(self._resampler.flush())
        self._chunker.flush()  # an odd byte left over belongs to no sample
        return frames, ms

    def seam(self) -> tuple[list[bytes], float]:
        """The provider changes mid-utterance: what the resampler holds, then a ramp from
        the last sample sent down to silence; the next provider's audio fades in (and
        gets a resampler of its own). Frames and milliseconds, as `push`."""
        pcm = self._resampler.flush() if self._resampler is not None else b""
        self._resampler = None
        self._source = None
        last = int.from_bytes(pcm[-2:], "little", signed=True) if len(pcm) >= 2 else self._last
        n = max(1, int(self.sample_rate * SEAM_MS / 1000))
        ramp = array("h", (last * (n - 1 - i) // n for i in range(n))).tobytes()
        frames = self._frames(pcm + ramp)
        self._fade_left = self._fade_len = n
        return frames

    def forget_source(self) -> None:
        """The provider changes between utterances: nothing of the old one is pending."""
        self._resampler = None
        self._source = None

    def drop(self) -> None:
        """Forget audio in flight (after stop)."""
        if self._resampler is not None:
            self._resampler.reset()
        self._chunker.flush()

    def _frames(self, pcm: bytes) -> tuple[list[bytes], float]:
        if not pcm:
            return [], 0.0
        if self._fade_left:
            pcm = self._fade_in(pcm)
        if len(pcm) >= 2:
            self._last = int.from_bytes(pcm[-2:], "little", signed=True)
        data = self._encode(pcm) if self._encode else pcm
        return self._chunker.push_frames(data), len(data) / self._bytes_per_ms


    def _fade_in(self, pcm: bytes) -> bytes:
        samples = array("h", pcm[: len(pcm) - len(pcm) % 2])
        n, done = self._fade_len, self._fade_len - self._fade_left
        count = min(self._fade_left, len(samples))
        for i in range(count):
            samples[i] = samples[i] * (done + i) // n
        self._fade_left -= count
        return samples.tobytes() + pcm[len(samples) * 2:]


class AudioIn:
    """Client audio (any supported rate and codec) to what a speech model wants."""

    def __init__(self, *, codec: str, sample_rate: int, model_rate: int,
                 model_format: str = "pcm16") -> None:
        self._decode = _DECODERS[codec]
        self._width = CODEC_SAMPLE_WIDTH[codec]
        self._resampler = _native.Resampler(sample_rate, model_rate, "pcm16", model_format)
        self._rate = sample_rate
        self.received_seconds = 0.0

    def push(self, data: bytes) -> bytes:
        self.received_seconds += len(data) / self._width / self._rate
        if self._decode is not None:
            data = self._decode(data)
        return self._resampler.process(data)

    def flush(self) -> bytes:
        return self._resampler.flush()
