"""Provider audio to client audio: resample to the session's rate, encode to its codec,
cut into chunks no larger than the tier allows, wrap as ``audio_chunk`` frames. All the
work is in the native core; this only wires it together per session."""

from __future__ import annotations

from collections.abc import Callable

from slng_fast import _native
from slng_fast.protocol.commands import CODEC_SAMPLE_WIDTH, STT_SAMPLE_RATES, TTS_SAMPLE_RATES

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

    def drop(self) -> None:
        """Forget audio in flight (after stop)."""
        if self._resampler is not None:
            self._resampler.reset()
        self._chunker.flush()

    def _frames(self, pcm: bytes) -> tuple[list[bytes], float]:
        if not pcm:
            return [], 0.0
        data = self._encode(pcm) if self._encode else pcm
        return self._chunker.push_frames(data), len(data) / self._bytes_per_ms


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
