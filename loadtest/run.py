"""Run the locust scenarios against a fresh gateway with its built-in engines.

    python loadtest/run.py                 # every scenario
    python loadtest/run.py rate            # one: rate | connections
    python loadtest/run.py --workers 2     # two worker processes sharing a local Redis
    python loadtest/run.py --url ws://...  # against a gateway already running (keys from
                                           # --keys FILE, as {"free": [...], ...})

Starts `slng-fast serve` on a free port in a temporary data directory, creates keys with
`slng-fast keys create`, runs locust headless (bounded in users and time), prints each
scenario's summary and exits non-zero if any limit did not hold.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "slng_fast"]

# name -> (user classes and counts, seconds, keys per tier)
SCENARIOS = {
    # One key per tier shared by its users (their connections spread over the workers), so
    # the bucket is checked across connections and workers.
    "rate": ({"FreeRate": 1, "ProRate": 3, "EnterpriseRate": 3}, 75, 1),
    "connections": ({"FreeConnections": 3, "ProConnections": 8, "EnterpriseConnections": 56},
                    25, 1),
}


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A throwaway redis-server on a free port (the shared limits of several workers)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, f"redis://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def start_gateway(data_dir: Path, workers: int = 1,
                  redis_url: str | None = None) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "SLNG_FAST_HOME": str(data_dir)}
    command = CLI + ["serve", "--port", "0"]
    if workers > 1:
        command += ["--workers", str(workers), "--redis", str(redis_url)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit("the gateway exited before it listened")
        match = re.search(r"listening on (ws://\S+)", line)
        if match:
            return proc, match.group(1)
    raise SystemExit("the gateway did not start in 90 s")


def create_keys(data_dir: Path, per_tier: int) -> dict[str, list[str]]:
    env = {**os.environ, "SLNG_FAST_HOME": str(data_dir)}
    keys: dict[str, list[str]] = {}
    for tier in ("free", "pro", "enterprise"):
        for n in range(per_tier):
            out = subprocess.run(CLI + ["keys", "create", "--tier", tier, "--name",
                                        f"load-{tier}-{n}"], capture_output=True, text=True,
                                 env=env, check=True).stdout
            keys.setdefault(tier, []).append(out.strip().splitlines()[-1])
    return keys


def run_scenario(name: str, url: str, keys_file: Path, workdir: Path) -> dict:
    classes, seconds, _ = SCENARIOS[name]
    users = sum(classes.values())
    summary_file = workdir / f"{name}.json"
    env = {**os.environ, "SLNG_LOADTEST_URL": url, "SLNG_LOADTEST_KEYS": str(keys_file),
           "SLNG_LOADTEST_SUMMARY": str(summary_file)}
    # Through this interpreter, not PATH: a virtual environment need not be activated.
    command = [sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless",
               "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--stop-timeout", "5", "--only-summary",
               "--csv", str(workdir / name)]
    command += list(classes)
    env["LOCUST_USER_COUNTS"] = json.dumps(classes)  # exact users per class
    started = time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, text=True,
                            timeout=seconds + 120)
    report = json.loads(summary_file.read_text()) if summary_file.exists() else {
        "summary": {}, "failures": [f"locust wrote no summary: {result.stderr[-2000:]}"]}
    report["exit_code"] = result.returncode
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenarios", nargs="*", help=f"any of {', '.join(SCENARIOS)}")
    parser.add_argument("--url")
    parser.add_argument("--keys")
    parser.add_argument("--workers", type=int, default=1,
                        help="gateway worker processes (more than one: limits in a local Redis)")
    args = parser.parse_args(argv)
    names = args.scenarios or list(SCENARIOS)
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {sorted(unknown)}; scenarios: {list(SCENARIOS)}")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        proc = redis = None
        try:
            if args.url:
                url, keys_file = args.url, Path(args.keys)
            else:
                redis_url = None
                if args.workers > 1:
                    redis, redis_url = start_redis(workdir)
                proc, url = start_gateway(workdir / "data", args.workers, redis_url)
                keys_file = workdir / "keys.json"
            for name in names:
                if not args.url:
                    # fresh keys per scenario: full buckets, no connections held
                    keys = create_keys(workdir / "data", SCENARIOS[name][2])
                    keys_file.write_text(json.dumps(keys))
                report = run_scenario(name, url, keys_file, workdir)
                print(f"== {name} ({report['seconds']} s)")
                print(json.dumps(report["summary"], indent=2))
                for line in report["failures"]:
                    print(f"LIMIT DID NOT HOLD: {line}")
                if report["failures"] or report["exit_code"] != 0:
                    failed = True
                    print(f"scenario {name} FAILED (locust exit {report['exit_code']})")
                else:
                    print(f"scenario {name} passed")
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
            if redis is not None:
                redis.kill()
                redis.wait()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
