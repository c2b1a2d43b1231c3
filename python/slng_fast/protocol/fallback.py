"""Failover decisions, sans-I/O (issue 13): which causes move a session to its next
provider, which entry comes next, what of an utterance is said again, the STT audio kept
for replay, and which providers a worker holds down (with a backoff) until a probe
answers. Time is an argument; the I/O layer (gateway/health.py, the bridge) carries out."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from slng_fast import errors
from slng_fast.errors import GatewayError

# Why a session left a provider (the `reason` of `provider_switched`, a metrics label).
UNREACHABLE = "unreachable"  # refused, handshake error, 5xx, connect timeout
CLOSED = "closed"  # closed abnormally or with an error code while work was in flight
FIRST_AUDIO_TIMEOUT = "first_audio_timeout"  # no audio within the deadline after a flush
STALLED = "stalled"  # went quiet mid-utterance / after finalize, or took no data from us
UNAVAILABLE = "unavailable"  # said so itself (WhisperLive's WAIT)
PROVIDER_DOWN = "provider_down"  # marked down in this worker: skipped at the start

DEFAULT_FIRST_AUDIO_S = 5.0
DEFAULT_STT_REPLAY_S = 10.0
# When an utterance fails after its audio started, sentences estimated to have started
# by then are not resent. The estimate assumes fast speech (characters a millisecond of
# audio carries), so it errs toward skipping a sentence rather than repeating one; once
# the session has finished an utterance, its own measured pace (times this) is used.
FAST_SPEECH_MS_PER_CHAR = 50.0
MEASURED_PACE_SHARE = 0.8

HEALTH_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
MAX_CHAIN = 4  # fallback entries a session may name


# -- asking for it --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FallbackEntry:
    """One backup: an endpoint name of this gateway and its own unified parameters."""

    provider: str
    fields: dict[str, Any] = field(default_factory=dict)


def parse_chain(value: Any) -> tuple[FallbackEntry, ...]:
    """``init.fallback`` / ``start.fallback`` (objects with ``provider``) or a config
    default (names): the entries, or ``invalid_message``/``invalid_parameter``."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise GatewayError(errors.INVALID_MESSAGE, "field 'fallback' must be a list")
    if len(value) > MAX_CHAIN:
        raise GatewayError(errors.INVALID_PARAMETER,
                           f"fallback names {len(value)} providers; at most {MAX_CHAIN}")
    entries = []
    for item in value:
        if isinstance(item, str):
            item = {"provider": item}
        if not isinstance(item, dict) or not isinstance(item.get("provider"), str):
            raise GatewayError(errors.INVALID_MESSAGE,
                               "each fallback entry is an object with a string 'provider'")
        fields = {k: v for k, v in item.items() if k != "provider"}
        for fixed in ("codec", "encoding", "sample_rate_hz", "sample_rate", "context_id",
                      "fallback"):
            if fixed in fields:
                raise GatewayError(errors.INVALID_PARAMETER,
                                   f"fallback entry {item['provider']!r}: {fixed!r} is the "
                                   "session's, not an entry's")
        entries.append(FallbackEntry(item["provider"], fields))
    names = [e.provider for e in entries]
    if len(set(names)) != len(names):
        raise GatewayError(errors.INVALID_PARAMETER, "fallback names a provider twice")
    return tuple(entries)


@dataclass
class Failover:
    """What a session needs to fail over, handed in by the I/O layer: ``resolve(name)``
    gives a fresh (endpoint, dialect) or raises ``invalid_parameter``; ``is_down(name,
    now)`` reads the worker's health; ``default_chain``: the config's for the endpoint."""

    resolve: Callable[[str], tuple[Any, Any]]
    is_down: Callable[[str, float], bool] = lambda name, now: False
    default_chain: tuple[str, ...] = ()
    first_audio_s: float = DEFAULT_FIRST_AUDIO_S
    replay_s: float = DEFAULT_STT_REPLAY_S


def next_entry(names: list[str], at: int, is_down: Callable[[str, float], bool],
               now: float) -> int | None:
    """The index after ``at`` to move to: the first not marked down; when every one
    left is down, the next anyway (a mark may be stale, and the chain is finite); None
    when none is left."""
    rest = range(at + 1, len(names))
    for i in rest:
        if not is_down(names[i], now):
            return i
    return at + 1 if at + 1 < len(names) else None


def first_entry(names: list[str], is_down: Callable[[str, float], bool], now: float) -> int:
    """Where a new session starts: its own provider unless that is down and a later
    entry is not."""
    if not names or not is_down(names[0], now):
        return 0
    for i in range(1, len(names)):
        if not is_down(names[i], now):
            return i
    return 0


# -- when it switches -----------------------------------------------------------------

def refusal_switches(status: int | None) -> bool:
    """A refused connection or handshake: the network, a timeout or a 5xx (also 408 and
    429: the provider is busy) move on; any other 4xx is the provider refusing this
    request (a bad key, voice or parameter), which another provider would not fix."""
    return status is None or status >= 500 or status in (408, 429)


def close_switches(code: int | None, client_fault: bool) -> bool:
    """The provider closed while work was in flight: no close frame (code None, 1006) or
    any code switches, unless the dialect reads the code as the client's fault (a bad
    parameter, text it refuses: Deepgram's 1003/1008/1009)."""
    return not client_fault


# -- what is said again -----------------------------------------------------------------

