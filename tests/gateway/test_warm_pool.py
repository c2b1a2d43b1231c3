"""Warm upstream connections (issue 13 point 6), over real sockets: the SLNG emulator
behind ``[providers.orpheus] warm = 2``; a session with the default request takes one, the
pool fills up again, and a session with another voice opens its own."""

from __future__ import annotations

import trio

from harness import EMULATOR_KEY, make_gateway, start_emulator, start_engines, start_gateway
from slng_fast.config import Config, ProviderConfig
from wsclient import connect, recv, send


async def speak(gw, nursery, **init) -> list[dict]:
    ws = await connect(gw.tts("orpheus"), gw.keys["pro"], nursery=nursery)
    await send(ws, type="init", **init)
    await send(ws, type="input_text", text="Hello from a warm connection.")
    await send(ws, type="flush")
    seen = []
    with trio.fail_after(30):
        while not seen or seen[-1]["type"] != "audio_end":
            seen.append(await recv(ws))
    await ws.aclose()
    return seen


async def test_a_session_takes_a_warm_connection_and_the_pool_refills(nursery, tmp_path):
    urls, info = await start_engines(nursery, sphinx=False)
    base = await start_emulator(nursery, "slng", urls)
    config = Config(data_dir=tmp_path, providers={"orpheus": ProviderConfig(
        url=f"{base}/orpheus", api_key=EMULATOR_KEY, options={"warm": 2})})
    gw = await start_gateway(nursery, make_gateway(tmp_path, urls, info, config=config))
    pool = gw.gateway.warm
    with trio.fail_after(10):
        while len(pool._ready["orpheus"]) < 2:
            await trio.sleep(0.02)
    for _ in range(2):
        events = await speak(gw, nursery)
        assert events[-1]["interrupted"] is False and events[-1]["total_duration_ms"] > 0
        assert sum(e["type"] == "audio_chunk" for e in events) > 0
    assert pool.hits == 2
    assert gw.gateway.metrics.value("slng_warm_connections_used_total", provider="orpheus") == 2
    events = await speak(gw, nursery, voice_id="luna")  # another URL: a miss, its own
    assert events[-1]["total_duration_ms"] > 0 and pool.hits == 2 and pool.misses >= 1
    with trio.fail_after(10):
        while len(pool._ready["orpheus"]) < 2:
            await trio.sleep(0.02)
    # Each connection handed out went back to the pool when its link ended, and was
    # dropped there: the pool holds a task for its ready connections only.
    with trio.fail_after(10):
        while holders() != len(pool._ready["orpheus"]):
            await trio.sleep(0.02)


def holders() -> int:
    """The pool's tasks that hold a connection (`WarmPool._hold`)."""
    count, stack = 0, [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        count += task.name.endswith("WarmPool._hold")
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count
