"""Emulator of the public SLNG model servers: Orpheus, Orpheus Indic, Kokoro, CosyVoice,
Chatterbox and XTTS (PROTOCOL.md section 8, the product documents in ``seeds/``), making
real speech with the built-in espeak engine, which it reaches over WebSocket (eSpeak NG
is GPL and stays in the engine's own process: this module never imports it).

Path scheme: one server for every model, the model chosen by the URL path::

    ws://HOST:PORT/orpheus          ws://HOST:PORT/orpheus-indic    ws://HOST:PORT/kokoro
    ws://HOST:PORT/cosyvoice        ws://HOST:PORT/chatterbox       ws://HOST:PORT/xtts

(a trailing slash is accepted; another path is refused with HTTP 404). The query
parameters ``voice`` and ``language`` preset the settings. With ``api_key`` set, the
handshake needs ``Authorization: Bearer <key>`` (HTTP 401 otherwise).

The dialect, as the public servers speak it:

- on connect: ``{"type":"ready","sample_rate":N}`` (24000; CosyVoice 22050);
- a JSON object without ``type`` (or ``"type":"settings"``) is a settings message:
  ``voice``, ``language``, ``buffer_size``, ``max_tokens``, ``repetition_penalty``,
  ``temperature``, ``top_p`` (other keys accepted and ignored). It normally comes first;
  one may come later and changes what follows. An unknown voice for the model, an
  Orpheus Indic ``language`` outside ``hi bn ta te mr gu kn ml`` or an extra of the wrong
  type or range: ``{"type":"error","code":"invalid_parameter","message":...}``, then
  close 1008. Without a settings message the query and the model's defaults apply (the
  documents' native example sends plain text straight away);
- plain-text frames are buffered as sent;
- ``{"type":"control","action":"flush"}``: the buffer is spoken, binary PCM16 mono
  frames at the model's rate follow, then ``{"type":"flushed"}`` (one per flush, in
  order, even with nothing buffered). Kokoro generates the whole utterance before it
  sends any of it, then sends all of it;
- ``{"type":"control","action":"stop"}`` and every other control action are **not
  honoured**: ignored, as the public servers do (clients stop by closing the socket);
- ``__END__``: what is buffered is spoken, then the server closes with 1000 (no
  ``flushed`` for it). Binary frames and JSON with another ``type`` are ignored.

Voices map to distinct espeak voices/variants (:data:`MODELS`); Orpheus Indic's
``kanak`` speaks with eSpeak's voice for the session's language. eSpeak's 22,050 Hz is
resampled to the model's rate with the native resampler.

For tests, :data:`RECORDS` holds what each connection received (settings messages, the
text of each flush, control actions), by the server's port: nothing of it goes on the
wire."""

from __future__ import annotations

import logging
import math
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import trio
import trio_websocket
from trio_websocket import WebSocketConnection, WebSocketRequest, serve_websocket

from slng_fast._native import Resampler
from slng_fast.emulators import one_connection_only
from slng_fast.emulators.faults import NO_FAULTS, FaultPlan

__all__ = ["ENGINE", "INDIC_LANGUAGES", "MODELS", "RECORDS", "Model", "SessionRecord",
           "serve_emulator"]

ENGINE = "espeak"

log = logging.getLogger("slng_fast.emulators.slng")

INDIC_LANGUAGES = ("hi", "bn", "ta", "te", "mr", "gu", "kn", "ml")
END_OF_INPUT = "__END__"
CHUNK_MS = 200  # the size of the binary frames the emulator sends


@dataclass(frozen=True)
class Model:
    name: str
    sample_rate: int
    default_voice: str
    voices: dict[str, str]  # model voice -> espeak voice ("base+variant")
    languages: tuple[str, ...] = ()  # when set, `language` must be one of them
    default_language: str | None = None
    all_at_once: bool = False  # Kokoro: the whole utterance is made before any is sent

    def espeak_voice(self, voice: str, language: str | None) -> str:
        if self.languages:  # Orpheus Indic: eSpeak's voice for the language
            return language or self.default_language or self.languages[0]
        return self.voices[voice]


MODELS: dict[str, Model] = {m.name: m for m in (
    # tara keeps eSpeak's plain en-us voice: the round-trip tests need speech that
    # PocketSphinx recognises.
    Model("orpheus", 24000, "tara", {"tara": "en-us", "luna": "en-us+f1",
                                     "stella": "en-us+f2", "athena": "en-us+f3",
                                     "hera": "en-us+f4"}),
    Model("orpheus-indic", 24000, "kanak", {"kanak": "hi"}, INDIC_LANGUAGES, "hi"),
    Model("kokoro", 24000, "af", {"af": "en-us+f5", "af_bella": "en-us+Annie",
                                  "af_sky": "en-us+Andrea", "am_adam": "en-us+adam"},
          all_at_once=True),
    Model("cosyvoice", 22050, "emma", {"emma": "en+f3"}),
    Model("chatterbox", 24000, "nova", {"nova": "en+f1", "echo": "en+m2", "sky": "en+f4",
                                        "zara": "en+f5", "max": "en+max"}),
    Model("xtts", 24000, "Claribel Dervla", {"Claribel Dervla": "en+Alicia"}),
)}


