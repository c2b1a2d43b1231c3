"""The locust scenario for concurrent connections, run as its README says, against two
gateway workers sharing a real redis-server: it must pass (exactly 1, 5 and 50 sessions per
key across both workers, every other attempt refused with 4001). The messages-per-minute
scenario takes 75 s and is run by hand (loadtest/README.md)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).resolve().parents[1] / "loadtest" / "run.py"


def test_connection_limits_hold_under_locust_across_two_workers():
    # locust is not imported here: it monkeypatches the process with gevent (it runs in its
    # own process below).
    assert importlib.util.find_spec("locust") is not None, "pip install -e '.[load]'"
    # Run as with a virtual environment's Python that is not activated: its bin/ is not on
    # PATH, so everything must go through this interpreter (python -m locust).
    bin_dir = os.path.dirname(sys.executable)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if os.path.realpath(p) != os.path.realpath(bin_dir))
    env = {**os.environ, "PATH": path}
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run([sys.executable, str(RUN), "connections", "--workers", "2"],
                            capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "scenario connections passed" in result.stdout
    assert "LIMIT DID NOT HOLD" not in result.stdout
