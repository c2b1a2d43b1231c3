"""A local stand-in for Deepgram's Aura streaming TTS WebSocket (``/v1/speak``), following
Deepgram's public documentation, not our adapter. It makes real speech with the built-in
eSpeak NG engine, reached over WebSocket (``engine_url``), so eSpeak stays in its process.

Handshake: ``GET /v1/speak?model=aura-...&encoding=linear16|mulaw|alaw&sample_rate=N``
(defaults ``aura-asteria-en``, ``linear16``; 24000 Hz for linear16 and 8000 for the G.711
encodings; linear16 takes 8000, 16000, 24000, 32000, 48000, mulaw/alaw 8000 and 16000).
The key comes as ``Authorization: Token <key>`` (or ``Bearer``, or the subprotocols
``token``, ``<key>``); when ``api_key`` is set a missing or wrong key is refused with HTTP
401 and a ``dg-error`` header, as Deepgram does; a bad parameter is HTTP 400 and another
path 404.

On connect: ``{"type":"Metadata","request_id",...,"model_name",...}``. Then:

* ``{"type":"Speak","text":...}`` appends to the buffer (over 2,000 characters: close
  1009 ``BIG-0000``);
* ``{"type":"Flush"}`` speaks the buffer: binary audio, then ``{"type":"Flushed",
  "sequence_id":n}`` (n counts flushes from 0). More than 20 flushes in 60 s: a
  ``Warning`` and the flush is not processed (its text stays buffered);
* ``{"type":"Clear"}`` drops buffered text and audio not yet sent (an utterance being
  spoken stops at once), then ``{"type":"Cleared","sequence_id":n}`` (n: flushes so far);
* ``{"type":"Close"}`` speaks what is queued and buffered, then closes with 1000;
* a binary frame: close 1003 ``MESSAGE-0000``; text that is not JSON: 1008 ``DATA-0000``;
  a JSON message it does not understand: 1008 ``DATA-0001``;
* no client message and nothing being spoken for ``idle_timeout`` seconds: close 1011
  ``NET-0001``. ``drop_connections(port)`` does the same at once (tests use it for an
  upstream that drops idle sockets).

Audio: eSpeak's 22,050 Hz PCM16 resampled to the asked rate, then mu-law or A-law when
asked. The model picks an eSpeak voice deterministically: the model's language (``en``
-> ``en-us``), and an eSpeak variant of the model's gender (``f1``..``f5`` for Aura's
female voices, ``m1``..``m8`` for the male ones, chosen by a CRC of the name).

REST, on the same port: ``GET /v1/models`` answers ``{"stt": [], "tts": [...]}``, one
Aura-shaped model per installed eSpeak voice (``aura-<voice>-<language>``, the voice's
``-`` written ``_``, so ``model=`` picks that language), with the same key check."""

from __future__ import annotations

import uuid
import zlib
from collections import deque
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import trio
import trio_websocket

from slng_fast import _native
from slng_fast.emulators import EngineVoices, one_connection_only
from slng_fast.emulators.faults import NO_FAULTS, FaultPlan
from slng_fast.emulators.plain_http import serve_http_and_websocket

ENGINE = "espeak"
ENGINE_RATE = 22050
SPEAK_PATH = "/v1/speak"
MAX_SPEAK_CHARS = 2000
FLUSH_LIMIT = 20  # flushes per FLUSH_WINDOW_S seconds
FLUSH_WINDOW_S = 60.0
IDLE_TIMEOUT_S = 60.0
CLOSE_TIMEOUT_S = 2.0
RATES = {"linear16": (8000, 16000, 24000, 32000, 48000), "mulaw": (8000, 16000),
         "alaw": (8000, 16000)}
DEFAULT_RATES = {"linear16": 24000, "mulaw": 8000, "alaw": 8000}
DEFAULT_MODEL = "aura-asteria-en"

FEMALE = frozenset("""asteria luna stella athena hera amalthea andromeda aurora callista cora
cordelia delia electra harmonia helena iris juno minerva ophelia pandora phoebe selene thalia
theia vesta celeste estrella""".split())
MALE = frozenset("""orion arcas perseus angus orpheus helios zeus apollo aries atlas draco
hermes hyperion janus jupiter mars neptune odysseus pluto saturn nestor sirio""".split())
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5")
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8")
LANGUAGES = {"en": "en-us"}

ENGINE_FLUSH = orjson.dumps({"type": "control", "action": "flush"}).decode()
ENGINE_STOP = orjson.dumps({"type": "control", "action": "stop"}).decode()

# Live sessions by the port of the emulator that serves them (for drop_connections).
CONNECTIONS: dict[int, set[SpeakSession]] = {}


