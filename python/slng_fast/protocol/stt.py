"""The unified STT session (PROTOCOL.md section 5) as a pure state machine.

``start`` (or a first binary frame, which implies 16 kHz pcm16) opens the upstream;
binary audio is converted to what the model wants; partial and final ``transcript``s
pass through; each ``finalize`` gets exactly one ``final_transcript`` holding the text
since the previous one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from slng_fast import errors
from slng_fast._native import RelayReport
from slng_fast.config import TierLimits
from slng_fast.errors import GatewayError
from slng_fast.protocol import commands as cmd
from slng_fast.protocol import events, stt_failover
from slng_fast.protocol.actions import (
    Action,
    OpenUpstream,
    SendClient,
    SendUpstream,
    StartUplink,
    StopUplink,
)
from slng_fast.protocol.audio import AudioIn
from slng_fast.protocol.failover_session import CHAIN_SLOTS, ChainMixin
from slng_fast.protocol.fallback import (
    CLOSED,
    STALLED,
    UNAVAILABLE,
    UNREACHABLE,
    ReplayBuffer,
    refusal_switches,
)
from slng_fast.protocol.session import NATIVE, PROVIDER_TIMEOUT_S, UNIFIED, SessionCore
from slng_fast.protocol.state import SessionEvent, SessionState
from slng_fast.vocabulary import (
    Endpoint,
    FinalTranscript,
    Frame,
    Reply,
    SttDialect,
    Transcript,
    UpstreamError,
)

STT_CODECS = ("pcm16", "mulaw", "alaw")


def stt_capabilities(languages: Sequence[str]) -> dict[str, Any]:
    """What ``start`` accepts on an STT endpoint (the STT ``ready`` carries no such
    object; the voice catalogue shows this one in its place)."""
    capabilities: dict[str, Any] = {
        "codecs": list(STT_CODECS),
        "sample_rates": list(cmd.STT_SAMPLE_RATES),
        "finalize": True,
    }
    if languages:
        capabilities["languages"] = list(languages)
    return capabilities


class SttSession(ChainMixin, SessionCore):
    __slots__ = (*CHAIN_SLOTS, "client_codec", "client_rate", "finalize_waiting_since", "finalizes_pending", "replay", "seconds_at_last_final", "segments", "uplinking")
    endpoint_kind = "stt"
    opened_word = "started"
    # Its client audio comes in binary frames, which the data plane's uplink can own.
    binary_audio: ClassVar[bool] = True

    def __init__(self, *, endpoint: Endpoint, dialect: SttDialect, tier: TierLimits, now: float,
                 defaults: dict[str, Any] | None = None,
                 rate_limit: Callable[[float], float] | None = None,
                 provider_timeout_s: float = PROVIDER_TIMEOUT_S) -> None:
        defaults = dict(defaults or {})
        super().__init__(endpoint=endpoint, tier=tier, now=now,
                         context_id=defaults.pop("context_id", None), rate_limit=rate_limit,
                         provider_timeout_s=provider_timeout_s)
        self.finalize_waiting_since: float | None = None
        self.dialect = dialect
        self.defaults = defaults
        self.audio: AudioIn | None = None
        self.finalizes_pending = 0
        self.segments: list[str] = []  # final segments since the last finalize
        self.seconds_at_last_final = 0.0
        self._init_chain()
        self.replay: ReplayBuffer | None = None  # with a chain: audio a backup would need
        self.client_codec = "pcm16"
        self.client_rate = 16000
        # The client's audio is lent to the data plane (StartUplink).
        self.uplinking = False

    def mode_for_first_binary(self, frame: bytes) -> str:
        """Binary audio implies ``start``, unless it is the provider's own frame (Kyutai's
        MessagePack), which makes the session native."""
        return NATIVE if self.dialect.is_native_frame(frame) else UNIFIED

    def on_command(self, name: str, fields: dict[str, Any], now: float) -> list[Action]:
        chain = None
        if name == "start":
            fields = {**self.defaults, **fields}
            chain = fields.pop("fallback", None)
        command = cmd.parse_stt(name, fields)
        if isinstance(command, cmd.Ping):
            return [SendClient(events.pong(self.context_id, now))]
        if isinstance(command, cmd.Start):
            self.machine.check(SessionEvent.OPEN)
            return self._start(command, now, chain)
        self.machine.require(SessionState.OPEN, command=name, first="start")
        if isinstance(command, cmd.Finalize):
            actions = self._stop_uplink()
            if not self.finalizes_pending:
                self.finalize_waiting_since = now
            self.finalizes_pending += 1
            if self.replay is not None:
                self.replay.finalize()
            return actions + [SendUpstream(f) for f in self.dialect.finalize(now)]
        if isinstance(command, cmd.Stop):
            return self.end("client_closed", now)
        raise GatewayError(errors.UNKNOWN_COMMAND, f"unknown command {name!r}")

    def _start(self, start: cmd.Start, now: float, chain: Any = None) -> list[Action]:
        languages = self.endpoint.languages
        if start.language and languages and start.language not in languages:
            raise GatewayError(errors.INVALID_PARAMETER,
                               f"language {start.language!r} is not offered by "
                               f"{self.endpoint.name}; languages: {', '.join(languages)}")
        links = stt_failover.stt_links(self, chain, start)
        self.machine.move(SessionEvent.OPEN)
        if start.context_id:
            self.context_id = start.context_id
        self.client_rate = rate = start.sample_rate_hz or 16000
        self.client_codec = codec = start.codec or "pcm16"
        extra = None
        if len(links) > 1:
            extra = {"session": {"provider": self.endpoint.name,
                                 "fallback": [link.name for link in links[1:]]}}
        actions: list[Action] = [
            SendClient(events.ready_stt(self.context_id, self.endpoint.name, rate, codec,
                                        extra))]
        actions += stt_failover.start_chain(self, links, now)
        self.audio = stt_failover.new_audio_in(self)
        return actions + stt_failover.open_serving(self)

    def on_audio(self, frame: bytes, now: float) -> list[Action]:
        actions: list[Action] = []
        if not self.opened:
            actions += self._start(cmd.parse_start(self.defaults), now)
        assert self.audio is not None
        # A frame that reaches the session means the data plane does not hold the stream.
        actions += self._stop_uplink()
        if self.replay is not None:
            self.replay.push(frame)
        pcm = self.audio.push(frame)
        self.usage.audio_ms = self.audio.received_seconds * 1000.0
        actions += [SendUpstream(f) for f in self.dialect.audio(pcm, now)]
        return actions + self._start_uplink()

    def receive_upstream(self, epoch: int, frame: Frame, now: float) -> list[Action]:
        if self.ended or epoch != self.upstream_epoch or not self.upstream_open:
            return []
        self.last_upstream = now
        if self.mode == NATIVE:
            return [SendClient(frame)]
        return self._upstream_events(self.dialect.receive(frame), now)

    def _upstream_events(self, upstream_events: list[Any], now: float) -> list[Action]:
        actions: list[Action] = []
        if any(isinstance(event, Reply) for event in upstream_events):
            # First, before anything that waits: the data plane must not carry one more
            # read once the dialect holds the audio again.
            actions += self._stop_uplink()
        for event in upstream_events:
            if isinstance(event, Transcript):
                if event.is_final and event.text:
                    self.segments.append(event.text)
                actions.append(SendClient(events.transcript(
                    self.context_id, event.text, event.is_final, event.confidence, now,
                    start=event.start, end=event.end)))
            elif isinstance(event, FinalTranscript):
                actions += self._final(event, now)
            elif isinstance(event, UpstreamError):
                # "the server is full" (WhisperLive's WAIT) is unavailability, close 1013.
                if event.code == "provider_unavailable" and self.has_chain:
                    return actions + stt_failover.switch(self, UNAVAILABLE, now)
                kind = (errors.PROVIDER_UNAVAILABLE if event.code == "provider_unavailable"
                        else errors.PROVIDER_ERROR)
                err = GatewayError(kind, event.message, retryable=event.retryable)
                actions += self.fail(err, now) if event.fatal else [self._error(err)]
            elif isinstance(event, Reply):
                actions += [SendUpstream(f) for f in event.frames]
        return actions + self._ended_if_drained(now)

    def in_flight(self) -> bool:
        return self.mode == NATIVE or self.finalizes_pending > 0

    def deadline(self) -> float | None:
        """The dialect's own deadline when it has one (WhisperLive: a finalize that only
        time can settle, since its server sends nothing for silence); else, while a
        finalize waits, when a provider that has sent nothing since is given up on."""
        if self.ended or not self.upstream_open or self.mode != UNIFIED:
            return None
        own = self.dialect.deadline()
        return own if own is not None else self._quiet_deadline()

    def _quiet_deadline(self) -> float | None:
        if (not self.finalizes_pending or self.finalize_waiting_since is None
                or self.upstream_connecting):  # the connect budget bounds this wait
            return None
        return max(self.last_upstream, self.finalize_waiting_since) + self.provider_timeout_s

    def on_deadline(self, now: float) -> list[Action]:
        if self.ended or not self.upstream_open or self.mode != UNIFIED:
            return []
        if self.dialect.deadline() is not None:
            return self._upstream_events(self.dialect.on_deadline(now), now)
        quiet = self._quiet_deadline()
        if quiet is not None and now >= quiet and self.has_chain:
            return stt_failover.switch(self, STALLED, now)
        if quiet is not None and now >= quiet:
            # The audio already sent is the provider's now: it cannot be replayed to a new
            # connection, so the session ends (the client may retry).
            err = GatewayError(errors.PROVIDER_UNAVAILABLE,
                               f"the speech model sent nothing for {self.provider_timeout_s:g} s "
                               "after finalize")
            return self._fatal(err, errors.CLOSE_TRY_AGAIN_LATER, now, reason="error")
        return []

    def keepalive(self, now: float) -> list[Action]:
        """Called by the I/O layer every ``dialect.keepalive_interval`` seconds."""
        if self.ended or not self.upstream_open:
            return []
        actions = self._stop_uplink()  # the dialect may send audio it holds back
        actions += [SendUpstream(f) for f in self.dialect.keepalive()]
        return actions + self._start_uplink()

    # -- the data plane (docs/decisions.md, "The data plane boundary") -------------------
    def _start_uplink(self) -> list[Action]:
        """Lend the client's audio to the data plane after a frame the session handled
        itself, when nothing but converting and passing audio on is left to do: the
        dialect frames audio so the uplink can, no finalize waits (its answer may need
        the session to send more), and no fallback chain (its replay buffer keeps the
        client's audio, which the data plane does not hand back)."""
        audio = self.audio
        if (self.uplinking or not self.binary_audio or self.ended or self.mode != UNIFIED
                or not self.opened or not self.upstream_open or audio is None
                or self.finalizes_pending or self.has_chain or self.replay is not None
                or self.dialect.uplink_framing != audio.uplink.framing):
            return []
        audio.uplink.set_held(self.dialect.lend_held())
        self.uplinking = True
        return [StartUplink(self.upstream_epoch, audio.uplink)]

    def _stop_uplink(self) -> list[Action]:
        """Take the client's audio back (and what the uplink holds back, into the
        dialect) before anything that sends upstream or converts audio. Its action goes
        first in the step's list: the I/O layer then stops the uplink before it awaits
        anything, so no read goes through it after the dialect has the audio back."""
        if not self.uplinking:
            return []
        self.uplinking = False
        if self.audio is not None:
            self.dialect.take_held(self.audio.uplink.take_held())
        return [StopUplink(self.upstream_epoch)]

    def uplinked(self, epoch: int, report: RelayReport, now: float) -> None:
        """Input: what the data plane carried of the client's audio to upstream
        ``epoch`` since its last report (already written or being written): counted as
        the session counts its own (received audio, usage, the dialect's own counts)."""
        if self.ended or epoch != self.upstream_epoch or self.audio is None:
            return
        if report.in_bytes:
            self.audio.credit(report.in_bytes)
            self.usage.audio_ms = self.audio.received_seconds * 1000.0
        self.dialect.uplinked(report.out_bytes, report.chunks, now)

    def end(self, reason: str, now: float, *, close_code: int = errors.CLOSE_NORMAL,
            close_reason: str = "") -> list[Action]:
        stop = self._stop_uplink()
        return stop + super().end(reason, now, close_code=close_code, close_reason=close_reason)

    def upstream_closed(self, epoch: int, now: float, code: int | None = None,
                        reason: str | None = None) -> list[Action]:
        if epoch == self.upstream_epoch:
            self._stop_uplink()  # the uplink ended with its upstream
        return super().upstream_closed(epoch, now, code, reason)

    def _final(self, event: FinalTranscript, now: float) -> list[Action]:
        if self.finalizes_pending == 0:
            return []
        self.finalizes_pending -= 1
        self.finalize_waiting_since = now if self.finalizes_pending else None
        if self.replay is not None:
            self.replay.finalized()
        received = self.audio.received_seconds if self.audio else 0.0
        seconds = received - self.seconds_at_last_final
        self.seconds_at_last_final = received
        text = event.text if event.text else " ".join(self.segments)
        self.segments.clear()
        return [SendClient(events.final_transcript(self.context_id, text, seconds, now))]

    def upstream_failed(self, epoch: int, message: str, now: float,
                        status: int | None = None) -> list[Action]:
        if (self.has_chain and not self.ended and epoch == self.upstream_epoch
                and refusal_switches(status)):
            self.upstream_open = False
            return stt_failover.switch(self, UNREACHABLE, now)
        return super().upstream_failed(epoch, message, now, status)

    def on_upstream_closed(self, now: float, code: int | None = None,
                           reason: str | None = None) -> list[Action]:
        if self.has_chain:
            return stt_failover.switch(self, CLOSED, now)
        err = GatewayError(errors.PROVIDER_UNAVAILABLE, "the speech model closed the stream")
        return self._fatal(err, errors.CLOSE_TRY_AGAIN_LATER, now, reason="upstream_closed")

    def start_native(self, now: float) -> list[Action]:
        self.upstream_epoch += 1
        self.upstream_open = True
        return [OpenUpstream(self.upstream_epoch, self.passthrough or self.dialect.request())]

    def native_from_client(self, frame: str | bytes, now: float) -> list[Action]:
        if isinstance(frame, bytes):
            self.usage.audio_ms += self.dialect.native_audio_ms(frame)
        return [SendUpstream(frame)] if self.upstream_open else []
