"""A real gateway on 127.0.0.1 with the real built-in engines, for tests over sockets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from slng_fast.config import Config
from slng_fast.gateway.engine_server import serve_espeak_engine, serve_sphinx_engine
from slng_fast.gateway.engines import _engine_info
from slng_fast.gateway.server import Gateway, serve_gateway
from slng_fast.providers.registry import ProviderRegistry
from slng_fast.store import Store


@dataclass
class Running:
    url: str
    gateway: Gateway
    store: Store
    keys: dict[str, str]  # tier -> secret
    key_ids: dict[str, str]

    def tts(self, provider: str = "espeak", query: str = "") -> str:
        return f"{self.url}/v1/tts/{provider}-websocket-stream{query}"

    def stt(self, model: str = "pocketsphinx", query: str = "") -> str:
        return f"{self.url}/v1/stt/{model}-websocket-stream{query}"


@pytest.fixture
async def engines(nursery):
    espeak = await nursery.start(serve_espeak_engine, "127.0.0.1", 0)
    sphinx = await nursery.start(serve_sphinx_engine, "127.0.0.1", 0)
    urls = {"espeak": f"ws://127.0.0.1:{espeak}/", "pocketsphinx": f"ws://127.0.0.1:{sphinx}/"}
    info = {"espeak": await _engine_info("espeak", urls["espeak"])}
    return urls, info


def make_gateway(tmp_path: Path, urls, info, config: Config | None = None) -> Running:
    config = config or Config(data_dir=tmp_path)
    store = Store(config.data_dir)
    keys, ids = {}, {}
    for tier in ("free", "pro", "enterprise"):
        key, secret = store.create_key(tier, f"test-{tier}")
        keys[tier], ids[tier] = secret, key.id
    gateway = Gateway(config=config, store=store, registry=ProviderRegistry(config, urls, info))
    return Running("", gateway, store, keys, ids)


@pytest.fixture
async def gw(nursery, tmp_path, engines) -> Running:
    urls, info = engines
    running = make_gateway(tmp_path, urls, info)
    port = await nursery.start(serve_gateway, running.gateway, "127.0.0.1", 0)
    running.url = f"ws://127.0.0.1:{port}"
    return running
