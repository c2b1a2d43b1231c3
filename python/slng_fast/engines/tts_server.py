"""The text-to-speech engines' server: the SLNG model-server dialect (PROTOCOL.md
section 8) in front of a synthesizer (eSpeak NG, Piper), in the engine's own process.

Both synthesizers are GPL: this module imports neither; each engine's module
(``espeak_server``, ``piper_server``) imports its synthesizer only inside its
``serve_*`` function.

Each synthesis runs in a worker thread that hands audio to the event loop without ever
waiting for a client, so a slow client cannot hold up the others. eSpeak runs one
synthesis at a time per process (a lock, held only for its own CPU time); Piper's
syntheses take turns sentence by sentence."""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from slng_fast.engines import wire
from slng_fast.engines.server import Connections

log = logging.getLogger("slng_fast.engines")

MAX_BUFFERED_CHARS = 100_000
"""Most unflushed text a session may hold; more is refused with ``text_too_long``."""

FRAME_MS = 200
"""Longest audio frame sent, in milliseconds (8,820 bytes at 22.05 kHz PCM16)."""


class Synth(Protocol):
    """What the server needs of a synthesizer. Its errors for bad settings are
    ``ValueError``s; ``synthesize`` runs on a worker thread."""

    sample_rate: int
    exclusive: bool
    """True: the server runs one synthesis at a time in the process (eSpeak). False: the
    synthesizer takes turns itself, piece by piece (Piper, sentence by sentence)."""

    def resolve_voice(self, voice: str | None = None, language: str | None = None) -> Any: ...

    def check_rate(self, rate: float) -> None: ...

    def synthesize(self, text: str, *, voice: Any, rate: float | None,
                   on_audio: Any, cancel: threading.Event) -> object: ...


@dataclass
class _Job:
    """One utterance to speak: the text of a flush, or what remained at ``__END__``."""

    text: str
    voice: Any
    rate: float | None
    end: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)


class TtsEngine:
    """One synthesizer served to many sessions; ``ready`` is the first frame of each."""

    def __init__(self, name: str, synth: Synth, ready: dict[str, Any], default_voice: str) -> None:
        self.name = name
        self.synth = synth
        self.connections = Connections()
        self.lock = trio.Lock()  # one synthesis at a time in this process
        self.default_voice = synth.resolve_voice(default_voice)
        self.ready_frame = wire.dumps(ready)
        self.max_frame = synth.sample_rate * FRAME_MS // 1000 * 2  # whole samples

    async def handle(self, request: WebSocketRequest) -> None:
        ws = await request.accept()
        await self.connections.run(ws, _TtsSession(self, ws).run, self.name)

    async def speak(self, ws: WebSocketConnection, job: _Job) -> bool:
        """Stream ``job``'s audio to ``ws``; return True if it was cut short.

        The synthesis runs in a worker thread (under the process lock if the
        synthesizer is ``exclusive``). Audio goes to
        the event loop through ``run_sync_soon`` into an unbounded channel, so the
        thread never waits for the client (memory is bounded by the text's length).
        Setting ``job.cancel`` (stop, disconnect, cancellation) stops the synthesizer at
        its next piece (eSpeak: a 60 ms buffer; Piper: a sentence) and drops audio not
        yet sent.
        """
        if job.cancel.is_set():
            return True
        if not job.text.strip():
            return False
        send, receive = trio.open_memory_channel[bytes](math.inf)
        token = trio.lowlevel.current_trio_token()

        def deliver(pcm: bytes) -> None:  # on the event loop
            try:
                send.send_nowait(pcm)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                job.cancel.set()

        def on_audio(pcm: bytes) -> bool:  # on the worker thread
            token.run_sync_soon(deliver, pcm)
            return job.cancel.is_set()

        def synthesize() -> object:
            return self.synth.synthesize(job.text, voice=job.voice, rate=job.rate,
                                         on_audio=on_audio, cancel=job.cancel)

        async def produce() -> None:
            try:
                if self.synth.exclusive:
                    async with self.lock:
                        await trio.to_thread.run_sync(synthesize)
                else:
                    await trio.to_thread.run_sync(synthesize)
            finally:
                # Completion reaches the loop after every deliver() queued before it.
                send.close()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            try:
                async with receive:
                    async for pcm in receive:
                        for frame in _coalesce(pcm, receive, self.max_frame):
                            if job.cancel.is_set():
                                break
                            await ws.send_message(frame)
                        if job.cancel.is_set():
                            break
            except BaseException:
                # Before the nursery waits for the thread: make it stop now.
                job.cancel.set()
                raise
        return job.cancel.is_set()


