"""Warm upstream connections (issue 13 point 6): time to first audio with and without
``[providers.orpheus] warm = 2``, against the SLNG emulator told to add 150 ms to every
WebSocket handshake (``--handshake-delay-ms 150``), as a remote model server across a
slow network would.

    python bench/warm_pool.py [--sessions 20] [--delay-ms 150]

One process: the built-in eSpeak engine, the emulator in front of it, and two gateways
(one cold, one with the pool) on 127.0.0.1. Each session connects to its gateway, then
the clock starts: ``init``, one sentence, ``flush``; it stops at the first
``audio_chunk``. Sessions run one after another (a pause between lets the pool refill);
medians and 90th percentiles are printed, and the ratio cold / warm.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import orjson
import trio
import trio_websocket

from slng_fast.config import Config, ProviderConfig
from slng_fast.emulators import slng as slng_emulator
from slng_fast.emulators.faults import FaultPlan
from slng_fast.engines.espeak_server import serve_espeak_engine
from slng_fast.gateway.server import Gateway, serve_gateway
from slng_fast.providers.registry import ProviderRegistry
from slng_fast.store import Store

TEXT = "Please open the door."
KEY = "bench-emulator-key"


async def gateway(nursery: trio.Nursery, data: Path, engine: str, upstream: str,
                  warm: int) -> tuple[str, str]:
    config = Config(data_dir=data, providers={"orpheus": ProviderConfig(
        url=upstream, api_key=KEY, options={"warm": warm})})
    store = Store(data)
    _, secret = store.create_key("enterprise", "bench")
    registry = ProviderRegistry(config, {"espeak": engine}, {}, environ={})
    port = await nursery.start(serve_gateway, Gateway(config=config, store=store,
                                                      registry=registry), "127.0.0.1", 0)
    return f"ws://127.0.0.1:{port}/v1/tts/orpheus-websocket-stream", secret


async def first_audio(url: str, key: str) -> float:
    async with trio_websocket.open_websocket_url(
            url, extra_headers=[(b"authorization", f"Bearer {key}".encode())]) as ws:
        start = time.perf_counter()
        for message in ({"type": "init"}, {"type": "input_text", "text": TEXT},
                        {"type": "flush"}):
            await ws.send_message(orjson.dumps(message).decode())
        while True:
            event = orjson.loads(await ws.get_message())
            if event["type"] == "audio_chunk":
                return time.perf_counter() - start
            if event["type"] in ("error", "audio_end"):
                raise RuntimeError(f"no audio: {event}")


def summary(name: str, times: list[float]) -> float:
    ms = sorted(t * 1000 for t in times)
    median = statistics.median(ms)
    p90 = ms[int(0.9 * (len(ms) - 1))]
    print(f"{name:<22} median {median:7.1f} ms   p90 {p90:7.1f} ms   ({len(ms)} sessions)")
    return median


async def main(sessions: int, delay_ms: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with trio.open_nursery() as nursery:
            engine_port = await nursery.start(serve_espeak_engine, "127.0.0.1", 0)
            engine = f"ws://127.0.0.1:{engine_port}/"
            plan = FaultPlan(handshake_delay_ms=delay_ms)

            async def emulate(task_status: trio.TaskStatus[int]) -> None:
                await slng_emulator.serve_emulator("127.0.0.1", 0, engine_url=engine,
                                                   api_key=KEY, faults=plan,
                                                   task_status=task_status)

            emulator_port = await nursery.start(emulate)
            upstream = f"ws://127.0.0.1:{emulator_port}/orpheus"
            (Path(tmp) / "cold").mkdir()
            (Path(tmp) / "warm").mkdir()
            cold = await gateway(nursery, Path(tmp) / "cold", engine, upstream, 0)
            warm = await gateway(nursery, Path(tmp) / "warm", engine, upstream, 2)
            await trio.sleep(2 * delay_ms / 1000 + 0.5)  # the pool's first fill
            await first_audio(*cold)  # warm-up: the engine's voice, the resamplers
            await first_audio(*warm)
            times: dict[str, list[float]] = {"cold": [], "warm": []}
            for _ in range(sessions):
                for name, target in (("cold", cold), ("warm", warm)):
                    times[name].append(await first_audio(*target))
                    await trio.sleep(delay_ms / 1000 + 0.1)  # the pool refills
            print(f"time to first audio, handshake +{delay_ms:g} ms, text {TEXT!r}")
            c = summary("without the pool", times["cold"])
            w = summary("with warm = 2", times["warm"])
            print(f"ratio cold / warm: {c / w:.2f}x (saved {c - w:.1f} ms at the median)")
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--delay-ms", type=float, default=150.0)
    args = parser.parse_args()
    trio.run(main, args.sessions, args.delay_ms)
