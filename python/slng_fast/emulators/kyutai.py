"""A local stand-in for Kyutai STT (moshi-server's ``/api/asr-streaming``), recognising
speech with the built-in PocketSphinx engine, which it reaches over WebSocket.

It follows moshi-server's public protocol, not our adapter: binary MessagePack frames
(decoded and encoded by the native core). The ``kyutai-api-key`` header (or the
``auth_id`` query parameter) must match ``api_key`` when one is set, else HTTP 401.
``{"type":"Ready"}`` is sent on connect. ``Audio`` frames (float32 at 24 kHz, any
length) are converted to 16 kHz PCM16 and streamed to PocketSphinx; every 1920 samples
(80 ms, one model step) give a ``Step``. PocketSphinx's growing hypotheses become
``Word``s (all but the last, still uncertain, word of a partial; all of a final) with
``start_time`` interpolated over the segment's place in the audio (which the engine
reports), each followed by its ``EndWord``. A ``Marker`` is echoed once
:data:`DELAY_STEPS` steps of audio have followed it, as moshi-server does: at that
point the emulator sends ``finalize`` to PocketSphinx, emits the words of its last
segment, then the ``Marker``. Audio that
arrives meanwhile waits (so a client feeding silence until the marker returns feeds a
bounded amount). ``Init`` is accepted and ignored, ``OggOpus`` and frames that do not
decode get an ``Error`` (the socket stays open), text frames are ignored.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import orjson
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

from slng_fast import _native
from slng_fast.emulators import one_connection_only
from slng_fast.emulators.faults import NO_FAULTS, FaultPlan

ENGINE = "pocketsphinx"
PATH = "/api/asr-streaming"
SAMPLE_RATE = 24000
FRAME_SAMPLES = 1920  # 80 ms, one model step
DELAY_STEPS = 6
"""The model's delay in steps (0.48 s, like ``kyutai/stt-1b-en_fr``)."""
FINAL_TIMEOUT = 30.0
"""Seconds PocketSphinx may take to answer a finalize before the client gets an Error."""
ENGINE_RATE = 16000


def _pack(message: dict[str, Any]) -> bytes:
    return _native.msgpack_encode(message)


