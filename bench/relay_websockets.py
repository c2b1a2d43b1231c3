"""Baseline of bench/e2e.py: the minimal TTS relay a user would write with ``websockets``.

An asyncio ``websockets`` server: per client connection it answers ``init`` with
``ready``, opens the same SLNG upstream (``?voice=...``), sends the settings message,
forwards ``input_text`` (buffered, as the SLNG dialect does) and turns ``flush`` into the
text + ``{"type":"control","action":"flush"}``; every binary PCM frame becomes an
``audio_chunk`` JSON text frame (``pybase64.b64encode`` + ``orjson.dumps``), and
``{"type":"flushed"}`` becomes ``audio_end``.

It does less than the gateway: no authentication, no limits or rate checks, no usage
ledger, no validation beyond what it needs, no metrics, no reconnects; so it is cheaper
per frame than a real gateway would be.

    python bench/relay_websockets.py --upstream ws://127.0.0.1:UPORT/ [--port 0] [--cpu 0]
prints ``listening on ws://127.0.0.1:P``."""

from __future__ import annotations

import argparse
import asyncio
import os
import uuid

import orjson
import pybase64
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

FLUSH = orjson.dumps({"type": "control", "action": "flush"}).decode()


async def relay(client, upstream_url: str) -> None:
    try:
        init = orjson.loads(await client.recv())
    except ConnectionClosed:
        return
    context_id = str(uuid.uuid4())
    rate = int(init.get("sample_rate_hz", 24000))
    await client.send(orjson.dumps({"type": "ready", "context_id": context_id}).decode())
    settings = {"voice": init.get("voice_id", "tara")}
    for key in ("max_tokens", "temperature", "top_p"):
        if key in init:
            settings[key] = init[key]
    async with connect(f"{upstream_url}?voice={settings['voice']}") as upstream:
        await upstream.recv()  # {"type":"ready","sample_rate":...}
        await upstream.send(orjson.dumps(settings).decode())

        async def client_to_upstream() -> None:
            buffer: list[str] = []
            async for raw in client:
                message = orjson.loads(raw)
                kind = message.get("type")
                if kind == "input_text":
                    buffer.append(message.get("text", ""))
                elif kind == "flush":
                    if buffer:
                        await upstream.send("".join(buffer))
                        buffer.clear()
                        await upstream.send(FLUSH)

        async def upstream_to_client() -> None:
            sequence = 0
            async for frame in upstream:
                if isinstance(frame, bytes):
                    await client.send(orjson.dumps({
                        "type": "audio_chunk", "data": pybase64.b64encode(frame).decode(),
                        "sequence": sequence, "duration_ms": len(frame) * 500 / rate,
                        "context_id": context_id,
                    }).decode())
                    sequence += 1
                elif orjson.loads(frame).get("type") == "flushed":
                    await client.send(orjson.dumps({"type": "audio_end",
                                                    "context_id": context_id}).decode())

        tasks = [asyncio.create_task(client_to_upstream()), asyncio.create_task(upstream_to_client())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except ConnectionClosed:
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def main(args: argparse.Namespace) -> None:
    async def handler(client) -> None:
        try:
            await relay(client, args.upstream)
        except ConnectionClosed:
            pass

    async with serve(handler, "127.0.0.1", args.port, backlog=4096) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"listening on ws://127.0.0.1:{port}", flush=True)
        await asyncio.get_running_loop().create_future()  # until killed


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this core")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    try:
        asyncio.run(main(args))
    except KeyboardInterrupt:
        pass
