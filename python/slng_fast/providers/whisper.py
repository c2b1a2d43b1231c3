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
unified session stays open after a finalize), so the dialect finalizes by audio, and by time
where audio alone cannot tell:

1. ``finalize(now)`` notes the finalize point ``T`` (seconds of audio sent so far) and sends
   ``FINALIZE_SILENCE_S`` (1 s) of silence. That is what WhisperLive needs to close the open
   segment: its VAD hears the pause and its same-output repetition completes the tail; it
   also fills the second of audio WhisperLive waits for before each pass, so the speech just
   before ``T`` is heard. It is enough for the endpointer of the PocketSphinx engine behind
   our emulator too.
2. The ``FinalTranscript`` (empty text: the session joins the final segments it passed on)
   comes out of ``receive`` with the first ``segments`` update in which nothing that began
   before ``T`` is still incomplete and the server has caught up: it reported speech ending
   less than ``QUIET_S`` (2 s) before ``T`` (a server decoding behind the audio first reports
   the earlier segments complete), or a segment beginning at or after ``T``. It is placed
   after the completed segments that began before ``T`` and before any that began later, so
   one finalize never takes text spoken after it.
3. While the tail that began before ``T`` stays incomplete and less than a second of audio
   follows its end, the dialect answers the update with a ``Reply`` of more silence, at most
   ``FINALIZE_MAX_EXTRA_S`` in all per finalize.
4. The deadline. WhisperLive sends nothing for silence, so frames cannot tell "silence"
   from "not heard yet": when the speech before ``T`` ended long before it (or there was
   none), or the server has reported nothing yet because the audio came faster than real
   time, no update may ever settle the finalize. Time bounds the wait. We take it that the
   server keeps up with real time (one that cannot could not serve a live stream at all):
   it has heard the audio no later than a queue served at exactly real time would be done
   with it. The dialect keeps that time, ``heard_by`` (``max(heard_by, now) + seconds`` per
   frame sent), so audio sent faster than real time counts in full, and audio sent after a
   pause counts from when it was sent, not from the stream's start. A finalize's deadline
   is ``heard_by`` once its silence is sent, plus ``FINALIZE_GRACE_S`` (1 s) for the
   server's last pass and the network. ``deadline()`` gives the earliest one pending and the
   session calls ``on_deadline(now)`` once it has passed (the gateway keeps the clock; the
   dialect stays sans-I/O, with time passed in). From then on the finalize no longer waits
   for the server to catch up, only for a tail that began before ``T`` to complete: it is
   answered at once when none is open, else with the update that completes it. An update
   that settles it first answers it first, so the deadline costs time only when no update
   can: about ``FINALIZE_SILENCE_S + FINALIZE_GRACE_S`` after a finalize of audio sent in
   real time, the audio's own length when it came all at once. A server slower than real
   time by more than the grace may put its last words in the next final.

A finalize with no audio from the client since the previous one covers nothing: it sends no
silence and its deadline is ``now`` (answered at once, after any finalize still pending).

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

from slng_fast.providers.base import json_object
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

MODEL_RATE = 16000
BYTES_PER_SECOND = MODEL_RATE * 4  # float32 mono
FINALIZE_SILENCE_S = 1.0
SILENCE_FRAME_S = 0.25
FINALIZE_MAX_EXTRA_S = 3.0
FINALIZE_GRACE_S = 1.0
"""Past the time a real-time server has heard a finalize's silence: its last pass and the
network (see the module docstring, point 4)."""
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
    deadline: float  # wall time after which only an open tail before target is waited for
    extra_silence: float = 0.0
    overdue: bool = False  # the deadline has passed


class WhisperDialect(SttDialect):
    model_rate = MODEL_RATE
    model_format = "f32"
    keepalive_interval: float | None = None

    def __init__(self, endpoint: Endpoint, url: str, api_key: str | None = None) -> None:
        self.endpoint = endpoint
        self.url = url
        self.api_key = api_key
        self.uid = f"slng-fast-{next(_uids)}"
        self.sent_bytes = 0  # float32 audio sent (bytes: the same however it was batched)
        self.last_final_end = float("-inf")
        self.emitted_texts: list[str] = []  # completed segments without times
        self.last_partial = ""
        self.tail: Segment | None = None
        self.heard_until = 0.0  # the latest segment end the server reported
        # When a server keeping up with real time has heard all the audio sent so far.
        self.heard_by = float("-inf")
        self.audio_since_finalize = False  # client audio sent since the last finalize
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

    def audio(self, pcm: bytes, now: float) -> list[Frame]:
        if not pcm:
            return []
        self._sent(len(pcm), now)
        self.audio_since_finalize = True
        return [pcm]

    @property
    def uplink_framing(self) -> str | None:
        return "binary"

    def uplinked(self, nbytes: int, frames: int, now: float) -> None:
        if nbytes:
            self._sent(nbytes, now)
            self.audio_since_finalize = True

    @property
    def sent_seconds(self) -> float:
        return self.sent_bytes / BYTES_PER_SECOND

    def _sent(self, nbytes: int, now: float) -> None:
        self.sent_bytes += nbytes
        self.heard_by = max(self.heard_by, now) + nbytes / BYTES_PER_SECOND

    def _silence(self, seconds: float, now: float) -> list[Frame]:
        frames = silence(seconds)
        self._sent(sum(len(f) for f in frames), now)
        return frames

    def finalize(self, now: float) -> list[Frame]:
        if not self.audio_since_finalize:
            self.finals.append(_Finalize(self.sent_seconds, deadline=now))
            return []
        self.audio_since_finalize = False
        target = self.sent_seconds
        frames = self._silence(FINALIZE_SILENCE_S, now)
        self.finals.append(_Finalize(target, deadline=self.heard_by + FINALIZE_GRACE_S))
        return frames

    def deadline(self) -> float | None:
        """When ``on_deadline`` should be called: the earliest deadline of a pending
        finalize that has not passed yet, or None."""
        for final in self.finals:
            if not final.overdue:
                return final.deadline
        return None

    def on_deadline(self, now: float) -> list[UpstreamEvent]:
        """The finalizes whose deadline has passed stop waiting for the server to catch
        up: each is answered now unless a tail that began before it is still open."""
        for final in self.finals:
            if final.deadline <= now:
                final.overdue = True
        events: list[UpstreamEvent] = []
        while self.finals and self._settled(self.finals[0], self.tail):
            self.finals.pop(0)
            events.append(FinalTranscript(""))
        return events

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
        be hearing speech it has not reported), or the finalize's deadline has passed."""
        if tail is not None:
            return tail.start is not None and tail.start >= final.target - EPSILON
        return final.overdue or self.heard_until >= final.target - QUIET_S

    def _top_up(self, final: _Finalize, tail: Segment) -> list[UpstreamEvent]:
        """More silence while the tail before the finalize point is not yet followed by
        ``FINALIZE_SILENCE_S`` of audio (bounded per finalize)."""
        end = tail.end if tail.end is not None else final.target
        missing = FINALIZE_SILENCE_S - (self.sent_seconds - end)
        missing = min(missing, FINALIZE_MAX_EXTRA_S - final.extra_silence)
        if missing < SILENCE_FRAME_S / 2:
            return []
        final.extra_silence += missing
        # Counted from ``heard_by`` (``receive`` is not given the time): it is silence, so
        # only a later finalize's bound depends on it, and that one counts from its own now.
        return [Reply(tuple(self._silence(missing, self.heard_by)))]
