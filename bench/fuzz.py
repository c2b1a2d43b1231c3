"""Live fuzzing: one real gateway (``slng-fast serve`` with its built-in engines, and the
ElevenLabs, Deepgram and WhisperLive emulators configured as providers) takes hostile
connections for a fixed time while one healthy TTS session streams alongside.

    python bench/fuzz.py --seconds 300 --connections 16 --seed 1

``--connections`` connections at a time, each a case from ``bench/fuzz_cases.py``:
mutated unified commands, out-of-order commands, interleaved binary, garbage, protocol
mixing (native messages in unified sessions and the reverse) and broken WebSocket frames
(``bench/rawws.py``), on TTS and STT endpoints. The report says what was sent (per
category) and what came back (per event type, error code and close code). Exit 0 only
when: every process the gateway and the emulators started is alive and none restarted, no
traceback reached the gateway's log, every reply of a unified session was a documented
event, error code and close code, no gateway fault (``internal_error``) was answered to
bad input, and the healthy session got every utterance with gapless sequence numbers.
"""

from __future__ import annotations

import argparse
import base64
import collections
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import trio
import trio_websocket

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzz_cases
import rawws
from fuzz_cases import CLOSE_CODES, END_REASONS, ERROR_CODES, EVENT_TYPES, GATEWAY_FAULTS, Case

CLI = [sys.executable, "-m", "slng_fast"]
EMULATOR_KEY = "fuzz-emulator-key"
EMULATORS = ("elevenlabs", "deepgram", "whisper")
VERBOSE = False  # --replay: print every reply


