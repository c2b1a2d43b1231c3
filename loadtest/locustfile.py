"""Locust scenarios that check the tier limits under load (PROTOCOL.md section 6).

Each user class is one tier. Users speak the unified protocol with `websocket-client` and
report every message through locust's request events, so locust's own statistics show
latency and refusals. At the end of the run the checks below fail the run (exit code 1)
when a limit did not hold:

- messages per minute: the messages each key got through are within 5 % of what its bucket
  allows over the run (capacity + refill * seconds), and every refusal was `rate_limited`
  with a `retry_after_ms`;
- concurrent connections: of the users sharing one key, exactly the tier's number hold a
  session at once; the others are refused with `too_many_connections` and close 4001.

Keys come from `SLNG_LOADTEST_KEYS` (a JSON file `{"free": [...], "pro": [...], ...}`),
which `loadtest/run.py` writes after starting a gateway. Run headless, for example:

    locust -f loadtest/locustfile.py --headless -u 12 -r 12 -t 70s FreeRate ProRate
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections import defaultdict
from typing import Any

import websocket
from locust import User, between, events, task

URL = os.environ.get("SLNG_LOADTEST_URL", "ws://127.0.0.1:8765")
TIER_LIMITS = json.loads(os.environ.get("SLNG_LOADTEST_TIERS", "{}")) or {
    "free": {"messages_per_minute": 20, "max_connections": 1},
    "pro": {"messages_per_minute": 60, "max_connections": 5},
    "enterprise": {"messages_per_minute": 120, "max_connections": 50},
}


def load_keys() -> dict[str, list[str]]:
    path = os.environ.get("SLNG_LOADTEST_KEYS")
    if not path:
        return {}
    with open(path) as f:
        return json.load(f)


KEYS = load_keys()
_next_key = {tier: itertools.count() for tier in TIER_LIMITS}
_lock = threading.Lock()

# What the users saw, for the checks at the end.
allowed: dict[str, int] = defaultdict(int)  # key -> messages answered
refused: dict[str, int] = defaultdict(int)  # key -> rate_limited answers
first_sent: dict[str, float] = {}
last_sent: dict[str, float] = {}
bad_refusals: list[str] = []
holding: dict[str, int] = defaultdict(int)  # tier -> sessions held now
peak_holding: dict[str, int] = defaultdict(int)
conn_refusals: dict[str, int] = defaultdict(int)


def fire(name: str, started: float, length: int = 0, exc: Exception | None = None) -> None:
    events.request.fire(request_type="ws", name=name,
                        response_time=(time.perf_counter() - started) * 1000.0,
                        response_length=length, exception=exc, context={})


def open_session(key: str, path: str = "/v1/tts/espeak-websocket-stream") -> websocket.WebSocket:
    return websocket.create_connection(URL + path, header=[f"Authorization: Bearer {key}"],
                                       timeout=30)


class RateUser(User):
    """Sends pings on its own key as fast as the gateway answers; every answer is either a
    pong (allowed) or a rate_limited error (refused, the session stays open)."""

    abstract = True
    tier = "free"
    wait_time = between(0.0, 0.02)

    def on_start(self) -> None:
        with _lock:
            n = next(_next_key[self.tier])
        self.key = KEYS[self.tier][n % len(KEYS[self.tier])]
        started = time.perf_counter()
        self.ws = open_session(self.key)
        fire("connect", started)

    def on_stop(self) -> None:
        self.ws.close()

    @task
    def ping(self) -> None:
        started = time.perf_counter()
        now = time.monotonic()
        with _lock:
            first_sent.setdefault(self.key, now)
            last_sent[self.key] = now
        self.ws.send('{"type":"ping"}')
        event = json.loads(self.ws.recv())
        if event["type"] == "pong":
            with _lock:
                allowed[self.key] += 1
            fire(f"{self.tier} ping", started)
            return
        with _lock:
            refused[self.key] += 1
            if event.get("code") != "rate_limited" or not event.get("retry_after_ms"):
                bad_refusals.append(json.dumps(event))
        fire(f"{self.tier} ping", started, exc=RuntimeError(event.get("code", "?")))
        time.sleep(min(event.get("retry_after_ms", 100), 500) / 1000.0)


class FreeRate(RateUser):
    tier = "free"


class ProRate(RateUser):
    tier = "pro"


class EnterpriseRate(RateUser):
    tier = "enterprise"


class ConnectionUser(User):
    """Many users on ONE key of the tier, each trying to hold a session open: exactly the
    tier's number succeed at any moment."""

    abstract = True
    tier = "free"
    wait_time = between(0.2, 0.5)

    def on_start(self) -> None:
        self.key = KEYS[self.tier][0]
        self.ws: websocket.WebSocket | None = None

    @task
    def hold(self) -> None:
        if self.ws is not None:
            started = time.perf_counter()
            self.ws.send('{"type":"ping"}')  # a held session keeps answering
            event = json.loads(self.ws.recv())
            fire(f"{self.tier} held ping", started,
                 exc=None if event["type"] == "pong" else RuntimeError(event.get("code")))
            return
        started = time.perf_counter()
        ws = open_session(self.key)
        ws.send('{"type":"ping"}')
        event = json.loads(ws.recv())
        if event["type"] == "pong":
            with _lock:
                holding[self.tier] += 1
                peak_holding[self.tier] = max(peak_holding[self.tier], holding[self.tier])
            self.ws = ws
            fire(f"{self.tier} connect", started)
            return
        code = close_code(ws)
        with _lock:
            conn_refusals[self.tier] += 1
            if event.get("code") != "too_many_connections" or code != 4001:
                bad_refusals.append(f"{json.dumps(event)} close {code}")
        fire(f"{self.tier} connect", started, exc=RuntimeError("too_many_connections"))

    def on_stop(self) -> None:
        if self.ws is not None:
            with _lock:
                holding[self.tier] -= 1
            self.ws.close()


