"""`GET /v1/voices` with cloud providers that have a key configured: their own listings,
fetched from the emulators over real sockets and cached, and the documented voices when
a provider is down, refuses the key or does not answer (the request still answers)."""

from __future__ import annotations

import logging
import socket
from functools import partial

import trio
from test_voices import bearer, by_provider, http_get

from harness import EMULATOR_KEY, make_gateway, start_emulator, start_gateway
from slng_fast.config import Config, ProviderConfig


async def catalogue(gw) -> dict[str, dict]:
    status, _, body = await http_get(gw.url, "/v1/voices", bearer(gw.keys["free"]))
    assert status == 200
    return by_provider(body)


def sources(entry: dict) -> set[str]:
    return {v["source"] for v in entry["voices"]}


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_keyed_providers_list_their_own_voices_and_they_are_cached(
        nursery, tmp_path, engines):
    urls, info = engines

    async def run_emulators(task_status: trio.TaskStatus) -> None:
        async with trio.open_nursery() as inner:
            task_status.started((await start_emulator(inner, "elevenlabs", urls),
                                 await start_emulator(inner, "deepgram", urls),
                                 inner.cancel_scope))

    eleven, deepgram, emulators = await nursery.start(run_emulators)
    config = Config(data_dir=tmp_path, providers={
        "elevenlabs": ProviderConfig(url=eleven, api_key=EMULATOR_KEY),
        "deepgram": ProviderConfig(url=deepgram, api_key=EMULATOR_KEY)})
    gw = await start_gateway(nursery, make_gateway(tmp_path, urls, info, config=config))

    entries = await catalogue(gw)
    el = entries["elevenlabs"]
    assert el["available"] and el["voices_source"] == "provider"
    assert sources(el) == {"provider"}
    assert {"id": "en-us", "name": "English (America)", "languages": ["en-us", "en"],
            "gender": "male", "sample_rate_hz": 24000, "source": "provider"} in el["voices"]
    dg = entries["deepgram"]
    assert dg["voices_source"] == "provider" and sources(dg) == {"provider"}
    assert "aura-en_us-en" in {v["id"] for v in dg["voices"]}
    # Cartesia has no key here: its documented voices, marked so.
    assert entries["cartesia"]["voices_source"] == "documented"
    assert sources(entries["cartesia"]) == {"documented"}
    # ?provider= asks only that provider.
    status, _, body = await http_get(gw.url, "/v1/voices?provider=deepgram",
                                     bearer(gw.keys["free"]))
    assert status == 200 and by_provider(body)["deepgram"]["voices_source"] == "provider"

    emulators.cancel()  # the providers go away: the listings are still fresh
    port = int(eleven.rsplit(":", 1)[1])
    with trio.fail_after(10):
        while True:
            try:
                await (await trio.open_tcp_stream("127.0.0.1", port)).aclose()
            except OSError:
                break
            await trio.sleep(0.01)
    entries = await catalogue(gw)
    assert entries["elevenlabs"]["voices_source"] == "provider"
    assert entries["deepgram"]["voices_source"] == "provider"


async def test_a_provider_down_refusing_or_silent_gives_the_documented_voices(
        nursery, tmp_path, engines, caplog):
    urls, info = engines
    deepgram = await start_emulator(nursery, "deepgram", urls)

    async def silent(stream: trio.SocketStream) -> None:  # takes the request, never answers
        await stream.receive_some(65536)
        await trio.sleep_forever()

    [listener] = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
    silent_port = listener.socket.getsockname()[1]
    config = Config(
        data_dir=tmp_path, voices_fetch_timeout_s=1.0, voices_cache_ttl_s=0.0, providers={
            "elevenlabs": ProviderConfig(url=f"ws://127.0.0.1:{closed_port()}",
                                         api_key=EMULATOR_KEY),
            "deepgram": ProviderConfig(url=deepgram, api_key="not-the-key"),
            "cartesia": ProviderConfig(url=f"ws://127.0.0.1:{silent_port}",
                                       api_key=EMULATOR_KEY)})
    gw = await start_gateway(nursery, make_gateway(tmp_path, urls, info, config=config))

    caplog.set_level(logging.WARNING, logger="slng_fast.gateway.voices")
    for _ in range(2):  # fetched again each time (TTL 0), logged once
        entries = await catalogue(gw)
        for name in ("elevenlabs", "deepgram", "cartesia"):
            assert entries[name]["available"]
            assert entries[name]["voices_source"] == "documented"
            assert sources(entries[name]) == {"documented"}
        assert entries["elevenlabs"]["voices"][0]["id"] == "21m00Tcm4TlvDq8ikWAM"
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 3, warnings
    assert any("deepgram" in w and "HTTP 401" in w for w in warnings)
    assert any("cartesia" in w and "no answer within 1 s" in w for w in warnings)
    assert not any(EMULATOR_KEY in w or "not-the-key" in w for w in warnings)
