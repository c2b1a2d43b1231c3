"""Kyutai STT (moshi-server's ``/api/asr-streaming``, PROTOCOL.md section 8).

Binary MessagePack frames both ways, encoded and decoded in the native core. In:
``{"type":"Audio","pcm":[float32 at 24 kHz]}`` and ``{"type":"Marker","id":n}``. Out:
``Ready``, ``Word {text,start_time}``, ``EndWord {stop_time}``, ``Step {step_idx, prs,
buffered_pcm}`` (one per 80 ms model step), ``Marker {id}`` (echoed once all the audio
sent before it has been transcribed), ``Error {message}``.

Decisions:

* **Audio** goes upstream in frames of exactly 1920 samples (80 ms, one model step);
  up to one frame's worth is held back until the next call (or ``finalize``).
* **Finalize** has no native form. The held-back remainder is sent padded with
  silence, then a ``Marker`` and :data:`PRIME_FRAMES` frames of silence; then every
  ``Step`` that arrives while a marker is outstanding is answered with one more frame
  of silence (``Reply``), so silence keeps flowing, one frame per step processed,
  however long the model's delay is (0.5 s for ``stt-1b``, 2.5 s for ``stt-2.6b``)
  and with no timer. The returning ``Marker`` gives the one ``FinalTranscript``.
* **Transcripts**: each ``Word`` makes a partial ``transcript`` holding the segment
  so far. A segment becomes final (``is_final: true``, said once, never repeated) at
  a pause: when :data:`PAUSE_STEPS` model steps pass without a ``Word``/``EndWord``
  (counted in steps, not wall time), or when a ``Word`` starts that long after the
  previous word ended (by the words' own timestamps; it then opens the next
  segment); and when a marker comes back. The
  ``FinalTranscript`` holds the final segments since the previous one.
* **Keep-alive**: one frame of silence (moshi-server drops a socket it hears nothing
  from for long; silence is harmless to the transcript), but only when nothing was
  sent upstream since the previous ``keepalive()`` call: silence never cuts into
  audio that is flowing. Audio still held back is sent first, padded to a frame.
* Text frames and MessagePack that does not decode are ignored (moshi-server sends
  neither); a ``Marker`` with an id this dialect did not send is ignored.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from slng_fast import _native
from slng_fast.vocabulary import (
    Endpoint,
    FinalTranscript,
    Frame,
    Ignored,
    Reply,
    SttDialect,
    Transcript,
    UpstreamError,
    UpstreamEvent,
    UpstreamReady,
    UpstreamRequest,
)

PATH = "/api/asr-streaming"
API_KEY_HEADER = "kyutai-api-key"
SAMPLE_RATE = 24000
FRAME_SAMPLES: int = _native.KYUTAI_FRAME_SAMPLES  # 80 ms at 24 kHz
FRAME_BYTES = FRAME_SAMPLES * 4  # float32
PRIME_FRAMES = 8
"""Silence frames sent right after a Marker (640 ms: more than ``stt-1b``'s delay);
the answers to ``Step``s carry on from there."""
PAUSE_STEPS = 12
"""Model steps (80 ms each, so about 1 s) without a new word that end a segment."""
PAUSE_SECONDS = PAUSE_STEPS * FRAME_SAMPLES / SAMPLE_RATE

SILENCE_FRAME: bytes = _native.kyutai_audio_frame(bytes(FRAME_BYTES))


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def upstream_url(base: str) -> str:
    """``base`` (``ws://host:8080``) with the asr-streaming path, unless it has it."""
    base = base.rstrip("/")
    return base if base.endswith(PATH) else base + PATH


class KyutaiDialect(SttDialect):
    model_rate = SAMPLE_RATE
    model_format = "f32"
    keepalive_interval: float | None = 5.0

    def __init__(self, endpoint: Endpoint, url: str, api_key: str | None = None) -> None:
        self.endpoint = endpoint
        self.url = url
        self.api_key = api_key
        self._held = bytearray()  # float32 audio short of a whole frame
        self._next_marker = 0
        self._markers: deque[int] = deque()  # sent, not yet back
        self._segment: list[str] = []  # words of the open segment
        self._finals: list[str] = []  # final segments since the last FinalTranscript
        self._steps = 0  # Steps seen
        self._last_word_step = 0  # self._steps at the last Word/EndWord
        self._last_word_time: float | None = None  # audio seconds the last word ended
        self._sent_since_keepalive = False

    def is_native_frame(self, frame: bytes) -> bool:
        """Whether a client's first binary frame is a moshi-server message (a
        MessagePack map with a string ``type``, such as ``Audio`` or ``Marker``) rather
        than raw audio: such a client speaks Kyutai's own protocol (native mode)."""
        if not frame or not 0x80 <= frame[0] <= 0x8F and frame[0] not in (0xDE, 0xDF):
            return False
        try:
            msg = _native.msgpack_decode(frame)
        except ValueError:
            return False
        return isinstance(msg, dict) and isinstance(msg.get("type"), str)

    def native_audio_ms(self, frame: bytes) -> float:
        """Milliseconds of audio in a client's native frame (an ``Audio`` message of
        24 kHz samples); 0 for anything else. For usage counting in native mode."""
        try:
            msg = _native.msgpack_decode(frame)
        except ValueError:
            return 0.0
        if isinstance(msg, dict) and msg.get("type") == "Audio":
            pcm = msg.get("pcm")
            if isinstance(pcm, list):
                return len(pcm) * 1000.0 / SAMPLE_RATE
        return 0.0

    # ---- the data plane ---------------------------------------------------------------
    @property
    def uplink_framing(self) -> str | None:
        return "kyutai"

    def lend_held(self) -> bytes:
        held = bytes(self._held)
        self._held.clear()
        return held

    def take_held(self, held: bytes) -> None:
        self._held[:] = held

    def uplinked(self, nbytes: int, frames: int, now: float) -> None:
        if frames:
            self._sent_since_keepalive = True

    # ---- to the upstream -------------------------------------------------------------
    def request(self) -> UpstreamRequest:
        headers: tuple[tuple[str, str], ...] = ()
        if self.api_key:
            headers = ((API_KEY_HEADER, self.api_key),)
        return UpstreamRequest(url=upstream_url(self.url), headers=headers)

    def open_frames(self, language: str | None, extras: dict[str, Any]) -> list[Frame]:
        return []  # moshi-server takes no settings message: audio starts at once

    def audio(self, pcm: bytes, now: float) -> list[Frame]:
        self._held += pcm
        whole = len(self._held) - len(self._held) % FRAME_BYTES
        if whole == 0:
            return []
        self._sent_since_keepalive = True
        view = memoryview(self._held)
        frames: list[Frame] = [_native.kyutai_audio_frame(bytes(view[i : i + FRAME_BYTES]))
                               for i in range(0, whole, FRAME_BYTES)]
        view.release()
        del self._held[:whole]
        return frames

    def _flush_held(self) -> list[Frame]:
        """The held-back audio as one frame, padded with silence."""
        if not self._held:
            return []
        padded = bytes(self._held) + bytes(FRAME_BYTES - len(self._held))
        self._held.clear()
        return [_native.kyutai_audio_frame(padded)]

    def finalize(self, now: float) -> list[Frame]:
        self._sent_since_keepalive = True
        frames = self._flush_held()
        marker = self._next_marker
        self._next_marker += 1
        self._markers.append(marker)
        frames.append(_native.kyutai_marker_frame(marker))
        frames += [SILENCE_FRAME] * PRIME_FRAMES
        return frames

    def keepalive(self) -> list[Frame]:
        if self._sent_since_keepalive:
            self._sent_since_keepalive = False
            return []
        return self._flush_held() + [SILENCE_FRAME]

    # ---- from the upstream -----------------------------------------------------------
    def receive(self, frame: Frame) -> list[UpstreamEvent]:
        if isinstance(frame, str):
            return [Ignored("text frame from moshi-server")]
        try:
            msg = _native.msgpack_decode(frame)
        except ValueError as exc:
            return [Ignored(f"undecodable MessagePack: {exc}")]
        if not isinstance(msg, dict):
            return [Ignored("MessagePack that is not a map")]
        kind = msg.get("type")
        if kind == "Word":
            return self._word(msg.get("text"), _seconds(msg.get("start_time")))
        if kind == "EndWord":
            self._last_word_step = self._steps
            stop = _seconds(msg.get("stop_time"))
            if stop is not None:
                self._last_word_time = stop
            return [Ignored("EndWord")]
        if kind == "Step":
            return self._step()
        if kind == "Marker":
            return self._marker(msg.get("id"))
        if kind == "Ready":
            return [UpstreamReady(sample_rate=SAMPLE_RATE)]
        if kind == "Error":
            return [UpstreamError(str(msg.get("message") or "Kyutai STT error"))]
        return [Ignored(f"upstream message {kind!r}")]

    def _word(self, text: Any, start: float | None) -> list[UpstreamEvent]:
        self._last_word_step = self._steps
        word = text.strip() if isinstance(text, str) else ""
        if not word:
            return [Ignored("empty Word")]
        events: list[UpstreamEvent] = []
        last = self._last_word_time
        if start is not None and last is not None and start - last >= PAUSE_SECONDS:
            events += self._close_segment()
        if start is not None:
            self._last_word_time = start
        self._segment.append(word)
        return events + [Transcript(" ".join(self._segment), False)]

    def _close_segment(self) -> list[UpstreamEvent]:
        if not self._segment:
            return []
        text = " ".join(self._segment)
        self._segment.clear()
        self._finals.append(text)
        return [Transcript(text, True)]

    def _step(self) -> list[UpstreamEvent]:
        self._steps += 1
        events: list[UpstreamEvent] = []
        if self._segment and self._steps - self._last_word_step >= PAUSE_STEPS:
            events += self._close_segment()
        if self._markers:
            events.append(Reply((SILENCE_FRAME,)))
        return events or [Ignored("Step")]

    def _marker(self, marker: Any) -> list[UpstreamEvent]:
        if not isinstance(marker, int) or marker not in self._markers:
            return [Ignored(f"Marker {marker!r} that this session did not send")]
        done = 1
        while self._markers.popleft() != marker:
            done += 1  # an earlier marker lost on the way: this one answers it too
        events = self._close_segment()
        text = " ".join(self._finals)
        self._finals.clear()
        return events + [FinalTranscript(text)] + [FinalTranscript("")] * (done - 1)
