"""Piper against eSpeak NG, as the gateway sees them: time to first audio and real-time
factor of the built-in TTS engines, each its own process, over a local WebSocket.

    python bench/piper.py [--runs 5]

Starts ``python -m slng_fast.engines piper`` and ``... espeak``, then for a short and a
long text opens a session per run, sends the text and a flush, and times the first binary
frame (time to first audio) and the ``flushed`` event (the whole utterance). Real-time
factor = wall time of the utterance / seconds of audio made (below 1: faster than real
time). Medians over the runs, after one warm-up utterance per engine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import orjson
import trio
import trio_websocket

SHORT = "Please open the door."
LONG = ("The quick brown fox jumps over the lazy dog near the river bank. "
        "A gentle breeze moved the leaves while the children played in the park. "
        "After dinner we walked to the old bridge and watched the sun go down. "
        "Tomorrow the train leaves at seven, so we should pack our bags tonight.")


async def start(nursery: trio.Nursery, name: str) -> str:
    command = [sys.executable, "-m", "slng_fast.engines", name, "--port", "0"]

    async def run(task_status: trio.TaskStatus[trio.Process]) -> None:
        await trio.run_process(command, stdout=subprocess.PIPE, check=False,
                               task_status=task_status)

    process: trio.Process = await nursery.start(run)
    assert process.stdout is not None
    line = b""
    while not line.endswith(b"\n"):
        chunk = await process.stdout.receive_some(1)
        if not chunk:
            raise RuntimeError(f"engine {name} exited before it was ready")
        line += chunk
    return f"ws://127.0.0.1:{line.split()[1].decode()}/"


async def utterance(url: str, text: str) -> tuple[float, float, float]:
    """(seconds to first audio, seconds to flushed, seconds of audio) for one session."""
    async with trio_websocket.open_websocket_url(url) as ws:
        ready = orjson.loads(await ws.get_message())
        rate = int(ready["sample_rate"])
        started = time.perf_counter()
        await ws.send_message(text)
        await ws.send_message('{"type":"control","action":"flush"}')
        first: float | None = None
        samples = 0
        while True:
            message = await ws.get_message()
            if isinstance(message, bytes):
                if first is None:
                    first = time.perf_counter() - started
                samples += len(message) // 2
                continue
            if orjson.loads(message).get("type") == "flushed":
                break
        done = time.perf_counter() - started
    return first or done, done, samples / rate


async def main(runs: int) -> None:
    async with trio.open_nursery() as nursery:
        urls = {name: await start(nursery, name) for name in ("piper", "espeak")}
        print(f"{runs} runs each, medians; {len(SHORT)}-character short text, "
              f"{len(LONG)}-character long text (4 sentences)")
        print("| engine | text | audio s | time to first audio ms | whole utterance ms "
              "| real-time factor |")
        print("|---|---|---|---|---|---|")
        for name, url in urls.items():
            await utterance(url, SHORT)  # warm-up
            for label, text in (("short", SHORT), ("long", LONG)):
                results = [await utterance(url, text) for _ in range(runs)]
                ttfa = statistics.median(r[0] for r in results) * 1000
                whole = statistics.median(r[1] for r in results) * 1000
                audio = statistics.median(r[2] for r in results)
                rtf = statistics.median(r[1] / r[2] for r in results)
                print(f"| {name} | {label} | {audio:.2f} | {ttfa:.0f} | {whole:.0f} "
                      f"| {rtf:.3f} |")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    trio.run(main, parser.parse_args().runs)