# -- processes ------------------------------------------------------------------------
def wait_for_line(path: Path, pattern: str, proc: subprocess.Popen[bytes],
                  timeout: float = 120) -> str:
    """The first match of ``pattern`` in a process's output file."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, path.read_text(errors="replace"))
        if match:
            return match.group(1)
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args} exited: {path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)
    raise SystemExit(f"{proc.args}: no {pattern!r} within {timeout} s")


def descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid`` (pid -> command line), from /proc."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    cmdlines: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children[ppid].append(int(entry.name))
        cmdlines[int(entry.name)] = cmdline
    out: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out[child] = cmdlines.get(child, "")
            todo.append(child)
    return out


@dataclass
class Processes:
    """The gateway and the emulators, with their output files."""

    workdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    url: str = ""
    keys: dict[str, str] = field(default_factory=dict)

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        out = self.workdir / f"{name}.out"
        err = self.workdir / f"{name}.log"
        proc = subprocess.Popen(args, stdout=out.open("wb"), stderr=err.open("wb"), env=env,
                                start_new_session=True)
        self.procs[name], self.logs[name] = proc, err
        return proc

    def tree(self) -> dict[str, dict[int, str]]:
        """Each started process and its descendants (workers, engines)."""
        return {name: {proc.pid: "", **descendants(proc.pid)} for name, proc in self.procs.items()}

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def start_processes(workdir: Path, workers: int) -> Processes:
    env = {**os.environ, "SLNG_FAST_HOME": str(workdir / "data")}
    env.pop("SLNG_API_KEY", None)
    p = Processes(workdir)
    for tier, name in (("enterprise", "fuzz"), ("enterprise", "healthy"), ("pro", "pro"),
                       ("free", "free")):
        out = subprocess.run(CLI + ["keys", "create", "--tier", tier, "--name", name],
                             env=env, capture_output=True, text=True, check=True, timeout=120)
        p.keys[name] = out.stdout.strip().splitlines()[-1]
    urls = {}
    for name in EMULATORS:
        proc = p.spawn(name, CLI + ["emulate", name, "--port", "0", "--api-key", EMULATOR_KEY],
                       env)
        urls[name] = wait_for_line(workdir / f"{name}.out", r"listening on (ws://\S+)", proc)
    config = workdir / "fuzz.toml"
    lines = [
        # The fuzz keys' rate and connection limits are raised so that frames reach the
        # session; the `pro` and `free` keys keep the defaults and hit them.
        "[tiers.enterprise]", "messages_per_minute = 1000000", "max_connections = 100000", "",
    ]
    for name, url in urls.items():
        lines += [f"[providers.{name}]", f'url = "{url}"', f'api_key = "{EMULATOR_KEY}"', ""]
    config.write_text("\n".join(lines))
    args = CLI + ["serve", "--port", "0", "--config", str(config)]
    if workers > 1:
        redis = shutil.which("redis-server")
        if redis is None:
            raise SystemExit("--workers > 1 needs redis-server")
        port = 20000 + os.getpid() % 20000
        p.spawn("redis", [redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", str(workdir)], env)
        time.sleep(0.5)
        args += ["--workers", str(workers), "--redis", f"redis://127.0.0.1:{port}"]
    proc = p.spawn("gateway", args, env)
    p.url = wait_for_line(workdir / "gateway.out", r"listening on (ws://\S+)", proc)
    return p


# -- what came back -------------------------------------------------------------------
@dataclass
class Tally:
    sent: collections.Counter[str] = field(default_factory=collections.Counter)
    frames: collections.Counter[str] = field(default_factory=collections.Counter)
    events: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    closes: collections.Counter[str] = field(default_factory=collections.Counter)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    endpoints: collections.Counter[str] = field(default_factory=collections.Counter)
    native_frames: int = 0
    violations: list[str] = field(default_factory=list)

    def violation(self, case: Case, what: str) -> None:
        if len(self.violations) < 200:
            self.violations.append(
                f"{case.category} {case.kind}/{case.endpoint} [{case.label}]: {what}")


@dataclass
class Seen:
    """One connection's replies, checked as they come."""

    case: Case
    tally: Tally
    next_sequence: int = 0
    pong: trio.Event = field(default_factory=trio.Event)
    closed: trio.Event = field(default_factory=trio.Event)
    close_code: int | None = None
    last_error: str | None = None

    def text(self, message: str | bytes) -> None:
        case, tally = self.case, self.tally
        if VERBOSE:
            print(f"  <- {message[:200]!r}")
        if not case.unified:
            tally.native_frames += 1
            return
        try:
            event = orjson.loads(message)
        except orjson.JSONDecodeError:
            tally.violation(case, f"a reply that is not JSON: {message[:80]!r}")
            return
        kind = event.get("type") if isinstance(event, dict) else None
        if kind not in EVENT_TYPES:
            tally.violation(case, f"an undocumented event: {str(message)[:120]}")
            return
        tally.events[kind] += 1
        if kind == "error":
            code = event.get("code")
            tally.errors[str(code)] += 1
            self.last_error = str(code)
            if code not in ERROR_CODES:
                tally.violation(case, f"an undocumented error code: {code!r}")
            elif code in GATEWAY_FAULTS:
                tally.violation(case, f"a gateway fault: {event}")
            if code == "rate_limited":
                self.pong.set()  # the ping may be what was refused
        elif kind == "session_ended" and event.get("reason") not in END_REASONS:
            tally.violation(case, f"an undocumented end reason: {event.get('reason')!r}")
        elif kind == "audio_chunk":
            if event.get("sequence") != self.next_sequence:
                tally.violation(case, f"sequence {event.get('sequence')} where "
                                      f"{self.next_sequence} was due")
            self.next_sequence = int(event.get("sequence", self.next_sequence)) + 1
        elif kind == "pong":
            self.pong.set()

    def binary(self) -> None:
        if VERBOSE:
            print("  <- (binary)")
        if self.case.unified:
            self.tally.violation(self.case, "a binary frame in a unified session")
        else:
            self.tally.native_frames += 1

    def ended(self, code: int | None, by_us: bool) -> None:
        if VERBOSE:
            print(f"  closed {code} ({'by us' if by_us else 'by the gateway'})")
        self.close_code = code
        label = "client_closed" if by_us else str(code)
        self.tally.closes[label] += 1
        if not by_us and code not in CLOSE_CODES | self.case.extra_closes:
            self.tally.violation(self.case, f"an undocumented close code {code}")
        if (not by_us and code == 1011 and self.case.unified
                and self.last_error != "provider_error"):
            # 1011 passes on an upstream's own error ("as the upstream"); else it is ours.
            self.tally.violation(self.case, "close 1011 without a provider_error")
        self.closed.set()
        self.pong.set()


