"""Helpers the dialects share: reading a provider's JSON frame, sizing base64 audio,
holding text until flush, reading an engine's voice listing. No I/O here; the words
they speak in (events, requests, capabilities) are in ``slng_fast.vocabulary``."""

from __future__ import annotations

from typing import Any

import orjson


def json_object(frame: str) -> dict[str, Any] | None:
    """A provider's JSON text frame as a dict, or None for anything else (the dialect
    reports that as ``Ignored``: a provider's odd frame never ends a session)."""
    try:
        message = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None
    return message if isinstance(message, dict) else None


def base64_size(text: str) -> int:
    """Bytes that base64 ``text`` decodes to, without decoding it (usage counting)."""
    return len(text.rstrip("=")) * 3 // 4


class HeldText:
    """Text held by the gateway until ``flush`` (the providers whose own buffer cannot be
    cleared): ``clear`` is then exact, and nothing half-written sits upstream."""

    def __init__(self) -> None:
        self._buffer: list[str] = []

    def input_text(self, text: str) -> list[Any]:
        self._buffer.append(text)
        return []

    @property
    def has_buffered_text(self) -> bool:
        return any(self._buffer)

    def take_text(self) -> str:
        """Everything held, which is then forgotten."""
        text = "".join(self._buffer)
        self._buffer.clear()
        return text


def voice_ids(listing: Any) -> tuple[str, ...]:
    """Voice ids from an engine's listing: plain strings or objects with an ``id``."""
    if not isinstance(listing, (list, tuple)):
        return ()
    ids = []
    for entry in listing:
        if isinstance(entry, str):
            ids.append(entry)
        elif isinstance(entry, dict) and isinstance(entry.get("id"), str):
            ids.append(entry["id"])
    return tuple(ids)


