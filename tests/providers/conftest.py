"""Provider tests: golden transcripts need nothing; end-to-end tests run the built-in
engines, the provider's emulator in front of them, and a gateway whose
``[providers.<name>]`` points at the emulator."""

from __future__ import annotations

import pytest

from harness import EMULATOR_KEY, Running, start_engines, start_fronting_gateway


@pytest.fixture
async def engines(nursery):
    return await start_engines(nursery)


@pytest.fixture
def provider_gateway(nursery, tmp_path, engines):
    """``await provider_gateway("elevenlabs")``: a gateway fronting that emulator."""

    async def start(name: str, api_key: str | None = EMULATOR_KEY, **settings) -> Running:
        return await start_fronting_gateway(nursery, tmp_path, engines, name, api_key=api_key,
                                            **settings)

    return start
