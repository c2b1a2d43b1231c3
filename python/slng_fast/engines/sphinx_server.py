"""The PocketSphinx engine's server: the unified STT protocol (PROTOCOL.md section 5) in
front of PocketSphinx, in the engine's own process. It decodes in worker threads, one
decoder per session, taken from a small pool of loaded models."""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from slng_fast.engines import wire
from slng_fast.engines.server import Connections, serve

if TYPE_CHECKING:
    from slng_fast.engines.sphinx import RecognizerPool, SphinxRecognizer

log = logging.getLogger("slng_fast.engines")



class _SphinxEngine:
    def __init__(self, pool: RecognizerPool) -> None:
        self.pool = pool
        self.connections = Connections()

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
    await serve(engine.handle, engine.connections, host, port, shutdown, task_status)