@dataclass
class SessionRecord:
    """What one connection received (for tests; never sent anywhere)."""

    model: str
    query: dict[str, str]
    settings: list[dict[str, Any]] = field(default_factory=list)  # as received, in order
    flushed_texts: list[str] = field(default_factory=list)  # the text of each flush
    controls: list[str] = field(default_factory=list)  # every control action, honoured or not
    ended: bool = False  # __END__ came


RECORDS: dict[int, list[SessionRecord]] = {}
"""Bound port -> the sessions of that emulator, oldest first (while it runs)."""


class SettingsError(ValueError):
    pass


_POSITIVE_INTS = ("buffer_size", "max_tokens")


def _number(settings: dict[str, Any], name: str) -> float | None:
    value = settings.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SettingsError(f"{name} must be a number, got {value!r}")
    return float(value)


def check_settings(model: Model, settings: dict[str, Any]) -> None:
    """Raise :class:`SettingsError` for what the model server would refuse."""
    voice = settings.get("voice")
    if voice is not None:
        if not isinstance(voice, str) or voice not in model.voices:
            raise SettingsError(f"unknown voice {voice!r} for {model.name}; voices: "
                                f"{', '.join(model.voices)}")
    language = settings.get("language")
    if language is not None:
        if not isinstance(language, str):
            raise SettingsError(f"language must be a string, got {language!r}")
        if model.languages and language not in model.languages:
            raise SettingsError(f"unsupported language {language!r} for {model.name}; "
                                f"languages: {', '.join(model.languages)}")
    for name in _POSITIVE_INTS:
        value = settings.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise SettingsError(f"{name} must be a positive integer, got {value!r}")
    penalty = _number(settings, "repetition_penalty")
    if penalty is not None and penalty <= 0:
        raise SettingsError(f"repetition_penalty must be positive, got {penalty}")
    temperature = _number(settings, "temperature")
    if temperature is not None and temperature < 0:
        raise SettingsError(f"temperature must not be negative, got {temperature}")
    top_p = _number(settings, "top_p")
    if top_p is not None and not 0 < top_p <= 1:
        raise SettingsError(f"top_p must be in (0, 1], got {top_p}")


@dataclass
class _Job:
    text: str
    voice: str  # the espeak voice
    end: bool = False


def _dumps(event: dict[str, Any]) -> str:
    return orjson.dumps(event).decode()


