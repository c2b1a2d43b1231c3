"""Fault injection shared by every emulator: one small plan, read from the command line of
``slng-fast emulate NAME``, applied around each emulator's request handler, so the
gateway's answer to a misbehaving provider can be tested without a cloud.

The emulators stay as they are: the plan wraps the handshake (refuse, delay) and the
accepted connection (a proxy that sees every message each way). "Into the utterance" is
counted from the first audio of the session, the way it flows for that emulator: the first
audio message a TTS emulator sends, the first binary frame an STT emulator receives. That
is when a provider that fails mid-utterance fails.

- ``--refuse``: answer the upgrade with 503.
- ``--handshake-delay-ms N``: wait N ms before answering the upgrade.
- ``--fail-after-ms N``: N ms after the first audio, end the connection: with a close frame
  of ``--close-code`` when one is given, else abnormally (the TCP connection is reset,
  with no close frame).
- ``--close-code C`` alone: close with C at the first audio (``--fail-after-ms 0``).
- ``--stall-after-bytes N``: once N bytes of audio have gone (sent by a TTS emulator,
  received by an STT one), send nothing
  more (the sends wait for ever) while still reading: the socket stays open.
- ``--garbage KIND``: send KIND instead of the first message after the first audio:
  ``malformed-json`` (a cut-off JSON text), ``wrong-types`` (that message with every
  field but ``type`` given a value of the wrong type), ``binary`` (an unexpected binary
  frame), ``oversized`` (a text frame of ``OVERSIZED_BYTES``, over any sane client's
  message limit)."""

from __future__ import annotations

import argparse
import base64
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import trio

from slng_fast import _native

GARBAGE_KINDS = ("malformed-json", "wrong-types", "binary", "oversized")
OVERSIZED_BYTES = 5 * 1024 * 1024  # over the gateway's 4 MiB per upstream message
MALFORMED_JSON = '{"type": "Results", "channel": {"alternatives": [{"transcript": "cut'
UNEXPECTED_BINARY = b"\x00\xffnot audio, not msgpack\xc1\xc1"
ABNORMAL_CLOSE_GRACE = 2.0  # seconds a close handshake may take before the socket is dropped


@dataclass(frozen=True, slots=True)
class FaultPlan:
    refuse: bool = False
    handshake_delay_ms: float = 0.0
    fail_after_ms: float | None = None
    close_code: int | None = None
    stall_after_bytes: int | None = None
    garbage: str | None = None

    def __post_init__(self) -> None:
        if self.garbage is not None and self.garbage not in GARBAGE_KINDS:
            raise ValueError(f"--garbage: one of {', '.join(GARBAGE_KINDS)}")
        if self.close_code is not None and not (1000 <= self.close_code <= 4999) \
                or self.close_code in (1005, 1006, 1015):
            raise ValueError("--close-code: a code that may be sent (1000-4999, not 1005, "
                             "1006 or 1015)")

    @property
    def active(self) -> bool:
        return self != NO_FAULTS

    @property
    def fails_after(self) -> float | None:
        """Seconds after the first audio at which the connection ends, or None."""
        if self.fail_after_ms is not None:
            return self.fail_after_ms / 1000
        return 0.0 if self.close_code is not None else None

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("fault injection (for tests)")
        group.add_argument("--refuse", action="store_true",
                           help="answer every WebSocket upgrade with 503")
        group.add_argument("--handshake-delay-ms", type=float, default=0.0, metavar="N",
                           help="wait N ms before answering the upgrade")
        group.add_argument("--fail-after-ms", type=float, default=None, metavar="N",
                           help="end the connection N ms after the session's first audio "
                           "(abnormally, without a close frame, unless --close-code)")
        group.add_argument("--close-code", type=int, default=None, metavar="C",
                           help="close with code C at the failure (alone: at the first audio)")
        group.add_argument("--stall-after-bytes", type=int, default=None, metavar="N",
                           help="send nothing once N bytes of audio have gone either way, "
                           "keeping the socket open")
        group.add_argument("--garbage", choices=GARBAGE_KINDS, default=None,
                           help="send this instead of the first message after the first audio")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> FaultPlan:
        return cls(refuse=args.refuse, handshake_delay_ms=args.handshake_delay_ms,
                   fail_after_ms=args.fail_after_ms, close_code=args.close_code,
                   stall_after_bytes=args.stall_after_bytes, garbage=args.garbage)


NO_FAULTS = FaultPlan()


def garbage_for(kind: str, normal: str | bytes) -> str | bytes:
    """What an emulator sends for ``--garbage kind`` instead of ``normal``."""
    if kind == "malformed-json":
        return MALFORMED_JSON
    if kind == "binary":
        return UNEXPECTED_BINARY
    if kind == "oversized":
        return orjson.dumps({"type": "padding", "text": "x" * OVERSIZED_BYTES}).decode()
    try:  # wrong-types
        message = orjson.loads(normal) if isinstance(normal, str) \
            else _native.msgpack_decode(normal)
    except Exception:
        message = None
    if not isinstance(message, dict):
        return orjson.dumps({"type": 42, "message": ["not", "a", "string"]}).decode()
    wrong = {key: value if key == "type" else _wrong_type(value)
             for key, value in message.items()}
    if isinstance(normal, str):
        return orjson.dumps(wrong).decode()
    return bytes(_native.msgpack_encode(wrong))


