"""Shared pieces for the sans-I/O session tests: a tier, an endpoint and decoders."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from slng_fast.config import DEFAULT_TIERS
from slng_fast.protocol.actions import (
    Action,
    CloseClient,
    CloseUpstream,
    OpenUpstream,
    SendClient,
    SendUpstream,
)
from slng_fast.providers.registry import ENDPOINTS

PRO = DEFAULT_TIERS["pro"]
FREE = DEFAULT_TIERS["free"]
ORPHEUS = ENDPOINTS["orpheus"]


def client_events(actions: list[Action]) -> list[dict[str, Any]]:
    """The unified events among the actions, parsed."""
    out = []
    for a in actions:
        if isinstance(a, SendClient) and (isinstance(a.frame, str) or a.text):
            out.append(orjson.loads(a.frame))
    return out


def types(actions: list[Action]) -> list[str]:
    return [e["type"] for e in client_events(actions)]


def upstream_frames(actions: list[Action]) -> list[str | bytes]:
    return [a.frame for a in actions if isinstance(a, SendUpstream)]


def opened(actions: list[Action]) -> list[OpenUpstream]:
    return [a for a in actions if isinstance(a, OpenUpstream)]


def closed_upstreams(actions: list[Action]) -> list[CloseUpstream]:
    return [a for a in actions if isinstance(a, CloseUpstream)]


def close_code(actions: list[Action]) -> int | None:
    codes = [a.code for a in actions if isinstance(a, CloseClient)]
    return codes[-1] if codes else None


def audio_of(actions: list[Action]) -> bytes:
    return b"".join(base64.b64decode(e["data"]) for e in client_events(actions)
                    if e["type"] == "audio_chunk")


def cmd(**fields: Any) -> str:
    return orjson.dumps(fields).decode()
