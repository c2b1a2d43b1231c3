"""Provider audio to client audio: resample to the session's rate, encode to its codec,
cut into chunks no larger than the tier allows, wrap as ``audio_chunk`` frames. All the
work is in the native core; this only wires it together per session."""

from __future__ import annotations

from collections.abc import Callable

from slng_fast import _native
from slng_fast.protocol.commands import CODEC_SAMPLE_WIDTH, STT_SAMPLE_RATES, TTS_SAMPLE_RATES
from slng_fast.vocabulary import RelayFraming

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
    """Turns provider audio into client frames for one TTS session. Its state (resampler,
    encoder, chunker, sequence) is one native `AudioRelay`, which the session may lend to
    the data plane (`relay`): both planes then run the same conversion on the same state."""

    def __init__(self, *, codec: str, sample_rate: int, max_chunk_bytes: int,
                 context_id: str) -> None:
        self.codec = codec
        self.sample_rate = sample_rate
        self._max_chunk_bytes = max_chunk_bytes
        self._context_id = context_id
        self._bytes_per_ms = sample_rate * CODEC_SAMPLE_WIDTH[codec] / 1000.0
        self._relay = self._new_relay(sample_rate, "pcm16", 0)

    def _new_relay(self, rate: int, sample_format: str, next_sequence: int) -> _native.AudioRelay:
        return _native.AudioRelay(
            codec=self.codec, sample_rate=self.sample_rate,
            max_chunk_bytes=self._max_chunk_bytes, context_id=self._context_id,
            in_rate=rate, in_format=sample_format, next_sequence=next_sequence)

    def relay(self, framing: RelayFraming, rate: int,
              sample_format: str = "pcm16") -> _native.AudioRelay:
        """The state for provider audio of this rate and format, owning messages of this
        framing: the current one, or a new one that goes on with its sequence (the
        provider's format changed)."""
        relay = self._relay
        if (relay.in_rate, relay.in_format) != (rate, sample_format):
            relay = self._relay = self._new_relay(rate, sample_format, relay.next_sequence)
        relay.set_framing(framing.name, framing.context_id)
        return relay

    def push(self, data: bytes, rate: int, sample_format: str = "pcm16") -> tuple[list[bytes], float]:
        """Frames for this piece of provider audio, and the milliseconds they carry."""
        relay = self._relay
        if (relay.in_rate, relay.in_format) != (rate, sample_format):
            relay = self._relay = self._new_relay(rate, sample_format, relay.next_sequence)
        frames, made = relay.push(data)
        return frames, made / self._bytes_per_ms

    def credit(self, nbytes: int) -> float:
        """The milliseconds in ``nbytes`` of client audio."""
        return nbytes / self._bytes_per_ms

    def end_utterance(self) -> tuple[list[bytes], float]:
        """Emit what the resampler holds back at the end of an utterance."""
        frames, made = self._relay.end_utterance()
        return frames, made / self._bytes_per_ms

    def drop(self) -> None:
        """Forget audio in flight (after stop)."""
        self._relay.drop_audio()


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