def close_code(ws: websocket.WebSocket) -> int | None:
    try:
        while True:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return int.from_bytes(data[:2], "big") if len(data) >= 2 else None
    except websocket.WebSocketConnectionClosedException:
        return None


class FreeConnections(ConnectionUser):
    tier = "free"


class ProConnections(ConnectionUser):
    tier = "pro"


class EnterpriseConnections(ConnectionUser):
    tier = "enterprise"


# loadtest/run.py says how many users of each class to start (locust's fixed_count).
for _name, _count in json.loads(os.environ.get("LOCUST_USER_COUNTS", "{}")).items():
    globals()[_name].fixed_count = _count


def tier_of(key: str) -> str:
    return next(t for t, keys in KEYS.items() if key in keys)


def check() -> list[str]:
    """The limits that did not hold, one line each (empty when all held)."""
    failures = list(f"wrong refusal: {r}" for r in bad_refusals)
    for key, count in allowed.items():
        limits = TIER_LIMITS[tier_of(key)]
        per_minute = limits["messages_per_minute"]
        seconds = last_sent[key] - first_sent[key]
        expected = per_minute + per_minute * seconds / 60.0
        if refused[key] == 0:
            failures.append(f"key {key[:14]}: never refused, so the bucket was not tested")
        elif abs(count - expected) > 0.05 * expected + 1:
            failures.append(f"key {key[:14]} ({tier_of(key)}): {count} messages allowed in "
                            f"{seconds:.1f} s, expected {expected:.1f} (+-5 %)")
    for tier, peak in peak_holding.items():
        limit = TIER_LIMITS[tier]["max_connections"]
        if peak != limit:
            failures.append(f"{tier}: {peak} sessions held at once on one key, limit {limit}")
        if conn_refusals[tier] == 0:
            failures.append(f"{tier}: no connection was refused, so the limit was not tested")
    return failures


def summary() -> dict[str, Any]:
    return {
        "messages": {key[:14]: {"tier": tier_of(key), "allowed": allowed[key],
                                "refused": refused[key],
                                "seconds": round(last_sent[key] - first_sent[key], 1)}
                     for key in allowed},
        "connections": {tier: {"peak_held": peak_holding[tier],
                               "limit": TIER_LIMITS[tier]["max_connections"],
                               "refused": conn_refusals[tier]} for tier in peak_holding},
        "bad_refusals": len(bad_refusals),
    }


@events.quitting.add_listener
def _verdict(environment: Any, **_: Any) -> None:
    failures = check()
    out = os.environ.get("SLNG_LOADTEST_SUMMARY")
    if out:
        with open(out, "w") as f:
            json.dump({"summary": summary(), "failures": failures}, f, indent=2)
    print(json.dumps(summary(), indent=2))
    for line in failures:
        print(f"LIMIT DID NOT HOLD: {line}")
    # Refusals are reported to locust as failed requests (so its statistics count them),
    # which would make locust exit 1; the verdict is whether the limits held.
    environment.process_exit_code = 1 if failures else 0
