"""Provider tests: golden transcripts need nothing; end-to-end tests run the built-in
engines, the provider's emulator in front of them, and a gateway whose
``[providers.<name>]`` points at the emulator."""

from __future__ import annotations

import pytest

from harness import (
    EMULATOR_KEY,
    Running,
    make_gateway,
    start_emulator,
    start_engines,
    start_gateway,
)
from slng_fast.config import Config, ProviderConfig


@pytest.fixture
async def engines(nursery):
    return await start_engines(nursery)


@pytest.fixture
def provider_gateway(nursery, tmp_path, engines):
    """``await provider_gateway("elevenlabs")``: a gateway fronting that emulator."""

    async def start(name: str, api_key: str | None = EMULATOR_KEY, **settings) -> Running:
        urls, info = engines
        base = await start_emulator(nursery, name, urls)
        providers = {name: ProviderConfig(url=base, api_key=api_key)}
        config = Config(data_dir=tmp_path, providers=providers, **settings)
        return await start_gateway(nursery, make_gateway(tmp_path, urls, info, config=config))

    return start
