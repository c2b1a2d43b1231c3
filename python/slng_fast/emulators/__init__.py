"""Local stand-ins for the cloud providers' own protocols (ElevenLabs, Deepgram, Cartesia,
Kyutai, WhisperLive), making real speech with the built-in engines. They follow each
provider's public documentation, not our adapters, and each is also tested with the
provider's official SDK where one exists.

Each module ``slng_fast.emulators.<name>`` has ``ENGINE`` (``"espeak"`` or
``"pocketsphinx"``: the built-in engine it reaches over WebSocket, so eSpeak NG stays in
its own process) and ``async def serve_emulator(host, port, *, engine_url, api_key=None,
faults=NO_FAULTS, task_status=...)`` which reports the bound port through ``task_status``;
``faults`` (`slng_fast.emulators.faults.FaultPlan`) makes it misbehave on purpose."""

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import trio_websocket

from slng_fast.emulators.faults import NO_FAULTS, FaultPlan, with_faults

log = logging.getLogger("slng_fast.emulators")

EMULATORS = ("elevenlabs", "deepgram", "cartesia", "kyutai", "whisper", "slng")


def one_connection_only(handler: Callable[[Any], Awaitable[None]],
                        faults: FaultPlan = NO_FAULTS, *,
                        stt: bool = False) -> Callable[[Any], Awaitable[None]]:
    """Wrap a trio-websocket request handler so that whatever one client does (going away
    mid-answer, sending garbage) ends its own connection only, never the whole emulator:
    trio-websocket lets a handler's exception stop the server. ``faults`` is applied
    inside that guard (``stt``: the audio is what the clients send)."""
    handler = with_faults(handler, faults, stt=stt)

    async def guarded(request: Any) -> None:
        try:
            await handler(request)
        except Exception:
            log.debug("emulator connection ended with an error", exc_info=True)

    return guarded


class EngineVoices:
    """The built-in engine's voices (its ``ready`` frame's listing), read once: what an
    emulator's REST voice listing shows, in its provider's shape."""

    def __init__(self, engine_url: str) -> None:
        self.engine_url = engine_url
        self.voices: list[dict[str, Any]] | None = None

    async def get(self) -> list[dict[str, Any]]:
        if self.voices is None:
            async with trio_websocket.open_websocket_url(self.engine_url) as ws:
                ready = orjson.loads(await ws.get_message())
            listing = ready.get("voices") if isinstance(ready, dict) else None
            self.voices = [v for v in listing if isinstance(v, dict)
                           and isinstance(v.get("id"), str)] \
                if isinstance(listing, list) else []
        return self.voices


def bcp47(tag: str) -> str:
    """``en-us`` -> ``en-US`` (a two-letter second part is a region)."""
    first, _, rest = tag.partition("-")
    return f"{first}-{rest.upper()}" if len(rest) == 2 else tag