def _coalesce(first: bytes, receive: trio.MemoryReceiveChannel[bytes], limit: int) -> list[bytes]:
    """Join the pieces already waiting into frames of at most ``limit`` bytes (even)."""
    parts = [first]
    size = len(first)
    while size < limit:
        try:
            nxt = receive.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            break
        parts.append(nxt)
        size += len(nxt)
    joined = parts[0] if len(parts) == 1 else b"".join(parts)
    return [joined[i : i + limit] for i in range(0, len(joined), limit)]


class _TtsSession:
    """One client connection: a reader of frames and a speaker of queued jobs."""

    def __init__(self, engine: TtsEngine, ws: WebSocketConnection) -> None:
        self.engine = engine
        self.ws = ws
        self.voice = engine.default_voice
        self.rate: float | None = None
        self.buffer: list[str] = []
        self.buffered = 0  # characters in buffer
        self.outstanding: list[_Job] = []  # queued or being spoken
        self.jobs_in, self.jobs_out = trio.open_memory_channel[_Job](math.inf)
        self.ended = False

    async def run(self) -> None:
        await self.ws.send_message(self.engine.ready_frame)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.speaker, nursery.cancel_scope)
            try:
                await self.reader()
            finally:
                # The reader returns only once the socket is closed (or it is
                # cancelled): whatever is still queued or being spoken is moot.
                for job in self.outstanding:
                    job.cancel.set()
                self.jobs_in.close()

    async def send_json(self, event: dict[str, Any]) -> None:
        await self.ws.send_message(wire.dumps(event))

    def apply_settings(self, obj: dict[str, Any]) -> None:
        settings = wire.parse_tts_settings(obj)
        voice = self.engine.synth.resolve_voice(settings.voice, settings.language)
        if settings.rate is not None:
            self.engine.synth.check_rate(settings.rate)
        self.voice = voice
        self.rate = settings.rate
        if settings.ignored:
            log.debug("%s ignores settings %s", self.engine.name, ", ".join(settings.ignored))

    async def reader(self) -> None:
        first = True
        while True:
            try:
                message = await self.ws.get_message()
            except ConnectionClosed:
                return
            if self.ended:
                continue  # input is over; keep reading only to notice a disconnect
            if isinstance(message, bytes):
                await self.send_json(wire.tts_error("binary frames are not accepted", code="invalid_message"))
                continue
            frame = wire.parse_tts_frame(message)
            was_first, first = first, False
            if isinstance(frame, wire.TtsSettingsFrame):
                try:
                    self.apply_settings(frame.settings)
                except ValueError as exc:  # wire.SettingsError, or the synthesizer's
                    await self.send_json(wire.tts_error(str(exc)))
                    if was_first:
                        # Settings are the session: without valid ones there is none.
                        await self.ws.aclose(1008, "invalid settings")
                        return
            elif isinstance(frame, wire.TextChunk):
                if self.buffered + len(frame.text) > MAX_BUFFERED_CHARS:
                    await self.send_json(
                        wire.tts_error(
                            f"more than {MAX_BUFFERED_CHARS} characters without a flush",
                            code="text_too_long",
                        )
                    )
                    continue
                self.buffer.append(frame.text)
                self.buffered += len(frame.text)
            elif isinstance(frame, wire.Control):
                await self.control(frame.action)
            elif isinstance(frame, wire.EndOfInput):
                self.ended = True
                self.enqueue(end=True)
                self.jobs_in.close()
            else:
                await self.send_json(wire.tts_error(frame.message, code="invalid_message"))

    def clear_buffer(self) -> None:
        self.buffer.clear()
        self.buffered = 0

    def enqueue(self, *, end: bool = False) -> None:
        job = _Job("".join(self.buffer), self.voice, self.rate, end=end)
        self.clear_buffer()
        self.outstanding.append(job)
        self.jobs_in.send_nowait(job)

    async def control(self, action: str) -> None:
        if action == "flush":
            self.enqueue()
        elif action == "stop":
            # Ours honours stop: drop unflushed text, cancel the utterance being
            # spoken and those queued; each of their flushes still gets its
            # "flushed" (marked interrupted), in order.
            self.clear_buffer()
            for job in self.outstanding:
                job.cancel.set()
        elif action == "clear":
            self.clear_buffer()
        else:
            await self.send_json(wire.tts_error(f"unknown control action {action!r}", code="unknown_command"))

    async def speaker(self, session_scope: trio.CancelScope) -> None:
        try:
            async with self.jobs_out:
                async for job in self.jobs_out:
                    try:
                        interrupted = await self.engine.speak(self.ws, job)
                    finally:
                        self.outstanding.remove(job)
                    if job.end:
                        await self.ws.aclose(1000)
                        break
                    await self.send_json(wire.tts_flushed(interrupted=interrupted))
        except ConnectionClosed:
            pass
        # Input ended, or the socket closed: the session is over.
        session_scope.cancel()
