"""A WhisperLive server stand-in (collabora/WhisperLive's WebSocket protocol) that hears with
the built-in PocketSphinx engine.

What it does, following the WhisperLive server:

- On connect it waits for the JSON options message (``uid``, ``language``, ``task``,
  ``model``, ``use_vad``, ``send_last_n_segments``, ...). Text that is not a JSON object ends
  the connection, as the server does. When ``max_clients`` sessions are open it answers
  ``{"uid","status":"WAIT","message":minutes}`` (the minutes until the oldest session reaches
  ``max_connection_time``) and closes.
- It opens a unified STT session on the PocketSphinx engine (16 kHz pcm16) and answers
  ``{"uid","message":"SERVER_READY","backend":"faster_whisper"}``. A language PocketSphinx
  cannot hear (anything but English) gets ``{"uid","status":"ERROR","message":...}`` and the
  close, as a model that fails to load does on the server. Without a language in the options
  it reports ``{"uid","language":"en","language_prob":1.0}`` with its first segment, as the
  server does once it has detected one.
- Binary frames are float32 mono at 16 kHz, converted to PCM16 (``slng_fast._native``) and
  streamed to PocketSphinx. ``END_OF_AUDIO`` (binary, as the WhisperLive client sends it, or
  text) ends the stream.
- Every PocketSphinx transcript is an update: the emulator sends ``{"uid","segments":[...]}``
  with the last ``send_last_n_segments`` (default 10) completed segments and, while
  PocketSphinx is still hearing one, the incomplete tail (``completed: false``). A segment is
  completed when PocketSphinx gives its final transcript. Times are seconds into the stream
  as strings with three decimals, as the server formats them. The list is re-sent whole on
  every update; a list with nothing in it is never sent (the server does not either).
- ``END_OF_AUDIO``: PocketSphinx is finalized, the segments it still completes are sent,
  then ``{"uid","message":"DISCONNECT"}`` and a normal close. (The WhisperLive server sends
  ``DISCONNECT`` when it ends a session itself, at ``max_connection_time``, and simply
  closes after ``END_OF_AUDIO``; the emulator says ``DISCONNECT`` in both cases so a client
  can tell a finished stream from a dropped one. Clients handle either.)
- ``max_connection_time`` (default 600 s): ``DISCONNECT`` and close, as the server does.

Authentication: WhisperLive has none. When ``api_key`` is given the emulator stands for a
WhisperLive behind an authenticating proxy: the handshake must carry
``Authorization: Bearer <api_key>``, else it is refused with HTTP 401. With ``api_key=None``
any client, the stock WhisperLive client included, is accepted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    connect_websocket_url,
    serve_websocket,
)

from slng_fast import _native
from slng_fast.emulators import one_connection_only
from slng_fast.emulators.faults import NO_FAULTS, FaultPlan

ENGINE = "pocketsphinx"
BACKEND = "faster_whisper"
END_OF_AUDIO = b"END_OF_AUDIO"
DEFAULT_LAST_N = 10

log = logging.getLogger("slng_fast.emulators.whisper")


def _segment(start: float, end: float, text: str, completed: bool) -> dict[str, Any]:
    return {"start": f"{start:.3f}", "end": f"{end:.3f}", "text": text, "completed": completed}


@dataclass
class _Clients:
    max_clients: int
    max_connection_time: float
    started: dict[int, float] = field(default_factory=dict)

    def full(self) -> bool:
        return len(self.started) >= self.max_clients

    def wait_minutes(self) -> float:
        now = time.monotonic()
        remaining = [self.max_connection_time - (now - t) for t in self.started.values()]
        return max(0.0, min(remaining)) / 60 if remaining else 0.0


class _Session:
    def __init__(self, ws: WebSocketConnection, engine: WebSocketConnection,
                 options: dict[str, Any]) -> None:
        self.ws = ws
        self.engine = engine
        self.uid = options.get("uid")
        self.language = options.get("language")
        last_n = options.get("send_last_n_segments", DEFAULT_LAST_N)
        self.last_n = last_n if isinstance(last_n, int) and last_n > 0 else DEFAULT_LAST_N
        self.transcript: list[dict[str, Any]] = []
        self.tail: dict[str, Any] | None = None
        self.pending = b""  # a partial float32 sample between frames
        self.ended = trio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_message(orjson.dumps({"uid": self.uid, **message}).decode())

    async def send_segments(self) -> None:
        segments = self.transcript[-self.last_n:]
        if self.tail is not None:
            segments = segments + [self.tail]
        if segments:
            await self.send({"segments": segments})

    async def from_client(self) -> None:
        while True:
            message = await self.ws.get_message()
            if message in (END_OF_AUDIO, END_OF_AUDIO.decode()):
                await self.engine.send_message('{"type":"finalize"}')
                await self.ended.wait()
                return
            if isinstance(message, str):
                # the server reads every frame after the options as float32 audio and
                # drops the session when that fails
                raise ValueError("text frame where audio was expected")
            data = self.pending + message
            usable = len(data) - len(data) % 4
            self.pending = data[usable:]
            if usable:
                await self.engine.send_message(_native.f32_to_pcm16(data[:usable]))

    async def from_engine(self) -> None:
        while True:
            event = orjson.loads(await self.engine.get_message())
            kind = event.get("type")
            if kind == "transcript":
                await self.on_transcript(event)
            elif kind == "final_transcript":
                self.ended.set()
                return
            elif kind == "error":
                await self.send({"status": "ERROR", "message": str(event.get("message"))})
                raise ValueError(f"engine error: {event.get('message')}")

    async def on_transcript(self, event: dict[str, Any]) -> None:
        text = str(event.get("text") or "")
        start = float(event.get("start") or 0.0)
        end = float(event.get("end") or start)
        if self.language is None and text:
            self.language = "en"
            await self.send({"language": "en", "language_prob": 1.0})
        if event.get("is_final"):
            self.tail = None
            if text:
                self.transcript.append(_segment(start, end, text, True))
        else:
            if not text:
                return
            self.tail = _segment(start, end, text, False)
        await self.send_segments()


async def serve_emulator(host: str, port: int, *, engine_url: str, api_key: str | None = None,
                         max_clients: int = 4, max_connection_time: float = 600.0,
                         faults: FaultPlan = NO_FAULTS,
                         task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    clients = _Clients(max_clients, max_connection_time)

    async def handler(request: WebSocketRequest) -> None:
        if api_key is not None:
            headers = {k.decode().lower(): v.decode() for k, v in request.headers}
            if headers.get("authorization") != f"Bearer {api_key}":
                await request.reject(401, body=b"unauthorized")
                return
        ws = await request.accept()
        try:
            await _serve_client(ws, engine_url, clients)
        except ConnectionClosed:
            pass
        except Exception as exc:  # the server logs and drops the session
            log.info("whisper emulator session ended: %s", exc)
        finally:
            with trio.move_on_after(2) as scope:
                scope.shield = True
                await ws.aclose()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, one_connection_only(handler, faults, stt=True), host, port, None)
        task_status.started(server.port)


async def _serve_client(ws: WebSocketConnection, engine_url: str, clients: _Clients) -> None:
    first = await ws.get_message()
    options = orjson.loads(first) if isinstance(first, str) else None
    if not isinstance(options, dict):
        return
    if clients.full():
        await ws.send_message(orjson.dumps({"uid": options.get("uid"), "status": "WAIT",
                                            "message": clients.wait_minutes()}).decode())
        return
    key = id(ws)
    clients.started[key] = time.monotonic()
    try:
        async with trio.open_nursery() as nursery:
            engine = await connect_websocket_url(nursery, engine_url, None)
            try:
                await _run(ws, engine, options, clients.max_connection_time)
            finally:
                nursery.cancel_scope.cancel()
                with trio.move_on_after(2) as scope:
                    scope.shield = True
                    await engine.aclose()
    finally:
        clients.started.pop(key, None)


async def _run(ws: WebSocketConnection, engine: WebSocketConnection, options: dict[str, Any],
               max_connection_time: float) -> None:
    session = _Session(ws, engine, options)
    language = options.get("language")
    if language is not None and not (isinstance(language, str)
                                     and language.lower().split("-")[0] == "en"):
        await session.send({"status": "ERROR",
                            "message": f"Failed to load model: {options.get('model')} "
                                       f"cannot transcribe language {language!r}"})
        return
    await engine.send_message(orjson.dumps({"type": "start", "sample_rate": 16000,
                                            "encoding": "pcm16", "language": "en"}).decode())
    ready = orjson.loads(await engine.get_message())
    if ready.get("type") != "ready":
        await session.send({"status": "ERROR", "message": "Failed to load model"})
        return
    await session.send({"message": "SERVER_READY", "backend": BACKEND})
    with trio.move_on_after(max_connection_time):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.from_engine)
            await session.from_client()
            nursery.cancel_scope.cancel()
    await session.send({"message": "DISCONNECT"})
