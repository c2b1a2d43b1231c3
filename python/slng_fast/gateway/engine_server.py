"""WebSocket servers for the built-in engines, each run in the engine's own process.

- :func:`serve_espeak_engine` speaks the SLNG model-server dialect (PROTOCOL.md
  section 8) in front of eSpeak NG;
- :func:`serve_sphinx_engine` speaks the unified STT protocol (section 5) in front of
  PocketSphinx;
- :func:`run_engine` is the process's main: it prints ``READY <port>`` once
  listening and returns 0 on SIGTERM or SIGINT.

eSpeak NG is GPL: ``slng_fast.engines.espeak`` is imported only inside
:func:`serve_espeak_engine`, so importing this module (or running the sphinx
engine) never loads it. The gateway starts engines as processes and never calls
these functions itself.

Concurrency. eSpeak is process-global and not re-entrant: one synthesis runs at a
time per process (a lock), in a worker thread that hands audio to the event loop
without ever waiting for a client, so the lock is held only for eSpeak's own CPU
time (it runs several hundred times faster than real time) and a slow client
cannot hold up the others. PocketSphinx decodes in worker threads, one decoder
per session, taken from a small pool of loaded models.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from slng_fast.engines import wire

if TYPE_CHECKING:
    from slng_fast.engines.espeak import EspeakSynth, VoiceChoice
    from slng_fast.engines.sphinx import RecognizerPool, SphinxRecognizer

__all__ = ["run_engine", "serve_espeak_engine", "serve_sphinx_engine"]

log = logging.getLogger("slng_fast.engines")

MAX_AUDIO_FRAME = 8820
"""Largest binary audio frame the espeak engine sends: 200 ms at 22.05 kHz PCM16."""

MAX_BUFFERED_CHARS = 100_000
"""Most unflushed text a session may hold; more is refused with ``text_too_long``."""

SHUTDOWN_TIMEOUT = 2.0
"""Seconds a graceful shutdown waits for clients to answer the 1001 close."""

def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _being_cancelled() -> bool:
    return trio.current_effective_deadline() == -math.inf


class _Connections:
    """The open client sockets, so that a shutdown can say goodbye (1001)."""

    def __init__(self) -> None:
        self._open: set[WebSocketConnection] = set()

    async def run(self, ws: WebSocketConnection, session: Callable[[], Any], name: str) -> None:
        """Run one session; its errors end the session, never the server."""
        self._open.add(ws)
        try:
            await session()
        except BaseException as exc:
            leaves = _leaves(exc)
            if _being_cancelled() or not all(isinstance(e, Exception) for e in leaves):
                await _close_quietly(ws, 1001, "engine shutting down")
                raise
            if all(isinstance(e, ConnectionClosed) for e in leaves):
                return  # the client went away
            log.error("%s session failed", name, exc_info=exc)
            await _close_quietly(ws, 1011, "internal error")
        finally:
            self._open.discard(ws)

    async def close_all(self, code: int, reason: str, timeout: float) -> None:
        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                for ws in list(self._open):
                    nursery.start_soon(ws.aclose, code, reason)


async def _close_quietly(ws: WebSocketConnection, code: int, reason: str) -> None:
    if ws.closed is not None:
        return
    with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_TIMEOUT):
        await ws.aclose(code, reason)


# -- espeak: SLNG model-server dialect ---------------------------------------------------


@dataclass
class _Job:
    """One utterance to speak: the text of a flush, or what remained at ``__END__``."""

    text: str
    voice: VoiceChoice
    rate: float | None
    end: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)


class _EspeakEngine:
    def __init__(self, synth: EspeakSynth) -> None:
        from slng_fast.engines.espeak import DEFAULT_VOICE

        self.synth = synth
        self.connections = _Connections()
        self.lock = trio.Lock()  # one synthesis at a time in this process
        self.default_voice = synth.resolve_voice(DEFAULT_VOICE)
        ready = wire.tts_ready(
            synth.sample_rate,
            voices=[v.to_json() for v in synth.voices()],
            languages=synth.languages(),
            variants=[v.to_json() for v in synth.variants()],
            default_voice=DEFAULT_VOICE,
            engine="espeak-ng",
            version=synth.version,
        )
        self.ready_frame = wire.dumps(ready)

    async def handle(self, request: WebSocketRequest) -> None:
        ws = await request.accept()
        await self.connections.run(ws, _EspeakSession(self, ws).run, "espeak")

    async def speak(self, ws: WebSocketConnection, job: _Job) -> bool:
        """Stream ``job``'s audio to ``ws``; return True if it was cut short.

        The synthesis runs in a worker thread under the process lock. Audio goes to
        the event loop through ``run_sync_soon`` into an unbounded channel, so the
        thread never waits for the client (memory is bounded by the text's length).
        Setting ``job.cancel`` (stop, disconnect, cancellation) stops eSpeak at its
        next buffer and drops audio not yet sent.
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

        synthesize = partial(
            self.synth.synthesize,
            job.text,
            voice=job.voice,
            rate=job.rate,
            on_audio=on_audio,
            cancel=job.cancel,
        )

        async def produce() -> None:
            try:
                async with self.lock:
                    await trio.to_thread.run_sync(synthesize)
            finally:
                # Completion reaches the loop after every deliver() queued before it.
                send.close()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            try:
                async with receive:
                    async for pcm in receive:
                        for frame in _coalesce(pcm, receive):
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


def _coalesce(first: bytes, receive: trio.MemoryReceiveChannel[bytes]) -> list[bytes]:
    """Join the pieces already waiting into frames of at most ``MAX_AUDIO_FRAME`` bytes."""
    parts = [first]
    size = len(first)
    while size < MAX_AUDIO_FRAME:
        try:
            nxt = receive.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            break
        parts.append(nxt)
        size += len(nxt)
    joined = parts[0] if len(parts) == 1 else b"".join(parts)
    # MAX_AUDIO_FRAME is even, so every frame holds whole samples.
    return [joined[i : i + MAX_AUDIO_FRAME] for i in range(0, len(joined), MAX_AUDIO_FRAME)]


class _EspeakSession:
    """One client connection: a reader of frames and a speaker of queued jobs."""

    def __init__(self, engine: _EspeakEngine, ws: WebSocketConnection) -> None:
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
            from slng_fast.engines.espeak import validate_rate

            validate_rate(settings.rate)
        self.voice = voice
        self.rate = settings.rate
        if settings.ignored:
            log.debug("espeak ignores settings %s", ", ".join(settings.ignored))

    async def reader(self) -> None:
        from slng_fast.engines.espeak import VoiceError

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
                except (wire.SettingsError, VoiceError) as exc:
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


async def serve_espeak_engine(
    host: str,
    port: int,
    *,
    synth: EspeakSynth | None = None,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the espeak engine on ``host:port`` (0 picks a port) until cancelled,
    or until ``shutdown`` is set: then open sessions are closed with 1001 (waiting
    up to ``SHUTDOWN_TIMEOUT`` for the clients) and the function returns.

    ``task_status.started`` gets the bound port once eSpeak is loaded and the
    socket listens.
    """
    if synth is None:
        from slng_fast.engines.espeak import EspeakSynth

        synth = await trio.to_thread.run_sync(EspeakSynth.shared)
    engine = _EspeakEngine(synth)
    await _serve(engine.handle, engine.connections, host, port, shutdown, task_status)


# -- pocketsphinx: unified STT ------------------------------------------------------------


class _SphinxEngine:
    def __init__(self, pool: RecognizerPool) -> None:
        self.pool = pool
        self.connections = _Connections()

    async def handle(self, request: WebSocketRequest) -> None:
        ws = await request.accept()
        session = _SphinxSession(self, ws)
        try:
            await self.connections.run(ws, session.run, "pocketsphinx")
        finally:
            rec = session.recognizer
            if rec is not None:
                session.recognizer = None
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(self.pool.release, rec)


class _SphinxSession:
    def __init__(self, engine: _SphinxEngine, ws: WebSocketConnection) -> None:
        self.engine = engine
        self.ws = ws
        self.recognizer: SphinxRecognizer | None = None
        self.context_id: str | None = None
        self.opened = time.monotonic()
        self.messages = 0

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send_message(wire.dumps(event))

    async def error(self, code: str, message: str) -> None:
        await self.send(wire.stt_error(code, message, context_id=self.context_id))

    async def start(self, params: wire.StartParams) -> SphinxRecognizer:
        rec = await trio.to_thread.run_sync(self.engine.pool.acquire)
        self.recognizer = rec
        self.context_id = params.context_id or uuid.uuid4().hex
        await self.send(wire.stt_ready(model_id=rec.model_id, context_id=self.context_id))
        return rec

    async def send_transcripts(self, events: list[Any]) -> None:
        for t in events:
            await self.send(
                wire.stt_transcript(
                    text=t.text,
                    is_final=t.is_final,
                    confidence=t.confidence,
                    start=t.start,
                    end=t.end,
                    context_id=self.context_id or "",
                    now=time.time(),
                )
            )

    async def finalize(self, rec: SphinxRecognizer) -> None:
        def work() -> tuple[list[Any], float, str]:
            events = rec.end_segment()
            duration = rec.seconds_since_finalize
            return events, duration, rec.finalize()

        events, duration, text = await trio.to_thread.run_sync(work)
        await self.send_transcripts(events)
        await self.send(
            wire.stt_final_transcript(
                text=text,
                audio_duration_seconds=duration,
                context_id=self.context_id or "",
                now=time.time(),
            )
        )

    async def run(self) -> None:
        while True:
            try:
                message = await self.ws.get_message()
            except ConnectionClosed:
                return
            rec = self.recognizer
            if isinstance(message, bytes):
                if rec is None:
                    rec = await self.start(wire.StartParams())  # audio first: implied start
                if message:
                    events = await trio.to_thread.run_sync(rec.feed, message)
                    await self.send_transcripts(events)
                continue

            self.messages += 1
            command = wire.parse_stt_text(message)
            if isinstance(command, wire.SttError):
                await self.error(command.code, command.message)
                continue
            kind = command.type
            if kind == "ping":
                await self.send(wire.stt_pong(now=time.time(), context_id=self.context_id))
            elif kind == "start":
                if rec is not None:
                    await self.error("already_initialized", "the session has already started")
                    continue
                params = wire.parse_start(command.body)
                if isinstance(params, wire.SttError):
                    await self.error(params.code, params.message)
                    continue
                await self.start(params)
            elif kind == "finalize":
                if rec is None:
                    await self.error("invalid_message", "finalize before start")
                    continue
                await self.finalize(rec)
            elif kind == "stop":
                # End of session: whatever was heard since the last finalize is
                # finalized first, so no words are lost; then session_ended, close 1000.
                audio = 0.0
                if rec is not None:
                    if rec.seconds_since_finalize > 0:
                        await self.finalize(rec)
                    audio = rec.audio_seconds
                await self.send(
                    wire.stt_session_ended(
                        reason="client_closed",
                        audio_seconds=audio,
                        duration_seconds=time.monotonic() - self.opened,
                        messages=self.messages,
                        context_id=self.context_id,
                    )
                )
                await self.ws.aclose(1000)
                return


async def serve_sphinx_engine(
    host: str,
    port: int,
    *,
    pool: RecognizerPool | None = None,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the pocketsphinx engine on ``host:port`` (0 picks a port) until
    cancelled or until ``shutdown`` is set (see :func:`serve_espeak_engine`).

    One model is loaded before ``task_status.started`` reports the bound port, so
    the first session starts without waiting for it.
    """
    if pool is None:
        from slng_fast.engines.sphinx import RecognizerPool

        pool = RecognizerPool(max_idle=2)
        await trio.to_thread.run_sync(pool.preload, 1)
    engine = _SphinxEngine(pool)
    await _serve(engine.handle, engine.connections, host, port, shutdown, task_status)


# -- common --------------------------------------------------------------------------------


async def _serve(
    handler: Callable[[WebSocketRequest], Any],
    connections: _Connections,
    host: str,
    port: int,
    shutdown: trio.Event | None,
    task_status: trio.TaskStatus[int],
) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                serve_websocket,
                handler,
                host,
                port,
                None,
                disconnect_timeout=SHUTDOWN_TIMEOUT,
                connect_timeout=10,
            )
        )
        task_status.started(server.port)
        if shutdown is None:
            await trio.sleep_forever()
        else:
            await shutdown.wait()
            await connections.close_all(1001, "engine shutting down", SHUTDOWN_TIMEOUT)
            nursery.cancel_scope.cancel()


