"""audio_chunk frame building: slng_fast vs pybase64 + orjson vs stdlib base64 + json.

Builds the complete ``audio_chunk`` text frame for 100 ms and 20 ms of 24 kHz
PCM16 (4800 and 960 bytes) and prints microseconds per frame (best of several
repeats) and how many times faster slng_fast is, both for the one-shot
``audio_chunk_frame`` and for ``AudioChunker.push_frames`` fed one chunk per push.

    python bench/bench_frame.py

``run()`` returns the same numbers as a list of dicts for ``bench/native.py``.
"""

from __future__ import annotations

import base64
import json
import os
import timeit
from collections.abc import Callable
from typing import Any

import orjson
import pybase64

from slng_fast._native import AudioChunker, audio_chunk_frame

SAMPLE_RATE = 24000
CONTEXT_ID = "3f2b9c4e-8a1d-4c6b-9e2f-7a5d1c0b8e4f"
SEQUENCE = 12345


def best_us(fn: Callable[[], object], repeat: int = 7, target_s: float = 0.05) -> float:
    """Best time per call in microseconds over `repeat` runs of about `target_s` each."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    number = max(1, int(number * target_s / 0.2))
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e6


def run() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for ms in (100, 20):
        chunk = os.urandom(SAMPLE_RATE * 2 * ms // 1000)

        def ours(chunk: bytes = chunk) -> bytes:
            return audio_chunk_frame(chunk, SEQUENCE, CONTEXT_ID, SAMPLE_RATE)

        def pybase64_orjson(chunk: bytes = chunk, ms: int = ms) -> bytes:
            return orjson.dumps(
                {
                    "type": "audio_chunk",
                    "data": pybase64.b64encode(chunk).decode(),
                    "sequence": SEQUENCE,
                    "duration_ms": ms,
                    "context_id": CONTEXT_ID,
                }
            )

        def stdlib(chunk: bytes = chunk, ms: int = ms) -> bytes:
            return json.dumps(
                {
                    "type": "audio_chunk",
                    "data": base64.b64encode(chunk).decode(),
                    "sequence": SEQUENCE,
                    "duration_ms": ms,
                    "context_id": CONTEXT_ID,
                },
                separators=(",", ":"),
            ).encode()

        chunker = AudioChunker(len(chunk), context_id=CONTEXT_ID)

        def ours_chunker(chunk: bytes = chunk, chunker: AudioChunker = chunker) -> list[bytes]:
            return chunker.push_frames(chunk)

        # All of them build the same frame.
        assert ours() == pybase64_orjson() == stdlib()

        case = f"{ms} ms of 24 kHz pcm16 ({len(chunk)} bytes)"
        timings = {
            "audio_chunk_frame": best_us(ours),
            "AudioChunker.push_frames": best_us(ours_chunker),
            "pybase64+orjson": best_us(pybase64_orjson),
            "base64+json": best_us(stdlib),
        }
        for bench in ("audio_chunk_frame", "AudioChunker.push_frames"):
            for baseline in ("pybase64+orjson", "base64+json"):
                rows.append(
                    {
                        "bench": bench,
                        "case": case,
                        "ours_us": timings[bench],
                        "baseline": baseline,
                        "baseline_us": timings[baseline],
                        "speedup": timings[baseline] / timings[bench],
                    }
                )
    return rows


def main() -> None:
    print(f"{'case':<36} {'ours':<25} {'baseline':<16} {'ours us':>8} {'base us':>8} {'speedup':>8}")
    for row in run():
        print(
            f"{row['case']:<36} {row['bench']:<25} {row['baseline']:<16} {row['ours_us']:8.3f}"
            f" {row['baseline_us']:8.3f} {row['speedup']:7.2f}x"
        )


if __name__ == "__main__":
    main()
