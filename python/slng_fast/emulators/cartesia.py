"""A local stand-in for Cartesia's TTS WebSocket (``/tts/websocket``), speaking with the
built-in eSpeak NG engine, which it reaches over WebSocket (so eSpeak stays in its own
process). It follows Cartesia's public protocol, not our adapter:

- Handshake: ``Cartesia-Version`` header or ``cartesia_version`` query (the query wins)
  is required, a ``YYYY-MM-DD`` date; when the emulator has an API key, the client must
  present it as ``X-API-Key``, ``Authorization: Bearer``, or the ``api_key`` (or
  ``access_token``) query parameter. Refusals are HTTP 400/401/404 with a JSON body.
- Requests are JSON objects repeating ``model_id``, ``voice {"mode":"id","id"}``,
  ``output_format {"container":"raw","encoding","sample_rate"}``, ``language``,
  ``context_id``, ``transcript`` and ``continue``; ``add_timestamps``, ``flush``,
  ``max_buffer_delay_ms``, ``generation_config.speed`` and ``speed`` are honoured.
- Each context buffers its transcript and speaks it at a sentence end, after
  ``max_buffer_delay_ms`` (3 s by default) without more text, at ``flush`` (then
  ``flush_done`` with ``flush_id`` 1, 2, ...) and at ``continue: false`` (then
  ``done``). Audio is ``chunk`` messages (base64 ``data`` in the requested encoding
  and rate); with ``add_timestamps``, ``timestamps`` messages carry approximate word
  timings (seconds from the context's start, spread over the audio by word length).
- ``{"context_id": ..., "cancel": true}`` stops a context at once, without an answer.
- A bad request gets an ``error`` for its context (``done: true``, the context ends) and
  the socket stays open. A context that is done cannot be continued.
- The socket is closed (1000) after ``IDLE_TIMEOUT`` seconds without a client message
  while nothing is being generated (Cartesia: about 5 minutes).

The voice id picks an eSpeak variant (the same id, the same variant); ``language``
picks the eSpeak voice.

REST, on the same port: ``GET /voices`` lists the installed eSpeak voices in Cartesia's
paged shape (``{"data": [...], "has_more"}``; ``limit`` 1-100, 10 by default, and
``starting_after=<id>``), with the same key and ``Cartesia-Version`` checks."""

from __future__ import annotations

import base64
import math
import re
import uuid
import zlib
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import trio
import trio_websocket

from slng_fast import _native
from slng_fast.emulators import EngineVoices, bcp47, one_connection_only
from slng_fast.emulators.faults import NO_FAULTS, FaultPlan
from slng_fast.emulators.plain_http import serve_http_and_websocket

ENGINE = "espeak"
PATH = "/tts/websocket"
IDLE_TIMEOUT = 300.0  # read when a connection opens, so tests can lower it
DEFAULT_BUFFER_DELAY_MS = 3000
ENGINE_RATE = 22050
RATES = (8000, 16000, 22050, 24000, 44100, 48000)
ENCODINGS = ("pcm_s16le", "pcm_f32le", "pcm_mulaw", "pcm_alaw")
# The languages Sonic documents (each must also be one eSpeak speaks).
LANGUAGES = ("en", "fr", "de", "es", "pt", "zh", "ja", "hi", "it", "ko", "nl", "pl", "ru",
             "sv", "tr", "tl", "bg", "ro", "ar", "cs", "el", "fi", "hr", "ms", "sk", "da",
             "ta", "uk", "hu", "no", "vi", "bn", "th", "he", "ka", "id", "te", "gu", "kn",
             "ml", "mr", "pa")
NAMED_SPEEDS = {"slowest": 0.6, "slow": 0.8, "normal": 1.0, "fast": 1.25, "fastest": 1.5}
SENTENCE_END = re.compile(r"[.!?。！？](?:\s+|$)")
VERSION = re.compile(r"\d{4}-\d{2}-\d{2}")

# What the tests can observe (counters across all connections of the process).
stats = {"connections": 0, "idle_closed": 0}


class RequestError(Exception):
    def __init__(self, message: str, status: int = 400, title: str = "Invalid request") -> None:
        super().__init__(message)
        self.status = status
        self.title = title


