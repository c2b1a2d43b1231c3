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

from slng_fast import errors
from slng_fast.engines import wire
from slng_fast.engines.server import Connections, serve
from slng_fast.errors import GatewayError
from slng_fast.protocol import commands, events

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

    async def send(self, event: str) -> None:
        await self.ws.send_message(event)

    async def error(self, err: GatewayError) -> None:
        await self.send(events.error(self.context_id, err))

    async def start(self, params: commands.Start) -> SphinxRecognizer:
        rec = await trio.to_thread.run_sync(self.engine.pool.acquire)
        self.recognizer = rec
        self.context_id = params.context_id or uuid.uuid4().hex
        await self.send(wire.stt_ready(model_id=rec.model_id, context_id=self.context_id))
        return rec

    async def send_transcripts(self, heard: list[Any]) -> None:
        for t in heard:
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
            segments = rec.end_segment()
            duration = rec.seconds_since_finalize
            return segments, duration, rec.finalize()

        heard, duration, text = await trio.to_thread.run_sync(work)
        await self.send_transcripts(heard)
        await self.send(
            events.final_transcript(self.context_id or "", text, duration, time.time())
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
                    rec = await self.start(commands.Start())  # audio first: implied start
                if message:
                    heard = await trio.to_thread.run_sync(rec.feed, message)
                    await self.send_transcripts(heard)
                continue

            self.messages += 1
            try:
                command = wire.parse_stt_text(message)
                if isinstance(command, commands.Start):
                    if rec is not None:
                        raise GatewayError(errors.ALREADY_INITIALIZED,
                                           "the session has already started")
                    wire.check_start(command)
                elif isinstance(command, commands.Finalize) and rec is None:
                    raise GatewayError(errors.INVALID_MESSAGE, "finalize before start")
            except GatewayError as err:
                await self.error(err)
                continue
            if isinstance(command, commands.Ping):
                await self.send(events.pong(self.context_id, time.time()))
            elif isinstance(command, commands.Start):
                await self.start(command)
            elif isinstance(command, commands.Finalize):
                assert rec is not None
                await self.finalize(rec)
            elif isinstance(command, commands.Stop):
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
