"""Provider audio to client audio: resample to the session's rate, encode to its codec,
cut into chunks no larger than the tier allows, wrap as ``audio_chunk`` frames. All the
work is in the native core; this only wires it together per session."""

from __future__ import annotations

import base64
from array import array
from collections.abc import Callable

import orjson

from slng_fast import _native
from slng_fast.protocol.commands import CODEC_SAMPLE_WIDTH, STT_SAMPLE_RATES, TTS_SAMPLE_RATES
from slng_fast.vocabulary import RelayFraming

# A seam between two providers' audio in one utterance: the first ramps down to silence
# and the second fades in over this long, so the jump between them makes no click.
SEAM_MS = 5.0

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
                 context_id: str, seams: bool = True) -> None:
        """``seams``: the session may change providers mid-utterance (a fallback chain),
        so the last frame is kept for `seam`'s ramp (else a frame held per session)."""
        self.codec = codec
        self._seams = seams
        self.sample_rate = sample_rate
        self._max_chunk_bytes = max_chunk_bytes
        self._context_id = context_id
        self._bytes_per_ms = sample_rate * CODEC_SAMPLE_WIDTH[codec] / 1000.0
        self._relay = self._new_relay(sample_rate, "pcm16", 0)
        self._last_frame: bytes | None = None  # the last frame made here (for a seam's ramp)
        self._fade_left: int | None = None  # input samples of a fade-in still to apply
        self._fade_len = 0

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
        if self._fade_left is not None:
            data = self._fade_in(data, rate, sample_format)
        frames, made = relay.push(data)
        if frames and self._seams:
            self._last_frame = frames[-1]
        return frames, made / self._bytes_per_ms

    def credit(self, nbytes: int) -> float:
        """The milliseconds in ``nbytes`` of client audio."""
        return nbytes / self._bytes_per_ms

    def end_utterance(self) -> tuple[list[bytes], float]:
        """Emit what the resampler holds back at the end of an utterance."""
        frames, made = self._relay.end_utterance()
        return frames, made / self._bytes_per_ms

    def seam(self) -> tuple[list[bytes], float]:
        """The provider changes mid-utterance: what the resampler holds, then a ramp from
        the last sample sent down to silence; the next provider's audio fades in (and
        gets a resampler of its own). Frames and milliseconds, as `push`. (A session with
        a fallback chain keeps its audio off the data plane, so its last frame is here.)"""
        frames, made = self._relay.end_utterance()
        last = _last_sample(frames[-1] if frames else self._last_frame, self.codec)
        n = max(1, int(self.sample_rate * SEAM_MS / 1000))
        ramp = array("h", (last * (n - 1 - i) // n for i in range(n))).tobytes()
        self._relay = self._new_relay(self.sample_rate, "pcm16", self._relay.next_sequence)
        more, made_more = self._relay.push(ramp)
        self._fade_left, self._fade_len = -1, 0  # sized at the next provider's first audio
        return frames + more, (made + made_more) / self._bytes_per_ms

    def forget_source(self) -> None:
        """The provider changes between utterances: nothing of the old one is pending."""
        self._relay.drop_audio()

    def _fade_in(self, data: bytes, rate: int, sample_format: str) -> bytes:
        """The next provider's first `SEAM_MS` of audio, faded in from silence."""
        if self._fade_left == -1:
            self._fade_left = self._fade_len = max(1, int(rate * SEAM_MS / 1000))
        assert self._fade_left is not None
        width = 4 if sample_format == "f32" else 2
        done = self._fade_len - self._fade_left
        if width == 4:
            floats = array("f", data[: len(data) - len(data) % 4])
            count = min(self._fade_left, len(floats))
            for i in range(count):
                floats[i] = floats[i] * (done + i) / self._fade_len
            samples: array[float] | array[int] = floats
        else:
            ints = array("h", data[: len(data) - len(data) % 2])
            count = min(self._fade_left, len(ints))
            for i in range(count):
                ints[i] = ints[i] * (done + i) // self._fade_len
            samples = ints
        self._fade_left -= count
        if self._fade_left == 0:
            self._fade_left = None
        return samples.tobytes() + data[len(samples) * width:]

    def drop(self) -> None:
        """Forget audio in flight (after stop)."""
        self._relay.drop_audio()


def _last_sample(frame: bytes | None, codec: str) -> int:
    """The last sample (as PCM16) of an ``audio_chunk`` frame, 0 without one."""
    if not frame:
        return 0
    data = base64.b64decode(orjson.loads(frame)["data"])
    decode = _DECODERS[codec]
    pcm = decode(data) if decode is not None else data
    return int.from_bytes(pcm[-2:], "little", signed=True) if len(pcm) >= 2 else 0


class AudioIn:
    """Client audio (any supported rate and codec) to what a speech model wants. Its state
    (decoder, resampler, and the provider's framing for the data plane) is one native
    `AudioUplink`, which the session may lend to the data plane (`uplink`): both planes
    then run the same conversion on the same state. What was received is counted in
    bytes, so the seconds are the same however the messages were batched."""

    def __init__(self, *, codec: str, sample_rate: int, model_rate: int,
                 model_format: str = "pcm16", framing: str = "binary",
                 max_message_bytes: int = 4 * 1024 * 1024) -> None:
        self.uplink = _native.AudioUplink(
            codec=codec, sample_rate=sample_rate, model_rate=model_rate,
            model_format=model_format, framing=framing, max_message_bytes=max_message_bytes)
        self._bytes_per_second = CODEC_SAMPLE_WIDTH[codec] * sample_rate
        self.received_bytes = 0

    @property
    def received_seconds(self) -> float:
        return self.received_bytes / self._bytes_per_second

    def push(self, data: bytes) -> bytes:
        self.received_bytes += len(data)
        return self.uplink.push(data)

    def credit(self, nbytes: int) -> None:
        """``nbytes`` of client audio went through the data plane."""
        self.received_bytes += nbytes

    def flush(self) -> bytes:
        return self.uplink.flush()
