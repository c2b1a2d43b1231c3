"""Fault-injection tests: real processes and sockets, engines and emulators told to
misbehave; each case is a row of docs/decisions.md, "Faults and what the client sees"."""

from __future__ import annotations

from typing import Any

import pytest

from engines.engine_audio import ROUND_TRIP_SENTENCES, speech_16k
from harness import Running, start_engines, start_fronting_gateway
from slng_fast.emulators.faults import FaultPlan
from slng_fast.engines.espeak import EspeakSynth

# A provider silent this long mid-utterance is given up on: long enough that a healthy
# engine on a loaded machine never trips it, short enough to keep the stall cases quick.
PROVIDER_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 2.0
STT_PROVIDERS = ("kyutai", "whisper")  # their emulators recognise with PocketSphinx


@pytest.fixture(scope="module")
def speech() -> bytes:
    return speech_16k(EspeakSynth.shared(), ROUND_TRIP_SENTENCES[1])  # 16 kHz PCM16


@pytest.fixture
def faulty(nursery, tmp_path):
    """``await faulty("elevenlabs", garbage="binary")``: a gateway whose provider is that
    emulator with that fault plan (``url=`` instead: a provider at that address), and the
    built-in eSpeak for the healthy session beside."""

    async def start(provider: str, url: str | None = None, **faults: Any) -> Running:
        engines = await start_engines(nursery, sphinx=provider in STT_PROVIDERS)
        return await start_fronting_gateway(nursery, tmp_path, engines, provider, url=url,
                                            faults=FaultPlan(**faults),
                                            provider_timeout_s=PROVIDER_TIMEOUT_S,
                                            upstream_connect_timeout_s=CONNECT_TIMEOUT_S)

    return start
