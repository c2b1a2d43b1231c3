"""TokenBuckets.try_acquire against a dict-based token bucket in pure Python.

    python bench/bench_limits.py

Each figure is the best of several runs of a loop over prepared (key, now)
pairs; the loop's own cost is in both columns. `run()` returns the rows for
bench/native.py.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from typing import Any

from slng_fast._native import TokenBuckets

REPEAT = 5
CALLS = 200_000


class PyTokenBuckets:
    """What a Python user would write: one [tokens, last] list per key in a dict."""

    def __init__(self, capacity: float, refill_per_second: float) -> None:
        self.capacity = capacity
        self.refill_per_second = refill_per_second
        self.buckets: dict[str, list[float]] = {}

    def try_acquire(self, key: str, now: float, cost: float = 1.0) -> float:
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = [self.capacity, now]
        elif now > bucket[1]:
            bucket[0] = min(self.capacity, bucket[0] + (now - bucket[1]) * self.refill_per_second)
            bucket[1] = now
        if bucket[0] >= cost:
            bucket[0] -= cost
            return 0.0
        return (cost - bucket[0]) / self.refill_per_second


def _ns_per_call(acquire: Callable[[str, float], float], pairs: list[tuple[str, float]]) -> float:
    def loop() -> None:
        for key, now in pairs:
            acquire(key, now)

    best = min(timeit.repeat(loop, number=1, repeat=REPEAT))
    return best / len(pairs) * 1e9


def _cases() -> dict[str, list[tuple[str, float]]]:
    times = [i * 1e-3 for i in range(CALLS)]
    keys = [f"sk-live-{i:06d}" for i in range(1000)]
    return {
        "one key, allowed": [("sk-live-000001", t) for t in times],
        "1000 keys, allowed": [(keys[i % 1000], t) for i, t in enumerate(times)],
        # 60 per minute with a call every millisecond: nearly every check is denied.
        "one key, mostly denied": [("sk-live-000001", t) for t in times],
    }


def run() -> list[dict[str, Any]]:
    rows = []
    for case, pairs in _cases().items():
        if "denied" in case:
            ours, theirs = TokenBuckets(60, 1.0), PyTokenBuckets(60, 1.0)
        else:
            ours, theirs = TokenBuckets(1e9, 1e9), PyTokenBuckets(1e9, 1e9)
        native_ns = _ns_per_call(ours.try_acquire, pairs)
        python_ns = _ns_per_call(theirs.try_acquire, pairs)
        rows.append(
            {
                "benchmark": "limits",
                "case": f"try_acquire, {case}",
                "native_ns": native_ns,
                "baseline": "dict-based pure Python bucket",
                "baseline_ns": python_ns,
                "speedup": python_ns / native_ns,
            }
        )
    return rows


def main() -> None:
    print(f"{'case':42} {'native ns':>10} {'python ns':>10} {'speedup':>8}")
    for row in run():
        print(f"{row['case']:42} {row['native_ns']:10.1f} {row['baseline_ns']:10.1f} {row['speedup']:7.2f}x")


if __name__ == "__main__":
    main()