def _dumps(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


def _encode(pcm: bytes, encoding: str) -> bytes:
    if encoding == "pcm_f32le":
        return _native.pcm16_to_f32(pcm)
    if encoding == "pcm_mulaw":
        return _native.pcm16_to_mulaw(pcm)
    if encoding == "pcm_alaw":
        return _native.pcm16_to_alaw(pcm)
    return pcm


def _word_times(text: str, start: float, seconds: float) -> tuple[list[str], list[float], list[float]]:
    """Words of ``text`` spread over ``seconds`` of audio, by their length."""
    words = text.split()
    weights = [len(w) + 1 for w in words]
    total = sum(weights) or 1
    starts, ends, t = [], [], start
    for w in weights:
        span = seconds * w / total
        starts.append(round(t, 4))
        ends.append(round(t + span * 0.9, 4))
        t += span
    return words, starts, ends


def validate(message: dict[str, Any]) -> dict[str, Any]:
    """The generation settings of a request, or RequestError."""
    model = message.get("model_id")
    if not isinstance(model, str) or not model:
        raise RequestError("model_id is required")
    if not model.startswith("sonic"):
        raise RequestError(f"model {model!r} was not found", 404, "Not found")
    if not isinstance(message.get("transcript"), str):
        raise RequestError("transcript is required and must be a string")
    if not isinstance(message.get("continue", False), bool):
        raise RequestError("continue must be a boolean")
    voice = message.get("voice")
    if not isinstance(voice, dict) or voice.get("mode", "id") != "id" \
            or not isinstance(voice.get("id"), str) or not voice["id"]:
        raise RequestError('voice must be {"mode": "id", "id": "<voice id>"}')
    fmt = message.get("output_format")
    if not isinstance(fmt, dict) or fmt.get("container") != "raw":
        raise RequestError('output_format must have "container": "raw" on the WebSocket')
    if fmt.get("encoding") not in ENCODINGS:
        raise RequestError(f"output_format.encoding must be one of {list(ENCODINGS)}")
    if fmt.get("sample_rate") not in RATES:
        raise RequestError(f"output_format.sample_rate must be one of {list(RATES)}")
    language = message.get("language")
    if language is not None and language not in LANGUAGES:
        raise RequestError(f"language {language!r} is not supported")
    speed = 1.0
    config = message.get("generation_config")
    if isinstance(config, dict) and isinstance(config.get("speed"), (int, float)):
        speed = float(config["speed"])
    elif isinstance(message.get("speed"), str):
        speed = NAMED_SPEEDS.get(message["speed"], 1.0)
    if not 0.5 <= speed <= 2.0:
        raise RequestError("speed must be between 0.5 and 2.0")
    delay = message.get("max_buffer_delay_ms", DEFAULT_BUFFER_DELAY_MS)
    if not isinstance(delay, int) or isinstance(delay, bool) or not 0 <= delay <= 5000:
        raise RequestError("max_buffer_delay_ms must be an integer from 0 to 5000")
    return {"voice": voice["id"], "encoding": fmt["encoding"], "rate": fmt["sample_rate"],
            "language": language, "speed": speed, "delay": delay / 1000.0,
            "timestamps": message.get("add_timestamps") is True}


class Context:
    """One context: its buffer and the task that speaks it, in order."""

    def __init__(self, conn: Connection, cid: str, settings: dict[str, Any]) -> None:
        self.conn = conn
        self.id = cid
        self.settings = settings
        self.buffer = ""
        self.flushes = 0
        self.offset = 0.0  # seconds of audio sent, for timestamps
        self.busy = False
        self.scope = trio.CancelScope()
        self.inbox_send, self.inbox = trio.open_memory_channel[dict[str, Any]](math.inf)
        self.engine: trio_websocket.WebSocketConnection | None = None

    def cancel(self) -> None:
        self.scope.cancel()
        self.inbox_send.close()

    async def send(self, kind: str, **fields: Any) -> None:
        await self.conn.send({"type": kind, "context_id": self.id, "status_code": 206,
                              "done": False, **fields})

    async def run(self) -> None:
        with self.scope:
            try:
                await self._loop()
            except RequestError as err:
                await self.conn.error(self.id, err)
            except (trio_websocket.ConnectionClosed, trio_websocket.HandshakeError, OSError):
                await self.conn.error(self.id, RequestError(
                    "the speech engine is unavailable, try again", 503, "Service unavailable"))
            finally:
                self.conn.finish(self)
                if self.engine is not None:
                    with trio.move_on_after(1) as scope:
                        scope.shield = True
                        await self.engine.aclose()

    async def _loop(self) -> None:
        while True:
            message = None
            wait = self.settings["delay"] if self.buffer.strip() else math.inf
            with trio.move_on_after(wait):
                try:
                    message = await self.inbox.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    return
            self.busy = True
            try:
                if message is None:  # max_buffer_delay_ms passed with text buffered
                    await self._speak(self._take(len(self.buffer)))
                    continue
                self.buffer += message["transcript"]
                if message.get("flush") is True:
                    await self._speak(self._take(len(self.buffer)))
                    self.flushes += 1
                    await self.send("flush_done", flush_done=True, flush_id=self.flushes)
                if not message.get("continue", False):
                    await self._speak(self._take(len(self.buffer)))
                    await self.conn.send({"type": "done", "context_id": self.id,
                                          "status_code": 206, "done": True})
                    return
                ends = list(SENTENCE_END.finditer(self.buffer))
                if ends:  # enough text: speak the complete sentences
                    await self._speak(self._take(ends[-1].end()))
            finally:
                self.busy = False

    def _take(self, n: int) -> str:
        text, self.buffer = self.buffer[:n], self.buffer[n:]
        return text

    async def _open_engine(self) -> trio_websocket.WebSocketConnection:
        assert self.conn.nursery is not None  # the engine socket's reader runs there
        ws = await trio_websocket.connect_websocket_url(self.conn.nursery, self.conn.engine_url,
                                                        None)
        ready = orjson.loads(await ws.get_message())
        variants = [v["id"] for v in ready.get("variants") or [] if isinstance(v, dict)]
        base = self.settings["language"] or "en-us"
        voice = base
        if variants:  # the same Cartesia voice id, the same eSpeak variant
            voice = f"{base}+{variants[zlib.crc32(self.settings['voice'].encode()) % len(variants)]}"
        await ws.send_message(_dumps({"voice": voice, "speed": self.settings["speed"]}))
        return ws

    async def _speak(self, text: str) -> None:
        if not text.strip():
            return
        if self.engine is None:
            self.engine = await self._open_engine()
        started = trio.current_time()
        await self.engine.send_message(text)
        await self.engine.send_message('{"type":"control","action":"flush"}')
        rate, encoding = self.settings["rate"], self.settings["encoding"]
        resampler = _native.Resampler(ENGINE_RATE, rate)
        samples = 0
        while True:
            frame = await self.engine.get_message()
            if isinstance(frame, bytes):
                pcm = resampler.process(frame)
            else:
                reply = orjson.loads(frame)
                if reply.get("type") == "error":
                    raise RequestError(f"cannot speak this: {reply.get('message')}")
                if reply.get("type") != "flushed":
                    continue
                pcm = resampler.flush()
            if pcm:
                samples += len(pcm) // 2
                step = round((trio.current_time() - started) * 1000.0, 3)
                await self.send("chunk", data=base64.b64encode(_encode(pcm, encoding)).decode(),
                                step_time=step)
            if isinstance(frame, str):
                break
        seconds = samples / rate
        if self.settings["timestamps"]:
            words, starts, ends = _word_times(text, self.offset, seconds)
            if words:
                await self.send("timestamps", word_timestamps={
                    "words": words, "start": starts, "end": ends})
        self.offset += seconds


class Connection:
    def __init__(self, ws: trio_websocket.WebSocketConnection, engine_url: str) -> None:
        self.ws = ws
        self.engine_url = engine_url
        self.contexts: dict[str, Context] = {}
        self.finished: set[str] = set()
        self.lock = trio.Lock()
        self.nursery: trio.Nursery | None = None

    async def send(self, message: dict[str, Any]) -> None:
        async with self.lock:
            try:
                await self.ws.send_message(_dumps(message))
            except trio_websocket.ConnectionClosed:
                pass

    async def error(self, cid: str | None, err: RequestError) -> None:
        message: dict[str, Any] = {"type": "error", "status_code": err.status, "done": True,
                                   "title": err.title, "message": str(err),
                                   "error_code": err.title.lower().replace(" ", "_"),
                                   "request_id": str(uuid.uuid4())}
        if cid is not None:
            message["context_id"] = cid
            self.finished.add(cid)
        await self.send(message)

    def finish(self, ctx: Context) -> None:
        if self.contexts.get(ctx.id) is ctx:
            del self.contexts[ctx.id]
            self.finished.add(ctx.id)

    async def run(self, idle_timeout: float) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            try:
                while True:
                    frame = None
                    with trio.move_on_after(idle_timeout):
                        frame = await self.ws.get_message()
                    if frame is None:
                        if any(c.busy or c.buffer.strip() for c in self.contexts.values()):
                            continue
                        stats["idle_closed"] += 1
                        await self.ws.aclose(1000, "idle timeout")
                        return
                    await self.handle(frame)
            except trio_websocket.ConnectionClosed:
                pass
            finally:
                nursery.cancel_scope.cancel()

    async def handle(self, frame: str | bytes) -> None:
        try:
            message = orjson.loads(frame)
        except orjson.JSONDecodeError:
            await self.error(None, RequestError("messages must be JSON"))
            return
        if not isinstance(message, dict):
            await self.error(None, RequestError("messages must be JSON objects"))
            return
        cid = message.get("context_id")
        if cid is not None and not isinstance(cid, str):
            await self.error(None, RequestError("context_id must be a string"))
            return
        if message.get("cancel") is True:
            ctx = self.contexts.pop(cid, None) if cid else None
            if ctx is not None:
                ctx.cancel()
                self.finished.add(ctx.id)
            return
        cid = cid or str(uuid.uuid4())
        if cid in self.finished:
            await self.error(cid, RequestError(f"context {cid} is done; use a new context_id"))
            return
        try:
            settings = validate(message)
        except RequestError as err:
            ctx = self.contexts.pop(cid, None)
            if ctx is not None:
                ctx.cancel()
            await self.error(cid, err)
            return
        ctx = self.contexts.get(cid)
        if ctx is None:
            ctx = self.contexts[cid] = Context(self, cid, settings)
            assert self.nursery is not None
            self.nursery.start_soon(ctx.run)
        ctx.inbox_send.send_nowait(message)


def _presented_key(query: dict[str, str], headers: dict[str, str]) -> str | None:
    bearer = headers.get("authorization", "")
    bearer = bearer[7:].strip() if bearer.lower().startswith("bearer ") else ""
    return (query.get("api_key") or query.get("access_token") or headers.get("x-api-key")
            or bearer or None)


GENDERS = {"male": "masculine", "female": "feminine"}
PAGE_DEFAULT, PAGE_MAX = 10, 100


def voice_entry(v: dict[str, Any]) -> dict[str, Any]:
    """One engine voice in the shape of Cartesia's ``Voice``."""
    languages = [x for x in v.get("languages") or [] if isinstance(x, str)] or [v["id"]]
    return {"id": v["id"], "name": v.get("name") or v["id"], "description": "eSpeak NG voice",
            "tagline": "", "language": languages[0].partition("-")[0],
            "locales": [{"locale": bcp47(x), "is_native": i == 0}
                        for i, x in enumerate(languages)],
            "gender": GENDERS.get(str(v.get("gender"))), "is_owner": False,
            "access": "public", "visibility": "all", "created_at": "2024-01-01T00:00:00Z",
            "accent": None, "country": None}


def voices_page(voices: list[dict[str, Any]], query: dict[str, str]) -> tuple[int, Any]:
    """``GET /voices``: one page, after ``starting_after`` when given."""
    try:
        limit = int(query.get("limit", PAGE_DEFAULT))
    except ValueError:
        limit = 0
    if not 1 <= limit <= PAGE_MAX:
        return 400, {"error": f"limit must be between 1 and {PAGE_MAX}",
                     "message": f"limit must be between 1 and {PAGE_MAX}", "status_code": 400}
    ids = [v["id"] for v in voices]
    after = query.get("starting_after")
    first = ids.index(after) + 1 if after in ids else 0
    page = voices[first:first + limit]
    return 200, {"data": [voice_entry(v) for v in page],
                 "has_more": first + limit < len(voices)}


async def serve_emulator(host: str, port: int, *, engine_url: str, api_key: str | None = None,
                         faults: FaultPlan = NO_FAULTS,
                         task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve Cartesia's TTS WebSocket on ``host:port`` until cancelled."""

    async def reject(request: trio_websocket.WebSocketRequest, status: int, message: str) -> None:
        body = orjson.dumps({"error": message, "message": message, "status_code": status})
        await request.reject(status, extra_headers=[(b"content-type", b"application/json")],
                             body=body)

    async def on_request(request: trio_websocket.WebSocketRequest) -> None:
        url = urlsplit(request.path)
        query = dict(parse_qsl(url.query))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
        if url.path.rstrip("/") != PATH:
            await reject(request, 404, f"no route {url.path}")
            return
        if api_key is not None and _presented_key(query, headers) != api_key:
            await reject(request, 401, "Invalid API key")
            return
        version = query.get("cartesia_version") or headers.get("cartesia-version")
        if not version:
            await reject(request, 400, "the Cartesia-Version header (or the cartesia_version "
                                       "query parameter) is required")
            return
        if not VERSION.fullmatch(version):
            await reject(request, 400, f"Cartesia-Version {version!r} is not a YYYY-MM-DD date")
            return
        ws = await request.accept()
        stats["connections"] += 1
        await Connection(ws, engine_url).run(IDLE_TIMEOUT)

    engine = EngineVoices(engine_url)

    async def rest(method: str, target: str, headers: dict[str, str]) -> tuple[int, Any] | None:
        url = urlsplit(target)
        if url.path.rstrip("/") != "/voices":
            return None
        query = dict(parse_qsl(url.query))
        if api_key is not None and _presented_key(query, headers) != api_key:
            return 401, {"error": "Invalid API key", "message": "Invalid API key",
                         "status_code": 401}
        version = query.get("cartesia_version") or headers.get("cartesia-version")
        if not version or not VERSION.fullmatch(version):
            message = "a Cartesia-Version header of the form YYYY-MM-DD is required"
            return 400, {"error": message, "message": message, "status_code": 400}
        return voices_page(await engine.get(), query)

    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(
            serve_http_and_websocket, one_connection_only(on_request, faults), rest, host, port))
        task_status.started(bound)
