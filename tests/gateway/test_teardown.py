"""A session leaves nothing for the cyclic collector: once it has ended, reference
counting alone has freed its bridge, its session and its connections. Serving processes
run the collector rarely (gateway/collector.py), so a cycle per session is memory that
grows with the number of sessions served (found by bench/soak.py)."""

from __future__ import annotations

import gc

import trio

from slng_fast.gateway.bridge import SessionBridge
from slng_fast.gateway.native_transport import NativeWebSocketConnection
from slng_fast.protocol.stt import SttSession
from slng_fast.protocol.tts import TtsSession
from wsclient import connect, recv, recv_until, send

KINDS = (SessionBridge, TtsSession, SttSession, NativeWebSocketConnection)


def alive() -> list[object]:
    return [o for o in gc.get_objects() if isinstance(o, KINDS)]


async def ended(gw) -> None:
    with trio.fail_after(30):
        while gw.gateway.active:
            await trio.sleep(0.02)


async def test_an_ended_session_is_freed_without_the_collector(gw, nursery):
    gc.collect()
    gc.disable()
    try:
        ws = await connect(gw.tts(), gw.keys["pro"], nursery=nursery)  # the hot path
        await send(ws, type="init")
        await recv(ws)
        await send(ws, type="input_text", text="One two three.")
        await send(ws, type="flush")
        await recv_until(ws, "audio_end")
        await ws.aclose()
        stt = await connect(gw.stt(), gw.keys["pro"], nursery=nursery)
        await send(stt, type="start", sample_rate=16000)
        await recv(stt)
        await stt.send_message(bytes(3200))
        await send(stt, type="finalize")
        await recv_until(stt, "final_transcript")
        await stt.aclose()
        await ended(gw)
        assert alive() == []
    finally:
        gc.enable()


def living_tasks() -> list[trio.lowlevel.Task]:
    tasks, stack = [], [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        tasks.append(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return tasks


def gateway_tasks(before: list[trio.lowlevel.Task]) -> list[str]:
    """The names of the gateway's tasks started since ``before`` (not the engine's, the
    test client's or the worker-wide ones)."""
    return sorted(task.name.rsplit(".", 2)[-2] + "." + task.name.rsplit(".", 1)[-1]
                  for task in living_tasks()
                  if task not in before and task.name.startswith("slng_fast.gateway."))


async def test_a_session_has_no_task_per_clock_or_per_reader(gw, nursery):
    """The tasks a session keeps (each one 2-3 KB, and a share of the teardown): none
    while it waits for its first message (parked); then its connection's (the one that
    resumed it, and the reader), and with an upstream the upstream's reader; no task
    per clock (one heap per worker), none moving a reader's messages on
    (`Connection.deliver`), and none writing to the upstream while nothing is to be
    written (a task per burst of frames, `SessionBridge._write_link`)."""
    before = living_tasks()
    ws = await connect(gw.tts(), gw.keys["pro"], nursery=nursery)
    await trio.sleep(0.2)  # accepted, authenticated, no init yet: parked, no task
    assert gateway_tasks(before) == [] and len(gw.gateway.parked) == 1
    await send(ws, type="init")
    await recv(ws)
    await send(ws, type="input_text", text="One two three four five six seven eight.")
    await send(ws, type="flush")
    await recv_until(ws, "audio_chunk")
    streaming = ["NativeWebSocketConnection._reader"] * 2 + ["native_transport._resumed"]
    assert gateway_tasks(before) == streaming
    await recv_until(ws, "audio_end")
    # The link writes again after a wait with no writer.
    await send(ws, type="input_text", text="Nine ten eleven twelve.")
    await send(ws, type="flush")
    await recv_until(ws, "audio_chunk")
    assert gateway_tasks(before) == streaming
    await recv_until(ws, "audio_end")
    await ws.aclose()
    await ended(gw)
