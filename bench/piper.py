"""Piper against eSpeak NG, as the gateway sees them: time to first audio and real-time
factor of the built-in TTS engines, each its own process, over a local WebSocket.

    python bench/piper.py [--runs 5] [--no-accuracy]

Starts ``python -m slng_fast.engines piper`` and ``... espeak``, then for a short and a
long text opens a session per run, sends the text and a flush, and times the first binary
frame (time to first audio) and the ``flushed`` event (the whole utterance). Real-time
factor = wall time of the utterance / seconds of audio made (below 1: faster than real
time). Medians over the runs, after one warm-up utterance per engine.

Then a round trip per engine: each of 20 fixed sentences is spoken, resampled to 16 kHz,
padded with half a second of silence and given to the pocketsphinx engine; the figure is
the share of the sentences' words found in what it heard (each word counted as often as
it was said).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import trio
import trio_websocket

SHORT = "Please open the door."
LONG = ("The quick brown fox jumps over the lazy dog near the river bank. "
        "A gentle breeze moved the leaves while the children played in the park. "
        "After dinner we walked to the old bridge and watched the sun go down. "
        "Tomorrow the train leaves at seven, so we should pack our bags tonight.")

# The fixed set, shared with tests/gateway/test_tts_piper.py (which asserts on it).
SENTENCES = tuple(
    (Path(__file__).parent / "round_trip_sentences.txt").read_text().splitlines())


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def to_16k(pcm: bytes, rate: int) -> bytes:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    n = int(round(len(x) * 16000 / rate))
    y = np.interp(np.arange(n) * (rate / 16000), np.arange(len(x)), x)
    return np.clip(np.round(y), -32768, 32767).astype("<i2").tobytes()


async def speak(url: str, text: str) -> tuple[bytes, int]:
    async with trio_websocket.open_websocket_url(url) as ws:
        rate = int(orjson.loads(await ws.get_message())["sample_rate"])
        await ws.send_message(text)
        await ws.send_message('{"type":"control","action":"flush"}')
        audio = b""
        while isinstance(message := await ws.get_message(), bytes):
            audio += message
    return audio, rate


async def hear(url: str, pcm16k: bytes) -> str:
    async with trio_websocket.open_websocket_url(url) as ws:
        await ws.send_message('{"type":"start","sample_rate":16000,"encoding":"pcm16"}')
        await ws.get_message()  # ready
        for pos in range(0, len(pcm16k), 3200):
            await ws.send_message(pcm16k[pos:pos + 3200])
        await ws.send_message('{"type":"finalize"}')
        while True:
            event = orjson.loads(await ws.get_message())
            if event.get("type") == "final_transcript":
                return str(event.get("text") or "")


async def round_trip(tts: str, stt: str) -> tuple[int, int]:
    """(words heard, words said) over SENTENCES."""
    heard_total = said_total = 0
    pad = bytes(16000)  # 0.5 s at 16 kHz
    for sentence in SENTENCES:
        audio, rate = await speak(tts, sentence)
        heard = Counter(words(await hear(stt, pad + to_16k(audio, rate) + pad)))
        said = Counter(words(sentence))
        heard_total += sum((said & heard).values())
        said_total += sum(said.values())
    return heard_total, said_total


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


async def main(runs: int, accuracy: bool) -> None:
    async with trio.open_nursery() as nursery:
        urls = {name: await start(nursery, name) for name in ("piper", "espeak")}
        stt = await start(nursery, "pocketsphinx") if accuracy else ""
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
        if accuracy:
            print(f"\nround trip through PocketSphinx, {len(SENTENCES)} sentences:")
            print("| engine | words heard / said | share |")
            print("|---|---|---|")
            for name, url in urls.items():
                heard, said = await round_trip(url, stt)
                print(f"| {name} | {heard} / {said} | {heard / said:.0%} |")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-accuracy", action="store_true",
                        help="skip the round trip through PocketSphinx")
    args = parser.parse_args()
    trio.run(main, args.runs, not args.no_accuracy)