_SENTENCE = re.compile(r"[^.!?;:。！？\n]*(?:[.!?;:。！？\n]+|$)\s*")


def sentences(text: str) -> list[str]:
    """``text`` cut after sentence punctuation (and newlines), keeping every character:
    ``"".join(sentences(t)) == t``."""
    parts = [m.group(0) for m in _SENTENCE.finditer(text) if m.group(0)]
    return parts or ([text] if text else [])


def speakable(text: str) -> bool:
    """Whether text holds anything a voice says: a flush of only spaces or punctuation
    is answered without audio by some providers, so its silence is no failure."""
    return any(ch.isalnum() for ch in text)


def unheard_rest(text: str, heard_ms: float, ms_per_char: float) -> str:
    """The sentences of an utterance not yet heard, from the first whose estimated start
    (characters before it times ``ms_per_char``) lies after the ``heard_ms`` of audio
    already sent; a sentence under way is not repeated. All of it when nothing was heard."""
    if heard_ms <= 0:
        return text
    before = 0
    parts = sentences(text)
    for i, part in enumerate(parts):
        if before * ms_per_char >= heard_ms:
            return "".join(parts[i:])
        before += len(part)
    return ""


def pace(audio_ms: float, characters: int) -> float:
    """Milliseconds of audio per character to assume at a seam: the session's measured
    pace (scaled toward fast) once it has one, else `FAST_SPEECH_MS_PER_CHAR`."""
    if characters <= 0 or audio_ms <= 0:
        return FAST_SPEECH_MS_PER_CHAR
    return min(FAST_SPEECH_MS_PER_CHAR, audio_ms / characters * MEASURED_PACE_SHARE)


# -- STT audio kept for replay --------------------------------------------------------

class ReplayBuffer:
    """Client audio (as received: its codec and rate) not yet covered by a final
    transcript, at most ``max_bytes`` (the oldest goes first), with the points where
    finalizes came, so a backup hears the same audio and the same finalizes in order."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._chunks: deque[tuple[int, bytes]] = deque()  # (offset, bytes)
        self._end = 0  # offset after the last byte received
        self._size = 0
        self.finalizes: deque[int] = deque()  # offsets of finalizes not yet answered

    @property
    def end(self) -> int:
        return self._end

    def push(self, data: bytes) -> None:
        if not data:
            return
        self._chunks.append((self._end, data))
        self._end += len(data)
        self._size += len(data)
        if self._size > self.max_bytes:
            self.drop_before(self._end - self.max_bytes)

    def finalize(self) -> None:
        self.finalizes.append(self._end)

    def finalized(self) -> None:
        """A finalize was answered: the audio before it is covered."""
        if self.finalizes:
            self.drop_before(self.finalizes.popleft())

    def drop_before(self, offset: int) -> None:
        while self._chunks and self._chunks[0][0] + len(self._chunks[0][1]) <= offset:
            _, old = self._chunks.popleft()
            self._size -= len(old)
        if self._chunks and self._chunks[0][0] < offset:
            start, data = self._chunks.popleft()
            kept = data[offset - start:]
            self._size -= len(data) - len(kept)
            self._chunks.appendleft((offset, kept))

    def replay(self) -> list[tuple[str, bytes]]:
        """What to send a backup, in order: ("audio", bytes) and ("finalize", b"")."""
        out: list[tuple[str, bytes]] = []
        marks = list(self.finalizes)
        for start, data in self._chunks:
            pos = 0
            while marks and marks[0] <= start + len(data):
                cut = max(0, marks.pop(0) - start)
                if cut > pos:
                    out.append(("audio", data[pos:cut]))
                    pos = cut
                out.append(("finalize", b""))
            if pos < len(data):
                out.append(("audio", data[pos:]))
        out += [("finalize", b"") for _ in marks]
        return out


# -- health ---------------------------------------------------------------------------

@dataclass
class _Down:
    since: float
    failures: int
    probe_at: float


class ProviderHealth:
    """Providers this worker holds down. A failure marks a provider down; it is probed
    once its backoff (1, 2, 4 ... 30 s by consecutive failures) has passed, and stays
    down until a probe answers. ``shared``: marks other workers published (Redis), with
    when each lapses."""

    def __init__(self, backoff: tuple[float, ...] = HEALTH_BACKOFF_S) -> None:
        self.backoff = backoff
        self._down: dict[str, _Down] = {}
        self.shared: dict[str, float] = {}

    def _delay(self, failures: int) -> float:
        return self.backoff[min(failures, len(self.backoff)) - 1]

    def failed(self, name: str, now: float) -> float:
        """``name`` failed a session: down (again); the seconds until its next probe."""
        down = self._down.get(name)
        failures = 1 if down is None else down.failures + 1
        delay = self._delay(failures)
        self._down[name] = _Down(now if down is None else down.since, failures, now + delay)
        return delay

    def is_down(self, name: str, now: float) -> bool:
        return name in self._down or self.shared.get(name, 0.0) > now

    def due(self, now: float) -> list[str]:
        """Providers whose probe is due."""
        return [name for name, d in self._down.items() if d.probe_at <= now]

    def probe_at(self, name: str) -> float | None:
        down = self._down.get(name)
        return None if down is None else down.probe_at

    def probe_failed(self, name: str, now: float) -> float:
        return self.failed(name, now)

    def probe_answered(self, name: str) -> None:
        self._down.pop(name, None)
        self.shared.pop(name, None)

    def down(self) -> list[str]:
        return sorted(self._down)
