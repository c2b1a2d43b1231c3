"""Run every native-core benchmark in one process and print ours against what a Python
user would otherwise pick, measured in the same run.

    python bench/native.py            # all
    python bench/native.py frame      # only the benchmarks whose name contains "frame"
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ("bench_frame", "bench_resample", "bench_codec", "bench_limits", "bench_classify")


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def main(argv: list[str]) -> int:
    wanted = argv[1:]
    print(f"# machine: {machine()}")
    for name in BENCHES:
        if wanted and not any(w in name for w in wanted):
            continue
        print(f"\n## {name}")
        module = load(name)
        # Each benchmark parses its own options: give it none of ours.
        saved, sys.argv = sys.argv, [name]
        try:
            module.main() if hasattr(module, "main") else module.run()
        finally:
            sys.argv = saved
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
