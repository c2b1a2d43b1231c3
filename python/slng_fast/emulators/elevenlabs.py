"""A local stand-in for ElevenLabs' text-to-speech WebSockets, following the public API
(not our adapter), speaking with the built-in espeak engine over WebSocket.

Endpoints: ``/v1/text-to-speech/{voice_id}/stream-input`` (one stream) and
``/multi-stream-input`` (contexts named by ``context_id``, answers carry ``contextId``).
Auth: the ``xi-api-key`` header, or ``xi_api_key`` in the first message; a wrong or
missing key gets ``{"message","error","code":1008}`` and close 1008, as do an unknown
``output_format`` and the inactivity timeout (``inactivity_timeout``, default 20 s, up to
180; the clock does not run while audio is being made).

Query: ``output_format`` ``pcm_8000|16000|22050|24000|44100``, ``ulaw_8000``, ``alaw_8000``
(espeak's 22,050 Hz resampled; the default mp3 cannot be made here and is refused),
``model_id``, ``language_code`` (an eSpeak language), ``sync_alignment``, ``auto_mode``.
Text is buffered per stream or context and spoken on ``flush``, at the end of input, or
when the buffer passes the next ``generation_config.chunk_length_schedule`` threshold
(default 120, 160, 250, 290 characters). Every audio message has base64 ``audio`` and
``alignment``/``normalizedAlignment`` (character times spread evenly over the audio,
relative to the chunk). ``{"text": ""}`` ends a stream-input socket (remaining audio,
``isFinal``, close 1000) and keeps a context alive; ``close_context`` lets flushed text
finish, then answers ``isFinal``; ``close_socket`` does that for every context, then
closes. ``voice_settings.speed`` sets espeak's speed. A voice_id maps to an espeak voice
deterministically (one the REST listing gives, an eSpeak id, is that voice). At most 5 live
contexts a connection.

REST, on the same port: ``GET /v1/voices`` lists the installed eSpeak voices as premade
voices (``voice_id`` the eSpeak id), with the same key check (``xi-api-key``; a wrong or
missing one gets 401 ``{"detail": {"status": "invalid_api_key", ...}}``)."""

from __future__ import annotations

import base64
import hashlib
import math
import re
from dataclasses import dataclass, field
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
ENGINE_RATE = 22050
VOICES = ("en-us", "en-gb", "en-us+f3", "en-us+m3", "en-gb+f2", "en-us+klatt")
DEFAULT_SCHEDULE = (120, 160, 250, 290)
MAX_CONTEXTS = 5
CHUNK_MS = 250  # audio per answer
PATH = re.compile(r"^/v1/text-to-speech/([^/]+)/(stream-input|multi-stream-input)$")
FORMATS = {"pcm_8000": (8000, "pcm"), "pcm_16000": (16000, "pcm"),
           "pcm_22050": (22050, "pcm"), "pcm_24000": (24000, "pcm"),
           "pcm_44100": (44100, "pcm"), "ulaw_8000": (8000, "ulaw"),
           "alaw_8000": (8000, "alaw")}


def espeak_voice(voice_id: str) -> str:
    return VOICES[hashlib.sha256(voice_id.encode()).digest()[0] % len(VOICES)]


def error(message: str, kind: str) -> str:
    return orjson.dumps({"message": message, "error": kind, "code": 1008}).decode()


@dataclass
class Context:
    id: str | None  # None: the single stream of stream-input
    voice_settings: dict[str, Any] = field(default_factory=dict)
    schedule: tuple[int, ...] = DEFAULT_SCHEDULE
    buffer: str = ""
    generations: int = 0
    jobs: Any = None  # memory channel of texts, then None (final)
    done: trio.Event = field(default_factory=trio.Event)