# -- one hostile connection -----------------------------------------------------------
def endpoint_url(base: str, case: Case) -> str:
    return f"{base}/v1/{case.kind}/{case.endpoint}-websocket-stream"


async def run_library_case(base: str, key: str, case: Case, tally: Tally) -> None:
    seen = Seen(case, tally)
    by_us = False
    try:
        async with trio.open_nursery() as nursery:
            try:
                ws = await trio_websocket.connect_websocket_url(
                    nursery, endpoint_url(base, case), None,
                    extra_headers=[(b"authorization", f"Bearer {key}".encode())],
                    message_queue_size=64, max_message_size=16 * 1024 * 1024)
            except trio_websocket.ConnectionRejected as exc:
                tally.statuses[exc.status_code or 0] += 1
                return
            tally.statuses[101] += 1

            async def read() -> None:
                try:
                    while True:
                        message = await ws.get_message()
                        if isinstance(message, bytes):
                            seen.binary()
                        else:
                            seen.text(message)
                except trio_websocket.ConnectionClosed as exc:
                    seen.ended(exc.reason.code if exc.reason else None, by_us)

            nursery.start_soon(read)
            for _, payload in case.frames:
                if seen.closed.is_set():
                    break
                with trio.move_on_after(15):
                    try:
                        await ws.send_message(payload)
                    except trio_websocket.ConnectionClosed:
                        break
                if random.random() < 0.2:
                    await trio.sleep(random.random() * 0.02)
            if case.unified and not seen.closed.is_set():
                # The session must still answer: a ping gets a pong (or the refusal).
                seen.pong = trio.Event()
                try:
                    await ws.send_message(fuzz_cases._valid(case.kind, "ping"))
                except trio_websocket.ConnectionClosed:
                    pass
                with trio.move_on_after(30) as guard:
                    await seen.pong.wait()
                if guard.cancelled_caught:
                    tally.violation(case, "no pong within 30 s")
            by_us = not seen.closed.is_set()
            if case.close == "abrupt":
                await ws._stream.aclose()  # the TCP connection just goes away
                nursery.cancel_scope.cancel()
            else:
                with trio.move_on_after(10):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    except (OSError, trio.BrokenResourceError, trio_websocket.HandshakeError) as exc:
        tally.closes[f"transport:{type(exc).__name__}"] += 1


async def run_raw_case(base: str, key: str, case: Case, tally: Tally) -> None:
    seen = Seen(case, tally)
    ws, status = await rawws.RawWebSocket.connect(endpoint_url(base, case), key)
    tally.statuses[status] += 1
    if ws is None:
        return
    reply = rawws.Reply(status=status)
    try:
        async with trio.open_nursery() as nursery:
            async def read() -> None:
                await ws.read_until_closed(reply)

            nursery.start_soon(read)
            for _, data in case.frames:
                assert isinstance(data, bytes)
                if not await ws.send(data):
                    break
            with trio.move_on_after(10):
                while reply.close_code is None and nursery.child_tasks:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    finally:
        await ws.aclose()
    for text in reply.texts or []:
        seen.text(text)
    for _ in range(reply.binaries):
        seen.binary()
    if reply.close_code is None:
        tally.closes["no_close_in_10s"] += 1
    else:
        seen.ended(reply.close_code, by_us=False)


async def replay(base: str, keys: dict[str, str], label: str) -> Tally:
    """Run the one case ``label`` (seed:worker:n) and print what went both ways."""
    tally = Tally()
    case = fuzz_cases.make_case(random.Random(label))
    case.label = label
    print(f"{case.category} {case.kind}/{case.endpoint} key={case.key} close={case.close} "
          f"unified={case.unified}")
    for kind, payload in case.frames:
        print(f"  -> {kind} {payload[:200]!r}")
    await (run_raw_case if case.raw else run_library_case)(base, keys[case.key], case, tally)
    return tally


