"""The WhisperLive dialect (collabora/WhisperLive, ``ws://host:9090/``), PROTOCOL.md section 8.

Upstream protocol, as the WhisperLive server and client speak it:

- client -> server: one JSON options message first (``uid``, ``language``, ``task``,
  ``model``, ``use_vad``, optionally ``send_last_n_segments``, ``no_speech_thresh``,
  ``clip_audio``, ``same_output_threshold``, ``initial_prompt``, ``vad_parameters``), then
  binary frames of float32 little-endian mono audio at 16 kHz, and ``END_OF_AUDIO`` to end.
- server -> client (JSON text, each with the ``uid``): ``{"message":"SERVER_READY",
  "backend":...}``; ``{"segments":[{"start","end","text","completed"}, ...]}`` re-sent on
  every update (the last ``send_last_n_segments`` completed segments, then the incomplete
  tail; ``start``/``end`` are seconds into the stream, as strings with three decimals);
  ``{"language","language_prob"}`` when it detected the language; ``{"status":"WAIT",
  "message":minutes}`` when it is full (then it closes); ``{"status":"ERROR","message"}``
  (then it closes); ``{"status":"WARNING","message"}``; ``{"message":"DISCONNECT"}`` when it
  ends the session itself (its maximum connection time).

Mapping to the unified STT session:

- ``open_frames``: the options message. ``uid`` comes from the ``start`` extras when the
  client gives one, else ``slng-fast-<n>`` from a process-wide counter (deterministic, no
  randomness: WhisperLive only uses it to tag its messages). ``task`` is ``transcribe``
  (``translate`` may be asked for through the extras), ``model`` defaults to ``small`` (the
  WhisperLive client's default), ``use_vad`` to true; the other WhisperLive options pass
  through from the extras; unknown extras are not forwarded (the server ignores them).
- ``audio``: the PCM the session converted to 16 kHz float32, as binary frames.
- ``segments`` updates: each newly completed segment becomes one ``Transcript(is_final=True)``,
  exactly once however often it is re-sent: segments are told apart by their ``end`` time,
  which only grows (by their text where a backend sends no times). The incomplete tail becomes
  a partial ``Transcript(is_final=False)`` when its text changed.
- ``WAIT`` -> fatal, retryable ``UpstreamError`` (server full; the server closes anyway);
  ``ERROR`` -> fatal ``UpstreamError`` with the server's message; ``DISCONNECT`` -> fatal,
  retryable ``UpstreamError``. ``WARNING``, ``SERVER_READY`` (``UpstreamReady``) and the
  language message carry nothing for the client. Messages for another ``uid`` are ignored.

Finalize. WhisperLive has no finalize message and ``END_OF_AUDIO`` ends the stream (the
unified session stays open after a finalize), so the dialect finalizes by audio alone:

1. ``finalize()`` notes the finalize point ``T`` (seconds of audio sent so far) and sends
   ``FINALIZE_SILENCE_S`` (1 s) of silence. That is what WhisperLive needs to close the open
   segment: its VAD hears the pause and its same-output repetition completes the tail; it is
   also enough for the endpointer of the PocketSphinx engine behind our emulator.
2. The ``FinalTranscript`` (empty text: the session joins the final segments it passed on)
   comes out of ``receive`` with the first ``segments`` update in which nothing that began
   before ``T`` is still incomplete and the server has caught up: it reported speech ending
   less than ``QUIET_S`` (2 s) before ``T`` (a server decoding behind the audio first reports
   the earlier segments complete), or a segment beginning at or after ``T``. It is placed
   after the completed segments that began before ``T`` and before any that began later, so
   one finalize never takes text spoken after it.
3. While the tail that began before ``T`` stays incomplete and less than a second of audio
   follows its end, the dialect answers the update with a ``Reply`` of more silence, at most
   ``FINALIZE_MAX_EXTRA_S`` in all per finalize. No timers: everything is driven by frames.

A finalize when nothing is pending: WhisperLive sends no update for silence, so there may be
no frame to answer on. ``finalize_events()`` (called right after ``finalize()`` by a session
that knows it) gives the ``FinalTranscript`` at once when the last update showed no
incomplete tail and at least ``QUIET_S`` of audio has been sent since the last speech the
server reported (a server lagging further behind than that may then put its last words in the
next final). A session that does not call it gets the answer with the next ``segments``
update.

``keepalive_interval`` is None: WhisperLive has no inactivity timeout (only its maximum
connection time, reported as ``DISCONNECT``). Native mode relays frames unchanged; the
dialect only provides the request. The gateway's provider credential, if configured, is sent
as ``Authorization: Bearer`` (WhisperLive ignores it; a proxy in front of it may check it).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import orjson

from slng_fast.providers.base import (
    Endpoint,
    FinalTranscript,
    Frame,
    Ignored,
    Reply,
    Transcript,
    UpstreamError,
    UpstreamEvent,
    UpstreamReady,
    UpstreamRequest,
    json_object,
)

MODEL_RATE = 16000
BYTES_PER_SECOND = MODEL_RATE * 4  # float32 mono
FINALIZE_SILENCE_S = 1.0
SILENCE_FRAME_S = 0.25
FINALIZE_MAX_EXTRA_S = 3.0
QUIET_S = 2.0
DEFAULT_MODEL = "small"
END_OF_AUDIO = b"END_OF_AUDIO"

# WhisperLive options that may come from the client's ``start`` extras.
PASSTHROUGH_OPTIONS = ("model", "use_vad", "send_last_n_segments", "no_speech_thresh",
                       "clip_audio", "same_output_threshold", "initial_prompt",
                       "vad_parameters")
EPSILON = 1e-4

_uids = itertools.count(1)


def silence(seconds: float) -> list[Frame]:
    """``seconds`` of float32 silence at 16 kHz, in frames of at most 0.25 s."""
    samples = int(round(seconds * MODEL_RATE))
    step = int(SILENCE_FRAME_S * MODEL_RATE)
    return [bytes(4 * min(step, samples - pos)) for pos in range(0, samples, step)]


def _seconds(value: Any) -> float | None:
    """A segment time: WhisperLive sends strings ("1.230"); accept numbers too."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class Segment:
    start: float | None
    end: float | None
    text: str
    completed: bool