class Connection:
    def __init__(self, ws: trio_websocket.WebSocketConnection, *, voice_id: str, multi: bool,
                 query: dict[str, str], engine_url: str, authorized: bool,
                 api_key: str | None) -> None:
        self.ws = ws
        self.multi = multi
        self.engine_url = engine_url
        self.authorized = authorized
        self.api_key = api_key
        self.rate, self.encoding = FORMATS[query["output_format"]]
        language = query.get("language_code")
        self.voice_id = voice_id
        self.by_language = bool(language and not language.startswith("en"))
        self.voice = language if language and self.by_language else espeak_voice(voice_id)
        self.auto = query.get("auto_mode", "false").lower() == "true"
        self.timeout = min(180.0, float(query.get("inactivity_timeout", 20)))
        self.contexts: dict[str | None, Context] = {}
        self.send_lock = trio.Lock()
        self.last = trio.current_time()
        self.busy = 0
        self.idle = trio.Event()
        self.closing = False

    # -- the socket -----------------------------------------------------------------------
    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self.watch_inactivity)
            try:
                while not self.closing:
                    message = await self.ws.get_message()
                    self.last = trio.current_time()
                    await self.on_message(message)
            except trio_websocket.ConnectionClosed:
                pass
            nursery.cancel_scope.cancel()

    async def send(self, message: dict[str, Any]) -> None:
        """Send to the client; a client that has gone away just stops getting answers
        (its context workers must not take the server down)."""
        async with self.send_lock:
            try:
                await self.ws.send_message(orjson.dumps(message).decode())
            except trio_websocket.ConnectionClosed:
                self.closing = True

    async def fail(self, message: str, kind: str) -> None:
        self.closing = True
        try:
            async with self.send_lock:
                await self.ws.send_message(error(message, kind))
            await self.ws.aclose(1008, kind)
        except trio_websocket.ConnectionClosed:
            pass
        self.nursery.cancel_scope.cancel()

    async def watch_inactivity(self) -> None:
        while True:
            while self.busy:
                self.idle = trio.Event()
                await self.idle.wait()
            deadline = self.last + self.timeout
            if trio.current_time() >= deadline:
                await self.fail(f"Have not received a new text input within the timeout of "
                                f"{self.timeout:g} seconds. Streaming input will be terminated.",
                                "input_timeout_exceeded")
                return
            await trio.sleep_until(deadline)

    # -- messages ---------------------------------------------------------------------------
    async def on_message(self, raw: str | bytes) -> None:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            message = None
        if not isinstance(message, dict):
            await self.fail("Invalid message: expected a JSON object.", "invalid_message")
            return
        if not self.authorized:
            key = message.get("xi_api_key")
            if self.api_key is not None and key != self.api_key:
                await self.fail("Invalid API key" if key else "No API key provided",
                                "invalid_api_key")
                return
            self.authorized = True
        if self.multi and message.get("close_socket"):
            await self.close_all()
            return
        context_id = message.get("context_id") if self.multi else None
        if self.multi and context_id is None:
            context_id = "default"
        if self.multi and message.get("close_context"):
            context = self.contexts.pop(context_id, None)
            if context is not None:
                self.finish(context, speak_rest=False)
            return
        text = message.get("text")
        context = self.contexts.get(context_id)
        if context is None and self.multi and text == "":
            return  # keep-alive of a context that is gone
        if context is None:
            if self.multi and len(self.contexts) >= MAX_CONTEXTS:
                await self.fail(f"A connection holds at most {MAX_CONTEXTS} contexts.",
                                "max_active_conversations")
                return
            context = self.open_context(context_id, message)
        if text == "" and not self.multi:  # end of input
            self.contexts.pop(context_id, None)
            self.finish(context, speak_rest=True)
            self.closing = True
            await context.done.wait()
            await self.ws.aclose(1000)
            return
        if isinstance(text, str):
            context.buffer += text
        if message.get("flush") or self.auto:
            self.speak(context, context.buffer)
        else:
            self.maybe_speak(context)

    def open_context(self, context_id: str | None, message: dict[str, Any]) -> Context:
        context = Context(context_id)
        if isinstance(message.get("voice_settings"), dict):
            context.voice_settings = message["voice_settings"]
        config = message.get("generation_config")
        if isinstance(config, dict) and isinstance(config.get("chunk_length_schedule"), list):
            context.schedule = tuple(int(n) for n in config["chunk_length_schedule"]) \
                or DEFAULT_SCHEDULE
        send, receive = trio.open_memory_channel[Any](math.inf)
        context.jobs = send
        self.contexts[context_id] = context
        self.nursery.start_soon(self.worker, context, receive)
        return context

    def maybe_speak(self, context: Context) -> None:
        threshold = context.schedule[min(context.generations, len(context.schedule) - 1)]
        if len(context.buffer.strip()) < threshold:
            return
        cut = max(context.buffer.rfind(" "), context.buffer.rfind("\n"))
        if cut > 0:  # whole words now, the rest waits
            text, context.buffer = context.buffer[:cut + 1], context.buffer[cut + 1:]
            self.speak(context, text, keep=True)

    def speak(self, context: Context, text: str, keep: bool = False) -> None:
        if not keep:
            context.buffer = ""
        text = text.lstrip()  # the opening " " is no speech
        if text:
            context.generations += 1
            self.busy += 1
            context.jobs.send_nowait(text)

    def finish(self, context: Context, *, speak_rest: bool) -> None:
        if speak_rest:
            self.speak(context, context.buffer)
        context.buffer = ""
        context.jobs.send_nowait(None)

    async def close_all(self) -> None:
        self.closing = True
        contexts = list(self.contexts.values())
        self.contexts.clear()
        for context in contexts:
            self.finish(context, speak_rest=False)
        for context in contexts:
            await context.done.wait()
        await self.ws.aclose(1000)

    # -- synthesis --------------------------------------------------------------------------
    async def worker(self, context: Context, jobs: Any) -> None:
        engine: trio_websocket.WebSocketConnection | None = None
        try:
            async with trio.open_nursery() as nursery:
                async for text in jobs:
                    if text is None:
                        break
                    try:
                        if engine is None:
                            engine = await self.open_engine(nursery, context)
                        await self.say(engine, context, text)
                    finally:
                        self.job_done()
                final: dict[str, Any] = {"isFinal": True}
                if context.id is not None:
                    final["contextId"] = context.id
                await self.send(final)
                if engine is not None:
                    await engine.aclose()
        except trio_websocket.ConnectionClosed:
            pass
        finally:
            context.done.set()

    def job_done(self) -> None:
        self.busy -= 1
        if not self.busy:
            self.last = trio.current_time()
            self.idle.set()

    async def open_engine(self, nursery: trio.Nursery,
                          context: Context) -> trio_websocket.WebSocketConnection:
        engine = await trio_websocket.connect_websocket_url(nursery, self.engine_url)
        ready = orjson.loads(await engine.get_message())  # {"type":"ready",...}
        listed = ready.get("voices") if isinstance(ready, dict) else None
        if not self.by_language and isinstance(listed, list) and any(
                isinstance(v, dict) and v.get("id") == self.voice_id for v in listed):
            self.voice = self.voice_id  # a voice of the REST listing
        settings: dict[str, Any] = {"voice": self.voice}
        speed = context.voice_settings.get("speed")
        if isinstance(speed, (int, float)):
            settings["speed"] = float(speed)
        await engine.send_message(orjson.dumps(settings).decode())
        return engine

    async def say(self, engine: trio_websocket.WebSocketConnection, context: Context,
                  text: str) -> None:
        await engine.send_message(text)
        await engine.send_message('{"type":"control","action":"flush"}')
        pcm = bytearray()
        while True:
            frame = await engine.get_message()
            if isinstance(frame, bytes):
                pcm += frame
                continue
            reply = orjson.loads(frame)
            if reply.get("type") == "flushed":
                break
            if reply.get("type") == "error":
                await self.send({"message": str(reply.get("message")), "error": "internal_error",
                                 "code": 1011})
                return
        await self.send_audio(context, text, self.convert(bytes(pcm)))

    def convert(self, pcm: bytes) -> bytes:
        if self.rate != ENGINE_RATE:
            resampler = _native.Resampler(ENGINE_RATE, self.rate)
            pcm = resampler.process(pcm) + resampler.flush()
        if self.encoding == "ulaw":
            return _native.pcm16_to_mulaw(pcm)
        if self.encoding == "alaw":
            return _native.pcm16_to_alaw(pcm)
        return pcm

    async def send_audio(self, context: Context, text: str, audio: bytes) -> None:
        """Audio in ~250 ms answers, each with the characters that start in it."""
        width = 2 if self.encoding == "pcm" else 1
        samples = len(audio) // width
        total_ms = samples * 1000.0 / self.rate
        per_char = total_ms / max(1, len(text))
        step = max(1, self.rate * CHUNK_MS // 1000)
        char = 0
        for first in range(0, samples, step):
            chunk = audio[first * width:(first + step) * width]
            begin = first * 1000.0 / self.rate
            end = (first + step) * 1000.0 / self.rate
            chars, starts, durations = [], [], []
            while char < len(text) and (char * per_char < end or first + step >= samples):
                chars.append(text[char])
                starts.append(max(0, round(char * per_char - begin)))
                durations.append(max(1, round(per_char)))
                char += 1
            alignment = {"chars": chars, "charStartTimesMs": starts,
                         "charDurationsMs": durations}
            message: dict[str, Any] = {"audio": base64.b64encode(chunk).decode(),
                                       "isFinal": None, "normalizedAlignment": alignment,
                                       "alignment": alignment}
            if context.id is not None:
                message["contextId"] = context.id
            await self.send(message)


def voices_answer(voices: list[dict[str, Any]]) -> dict[str, Any]:
    """``GET /v1/voices``: the engine's voices in ElevenLabs' shape."""
    out = []
    for v in voices:
        languages = [x for x in v.get("languages") or [] if isinstance(x, str)]
        language = languages[0].partition("-")[0] if languages else None
        labels = {k: x for k, x in (("gender", v.get("gender")), ("language", language))
                  if isinstance(x, str) and x}
        out.append({
            "voice_id": v["id"], "name": v.get("name") or v["id"], "category": "premade",
            "labels": labels, "description": None, "preview_url": None,
            "available_for_tiers": [], "settings": None, "samples": None,
            "fine_tuning": {"is_allowed_to_fine_tune": False, "language": language},
            "high_quality_base_model_ids": [],
            "verified_languages": [{"language": x.partition("-")[0],
                                    "model_id": "eleven_multilingual_v2", "accent": None,
                                    "locale": bcp47(x), "preview_url": None}
                                   for x in languages],
            "is_owner": False, "is_legacy": False})
    return {"voices": out}


async def serve_emulator(host: str, port: int, *, engine_url: str, api_key: str | None = None,
                         ssl_context: Any = None,
                         faults: FaultPlan = NO_FAULTS,
                         task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the emulator on ``host:port`` (0 picks one) until cancelled; ``task_status``
    gets the bound port. ``ssl_context`` makes it a wss:// server."""

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        url = urlsplit(request.path)
        match = PATH.match(url.path)
        if match is None:
            await request.reject(404, body=b'{"detail":"Not Found"}')
            return
        query = dict(parse_qsl(url.query))
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        key = headers.get("xi-api-key") or query.get("xi_api_key")
        ws = await request.accept()
        try:
            if api_key is not None and key is not None and key != api_key:
                await ws.send_message(error("Invalid API key", "invalid_api_key"))
                await ws.aclose(1008, "invalid_api_key")
                return
            query.setdefault("output_format", "mp3_44100_128")  # ElevenLabs' default
            if query["output_format"] not in FORMATS:
                await ws.send_message(error(
                    f"Unsupported output format {query['output_format']!r} in this emulator; "
                    f"use one of {', '.join(FORMATS)}", "invalid_output_format"))
                await ws.aclose(1008, "invalid_output_format")
                return
            connection = Connection(
                ws, voice_id=match.group(1), multi=match.group(2) == "multi-stream-input",
                query=query, engine_url=engine_url,
                authorized=api_key is None or key == api_key, api_key=api_key)
            await connection.run()
        except trio_websocket.ConnectionClosed:
            pass

    engine = EngineVoices(engine_url)

    async def rest(method: str, target: str, headers: dict[str, str]) -> tuple[int, Any] | None:
        if urlsplit(target).path.rstrip("/") != "/v1/voices":
            return None
        if api_key is not None and headers.get("xi-api-key") != api_key:
            return 401, {"detail": {"status": "invalid_api_key",
                                    "message": "Invalid API key" if "xi-api-key" in headers
                                    else "Missing the xi-api-key header"}}
        return 200, voices_answer(await engine.get())

    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(
            serve_http_and_websocket, one_connection_only(handler, faults), rest, host, port,
            ssl_context=ssl_context))
        task_status.started(bound)
