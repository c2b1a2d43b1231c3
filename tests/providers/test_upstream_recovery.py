"""An upstream that cannot be reached: retried with backoff, then provider_unavailable 1013;
one that comes up while the gateway retries is used without the client noticing."""

from __future__ import annotations

import socket

import trio

from harness import EMULATOR_KEY, make_gateway, start_gateway
from slng_fast.config import ProviderConfig
from slng_fast.emulators.slng import serve_emulator
from wsclient import closed_code, connect, recv, recv_until, send


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_unreachable_upstream_is_provider_unavailable_after_retries(nursery, tmp_path,
                                                                          engines):
    urls, info = engines
    port = free_port()  # nothing listens there
    gw = await start_gateway(nursery, make_gateway(tmp_path, urls, info, providers={
        "orpheus": ProviderConfig(url=f"ws://127.0.0.1:{port}/orpheus", api_key=EMULATOR_KEY)}))
    ws = await connect(gw.tts("orpheus"), gw.keys["pro"], nursery=nursery)
    await send(ws, type="init")
    events = await recv_until(ws, "session_ended")
    assert events[0]["type"] == "ready"
    error = next(e for e in events if e["type"] == "error")
    assert error["code"] == "provider_unavailable" and error["retryable"] is True
    assert await closed_code(ws) == 1013


async def test_an_upstream_that_comes_up_during_the_retries_is_used(nursery, tmp_path, engines):
    urls, info = engines
    port = free_port()
    gw = await start_gateway(nursery, make_gateway(tmp_path, urls, info, providers={
        "orpheus": ProviderConfig(url=f"ws://127.0.0.1:{port}/orpheus", api_key=EMULATOR_KEY)}))
    ws = await connect(gw.tts("orpheus"), gw.keys["pro"], nursery=nursery)
    await send(ws, type="init")
    assert (await recv(ws))["type"] == "ready"
    await send(ws, type="input_text", text="Hello again.")
    await send(ws, type="flush")
    await trio.sleep(0.3)  # the gateway's first attempts are refused
    await nursery.start(lambda task_status: serve_emulator(
        "127.0.0.1", port, engine_url=urls["espeak"], api_key=EMULATOR_KEY,
        task_status=task_status))
    events = await recv_until(ws, "audio_end")
    assert [e for e in events if e["type"] == "error"] == []
    assert any(e["type"] == "audio_chunk" for e in events)
    assert events[-1]["interrupted"] is False
    await ws.aclose()