@dataclass
class _Finalize:
    target: float  # seconds of audio sent when the finalize came
    extra_silence: float = 0.0


class WhisperDialect:
    model_rate = MODEL_RATE
    model_format = "f32"
    keepalive_interval: float | None = None

    def __init__(self, endpoint: Endpoint, url: str, api_key: str | None = None) -> None:
        self.endpoint = endpoint
        self.url = url
        self.api_key = api_key
        self.uid = f"slng-fast-{next(_uids)}"
        self.sent_seconds = 0.0
        self.last_final_end = float("-inf")
        self.emitted_texts: list[str] = []  # completed segments without times
        self.last_partial = ""
        self.tail: Segment | None = None
        self.heard_until = 0.0  # the latest segment end the server reported
        self.finals: list[_Finalize] = []

    # ---- to the upstream ------------------------------------------------------------
    def request(self) -> UpstreamRequest:
        headers: tuple[tuple[str, str], ...] = ()
        if self.api_key:
            headers = (("Authorization", f"Bearer {self.api_key}"),)
        return UpstreamRequest(url=self.url, headers=headers)

    def open_frames(self, language: str | None, extras: dict[str, Any]) -> list[Frame]:
        uid = extras.get("uid")
        if isinstance(uid, str) and uid:
            self.uid = uid
        defaults = dict(self.endpoint.extras)
        task = extras.get("task")
        options: dict[str, Any] = {
            "uid": self.uid,
            "language": language,
            "task": task if task in ("transcribe", "translate") else "transcribe",
            "model": defaults.get("model", DEFAULT_MODEL),
            "use_vad": defaults.get("use_vad", True),
        }
        for key in PASSTHROUGH_OPTIONS:
            if key in extras and extras[key] is not None:
                options[key] = extras[key]
        return [orjson.dumps(options).decode()]

    def audio(self, pcm: bytes) -> list[Frame]:
        if not pcm:
            return []
        self.sent_seconds += len(pcm) / BYTES_PER_SECOND
        return [pcm]

    def _silence(self, seconds: float) -> list[Frame]:
        frames = silence(seconds)
        self.sent_seconds += sum(len(f) for f in frames) / BYTES_PER_SECOND
        return frames

    def finalize(self) -> list[Frame]:
        self.finals.append(_Finalize(self.sent_seconds))
        return self._silence(FINALIZE_SILENCE_S)

    def finalize_events(self) -> list[UpstreamEvent]:
        """Events to pass on right after ``finalize()``: the ``FinalTranscript`` at once
        when nothing is pending upstream (see the module docstring), else none."""
        if not self.finals or self.tail is not None:
            return []
        pending = self.finals[-1]
        if len(self.finals) > 1 or pending.target - self.heard_until < QUIET_S:
            return []
        self.finals.pop()
        return [FinalTranscript("")]

    def keepalive(self) -> list[Frame]:
        return []

    # ---- from the upstream ----------------------------------------------------------
    def receive(self, frame: Frame) -> list[UpstreamEvent]:
        if isinstance(frame, bytes):
            return [Ignored("binary frame from WhisperLive")]
        message = json_object(frame)
        if message is None:
            return [Ignored("text that is not a JSON object")]
        uid = message.get("uid")
        if uid is not None and uid != self.uid:
            return [Ignored(f"message for another uid {uid!r}")]
        status = message.get("status")
        if status == "WAIT":
            minutes = message.get("message")
            wait = (f"; estimated wait {float(minutes):.1f} minutes"
                    if isinstance(minutes, (int, float)) and not isinstance(minutes, bool) else "")
            return [UpstreamError(f"the Whisper server is full{wait}", retryable=True,
                                  fatal=True, code="provider_unavailable")]
        if status == "ERROR":
            return [UpstreamError(str(message.get("message") or "Whisper server error"),
                                  retryable=False, fatal=True)]
        if status == "WARNING":
            return [Ignored(f"WhisperLive warning: {message.get('message')}")]
        if status is not None:
            return [Ignored(f"WhisperLive status {status!r}")]
        text = message.get("message")
        if text == "SERVER_READY":
            return [UpstreamReady(sample_rate=MODEL_RATE)]
        if text == "DISCONNECT":
            return [UpstreamError("the Whisper server ended the session", retryable=True,
                                  fatal=True, code="provider_unavailable")]
        segments = message.get("segments")
        if isinstance(segments, list):
            return self._segments(segments)
        if "language" in message:
            return [Ignored(f"detected language {message.get('language')!r}")]
        return [Ignored("WhisperLive message")]

    def _segments(self, raw: list[Any]) -> list[UpstreamEvent]:
        segments = [Segment(_seconds(s.get("start")), _seconds(s.get("end")),
                            str(s.get("text") or "").strip(), bool(s.get("completed")))
                    for s in raw if isinstance(s, dict)]
        if not segments:
            return [Ignored("empty segments update")]
        tail = segments[-1] if not segments[-1].completed else None
        events: list[UpstreamEvent] = []
        for seg in segments:
            if seg.end is not None:
                self.heard_until = max(self.heard_until, seg.end)
            if not seg.completed or not self._is_new(seg):
                continue
            # a finalize before this segment began is answered before it
            while self.finals and seg.start is not None and seg.start >= self.finals[0].target - EPSILON:
                self.finals.pop(0)
                events.append(FinalTranscript(""))
            if seg.text:
                events.append(Transcript(seg.text, True))
            self.last_partial = ""
        self.tail = tail
        while self.finals and self._settled(self.finals[0], tail):
            self.finals.pop(0)
            events.append(FinalTranscript(""))
        if tail is not None and tail.text and tail.text != self.last_partial:
            self.last_partial = tail.text
            events.append(Transcript(tail.text, False))
        if tail is None:
            self.last_partial = ""
        if self.finals and tail is not None:
            events += self._top_up(self.finals[0], tail)
        return events or [Ignored("segments re-sent unchanged")]

    def _is_new(self, seg: Segment) -> bool:
        if seg.end is not None:
            if seg.end <= self.last_final_end + EPSILON:
                return False
            self.last_final_end = seg.end
            return True
        if seg.text in self.emitted_texts:
            return False
        self.emitted_texts = (self.emitted_texts + [seg.text])[-50:]
        return True

    def _settled(self, final: _Finalize, tail: Segment | None) -> bool:
        """Nothing that began before the finalize point is still incomplete, and the
        server has caught up with the audio before it: it reported speech up to less than
        ``QUIET_S`` before the finalize point (else a server behind the audio could still
        be hearing speech it has not reported)."""
        if tail is not None:
            return tail.start is not None and tail.start >= final.target - EPSILON
        return self.heard_until >= final.target - QUIET_S

    def _top_up(self, final: _Finalize, tail: Segment) -> list[UpstreamEvent]:
        """More silence while the tail before the finalize point is not yet followed by
        ``FINALIZE_SILENCE_S`` of audio (bounded per finalize)."""
        end = tail.end if tail.end is not None else final.target
        missing = FINALIZE_SILENCE_S - (self.sent_seconds - end)
        missing = min(missing, FINALIZE_MAX_EXTRA_S - final.extra_silence)
        if missing < SILENCE_FRAME_S / 2:
            return []
        final.extra_silence += missing
        return [Reply(tuple(self._silence(missing)))]
