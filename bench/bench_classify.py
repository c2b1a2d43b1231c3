"""classify_frame against orjson.loads plus the dispatch a Python gateway would do.

    python bench/bench_classify.py

The frames are `str`, as a WebSocket library hands them over. The Python side
checks the size in characters (cheaper than the UTF-8 byte count that
classify_frame checks), parses with orjson, and looks the type up in a set.
Each figure is the best of several timeit runs. `run()` returns the rows for
bench/native.py.
"""

from __future__ import annotations

import json
import timeit
from typing import Any

import orjson

from slng_fast._native import classify_frame

REPEAT = 5
MAX_BYTES = 32768
TTS_COMMANDS = frozenset({"init", "input_text", "flush", "stop", "clear", "configure", "ping"})


def python_classify(frame: str, max_bytes: int) -> tuple[str, Any, Any]:
    if len(frame) > max_bytes:
        return ("invalid", "message_too_large", f"frame exceeds the {max_bytes}-byte limit")
    try:
        fields = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return ("native", None, None)
    if not isinstance(fields, dict):
        return ("invalid", "invalid_message", "frame is not a JSON object")
    kind = fields.get("type")
    if not isinstance(kind, str):
        return ("native", None, fields)
    if kind in TTS_COMMANDS:
        return ("command", kind, fields)
    return ("native", kind, fields)


def _sentence(n: int) -> str:
    words = "The quick brown fox jumps over the lazy dog, and then it rests a while. ".split(" ")
    out: list[str] = []
    while len(" ".join(out)) < n:
        out.append(words[len(out) % len(words)])
    return " ".join(out)[:n]


CASES = {
    "flush": json.dumps({"type": "flush"}),
    "input_text, 100 chars": json.dumps({"type": "input_text", "text": _sentence(100)}),
    "input_text, 2000 chars": json.dumps({"type": "input_text", "text": _sentence(2000)}),
    "native Speak, 100 chars": json.dumps({"type": "Speak", "text": _sentence(100)}),
    "plain text, 100 chars": _sentence(100),
}


def _ns_per_call(stmt: str, frame: str) -> float:
    env = {"classify_frame": classify_frame, "python_classify": python_classify, "frame": frame, "M": MAX_BYTES}
    timer = timeit.Timer(stmt, globals=env)
    number, _ = timer.autorange()
    number = max(number, 20_000)
    return min(timer.repeat(repeat=REPEAT, number=number)) / number * 1e9


def run() -> list[dict[str, Any]]:
    rows = []
    for case, frame in CASES.items():
        assert classify_frame(frame, MAX_BYTES) == python_classify(frame, MAX_BYTES), case
        native_ns = _ns_per_call("classify_frame(frame, M)", frame)
        python_ns = _ns_per_call("python_classify(frame, M)", frame)
        rows.append(
            {
                "benchmark": "classify",
                "case": case,
                "native_ns": native_ns,
                "baseline": "orjson.loads + Python dispatch",
                "baseline_ns": python_ns,
                "speedup": python_ns / native_ns,
            }
        )
    return rows


def main() -> None:
    print(f"{'case':28} {'native ns':>10} {'orjson+py ns':>13} {'speedup':>8}")
    for row in run():
        print(f"{row['case']:28} {row['native_ns']:10.1f} {row['baseline_ns']:13.1f} {row['speedup']:7.2f}x")


if __name__ == "__main__":
    main()