def _seconds(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0


@dataclass
class _Session:
    ws: WebSocketConnection
    engine: WebSocketConnection
    send: trio.MemorySendChannel[bytes]
    resampler: Any = field(default_factory=lambda: _native.Resampler(
        SAMPLE_RATE, ENGINE_RATE, "f32", "pcm16"))
    steps: int = 0
    partial_samples: int = 0
    markers: deque[tuple[int, int]] = field(default_factory=deque)  # (step at receipt, id)
    emitted: list[str] = field(default_factory=list)  # words sent of the engine's segment
    word_open: bool = False  # a Word was sent whose EndWord is not
    last_time: float = 0.0  # seconds of the last Word/EndWord sent
    finals: int = 0  # final_transcript events from the engine
    final_seen: trio.Event = field(default_factory=trio.Event)

    # ---- words out of the engine's hypotheses ------------------------------------------
    async def _words(self, words: list[str], first: int, total: int, start: float,
                     end: float) -> None:
        """Send ``words``, items ``first``.. of a hypothesis of ``total`` words spanning
        ``start``..``end`` seconds of audio: each word's time is interpolated."""
        for i, text in enumerate(words, start=first):
            t = max(self.last_time, start + (end - start) * i / max(total, 1))
            if self.word_open:
                await self.send.send(_pack({"type": "EndWord", "stop_time": t}))
            await self.send.send(_pack({"type": "Word", "text": text, "start_time": t}))
            self.emitted.append(text)
            self.word_open = True
            self.last_time = t

    async def _end_segment(self, end: float) -> None:
        if self.word_open:
            t = max(end, self.last_time)
            await self.send.send(_pack({"type": "EndWord", "stop_time": t}))
            self.word_open = False
            self.last_time = t
        self.emitted = []

    async def engine_reader(self) -> None:
        """The engine's unified events -> Words, EndWords and Errors."""
        while True:
            message = await self.engine.get_message()
            try:
                event = orjson.loads(message)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(event, dict):
                continue
            kind = event.get("type")
            if kind == "transcript":
                words = str(event.get("text") or "").split()
                n = len(self.emitted)
                # the engine places the segment in its audio, which is ours at 16 kHz
                start, end = _seconds(event.get("start")), _seconds(event.get("end"))
                if end < start:
                    end = start
                if event.get("is_final"):
                    # the final word list wins; what was sent stays sent
                    await self._words(words[n:], n, len(words), start, end)
                    await self._end_segment(end)
                elif words[:n] == self.emitted:
                    # the last word may still change: it waits
                    await self._words(words[n:-1], n, len(words), start, end)
            elif kind == "final_transcript":
                self.finals += 1
                self.final_seen.set()
            elif kind == "error":
                await self.send.send(_pack({"type": "Error",
                                            "message": str(event.get("message", "error"))}))

    # ---- the client's frames -------------------------------------------------------------
    async def client_reader(self) -> None:
        while True:
            frame = await self.ws.get_message()
            if isinstance(frame, str):
                continue  # moshi-server reads binary frames only
            try:
                message = _native.msgpack_decode(frame)
            except ValueError as exc:
                await self._error(f"invalid MessagePack: {exc}")
                continue
            kind = message.get("type") if isinstance(message, dict) else None
            if kind == "Audio":
                pcm = message.get("pcm")
                if not isinstance(pcm, list):
                    await self._error("Audio needs a 'pcm' array of floats")
                    continue
                try:
                    samples = np.asarray(pcm, dtype="<f4")
                except (TypeError, ValueError):
                    await self._error("Audio 'pcm' must hold numbers only")
                    continue
                await self._audio(samples)
            elif kind == "Marker":
                marker = message.get("id")
                if not isinstance(marker, int):
                    await self._error("Marker needs an integer 'id'")
                    continue
                self.markers.append((self.steps, marker))
            elif kind == "Init":
                continue
            else:
                await self._error(f"unsupported message type {kind!r}")

    async def _error(self, text: str) -> None:
        await self.send.send(_pack({"type": "Error", "message": text}))

    async def _audio(self, samples: np.ndarray) -> None:
        if samples.size:
            pcm16 = self.resampler.process(samples.tobytes())
            if pcm16:
                await self.engine.send_message(pcm16)
        self.partial_samples += int(samples.size)
        while self.partial_samples >= FRAME_SAMPLES:
            self.partial_samples -= FRAME_SAMPLES
            await self.send.send(_pack({
                "type": "Step", "step_idx": self.steps, "prs": [0.0, 0.0, 0.0, 0.0],
                "buffered_pcm": self.partial_samples,
            }))
            self.steps += 1
            while self.markers and self.markers[0][0] + DELAY_STEPS <= self.steps:
                _, marker = self.markers.popleft()
                await self._echo_marker(marker)

    async def _echo_marker(self, marker: int) -> None:
        """All audio before the marker is in: finalize the engine, words, then Marker."""
        tail = self.resampler.flush()
        if tail:
            await self.engine.send_message(tail)
        waiting_for = self.finals + 1
        await self.engine.send_message('{"type":"finalize"}')
        with trio.move_on_after(FINAL_TIMEOUT):
            while self.finals < waiting_for:
                # no checkpoint between the check and the wait: the set() cannot be missed
                self.final_seen = trio.Event()
                await self.final_seen.wait()
        if self.finals < waiting_for:
            await self._error("the recognizer did not finish in time")
        await self.send.send(_pack({"type": "Marker", "id": marker}))


async def _writer(ws: WebSocketConnection, receive: trio.MemoryReceiveChannel[bytes]) -> None:
    async for frame in receive:
        await ws.send_message(frame)


def _header(request: WebSocketRequest, name: str) -> str | None:
    wanted = name.lower().encode()
    for key, value in request.headers:
        if key.lower() == wanted:
            return value.decode("latin-1")
    return None


async def _handle(request: WebSocketRequest, engine_url: str, api_key: str | None) -> None:
    url = urlsplit(request.path)
    if url.path.rstrip("/") != PATH:
        await request.reject(404, body=b"not found")
        return
    if api_key is not None:
        given = _header(request, "kyutai-api-key") or \
            (parse_qs(url.query).get("auth_id") or [""])[0]
        if given != api_key:
            await request.reject(401, body=b"invalid api key")
            return
    ws = await request.accept()
    try:
        async with open_websocket_url(engine_url) as engine:
            await engine.send_message(orjson.dumps(
                {"type": "start", "sample_rate": ENGINE_RATE, "encoding": "pcm16"}).decode())
            send, receive = trio.open_memory_channel[bytes](math.inf)
            session = _Session(ws, engine, send)
            await send.send(_pack({"type": "Ready"}))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_writer, ws, receive)
                nursery.start_soon(session.engine_reader)
                await session.client_reader()
    except* ConnectionClosed:
        pass  # the client (or the engine) went away
    except* (OSError, HandshakeError) as group:  # the engine could not be reached
        with trio.move_on_after(2):
            try:
                await ws.send_message(_pack({"type": "Error",
                                             "message": f"engine: {group.exceptions[0]}"}))
            except ConnectionClosed:
                pass
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await ws.aclose()


async def serve_emulator(host: str, port: int, *, engine_url: str, api_key: str | None = None,
                         faults: FaultPlan = NO_FAULTS,
                         task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the emulator on ``host:port`` (0 picks one) until cancelled."""

    async def handler(request: WebSocketRequest) -> None:
        await _handle(request, engine_url, api_key)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, one_connection_only(handler, faults, stt=True), host, port, None)
        task_status.started(server.port)
