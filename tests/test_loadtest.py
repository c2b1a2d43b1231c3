"""The locust scenario for concurrent connections, run as its README says, against two
gateway workers sharing a real redis-server: it must pass (exactly 1, 5 and 50 sessions per
key across both workers, every other attempt refused with 4001). The messages-per-minute
scenario takes 75 s and is run by hand (loadtest/README.md)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).resolve().parents[1] / "loadtest" / "run.py"


def test_connection_limits_hold_under_locust_across_two_workers():
    # locust is not imported here: it monkeypatches the process with gevent (it runs in its
    # own process below).
    assert importlib.util.find_spec("locust") is not None, "pip install -e '.[load]'"
    result = subprocess.run([sys.executable, str(RUN), "connections", "--workers", "2"],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "scenario connections passed" in result.stdout
    assert "LIMIT DID NOT HOLD" not in result.stdout