def _wrong_type(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return "yes"
    if isinstance(value, str):
        return 42
    if isinstance(value, (int, float)):
        return "forty-two"
    if isinstance(value, list):
        return {"not": "a list"}
    return ["not", "an", "object"]


def audio_bytes(message: str | bytes) -> int:
    """Audio carried by a message: a binary frame's length, or the decoded length of the
    base64 ``audio`` (ElevenLabs) or ``data`` (Cartesia) of a JSON text."""
    if isinstance(message, (bytes, bytearray, memoryview)):
        return len(message)
    if '"audio"' not in message and '"data"' not in message:
        return 0
    try:
        parsed = orjson.loads(message)
    except orjson.JSONDecodeError:
        return 0
    if not isinstance(parsed, dict):
        return 0
    for key in ("audio", "data"):
        value = parsed.get(key)
        if isinstance(value, str) and value:
            try:
                return len(base64.b64decode(value))
            except ValueError:
                return 0
    return 0


class FaultyConnection:
    """An accepted trio-websocket connection seen through a fault plan: the emulator
    calls it as it would the connection itself."""

    def __init__(self, ws: Any, plan: FaultPlan, nursery: trio.Nursery,
                 ended: trio.CancelScope, *, stt: bool) -> None:
        self._ws = ws
        self._plan = plan
        self._stt = stt  # the audio comes from the client, not from the emulator
        self._nursery = nursery
        self._ended = ended  # cancelled when the planned failure has ended the connection
        self._audio = 0
        self._audio_started = False
        self._garbage_due = plan.garbage is not None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)

    def _saw_audio(self, count: int) -> None:
        self._audio += count
        if count and not self._audio_started:
            self._audio_started = True
            delay = self._plan.fails_after
            if delay is not None:
                self._nursery.start_soon(self._fail_after, delay)

    async def get_message(self) -> str | bytes:
        message = await self._ws.get_message()
        if self._stt and isinstance(message, (bytes, bytearray)):
            self._saw_audio(len(message))
        return message  # type: ignore[no-any-return]

    async def send_message(self, message: str | bytes) -> None:
        plan = self._plan
        if plan.stall_after_bytes is not None and self._audio >= plan.stall_after_bytes:
            await trio.sleep_forever()
        audio = 0 if self._stt else audio_bytes(message)
        if self._garbage_due and plan.garbage is not None and (self._audio_started or audio):
            self._garbage_due = False
            await self._ws.send_message(garbage_for(plan.garbage, message))
            return
        if audio:
            if not self._audio_started and plan.fails_after == 0:
                self._saw_audio(audio)
                await trio.sleep_forever()  # the failure ends the connection first
            self._saw_audio(audio)
        await self._ws.send_message(message)

    async def _fail_after(self, seconds: float) -> None:
        await trio.sleep(seconds)
        code = self._plan.close_code
        if code is not None:
            with trio.move_on_after(ABNORMAL_CLOSE_GRACE):
                try:
                    await self._ws.aclose(code, f"fault injected: close {code}")
                except Exception:
                    pass
        reset(self._ws)
        self._ended.cancel()


def reset(ws: Any) -> None:
    """Drop ``ws``'s TCP connection at once with a reset, no close frame."""
    stream = getattr(ws, "_stream", None)
    sock = getattr(stream, "socket", None)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class FaultyRequest:
    """A handshake request whose ``accept`` hands out a `FaultyConnection`."""

    def __init__(self, request: Any, plan: FaultPlan, nursery: trio.Nursery,
                 ended: trio.CancelScope, *, stt: bool) -> None:
        self._stt = stt
        self._request = request
        self._plan = plan
        self._nursery = nursery
        self._ended = ended

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)

    async def accept(self, *args: Any, **kwargs: Any) -> FaultyConnection:
        ws = await self._request.accept(*args, **kwargs)
        return FaultyConnection(ws, self._plan, self._nursery, self._ended, stt=self._stt)


def with_faults(handler: Callable[[Any], Awaitable[None]], plan: FaultPlan, *,
                stt: bool = False) -> Callable[[Any], Awaitable[None]]:
    """``handler`` (a trio-websocket request handler) with ``plan`` applied; ``stt``: the
    emulator is a recogniser (the audio is what its clients send)."""
    if not plan.active:
        return handler

    async def faulty(request: Any) -> None:
        if plan.handshake_delay_ms:
            await trio.sleep(plan.handshake_delay_ms / 1000)
        if plan.refuse:
            await request.reject(503, extra_headers=[(b"content-type", b"application/json")],
                                 body=b'{"error":"service unavailable (fault injected)"}')
            return
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as ended:
                await handler(FaultyRequest(request, plan, nursery, ended, stt=stt))
            nursery.cancel_scope.cancel()

    return faulty
