"""The unified TTS session (PROTOCOL.md section 4) as a pure state machine.

Utterances: the text between two flushes. Each flush opens one utterance and is answered
by exactly one ``audio_end``; ``stop`` ends every open utterance with ``interrupted: true``.
The upstream opens at ``init`` (so the first audio comes early) and, after a stop or a
settings change that needs a new connection, lazily at the next flush."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from slng_fast import errors
from slng_fast._native import RelayReport
from slng_fast.config import TierLimits
from slng_fast.errors import GatewayError
from slng_fast.protocol import commands as cmd
from slng_fast.protocol import events, tts_failover
from slng_fast.protocol.actions import (
    Action,
    CloseUpstream,
    OpenUpstream,
    SendClient,
    SendUpstream,
    StartRelay,
    StopRelay,
)
from slng_fast.protocol.audio import AudioOut
from slng_fast.protocol.failover_session import CHAIN_SLOTS, ChainMixin
from slng_fast.protocol.fallback import (
    CLOSED,
    FIRST_AUDIO_TIMEOUT,
    STALLED,
    close_switches,
    speakable,
)
from slng_fast.protocol.session import NATIVE, PROVIDER_TIMEOUT_S, SessionCore
from slng_fast.protocol.state import SessionEvent
from slng_fast.vocabulary import (
    Audio,
    Capabilities,
    Endpoint,
    Frame,
    Reply,
    Settings,
    TtsDialect,
    UpstreamError,
    UtteranceDone,
    Words,
)

TTS_CODECS = ("pcm16", "mulaw", "alaw")


def tts_capabilities(dialect: Capabilities, voices: Sequence[str],
                     languages: Sequence[str]) -> dict[str, Any]:
    """``ready.capabilities`` of a TTS session; the voice catalogue (GET /v1/voices)
    shows the same object per endpoint, so a client learns it before connecting."""
    capabilities = {
        **dialect.as_dict(),
        "codecs": list(TTS_CODECS),
        "sample_rates": list(cmd.TTS_SAMPLE_RATES),
        "voices": list(voices),
    }
    if languages:
        capabilities["languages"] = list(languages)
    return capabilities


@dataclass
class Utterance:
    id: int
    empty: bool = False
    audio_ms: float = 0.0
    flushed_at: float = 0.0
    # For a switch of provider: its text, whether it has words to say (a provider may
    # answer a flush of spaces with no audio), and since when its first audio is awaited.
    text: str = ""
    speakable: bool = True
    waiting_since: float = 0.0


class TtsSession(ChainMixin, SessionCore):
    __slots__ = (*CHAIN_SLOTS, "codec", "next_utterance", "paced", "pending", "reconnect_when_idle", "relaying", "sample_rate", "settings", "unflushed", "voices", "word_timestamps")
    endpoint_kind = "tts"

    def __init__(self, *, endpoint: Endpoint, dialect: TtsDialect, tier: TierLimits, now: float,
                 defaults: dict[str, Any] | None = None, voices: tuple[str, ...] | None = None,
                 rate_limit: Callable[[float], float] | None = None,
                 provider_timeout_s: float = PROVIDER_TIMEOUT_S) -> None:
        defaults = dict(defaults or {})
        super().__init__(endpoint=endpoint, tier=tier, now=now,
                         context_id=defaults.pop("context_id", None), rate_limit=rate_limit,
                         provider_timeout_s=provider_timeout_s)
        self.dialect = dialect
        self.voices = voices if voices is not None else endpoint.voices
        self.defaults = defaults  # query parameters: preset init fields
        self.settings = Settings()
        self.codec = "pcm16"
        self.sample_rate = 24000
        self.word_timestamps = False
        self.audio: AudioOut | None = None
        # A list, not a deque: few utterances wait at once (each takes a flush, which the
        # message rate limits), and an empty deque is a 760-byte block made at accept
        # for every connection.
        self.pending: list[Utterance] = []
        self.next_utterance = 1
        self.reconnect_when_idle = False
        self._init_chain()
        self.paced = (0, 0.0)  # finished utterances: (characters, audio ms), for a seam
        self.unflushed: list[str] = []  # text since the last flush (sent again on a switch)
        # The current upstream's stream is lent to the data plane (StartRelay).
        self.relaying = False

    # -- commands ---------------------------------------------------------------------
    def on_command(self, name: str, fields: dict[str, Any], now: float) -> list[Action]:
        if name == "init":
            self.machine.check(SessionEvent.OPEN)
            fields = {**self.defaults, **fields}
            chain = fields.pop("fallback", None)
            return self._init(cmd.parse_init(fields), now, chain)
        command = cmd.parse_tts(name, fields)
        if isinstance(command, cmd.Ping):  # a keep-alive opens nothing
            return [SendClient(events.pong(self.context_id, now))]
        actions: list[Action] = []
        if not self.opened:  # any command but ping opens with the defaults
            actions += self._init(cmd.parse_init(self.defaults), now)
        if isinstance(command, cmd.InputText):
            return actions + self._input_text(command.text)
        if isinstance(command, cmd.Flush):
            return actions + self._flush(now)
        if isinstance(command, cmd.Stop):
            return actions + self._stop() + self._ended_if_drained(now)
        if isinstance(command, cmd.Clear):
            self.unflushed.clear()
            return actions + self._stop_relay() + [SendUpstream(f) for f in self.dialect.clear()]
        if isinstance(command, cmd.Configure):
            return actions + self._configure(command.settings)
        raise GatewayError(errors.UNKNOWN_COMMAND, f"unknown command {name!r}")

    def _init(self, init: cmd.Init, now: float, chain: Any = None) -> list[Action]:
        voice = init.settings.voice_id or self.endpoint.default_voice
        self._check_voice(voice)
        self._check_language(init.settings.language)
        links = tts_failover.tts_links(self, chain, init.settings)
        self.machine.move(SessionEvent.OPEN)
        if init.context_id:
            self.context_id = init.context_id
        self.settings = init.settings
        self.codec = init.codec or "pcm16"
        self.sample_rate = init.sample_rate_hz or 24000
        self.word_timestamps = init.word_timestamps
        self.dialect.prefer_output(self.sample_rate)  # PCM at the client's rate if it can
        self.audio = AudioOut(codec=self.codec, sample_rate=self.sample_rate,
                              max_chunk_bytes=self.tier.max_audio_chunk_bytes,
                              context_id=self.context_id, seams=len(links) > 1)
        session = {
            "id": self.session_id,
            "provider": self.endpoint.name,
            "voice_id": voice,
            "codec": self.codec,
            "sample_rate_hz": self.sample_rate,
            "tier": self.tier.name,
            "limits": self.tier.as_public_dict(),
            "fallback": [link.name for link in links[1:]],
        }
        capabilities = tts_capabilities(self.dialect.capabilities, self.voices,
                                        self.endpoint.languages)
        actions: list[Action] = [SendClient(events.ready_tts(self.context_id, session, capabilities))]
        return actions + tts_failover.start_chain(self, links, now) + self._open_upstream()

    def _check_voice(self, voice: str | None) -> None:
        # eSpeak-style "voice+variant" names are checked by their voice part.
        if voice is not None and self.voices and voice.split("+", 1)[0] not in self.voices:
            raise GatewayError(errors.INVALID_PARAMETER,
                               f"voice {voice!r} is not offered by {self.endpoint.name}; "
                               f"voices: {', '.join(self.voices[:20])}")

    def _check_language(self, language: str | None) -> None:
        if language is not None and self.endpoint.languages and language not in self.endpoint.languages:
            raise GatewayError(errors.INVALID_PARAMETER,
                               f"language {language!r} is not offered by {self.endpoint.name}; "
                               f"languages: {', '.join(self.endpoint.languages)}")

    def _input_text(self, text: str) -> list[Action]:
        if len(text) > self.tier.max_text_chars:
            raise GatewayError(errors.TEXT_TOO_LONG,
                               f"text of {len(text)} characters exceeds the "
                               f"{self.tier.max_text_chars}-character limit")
        self.usage.characters += len(text)
        if self.has_chain:
            self.unflushed.append(text)
        return self._to_upstream(self.dialect.input_text(text))

    def _flush(self, now: float) -> list[Action]:
        frames = self.dialect.flush()
        text = "".join(self.unflushed)
        self.unflushed.clear()
        utterance = Utterance(self.next_utterance, empty=not frames, flushed_at=now, text=text,
                              speakable=speakable(text) if self.has_chain else True,
                              waiting_since=now)
        self.next_utterance += 1
        if utterance.empty and not self.pending:
            return [self._audio_end(utterance, interrupted=False)]
        self.pending.append(utterance)
        return self._to_upstream(frames)

    def _stop(self) -> list[Action]:
        self.unflushed.clear()
        had_text = self.dialect.has_buffered_text
        cleared = self.dialect.clear()
        actions: list[Action] = self._stop_relay()
        if self.upstream_open and self.dialect.stop_by_reconnect:
            actions += self._close_upstream()
        elif self.upstream_open:
            frames = cleared + (self.dialect.stop() if self.pending else [])
            actions += [SendUpstream(f) for f in frames]
        if self.audio is not None:
            self.audio.drop()
        if not self.pending and had_text:
            self.pending.append(Utterance(self.next_utterance))
            self.next_utterance += 1
        while self.pending:
            actions.append(self._audio_end(self.pending.pop(0), interrupted=True))
        return actions

    def _configure(self, settings: Settings) -> list[Action]:
        if settings.voice_id is not None:
            self._check_voice(settings.voice_id)
        self._check_language(settings.language)
        self.settings = self.settings.merged(settings)
        if not self.upstream_open:
            return []
        # Some settings live in a provider's URL (ElevenLabs' voice and model): those
        # changes reconnect even on a dialect that otherwise configures in place.
        if (not self.dialect.capabilities.configure_reconnects
                and not self.dialect.configure_needs_reconnect(self.settings)):
            return [SendUpstream(f) for f in self.dialect.configure(self.settings)]
        if self.pending:
            self.reconnect_when_idle = True
            return []
        return self._close_upstream()

    # -- upstream ------------------------------------------------------------------------
    def _open_upstream(self) -> list[Action]:
        self.upstream_epoch += 1
        self.upstream_open = True
        request = self.dialect.request(self.settings)
        actions: list[Action] = [OpenUpstream(self.upstream_epoch, request)]
        return actions + [SendUpstream(f) for f in self.dialect.open_frames(self.settings)]

    def _close_upstream(self) -> list[Action]:
        actions = self._stop_relay()
        self.upstream_open = False
        epoch = self.upstream_epoch
        self.upstream_epoch += 1  # frames still arriving from it are late
        return actions + [CloseUpstream(epoch)]

    def keepalive(self, now: float) -> list[Action]:
        """Called by the I/O layer every ``dialect.keepalive_interval`` seconds."""
        if self.ended or not self.upstream_open:
            return []
        return [SendUpstream(f) for f in self.dialect.keepalive()]

    def _to_upstream(self, frames: list[Frame]) -> list[Action]:
        if not frames:
            return []
        actions: list[Action] = [] if self.upstream_open else self._open_upstream()
        return actions + [SendUpstream(f) for f in frames]

    def receive_upstream(self, epoch: int, frame: Frame, now: float) -> list[Action]:
        if self.ended or epoch != self.upstream_epoch or not self.upstream_open:
            return []  # late audio from a stopped upstream is dropped
        self.last_upstream = now
        if self.mode == NATIVE:
            self.usage.audio_ms += self.dialect.native_audio_ms(frame)
            return [SendClient(frame)]
        # A message reaches the session only when the data plane does not hold the stream
        # (it never took it, or handed it back at this message, which it does not own).
        self.relaying = False
        actions: list[Action] = []
        for event in self.dialect.receive(frame):
            actions += self._on_event(event, now)
        return actions + self._ended_if_drained(now) + self._start_relay()

    def in_flight(self) -> bool:
        return self.mode == NATIVE or bool(self.pending)

    def upstream_failed(self, epoch: int, message: str, now: float,
                        status: int | None = None) -> list[Action]:
        switched = tts_failover.upstream_failed(self, epoch, now, status)
        if switched is not None:
            return switched
        return super().upstream_failed(epoch, message, now, status)

    # -- the data plane (docs/decisions.md, "The data plane boundary") -------------------
    def _start_relay(self) -> list[Action]:
        """Lend the stream to the data plane once an utterance's first audio is out (that
        one is timed here) and the dialect frames its audio so the relay can own it."""
        if (self.relaying or self.ended or not self.upstream_open or self.mode == NATIVE
                or self.audio is None or not self.pending or self.pending[0].audio_ms == 0
                or self.word_timestamps  # the data plane reads no timings
                or self.has_chain):  # a seam needs the last frame (docs/decisions.md)
            return []
        framing = self.dialect.relay_framing
        if framing is None:
            return []
        self.relaying = True
        return [StartRelay(self.upstream_epoch,
                           self.audio.relay(framing, self.dialect.sample_rate))]

    def _stop_relay(self) -> list[Action]:
        """Take the stream back before anything that changes the output state."""
        if not self.relaying:
            return []
        self.relaying = False
        return [StopRelay(self.upstream_epoch)]

    def relayed(self, epoch: int, report: RelayReport, now: float) -> None:
        """Input: what the data plane carried of upstream ``epoch`` since its last report
        (already framed for the client): counted as the session counts its own audio."""
        if self.ended or epoch != self.upstream_epoch or self.audio is None:
            return
        if report.messages:
            self.last_upstream = now
        if report.out_bytes:
            ms = self.audio.credit(report.out_bytes)
            if self.pending:
                self.pending[0].audio_ms += ms
            self.usage.audio_ms += ms

    def end(self, reason: str, now: float, *, close_code: int = errors.CLOSE_NORMAL,
            close_reason: str = "") -> list[Action]:
        stop = self._stop_relay()
        return stop + super().end(reason, now, close_code=close_code, close_reason=close_reason)

    def upstream_closed(self, epoch: int, now: float, code: int | None = None,
                        reason: str | None = None) -> list[Action]:
        if epoch == self.upstream_epoch:
            self.relaying = False  # the relay ended with its connection
        return super().upstream_closed(epoch, now, code, reason)

    def _on_event(self, event: Any, now: float) -> list[Action]:
        if isinstance(event, Audio):
            if not self.pending or self.audio is None:
                return []  # audio nobody asked for (e.g. after clear) is not sent
            frames, ms = self.audio.push(event.data, event.sample_rate, event.sample_format)
            if frames and self.pending[0].audio_ms == 0:
                self.observations.append(("first_audio", now - self.pending[0].flushed_at))
            self.pending[0].audio_ms += ms
            self.usage.audio_ms += ms
            return [SendClient(f, text=True) for f in frames]
        if isinstance(event, UtteranceDone):
            return self._utterance_done(now)
        if isinstance(event, Words):
            if self.word_timestamps:
                return [SendClient(events.word_timestamps(
                    self.context_id, list(event.words), list(event.start_ms), list(event.end_ms)))]
            return []
        if isinstance(event, UpstreamError):
            err = GatewayError(errors.PROVIDER_ERROR, event.message, retryable=event.retryable)
            if event.fatal:
                return self.fail(err, now)
            return [self._error(err)]
        if isinstance(event, Reply):
            return [SendUpstream(f) for f in event.frames]
        return []  # UpstreamReady, Ignored

    def _utterance_done(self, now: float) -> list[Action]:
        actions: list[Action] = []
        if not self.pending:
            return actions
        utterance = self.pending.pop(0)
        tts_failover.utterance_finished(self, utterance, now)
        if self.audio is not None:
            frames, ms = self.audio.end_utterance()
            utterance.audio_ms += ms
            self.usage.audio_ms += ms
            actions += [SendClient(f, text=True) for f in frames]
        actions.append(self._audio_end(utterance, interrupted=False))
        while self.pending and self.pending[0].empty:
            actions.append(self._audio_end(self.pending.pop(0), interrupted=False))
        if not self.pending and self.reconnect_when_idle:
            self.reconnect_when_idle = False
            actions += self._close_upstream()
        return actions

    def _audio_end(self, utterance: Utterance, *, interrupted: bool) -> SendClient:
        return SendClient(events.audio_end(self.context_id, utterance.id, utterance.audio_ms,
                                           interrupted))

    def deadline(self) -> float | None:
        """While utterances wait on an open upstream (unified mode): when a provider that
        has sent nothing since is given up on (with a fallback chain, also when one that
        has sent no audio for the utterance since its flush is)."""
        if (self.ended or self.mode == NATIVE or not self.upstream_open or not self.pending
                or all(u.empty for u in self.pending)):
            return None
        first = tts_failover.first_audio_deadline(self)
        if self.upstream_connecting:  # the connect budget bounds this wait
            return first
        waiting_since = max(self.last_upstream, self.pending[0].flushed_at)
        quiet = waiting_since + self.provider_timeout_s
        return quiet if first is None else min(quiet, first)

    def on_deadline(self, now: float) -> list[Action]:
        """The provider went quiet mid-utterance: as if it had closed the connection (a
        retryable `provider_error`, the utterances end interrupted), and the upstream is
        closed, to be reopened at the next flush."""
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return []
        if self.has_chain:
            head = self.pending[0]
            if not head.speakable and head.audio_ms == 0:
                return tts_failover.silent_head(self, now)
            first = tts_failover.first_audio_deadline(self)
            reason = FIRST_AUDIO_TIMEOUT if first is not None and now >= first else STALLED
            return tts_failover.switch(self, reason, now)
        err = GatewayError(errors.PROVIDER_ERROR,
                           f"the provider sent nothing for {self.provider_timeout_s:g} s "
                           "mid-utterance", retryable=True)
        return self._close_upstream() + self._interrupt_pending(err) + self._ended_if_drained(now)

    def on_upstream_closed(self, now: float, code: int | None = None,
                           reason: str | None = None) -> list[Action]:
        """The upstream went away by itself. Idle: reopen lazily, unseen. Mid-utterance:
        the open utterances end interrupted, with an error (the dialect's reading of the
        close code when it has one, else retryable). No code but a reason: the gateway
        ended the connection, and the reason says why."""
        self.upstream_epoch += 1
        if not self.pending:
            return []
        event = self.dialect.close_error(code, reason)
        if self.has_chain and close_switches(
                code, isinstance(event, UpstreamError) and not event.retryable):
            return tts_failover.switch(self, CLOSED, now)
        if isinstance(event, UpstreamError):
            err = GatewayError(errors.PROVIDER_ERROR, event.message, retryable=event.retryable)
        else:
            what = reason if code is None and reason \
                else "the provider closed the connection"
            err = GatewayError(errors.PROVIDER_ERROR, f"{what} mid-utterance", retryable=True)
        return self._interrupt_pending(err)

    def _interrupt_pending(self, err: GatewayError) -> list[Action]:
        actions: list[Action] = [self._error(err)]
        if self.audio is not None:
            self.audio.drop()
        while self.pending:
            actions.append(self._audio_end(self.pending.pop(0), interrupted=True))
        return actions

    # -- native mode ------------------------------------------------------------------------
    def start_native(self, now: float) -> list[Action]:
        self.upstream_epoch += 1
        self.upstream_open = True
        settings = Settings(voice_id=self.defaults.get("voice_id"),
                                language=self.defaults.get("language"))
        request = self.passthrough or self.dialect.native_request(settings)
        return [OpenUpstream(self.upstream_epoch, request)]

    def native_from_client(self, frame: str | bytes, now: float) -> list[Action]:
        if isinstance(frame, str):
            self.usage.characters += len(frame)
        self.dialect.native_client_frame(frame)
        if not self.upstream_open:
            return []
        return [SendUpstream(frame)]

    def close_actions(self, now: float) -> list[Action]:
        return []
