"""Sample-format conversions: slng_fast vs audioop (G.711) and numpy (PCM16 <-> f32).

Converts 1 s of 24 kHz audio and prints microseconds per call (best of several
repeats) and how many times faster slng_fast is.

    python bench/bench_codec.py

``run()`` returns the same numbers as a list of dicts for ``bench/native.py``.
"""

from __future__ import annotations

import timeit
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from slng_fast import _native as native

audioop: ModuleType | None
try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop  # gone in Python 3.13
except ImportError:
    audioop = None

SAMPLE_RATE = 24000


def best_us(fn: Callable[[], object], repeat: int = 7, target_s: float = 0.05) -> float:
    """Best time per call in microseconds over `repeat` runs of about `target_s` each."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    number = max(1, int(number * target_s / 0.2))
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e6


def numpy_pcm16_to_f32(pcm: bytes) -> bytes:
    return (np.frombuffer(pcm, dtype="<i2").astype(np.float32) * np.float32(1 / 32768)).tobytes()


def numpy_f32_to_pcm16(data: bytes) -> bytes:
    x = np.clip(np.frombuffer(data, dtype="<f4"), np.float32(-1), np.float32(1)) * np.float32(32768)
    out: bytes = np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()
    return out


def run() -> list[dict[str, Any]]:
    rng = np.random.default_rng(1)
    # A second of speech-like audio: noise shaped to a plausible level.
    pcm = (rng.normal(0, 4000, SAMPLE_RATE).clip(-32768, 32767)).astype("<i2").tobytes()
    mulaw = native.pcm16_to_mulaw(pcm)
    alaw = native.pcm16_to_alaw(pcm)
    f32 = native.pcm16_to_f32(pcm)

    cases: list[tuple[str, Callable[[], bytes], str, Callable[[], bytes] | None]] = [
        ("pcm16_to_mulaw", lambda: native.pcm16_to_mulaw(pcm), "audioop.lin2ulaw",
         (lambda: audioop.lin2ulaw(pcm, 2)) if audioop else None),
        ("mulaw_to_pcm16", lambda: native.mulaw_to_pcm16(mulaw), "audioop.ulaw2lin",
         (lambda: audioop.ulaw2lin(mulaw, 2)) if audioop else None),
        ("pcm16_to_alaw", lambda: native.pcm16_to_alaw(pcm), "audioop.lin2alaw",
         (lambda: audioop.lin2alaw(pcm, 2)) if audioop else None),
        ("alaw_to_pcm16", lambda: native.alaw_to_pcm16(alaw), "audioop.alaw2lin",
         (lambda: audioop.alaw2lin(alaw, 2)) if audioop else None),
        ("pcm16_to_f32", lambda: native.pcm16_to_f32(pcm), "numpy", lambda: numpy_pcm16_to_f32(pcm)),
        ("f32_to_pcm16", lambda: native.f32_to_pcm16(f32), "numpy", lambda: numpy_f32_to_pcm16(f32)),
    ]
    rows: list[dict[str, Any]] = []
    for name, ours, baseline, theirs in cases:
        if theirs is None:
            continue
        assert ours() == theirs(), name
        ours_us = best_us(ours)
        theirs_us = best_us(theirs)
        rows.append(
            {
                "bench": name,
                "case": f"1 s of {SAMPLE_RATE // 1000} kHz audio",
                "ours_us": ours_us,
                "baseline": baseline,
                "baseline_us": theirs_us,
                "speedup": theirs_us / ours_us,
            }
        )
    return rows


def main() -> None:
    if audioop is None:
        print("audioop is not available (Python >= 3.13): G.711 rows skipped")
    print(f"{'conversion':<16} {'baseline':<18} {'ours us':>9} {'base us':>9} {'speedup':>8}")
    for row in run():
        print(
            f"{row['bench']:<16} {row['baseline']:<18} {row['ours_us']:9.2f}"
            f" {row['baseline_us']:9.2f} {row['speedup']:7.2f}x"
        )


if __name__ == "__main__":
    main()
