"""A real gateway on 127.0.0.1 with the real built-in engines, for tests over sockets."""

from __future__ import annotations

import pytest

from harness import Running, make_gateway, start_engines, start_gateway


@pytest.fixture
async def engines(nursery):
    return await start_engines(nursery)


@pytest.fixture
async def gw(nursery, tmp_path, engines) -> Running:
    urls, info = engines
    return await start_gateway(nursery, make_gateway(tmp_path, urls, info))