async def fuzz_worker(base: str, keys: dict[str, str], seed: int, worker: int,
                      deadline: float, tally: Tally) -> None:
    n = 0
    while trio.current_time() < deadline:
        rng = random.Random(f"{seed}:{worker}:{n}")
        n += 1
        case = fuzz_cases.make_case(rng)
        case.label = f"{seed}:{worker}:{n - 1}"
        tally.sent[f"connections:{case.category}"] += 1
        tally.endpoints[f"{case.kind}/{case.endpoint}"] += 1
        for kind, _ in case.frames:
            tally.sent[f"frames:{kind}"] += 1
            tally.sent[f"frames in {case.category}"] += 1
        runner = run_raw_case if case.raw else run_library_case
        with trio.move_on_after(120) as guard:
            await runner(base, keys[case.key], case, tally)
        if guard.cancelled_caught:
            tally.violation(case, "the connection did not finish within 120 s")


# -- the healthy session ----------------------------------------------------------------
@dataclass
class Healthy:
    utterances: int = 0
    chunks: int = 0
    audio_ms: float = 0.0
    problems: list[str] = field(default_factory=list)


async def healthy_session(base: str, key: str, deadline: float, result: Healthy) -> None:
    """One TTS session on the built-in engine for the whole run: every frame is checked."""
    url = f"{base}/v1/tts/espeak-websocket-stream"
    async with trio.open_nursery() as nursery:
        ws = await trio_websocket.connect_websocket_url(
            nursery, url, None, extra_headers=[(b"authorization", f"Bearer {key}".encode())])

        async def event() -> dict[str, Any]:
            with trio.fail_after(60):
                message = await ws.get_message()
            if isinstance(message, bytes):
                raise AssertionError("a binary frame")
            parsed: dict[str, Any] = orjson.loads(message)
            return parsed

        try:
            await ws.send_message(orjson.dumps({"type": "init", "context_id": "healthy",
                                                "sample_rate_hz": 16000}).decode())
            ready = await event()
            if ready.get("type") != "ready":
                raise AssertionError(f"no ready: {ready}")
            sequence = 0
            while trio.current_time() < deadline:
                text = f"Sentence number {result.utterances + 1} streams while others fuzz."
                await ws.send_message(orjson.dumps({"type": "input_text", "text": text}).decode())
                await ws.send_message('{"type":"flush"}')
                while True:
                    e = await event()
                    if e.get("context_id") != "healthy":
                        raise AssertionError(f"context_id changed: {e}")
                    if e["type"] == "audio_chunk":
                        if e["sequence"] != sequence:
                            raise AssertionError(f"sequence {e['sequence']}, {sequence} due")
                        sequence += 1
                        result.chunks += 1
                        result.audio_ms += e["duration_ms"]
                        if len(base64.b64decode(e["data"])) % 2:
                            raise AssertionError("a chunk of half a sample")
                    elif e["type"] == "audio_end":
                        if e["id"] != result.utterances + 1 or e["interrupted"]:
                            raise AssertionError(f"unexpected audio_end: {e}")
                        if e["total_duration_ms"] <= 0:
                            raise AssertionError(f"an empty utterance: {e}")
                        result.utterances += 1
                        break
                    else:
                        raise AssertionError(f"unexpected event: {e}")
            await ws.aclose()
        except (AssertionError, trio.TooSlowError, trio_websocket.ConnectionClosed,
                KeyError, orjson.JSONDecodeError) as exc:
            result.problems.append(f"{type(exc).__name__}: {exc}")
        nursery.cancel_scope.cancel()


# -- the run ------------------------------------------------------------------------------
async def fuzz(base: str, keys: dict[str, str], seconds: float, connections: int,
               seed: int) -> tuple[Tally, Healthy]:
    tally, healthy = Tally(), Healthy()
    deadline = trio.current_time() + seconds
    async with trio.open_nursery() as nursery:
        nursery.start_soon(healthy_session, base, keys["healthy"], deadline, healthy)
        for worker in range(connections):
            nursery.start_soon(fuzz_worker, base, keys, seed, worker, deadline, tally)
    return tally, healthy