_SERVERS: dict[str, Callable[..., Any]] = {
    "espeak": serve_espeak_engine,
    "pocketsphinx": serve_sphinx_engine,
}


async def _wait_for_parent_exit(parent_pid: int) -> None:
    """Return once the process that started us is gone (we are re-parented).

    Polling is used rather than PR_SET_PDEATHSIG, which fires when the *thread* that
    forked us exits: trio starts processes from worker threads that end when idle."""
    while os.getppid() == parent_pid:  # noqa: ASYNC110 - nothing to wait on but the pid
        await trio.sleep(0.5)


def run_engine(name: str, host: str, port: int, parent_pid: int | None = None) -> int:
    """Run engine ``name`` until SIGTERM or SIGINT (or until ``parent_pid`` dies);
    the process's main.

    Prints ``READY <port>`` on stdout (one line, flushed) once listening. Returns
    the process exit status: 0 after a signal.
    """
    serve = _SERVERS[name]

    async def main() -> None:
        shutdown = trio.Event()
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    log.info("engine %s stopping on signal %s", name, signum)
                    shutdown.set()
                    return

            async def stop_when_orphaned(pid: int) -> None:
                await _wait_for_parent_exit(pid)
                log.warning("engine %s: the gateway (pid %d) is gone; stopping", name, pid)
                shutdown.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(stop_on_signal)
                if parent_pid is not None:
                    nursery.start_soon(stop_when_orphaned, parent_pid)
                # Graceful: on shutdown clients get 1001 and the server returns once they
                # are closed; then the watchers above are cancelled.
                async with trio.open_nursery() as server:
                    bound = await server.start(partial(serve, shutdown=shutdown), host, port)
                    print(f"READY {bound}", flush=True)
                nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    except KeyboardInterrupt:  # a signal that arrived before the receiver was open
        return 0
    sys.stdout.flush()
    return 0
