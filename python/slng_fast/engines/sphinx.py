"""PocketSphinx speech-to-text: streaming recognition with speech segmentation.

:class:`SphinxRecognizer` wraps the ``pocketsphinx`` wheel's ``Decoder`` (with its
bundled US English acoustic model, language model and dictionary) and its
``Endpointer`` (a voice activity detector that cuts the stream into speech
segments). Audio goes in as 16 kHz PCM16 mono of any length; out come
:class:`Transcript` events: partial hypotheses while a segment is being spoken and
a final one when it ends.

Decoding holds the GIL, which is why the engine runs in its own process and calls
this from a worker thread. A recognizer is not thread-safe: one caller at a time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["MODEL_ID", "SAMPLE_RATE", "RecognizerPool", "SphinxRecognizer", "Transcript"]

SAMPLE_RATE = 16000
"""The only input rate: the bundled model is trained on 16 kHz audio."""

MODEL_ID = "pocketsphinx-en-us"


@dataclass(frozen=True)
class Transcript:
    """A recognition result for one speech segment."""

    text: str
    """Words recognised so far in the segment, space-separated, lower case."""
    is_final: bool
    """False for a partial hypothesis, True when the segment has ended."""
    confidence: float
    """Mean posterior probability of the words (0..1); 0.0 for partials and empty text."""
    start: float
    """Segment start, in seconds of audio since the recognizer was created or reset."""
    end: float
    """Segment end (for partials: the audio decoded so far), in the same seconds."""


def _is_filler(word: str) -> bool:
    return word.startswith(("<", "[", "++")) or not word


class SphinxRecognizer:
    """Streaming recognizer: :meth:`feed` audio, get partial and final transcripts.

    ``partial_interval`` is how much audio (seconds) passes between two looks at the
    partial hypothesis; a partial is emitted only when its text changed.
    ``window`` and ``ratio`` tune the endpointer: a segment starts (ends) when
    ``ratio`` of the last ``window`` seconds are speech (non-speech). ``vad_mode``
    is the VAD's aggressiveness, 0 (loose) to 3 (strict).
    """

    sample_rate = SAMPLE_RATE
    model_id = MODEL_ID

    def __init__(
        self,
        *,
        partial_interval: float = 0.1,
        window: float = 0.3,
        ratio: float = 0.9,
        vad_mode: int = 0,
        loglevel: str = "FATAL",
    ) -> None:
        from pocketsphinx import Decoder

        if partial_interval < 0:
            raise ValueError(f"partial_interval {partial_interval} is negative")
        self._ep_args = (window, ratio, vad_mode)
        self._partial_interval = partial_interval
        self._decoder = Decoder(samprate=SAMPLE_RATE, loglevel=loglevel)
        # Cepstral mean normalisation adapts to the audio as it goes; every session
        # starts again from the model's initial estimate so that one session's audio
        # never changes another's results.
        self._initial_cmn = self._decoder.get_cmn(False)
        self.reset()

    def _new_endpointer(self) -> None:
        window, ratio, vad_mode = self._ep_args
        old: Any = getattr(self, "_ep", None)
        if old is not None and hasattr(old, "close"):
            old.close()
        self._ep: Any = _new_endpointer(window, ratio, vad_mode)
        self._frame_bytes: int = self._ep.frame_bytes
        self._frame_seconds: float = self._ep.frame_length

    @property
    def loaded(self) -> bool:
        """The model is loaded (False once :meth:`close` has freed it)."""
        return self._decoder is not None

    def close(self) -> None:
        """Free the decoder and its model now, whoever still holds this object."""
        self._decoder = None
        if self._ep is not None and hasattr(self._ep, "close"):
            self._ep.close()
        self._ep = None

    def reset(self) -> None:
        """Forget all audio and results, as if newly created (the model stays loaded)."""
        if getattr(self, "_in_segment", False):
            self._decoder.end_utt()
        self._decoder.set_cmn(self._initial_cmn)
        self._new_endpointer()
        self._pending = bytearray()
        self._samples = 0  # whole samples received
        self._samples_at_finalize = 0
        self._ep_origin = 0.0  # session seconds where the current endpointer started
        self._in_segment = False
        self._segment_start = 0.0
        self._segment_decoded = 0.0  # seconds of speech decoded in the segment
        self._last_partial = ""
        self._since_partial_check = 0.0
        self._texts: list[str] = []

    # -- timing ------------------------------------------------------------------------

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio received since creation or :meth:`reset`."""
        return self._samples / SAMPLE_RATE

    @property
    def seconds_since_finalize(self) -> float:
        """Seconds of audio received since the last :meth:`finalize`."""
        return (self._samples - self._samples_at_finalize) / SAMPLE_RATE

    @property
    def in_segment(self) -> bool:
        return self._in_segment

    # -- streaming ---------------------------------------------------------------------

    def feed(self, pcm16: bytes) -> list[Transcript]:
        """Take 16 kHz PCM16 mono little-endian audio of any length; return new events."""
        before = len(self._pending) // 2
        self._pending += pcm16
        self._samples += len(self._pending) // 2 - before
        events: list[Transcript] = []
        size = self._frame_bytes
        whole = len(self._pending) // size * size
        view = memoryview(self._pending)
        try:
            for at in range(0, whole, size):
                self._process_frame(bytes(view[at : at + size]), events)
        finally:
            view.release()
        del self._pending[:whole]
        return events

    def _process_frame(self, frame: bytes, events: list[Transcript]) -> None:
        speech = self._ep.process(frame)
        if speech is None:
            return
        if not self._in_segment:
            self._open_segment(self._ep_origin + self._ep.speech_start)
        self._decoder.process_raw(speech, False, False)
        self._segment_decoded += len(speech) / 2 / SAMPLE_RATE
        if not self._ep.in_speech:
            self._close_segment(self._ep_origin + self._ep.speech_end, events)
            return
        self._since_partial_check += len(speech) / 2 / SAMPLE_RATE
        if self._since_partial_check >= self._partial_interval:
            self._since_partial_check = 0.0
            self._maybe_partial(events)

    def _open_segment(self, start: float) -> None:
        self._decoder.start_utt()
        self._in_segment = True
        self._segment_start = start
        self._segment_decoded = 0.0
        self._last_partial = ""
        self._since_partial_check = 0.0

    def _maybe_partial(self, events: list[Transcript]) -> None:
        hyp = self._decoder.hyp()
        text = " ".join(hyp.hypstr.split()) if hyp is not None else ""
        if text and text != self._last_partial:
            self._last_partial = text
            events.append(
                Transcript(
                    text=text,
                    is_final=False,
                    confidence=0.0,
                    start=self._segment_start,
                    end=self._segment_start + self._segment_decoded,
                )
            )

    def _close_segment(self, end: float, events: list[Transcript]) -> None:
        self._decoder.end_utt()
        self._in_segment = False
        hyp = self._decoder.hyp()
        text = " ".join(hyp.hypstr.split()) if hyp is not None else ""
        confidence = 0.0
        if text:
            probs = [seg.prob for seg in self._decoder.seg() if not _is_filler(seg.word)]
            if probs:
                confidence = max(0.0, min(1.0, sum(probs) / len(probs)))
            self._texts.append(text)
        # A segment that showed partials gets a final even when it came to nothing,
        # so that a client can clear what it displayed.
        if text or self._last_partial:
            events.append(
                Transcript(
                    text=text,
                    is_final=True,
                    confidence=confidence,
                    start=self._segment_start,
                    end=max(end, self._segment_start),
                )
            )
        self._last_partial = ""

    def end_segment(self) -> list[Transcript]:
        """End the open speech segment now (if any) and return its final event.

        Audio still held by the endpointer is decoded first. A short stretch of
        audio that the endpointer had not yet judged to be speech is dropped.
        """
        events: list[Transcript] = []
        if self._in_segment:
            # end_stream wants 1..frame_bytes bytes: pad what is left to a full frame.
            tail = bytes(self._pending[: len(self._pending) // 2 * 2])
            tail += bytes(self._frame_bytes - len(tail))
            speech = self._ep.end_stream(tail)
            if speech:
                self._decoder.process_raw(speech, False, False)
                self._segment_decoded += len(speech) / 2 / SAMPLE_RATE
            self._close_segment(self.audio_seconds, events)
        # The endpointer's stream has ended (or its window holds only non-speech):
        # begin a fresh one at the current position.
        self._pending.clear()
        self._new_endpointer()
        self._ep_origin = self.audio_seconds
        return events

    def finalize(self) -> str:
        """End any open segment; return the text of every segment since the last call.

        Call :meth:`end_segment` first to also get the closing segment's event.
        The recognizer keeps going: audio fed afterwards belongs to the next call.
        """
        self.end_segment()
        text = " ".join(self._texts)
        self._texts = []
        self._samples_at_finalize = self._samples
        return text


class RecognizerPool:
    """Keeps a few loaded recognizers so a new session need not load the model.

    Loading the model takes a few hundred milliseconds and tens of MB; sessions
    :meth:`acquire` a recognizer and :meth:`release` it when they end. Thread-safe.
    """

    def __init__(self, *, max_idle: int = 2, **options: object) -> None:
        self._max_idle = max_idle
        self._options = options
        self._idle: list[SphinxRecognizer] = []
        self._lock = threading.Lock()

    def acquire(self) -> SphinxRecognizer:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return SphinxRecognizer(**self._options)  # type: ignore[arg-type]

    def release(self, recognizer: SphinxRecognizer) -> None:
        """Take a recognizer back: kept for the next session, or (the pool is full) its
        model freed at once and the freed memory handed back to the system. Models are
        loaded in whichever worker thread a session ran in, so without the trim each
        thread's malloc arena keeps the pages of the models it once held, and the
        engine's RSS grows with its history (about 1.6 GiB after 100 sessions of 8 at
        a time), not with its open sessions."""
        with self._lock:
            keep = len(self._idle) < self._max_idle
        if keep:
            recognizer.reset()
            with self._lock:
                if len(self._idle) < self._max_idle:
                    self._idle.append(recognizer)
                    return
        recognizer.close()
        _trim_heap()

    def preload(self, count: int = 1) -> None:
        """Load ``count`` recognizers ahead of the first sessions."""
        loaded = [SphinxRecognizer(**self._options) for _ in range(count)]  # type: ignore[arg-type]
        with self._lock:
            room = self._max_idle - len(self._idle)
            self._idle.extend(loaded[: max(0, room)])


def _load_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None (another libc: nothing to trim)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_malloc_trim = _load_malloc_trim()


def _trim_heap() -> None:
    """Return the free memory of every malloc arena to the system."""
    if _malloc_trim is not None:
        _malloc_trim(0)


class _FreedEndpointer:
    """PocketSphinx's endpointer through its C functions, freed when replaced or
    collected. The wheel's own ``Endpointer`` (5.1.1) never calls
    ``ps_endpointer_free``: each one leaks about 20 KiB, and a session makes two or
    three (one per reset and per finalize), so the engine grew with every session."""

    def __init__(self, lib: ctypes.CDLL, window: float, ratio: float, vad_mode: int,
                 frame_bytes: int, frame_length: float) -> None:
        from pocketsphinx import Vad

        self._lib = lib
        self._ptr: int | None = lib.ps_endpointer_init(window, ratio, vad_mode, SAMPLE_RATE,
                                                       Vad.DEFAULT_FRAME_LENGTH)
        if not self._ptr:
            raise ValueError("invalid endpointer parameters")
        self.frame_bytes = frame_bytes
        self.frame_length = frame_length
        self._out = ctypes.c_size_t()

    def _live(self) -> int:
        if not self._ptr:
            raise ValueError("the endpointer was freed")
        return self._ptr

    def process(self, frame: bytes) -> bytes | None:
        if len(frame) != self.frame_bytes:
            raise IndexError(f"frame size must be {self.frame_bytes} bytes")
        out = self._lib.ps_endpointer_process(self._live(), frame)
        return ctypes.string_at(out, len(frame)) if out else None

    def end_stream(self, frame: bytes) -> bytes | None:
        if len(frame) > self.frame_bytes:
            raise IndexError(f"frame size must be {self.frame_bytes} bytes or less")
        out = self._lib.ps_endpointer_end_stream(self._live(), frame, len(frame) // 2,
                                                 ctypes.byref(self._out))
        return ctypes.string_at(out, self._out.value * 2) if out else None

    @property
    def in_speech(self) -> bool:
        return bool(self._lib.ps_endpointer_in_speech(self._live()))

    @property
    def speech_start(self) -> float:
        return float(self._lib.ps_endpointer_speech_start(self._live()))

    @property
    def speech_end(self) -> float:
        return float(self._lib.ps_endpointer_speech_end(self._live()))

    def close(self) -> None:
        ptr, self._ptr = self._ptr, None
        if ptr:
            self._lib.ps_endpointer_free(ptr)

    def __del__(self) -> None:
        self.close()


def _endpointer_lib() -> ctypes.CDLL | None:
    """The wheel's C endpointer functions with their signatures, or None (then the
    wheel's own class is used, leak and all)."""
    try:
        import pocketsphinx

        lib = ctypes.CDLL(pocketsphinx._pocketsphinx.__file__)
        lib.ps_endpointer_init.restype = ctypes.c_void_p
        lib.ps_endpointer_init.argtypes = [ctypes.c_double, ctypes.c_double, ctypes.c_int,
                                           ctypes.c_int, ctypes.c_double]
        lib.ps_endpointer_free.restype = ctypes.c_int
        lib.ps_endpointer_free.argtypes = [ctypes.c_void_p]
        lib.ps_endpointer_process.restype = ctypes.c_void_p
        lib.ps_endpointer_process.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.ps_endpointer_end_stream.restype = ctypes.c_void_p
        lib.ps_endpointer_end_stream.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                                 ctypes.c_size_t,
                                                 ctypes.POINTER(ctypes.c_size_t)]
        lib.ps_endpointer_in_speech.restype = ctypes.c_int
        lib.ps_endpointer_in_speech.argtypes = [ctypes.c_void_p]
        lib.ps_endpointer_speech_start.restype = ctypes.c_double
        lib.ps_endpointer_speech_start.argtypes = [ctypes.c_void_p]
        lib.ps_endpointer_speech_end.restype = ctypes.c_double
        lib.ps_endpointer_speech_end.argtypes = [ctypes.c_void_p]
    except (ImportError, OSError, AttributeError):
        return None
    return lib


_ENDPOINTER_LIB: ctypes.CDLL | None = None
_ENDPOINTER_SIZES: dict[tuple[float, float, int], tuple[int, float]] = {}
_endpointer_lock = threading.Lock()


def _new_endpointer(window: float, ratio: float, vad_mode: int) -> Any:
    """A fresh endpointer: ours (freed when done) where the wheel's C functions are
    there, else the wheel's class. Frame sizes come from one wheel endpointer per
    parameter set (which leaks once, not per session)."""
    global _ENDPOINTER_LIB
    from pocketsphinx import Endpointer

    args = (window, ratio, vad_mode)
    with _endpointer_lock:
        if args not in _ENDPOINTER_SIZES:
            probe = Endpointer(window=window, ratio=ratio, vad_mode=vad_mode,
                               sample_rate=SAMPLE_RATE)
            _ENDPOINTER_SIZES[args] = (probe.frame_bytes, probe.frame_length)
            _ENDPOINTER_LIB = _ENDPOINTER_LIB or _endpointer_lib()
        frame_bytes, frame_length = _ENDPOINTER_SIZES[args]
        lib = _ENDPOINTER_LIB
    if lib is None:
        return Endpointer(window=window, ratio=ratio, vad_mode=vad_mode, sample_rate=SAMPLE_RATE)
    return _FreedEndpointer(lib, window, ratio, vad_mode, frame_bytes, frame_length)