class _Session:
    def __init__(self, ws: WebSocketConnection, model: Model, engine_url: str,
                 record: SessionRecord) -> None:
        self.ws = ws
        self.model = model
        self.engine_url = engine_url
        self.record = record
        self.settings: dict[str, Any] = {}
        for key in ("voice", "language"):
            if key in record.query:
                self.settings[key] = record.query[key]
        self.buffer: list[str] = []
        self.engine: WebSocketConnection | None = None
        self.engine_rate = 22050
        self.engine_voice: str | None = None

    async def run(self) -> None:
        await self.ws.send_message(_dumps({"type": "ready",
                                           "sample_rate": self.model.sample_rate}))
        try:
            check_settings(self.model, self.settings)
        except SettingsError as exc:
            await self._refuse(str(exc))
            return
        send, receive = trio.open_memory_channel[_Job](math.inf)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._speak, receive)
            async with send:
                if not await self._read(send):
                    nursery.cancel_scope.cancel()

    async def _refuse(self, message: str) -> None:
        await self.ws.send_message(_dumps({"type": "error", "code": "invalid_parameter",
                                           "message": message}))
        await self.ws.aclose(1008, "invalid settings")

    def _espeak_voice(self) -> str:
        voice = self.settings.get("voice") or self.model.default_voice
        return self.model.espeak_voice(voice, self.settings.get("language"))

    async def _read(self, jobs: trio.MemorySendChannel[_Job]) -> bool:
        """Read client frames until ``__END__`` (True) or refused settings (False)."""
        while True:
            message = await self.ws.get_message()
            if isinstance(message, bytes):
                continue  # the servers take no audio
            if message == END_OF_INPUT:
                self.record.ended = True
                await jobs.send(_Job("".join(self.buffer), self._espeak_voice(), end=True))
                self.buffer.clear()
                return True
            obj: Any = None
            if message.lstrip().startswith("{"):
                try:
                    obj = orjson.loads(message)
                except orjson.JSONDecodeError:
                    obj = None
            if not isinstance(obj, dict):
                self.buffer.append(message)
                continue
            kind = obj.get("type")
            if kind == "control":
                action = obj.get("action")
                self.record.controls.append(str(action))
                if action == "flush":
                    text = "".join(self.buffer)
                    self.buffer.clear()
                    self.record.flushed_texts.append(text)
                    await jobs.send(_Job(text, self._espeak_voice()))
                # stop, clear, anything else: not honoured by the public servers
                continue
            if kind is None or kind == "settings":
                self.record.settings.append(obj)
                merged = {**self.settings, **{k: v for k, v in obj.items() if k != "type"}}
                try:
                    check_settings(self.model, merged)
                except SettingsError as exc:
                    await self._refuse(str(exc))
                    return False
                self.settings = merged
                continue
            # JSON with another type: ignored

    async def _speak(self, jobs: trio.MemoryReceiveChannel[_Job]) -> None:
        # The engine socket (a nursery of its own) is opened and closed in this task:
        # entered here and exited by another task, trio reports a corrupted nursery stack.
        async with AsyncExitStack() as stack, jobs:
            self.stack = stack
            async for job in jobs:
                if job.text.strip():
                    await self._synthesize(job)
                if job.end:
                    await self.ws.aclose(1000, "end of input")
                    return
                await self.ws.send_message(_dumps({"type": "flushed"}))

    async def _engine_socket(self, voice: str) -> WebSocketConnection:
        if self.engine is None:
            self.engine = await self.stack.enter_async_context(
                trio_websocket.open_websocket_url(self.engine_url))
            ready = orjson.loads(await self.engine.get_message())
            rate = ready.get("sample_rate") if isinstance(ready, dict) else None
            if isinstance(rate, int) and rate > 0:
                self.engine_rate = rate
        if voice != self.engine_voice:
            await self.engine.send_message(_dumps({"voice": voice}))
            self.engine_voice = voice
        return self.engine

    async def _synthesize(self, job: _Job) -> None:
        engine = await self._engine_socket(job.voice)
        await engine.send_message(job.text)
        await engine.send_message(_dumps({"type": "control", "action": "flush"}))
        resampler = Resampler(self.engine_rate, self.model.sample_rate)
        held: list[bytes] = []  # Kokoro: the whole utterance first
        while True:
            message = await engine.get_message()
            if isinstance(message, bytes):
                out = resampler.process(message)
                if self.model.all_at_once:
                    held.append(out)
                elif out:
                    await self.ws.send_message(out)
                continue
            event = orjson.loads(message)
            kind = event.get("type") if isinstance(event, dict) else None
            if kind == "flushed":
                break
            if kind == "error":  # e.g. an eSpeak voice missing: the server reports it
                await self.ws.send_message(_dumps({
                    "type": "error", "code": "synthesis_failed",
                    "message": str(event.get("message"))}))
        tail = resampler.flush()
        if self.model.all_at_once:
            audio = b"".join(held) + tail
            step = self.model.sample_rate * 2 * CHUNK_MS // 1000
            for pos in range(0, len(audio), step):
                await self.ws.send_message(audio[pos:pos + step])
        elif tail:
            await self.ws.send_message(tail)


def _authorized(request: WebSocketRequest, api_key: str) -> bool:
    for name, value in request.headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip() == api_key:
                return True
    return False


async def serve_emulator(host: str, port: int, *, engine_url: str, api_key: str | None = None,
                         faults: FaultPlan = NO_FAULTS,
                         task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve every SLNG model server on ``host:port`` (0 picks a port) until cancelled;
    ``task_status.started`` gets the bound port."""
    records: list[SessionRecord] = []

    async def handle(request: WebSocketRequest) -> None:
        parts = urlsplit(request.path)
        name = parts.path.strip("/")
        model = MODELS.get(name)
        if model is None:
            await request.reject(404, extra_headers=[(b"content-type", b"application/json")],
                                 body=orjson.dumps({"error": "not found", "models": list(MODELS)}))
            return
        if api_key and not _authorized(request, api_key):
            await request.reject(401, extra_headers=[(b"content-type", b"application/json")],
                                 body=b'{"error":"unauthorized"}')
            return
        ws = await request.accept()
        record = SessionRecord(model.name, dict(parse_qsl(parts.query)))
        records.append(record)
        try:
            await _Session(ws, model, engine_url, record).run()
        except Exception as exc:
            if ws.closed is not None:
                return  # the client went away (that is how clients stop)
            log.error("%s session failed", model.name, exc_info=exc)
            with trio.move_on_after(2):
                await ws.aclose(1011, "internal error")

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, one_connection_only(handle, faults), host, port, None)
        bound = server.port
        RECORDS[bound] = records
        try:
            task_status.started(bound)
            await trio.sleep_forever()
        finally:
            RECORDS.pop(bound, None)
