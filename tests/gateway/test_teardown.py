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
