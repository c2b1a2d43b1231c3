"""``slng-fast emulate NAME``: one provider emulator in front of the built-in engine it
needs, which runs as its own supervised process (so eSpeak NG never loads here)."""

from __future__ import annotations

import importlib
import signal

import trio

from slng_fast.emulators.faults import NO_FAULTS, FaultPlan
from slng_fast.engines.supervisor import EngineSupervisor


async def run_emulator(name: str, host: str, port: int, api_key: str | None,
                       faults: FaultPlan = NO_FAULTS) -> None:
    module = importlib.import_module(f"slng_fast.emulators.{name}")
    supervisor = EngineSupervisor((module.ENGINE,), host="127.0.0.1")
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            engine_url = supervisor.urls[module.ENGINE]

            async def serve(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
                await module.serve_emulator(host, port, engine_url=engine_url, api_key=api_key,
                                            faults=faults, task_status=task_status)

            bound = await nursery.start(serve)
            print(f"{name} emulator listening on ws://{host}:{bound}", flush=True)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()
