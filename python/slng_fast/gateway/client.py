"""A small unified-protocol client, used by ``slng-fast say`` and ``transcribe``."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import trio
import trio_websocket


@dataclass
class SayResult:
    audio: bytes = b""
    sample_rate: int = 24000
    codec: str = "pcm16"
    first_audio_ms: float = 0.0
    duration_ms: float = 0.0
    error: str | None = None


@dataclass
class TranscribeResult:
    text: str = ""
    partials: int = 0
    error: str | None = None


def failure(event: dict[str, Any]) -> str:
    """What an ``error`` or ``session_ended`` event, which ends the call, says went wrong."""
    if event["type"] == "error":
        return f"{event['code']}: {event['message']}"
    return f"session ended: {event['reason']}"


def _headers(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {key}".encode())]


async def say(url: str, key: str, text: str, *, provider: str = "piper",
              voice: str | None = None, codec: str = "pcm16", sample_rate: int = 24000,
              timeout: float = 60.0) -> SayResult:
    result = SayResult(codec=codec, sample_rate=sample_rate)
    endpoint = f"{url.rstrip('/')}/v1/tts/{provider}-websocket-stream"
    init: dict[str, object] = {"type": "init", "codec": codec, "sample_rate_hz": sample_rate}
    if voice:
        init["voice_id"] = voice
    chunks: list[bytes] = []
    with trio.fail_after(timeout):
        async with trio_websocket.open_websocket_url(endpoint, extra_headers=_headers(key)) as ws:
            started = trio.current_time()
            await ws.send_message(orjson.dumps(init).decode())
            await ws.send_message(orjson.dumps({"type": "input_text", "text": text}).decode())
            await ws.send_message('{"type":"flush"}')
            while True:
                event = orjson.loads(await ws.get_message())
                kind = event.get("type")
                if kind == "audio_chunk":
                    if not chunks:
                        result.first_audio_ms = (trio.current_time() - started) * 1000
                    chunks.append(base64.b64decode(event["data"]))
                    result.duration_ms += event["duration_ms"]
                elif kind == "audio_end":
                    break
                elif kind in ("error", "session_ended"):
                    result.error = failure(event)
                    break
    result.audio = b"".join(chunks)
    return result


async def transcribe(url: str, key: str, audio: bytes, sample_rate: int, codec: str, *,
                     model: str = "pocketsphinx", realtime: bool = False,
                     on_partial: Callable[[str], None] | None = None,
                     timeout: float = 120.0) -> TranscribeResult:
    result = TranscribeResult()
    endpoint = f"{url.rstrip('/')}/v1/stt/{model}-websocket-stream"
    width = 2 if codec == "pcm16" else 1
    frame = sample_rate * width // 50  # 20 ms
    with trio.fail_after(timeout):
        async with trio_websocket.open_websocket_url(endpoint, extra_headers=_headers(key)) as ws:
            await ws.send_message(orjson.dumps({"type": "start", "sample_rate": sample_rate,
                                                "encoding": codec}).decode())

            async def send_audio() -> None:
                for pos in range(0, len(audio), frame):
                    await ws.send_message(audio[pos:pos + frame])
                    if realtime:
                        await trio.sleep(0.02)
                await ws.send_message('{"type":"finalize"}')

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_audio)
                while True:
                    event = orjson.loads(await ws.get_message())
                    kind = event.get("type")
                    if kind == "transcript":
                        result.partials += 1
                        if on_partial is not None and event.get("text"):
                            on_partial(event["text"])
                    elif kind == "final_transcript":
                        result.text = event["text"]
                        break
                    elif kind in ("error", "session_ended"):
                        result.error = failure(event)
                        break
                nursery.cancel_scope.cancel()
    return result