def tracebacks(log: Path) -> list[str]:
    """Log lines that carry a traceback (an exception that reached the log)."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if "Traceback" not in line:
            continue
        try:
            entry = orjson.loads(line)
            tail = " | ".join(str(entry.get("error", "")).strip().splitlines()[-3:])
            found.append(f"{entry.get('logger')}: {entry.get('msg')}: ...{tail[-400:]}")
        except (orjson.JSONDecodeError, AttributeError):
            found.append(line[:400])
    return found


def log_levels(log: Path) -> collections.Counter[str]:
    levels: collections.Counter[str] = collections.Counter()
    for line in log.read_text(errors="replace").splitlines():
        try:
            levels[orjson.loads(line).get("level", "?")] += 1
        except (orjson.JSONDecodeError, AttributeError):
            levels["not-json"] += 1
    return levels


def print_counter(title: str, counter: collections.Counter[Any]) -> None:
    print(f"{title}:")
    for name, count in sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0]))):
        print(f"  {name:<34} {count:>9}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--replay", metavar="SEED:WORKER:N",
                        help="run only that case (as named in a failure) and print its frames")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="slng-fuzz-"))
    procs = start_processes(workdir, args.workers)
    if args.replay:
        global VERBOSE
        VERBOSE = True
        try:
            tally = trio.run(replay, procs.url, procs.keys, args.replay)
        finally:
            procs.stop()
        print("\n".join(tally.violations) or "no violation")
        print("gateway log tracebacks:", tracebacks(procs.logs["gateway"])[:5])
        return 1 if tally.violations else 0
    failures: list[str] = []
    try:
        time.sleep(1.0)  # let the engines settle before the process snapshot
        before = procs.tree()
        started = time.monotonic()
        tally, healthy = trio.run(fuzz, procs.url, procs.keys, args.seconds, args.connections,
                                  args.seed)
        elapsed = time.monotonic() - started
        after = procs.tree()
        for name, tree in before.items():
            for pid, cmdline in tree.items():
                if pid not in after.get(name, {}):
                    failures.append(f"{name}: process {pid} {cmdline[:80]!r} is gone")
            for pid, cmdline in after.get(name, {}).items():
                if pid not in tree and "slng_fast" in cmdline:
                    failures.append(f"{name}: new process {pid} {cmdline[:80]!r} (a restart)")
    finally:
        procs.stop()
    gateway_tracebacks = tracebacks(procs.logs["gateway"])
    failures += [f"gateway log: {line}" for line in gateway_tracebacks[:20]]
    failures += tally.violations
    failures += [f"healthy session: {p}" for p in healthy.problems]
    if healthy.utterances == 0:
        failures.append("healthy session: no utterance")

    print(f"live fuzzing: {args.seconds:g} s, {args.connections} connections, seed {args.seed}, "
          f"workers {args.workers}, ran {elapsed:.1f} s")
    print_counter("sent", tally.sent)
    print_counter("endpoints", tally.endpoints)
    print_counter("handshake statuses", tally.statuses)
    print_counter("unified events", tally.events)
    print_counter("error codes", tally.errors)
    print_counter("close codes (server's; client_closed: ours)", tally.closes)
    print(f"native frames relayed back: {tally.native_frames}")
    print(f"healthy session: {healthy.utterances} utterances, {healthy.chunks} chunks, "
          f"{healthy.audio_ms / 1000:.1f} s of audio, problems: {len(healthy.problems)}")
    print_counter("gateway log levels", log_levels(procs.logs["gateway"]))
    for name in EMULATORS:
        print(f"{name} emulator log tracebacks (not the gateway's): "
              f"{len(tracebacks(procs.logs[name]))}")
    print(f"processes watched: {sum(len(t) for t in before.values())}, "
          f"crashed or restarted: {sum(1 for f in failures if 'process' in f)}")
    if args.keep or failures:
        print(f"work directory (logs): {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if failures:
        print(f"FAIL: {len(failures)} problem(s)")
        for line in failures[:60]:
            print(f"  {line}")
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