def espeak_voice(model: str, available: set[str] | None = None) -> str:
    """The eSpeak voice for a Deepgram model name, always the same for the same name."""
    name = model.lower()
    if name.startswith("aura-"):
        name = name[len("aura-"):]
    if name.startswith("2-"):
        name = name[2:]
    speaker, _, lang = name.rpartition("-")
    if not speaker:
        speaker, lang = lang, "en"
    base = LANGUAGES.get(lang, lang)
    if available is not None and speaker.replace("_", "-") in available:
        base = speaker.replace("_", "-")  # a model of the REST listing: that eSpeak voice
    elif available is not None and base not in available:
        base = "en-us"
    crc = zlib.crc32(speaker.encode())
    if speaker in MALE or (speaker not in FEMALE and crc % 2):
        variant = MALE_VARIANTS[crc % len(MALE_VARIANTS)]
    else:
        variant = FEMALE_VARIANTS[crc % len(FEMALE_VARIANTS)]
    return f"{base}+{variant}"


def _json(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


class Refusal(Exception):
    def __init__(self, status: int, err_code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.err_code, self.message = status, err_code, message


def parse_handshake(path: str, headers: list[tuple[str, str]], subprotocols: list[str],
                    api_key: str | None) -> tuple[dict[str, Any], str | None]:
    """The session parameters and the subprotocol to answer, or ``Refusal``."""
    parts = urlsplit(path)
    if parts.path.rstrip("/") != SPEAK_PATH:
        raise Refusal(404, "NOT_FOUND", f"no such endpoint {parts.path}")
    presented, subprotocol = None, None
    for name, value in headers:
        if name.lower() == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() in ("token", "bearer"):
                presented = token.strip()
    if presented is None and len(subprotocols) >= 2 and subprotocols[0].lower() == "token":
        presented, subprotocol = subprotocols[1], subprotocols[0]
    if api_key is not None and presented != api_key:
        raise Refusal(401, "INVALID_AUTH", "Invalid credentials.")
    query = dict(parse_qsl(parts.query))
    model = query.get("model", DEFAULT_MODEL)
    if not model.startswith("aura-") or len(model) <= len("aura-"):
        raise Refusal(400, "INVALID_QUERY_PARAMETER", f"No such model/version/tier combination found: {model}")
    encoding = query.get("encoding", "linear16")
    if encoding not in RATES:
        raise Refusal(400, "INVALID_QUERY_PARAMETER", f"Unsupported encoding: {encoding}")
    rate_text = query.get("sample_rate", str(DEFAULT_RATES[encoding]))
    if not rate_text.isdigit() or int(rate_text) not in RATES[encoding]:
        raise Refusal(400, "INVALID_QUERY_PARAMETER",
                      f"Unsupported sample_rate {rate_text} for encoding {encoding}")
    return {"model": model, "encoding": encoding, "sample_rate": int(rate_text)}, subprotocol


class SpeakSession:
    """One client connection: a reader, a synthesis worker and an idle watch."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, engine_url: str,
                 params: dict[str, Any], idle_timeout: float) -> None:
        self.ws = ws
        self.engine_url = engine_url
        self.model: str = params["model"]
        self.encoding: str = params["encoding"]
        self.rate: int = params["sample_rate"]
        self.idle_timeout = idle_timeout
        self.request_id = str(uuid.uuid4())
        self.buffer: list[str] = []
        self.generation = 0  # bumped by Clear: work of older generations is dropped
        self.flushes = 0
        self.flush_times: deque[float] = deque()
        self.queue_send, self.queue = trio.open_memory_channel[tuple[Any, ...]](1000)
        self.queued = 0
        self.in_flight = False
        self.engine: trio_websocket.WebSocketConnection | None = None
        self.engine_lock = trio.Lock()
        self.last_activity = trio.current_time()
        self.closed = False
        self.closing = False  # Close received: speak what is queued, then close
        self.nursery: trio.Nursery | None = None

    async def run(self) -> None:
        await self._send(_json({
            "type": "Metadata", "request_id": self.request_id, "model_name": self.model,
            "model_version": "emulated-espeak",
            "model_uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, self.model)),
            "additional_model_uuids": [],
        }))
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self._work)
            nursery.start_soon(self._watch_idle)
            await self._read_client()
            if not self.closing:  # the client went away (Close lets the worker finish)
                await self._finish()

    async def _finish(self) -> None:
        """Close the engine socket and end the session's tasks."""
        engine, self.engine = self.engine, None
        if engine is not None:
            with trio.move_on_after(CLOSE_TIMEOUT_S) as scope:
                scope.shield = True
                try:
                    await engine.aclose()
                except Exception:
                    pass
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()

    # -- client -----------------------------------------------------------------------
    async def _send(self, frame: str | bytes) -> None:
        if self.closed:
            return
        try:
            await self.ws.send_message(frame)
        except trio_websocket.ConnectionClosed:
            self.closed = True
            await self._finish()

    async def close(self, code: int, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        with trio.move_on_after(CLOSE_TIMEOUT_S) as scope:
            scope.shield = True
            try:
                await self.ws.aclose(code, reason)
            except Exception:
                pass
        await self._finish()

    async def _read_client(self) -> None:
        while not self.closed:
            try:
                frame = await self.ws.get_message()
            except trio_websocket.ConnectionClosed:
                self.closed = True
                return
            self.last_activity = trio.current_time()
            if isinstance(frame, bytes):
                await self.close(1003, "MESSAGE-0000")
                return
            try:
                message = orjson.loads(frame)
            except orjson.JSONDecodeError:
                await self.close(1008, "DATA-0000")
                return
            kind = message.get("type") if isinstance(message, dict) else None
            if kind == "Speak" and isinstance(message.get("text"), str):
                text = message["text"]
                if len(text) > MAX_SPEAK_CHARS:
                    await self.close(1009, "BIG-0000")
                    return
                self.buffer.append(text)
            elif kind == "Flush":
                await self._flush()
            elif kind == "Clear":
                await self._clear()
            elif kind == "Close":
                self.closing = True
                await self._enqueue(("close", self.generation, "".join(self.buffer)))
                self.buffer.clear()
                return  # the worker speaks what is queued, then closes
            else:
                await self.close(1008, "DATA-0001")
                return

    async def _enqueue(self, item: tuple[Any, ...]) -> None:
        self.queued += 1
        await self.queue_send.send(item)

    async def _flush(self) -> None:
        now = trio.current_time()
        while self.flush_times and self.flush_times[0] <= now - FLUSH_WINDOW_S:
            self.flush_times.popleft()
        if len(self.flush_times) >= FLUSH_LIMIT:
            await self._send(_json({
                "type": "Warning", "code": "FLUSH_LIMIT_EXCEEDED",
                "description": f"At most {FLUSH_LIMIT} Flush messages are processed every "
                               f"{FLUSH_WINDOW_S:.0f} seconds; this Flush was not processed.",
            }))
            return
        self.flush_times.append(now)
        sequence_id = self.flushes
        self.flushes += 1
        text = "".join(self.buffer)
        self.buffer.clear()
        await self._enqueue(("flush", self.generation, text, sequence_id))

    async def _clear(self) -> None:
        self.buffer.clear()
        async with self.engine_lock:
            self.generation += 1
            if self.in_flight and self.engine is not None:
                try:
                    await self.engine.send_message(ENGINE_STOP)
                except trio_websocket.ConnectionClosed:
                    pass
        await self._enqueue(("clear", self.generation, max(0, self.flushes - 1)))

    # -- synthesis --------------------------------------------------------------------------
    async def _work(self) -> None:
        async for item in self.queue:
            try:
                kind, generation = item[0], item[1]
                if kind == "flush":
                    if await self._speak(generation, item[2]) and generation == self.generation:
                        await self._send(_json({"type": "Flushed", "sequence_id": item[3]}))
                elif kind == "clear":
                    await self._send(_json({"type": "Cleared", "sequence_id": item[2]}))
                elif kind == "close":
                    await self._speak(generation, item[2])
                    await self.close(1000, "")
                    return
            finally:
                self.queued -= 1
                self.last_activity = trio.current_time()

    async def _connect_engine(self) -> trio_websocket.WebSocketConnection | None:
        if self.engine is not None:
            return self.engine
        assert self.nursery is not None
        try:
            engine = await trio_websocket.connect_websocket_url(
                self.nursery, self.engine_url, None, max_message_size=4 * 1024 * 1024)
            ready = orjson.loads(await engine.get_message())
        except (OSError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed):
            await self.close(1011, "NET-0002")  # the synthesizer cannot be reached
            return None
        voices = ready.get("voices") if isinstance(ready, dict) else None
        available = {v["id"] for v in voices or [] if isinstance(v, dict) and "id" in v}
        await engine.send_message(_json({"voice": espeak_voice(self.model, available or None)}))
        self.engine = engine
        return engine

    async def _speak(self, generation: int, text: str) -> bool:
        """Speak ``text`` to the client; False when it could not be (cleared, or the
        engine failed)."""
        if generation != self.generation:
            return False
        if not text:
            return True
        engine = await self._connect_engine()
        if engine is None:
            return False
        async with self.engine_lock:
            if generation != self.generation:
                return False
            try:
                await engine.send_message(text)
                await engine.send_message(ENGINE_FLUSH)
            except trio_websocket.ConnectionClosed:
                await self.close(1011, "NET-0002")
                return False
            self.in_flight = True
        resampler = _native.Resampler(ENGINE_RATE, self.rate) if self.rate != ENGINE_RATE else None
        try:
            while True:
                try:
                    frame = await engine.get_message()
                except trio_websocket.ConnectionClosed:
                    await self.close(1011, "NET-0002")
                    return False
                if isinstance(frame, bytes):
                    if generation == self.generation:
                        await self._send_audio(resampler.process(frame) if resampler else frame)
                    continue
                message = orjson.loads(frame)
                if isinstance(message, dict) and message.get("type") == "flushed":
                    break
        finally:
            self.in_flight = False
        if generation != self.generation:
            return False
        if resampler is not None:
            await self._send_audio(resampler.flush())
        return True

    async def _send_audio(self, pcm: bytes) -> None:
        if not pcm:
            return
        if self.encoding == "mulaw":
            pcm = _native.pcm16_to_mulaw(pcm)
        elif self.encoding == "alaw":
            pcm = _native.pcm16_to_alaw(pcm)
        await self._send(pcm)

    async def _watch_idle(self) -> None:
        while True:
            await trio.sleep_until(self.last_activity + self.idle_timeout)
            if self.queued or self.in_flight:  # speaking is not idle
                self.last_activity = trio.current_time()
                continue
            if trio.current_time() >= self.last_activity + self.idle_timeout:
                await self.close(1011, "NET-0001")
                return


async def drop_connections(port: int, code: int = 1011, reason: str = "NET-0001") -> int:
    """Close every connection of the emulator on ``port`` as Deepgram closes idle ones;
    how many there were."""
    sessions = list(CONNECTIONS.get(port, ()))
    for session in sessions:
        await session.close(code, reason)
    return len(sessions)


async def _handle(request: trio_websocket.WebSocketRequest, *, engine_url: str,
                  api_key: str | None, idle_timeout: float, live: set[SpeakSession]) -> None:
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers]
    request_id = str(uuid.uuid4())
    try:
        params, subprotocol = parse_handshake(request.path, headers,
                                              list(request.proposed_subprotocols), api_key)
    except Refusal as refusal:
        body = orjson.dumps({"err_code": refusal.err_code, "err_msg": refusal.message,
                             "request_id": request_id})
        await request.reject(refusal.status, extra_headers=[
            (b"content-type", b"application/json"),
            (b"dg-request-id", request_id.encode()),
            (b"dg-error", refusal.message.encode("latin-1", "replace")),
        ], body=body)
        return
    ws = await request.accept(subprotocol=subprotocol,
                              extra_headers=[(b"dg-request-id", request_id.encode())])
    session = SpeakSession(ws, engine_url, params, idle_timeout)
    session.request_id = request_id
    live.add(session)
    try:
        await session.run()
    finally:
        live.discard(session)


def models_answer(voices: list[dict[str, Any]]) -> dict[str, Any]:
    """``GET /v1/models``: the engine's voices as Deepgram TTS models."""
    tts = []
    for v in voices:
        languages = [x for x in v.get("languages") or [] if isinstance(x, str)] or [v["id"]]
        language = languages[0].partition("-")[0]
        gender = {"male": "masculine", "female": "feminine"}.get(str(v.get("gender")))
        tts.append({
            "name": v["id"], "canonical_name": f"aura-{v['id'].replace('-', '_')}-{language}",
            "architecture": "aura", "languages": languages, "version": "emulator",
            "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"espeak:{v['id']}")),
            "metadata": {"accent": v.get("name") or v["id"], "color": "#000000", "image": "",
                         "sample": "", "tags": [gender] if gender else [],
                         "use_cases": []}})
    return {"stt": [], "tts": tts}


def presented_key(headers: dict[str, str]) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() in ("token", "bearer") else None


async def serve_emulator(host: str, port: int, *, engine_url: str, api_key: str | None = None,
                         idle_timeout: float = IDLE_TIMEOUT_S,
                         faults: FaultPlan = NO_FAULTS,
                         task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve Deepgram's speak WebSocket on ``host:port`` (0: any free port) until
    cancelled; reports the bound port through ``task_status``."""
    live: set[SpeakSession] = set()
    handler = partial(_handle, engine_url=engine_url, api_key=api_key,
                      idle_timeout=idle_timeout, live=live)
    engine = EngineVoices(engine_url)

    async def rest(method: str, target: str, headers: dict[str, str]) -> tuple[int, Any] | None:
        if urlsplit(target).path.rstrip("/") != "/v1/models":
            return None
        if api_key is not None and presented_key(headers) != api_key:
            return 401, {"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials.",
                         "request_id": str(uuid.uuid4())}
        return 200, models_answer(await engine.get())

    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(
            serve_http_and_websocket, one_connection_only(handler, faults), rest, host, port,
            max_message_size=4 * 1024 * 1024))
        CONNECTIONS[bound] = live
        try:
            task_status.started(bound)
            await trio.sleep_forever()
        finally:
            CONNECTIONS.pop(bound, None)
