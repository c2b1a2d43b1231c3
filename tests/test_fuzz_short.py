"""The live fuzzer's short run (bench/fuzz.py): one real gateway with its engines and
three emulators takes 20 s of hostile connections, six at a time, beside a healthy TTS
session. It must pass: no process crashed or restarted, no traceback in the gateway's
log, every reply documented, the healthy session complete. The figures of the long run
are in bench/RESULTS.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FUZZ = Path(__file__).resolve().parents[1] / "bench" / "fuzz.py"


def test_short_live_fuzzing_passes():
    # Hang guard only: 20 s of fuzzing, process start-up and a shutdown that waits for
    # the engines, on a loaded 2-core machine.
    result = subprocess.run(
        [sys.executable, str(FUZZ), "--seconds", "20", "--seed", "7", "--connections", "6"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    assert "PASS" in result.stdout
