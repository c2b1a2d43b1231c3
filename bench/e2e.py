"""End to end: K concurrent real-time TTS sessions through one gateway worker.

An upstream (bench/e2e_upstream.py, a fake SLNG model server) streams 24 kHz PCM16 in
40 ms frames in real time to every session; the gateway turns each frame into an
``audio_chunk`` for the clients (bench/e2e_clients.py), another process. The gateway (or
baseline) is pinned to core 0; upstream and clients share core 1. Per system and K:

* gateway CPU per stream-second: the CPU time (user + system, psutil) of the server's whole
  process tree (the process and its children, the workers with ``--workers N``) over the
  window when all K streams run, / (K x window);
* added latency p50 / p99: client receive time of ``audio_chunk`` n minus the upstream's
  send time of PCM frame n of the same session (``time.monotonic()``, one clock for all
  processes), over every frame;
* RSS per session: (RSS with K sessions streaming - RSS before the first) / K;
* real time: every session done, every frame delivered, and p99 under 20 ms.

Systems, measured in the same run, interleaved level by level:
  ours            ``python -m slng_fast serve --transport native``
  trio-websocket  the same gateway with ``--transport trio-websocket``
  websockets      bench/relay_websockets.py, what a user would write (asyncio
                  ``websockets`` + pybase64 + orjson; no auth, no limits: cheaper than a gateway)
  picows          bench/relay_picows.py, the same relay on picows's callbacks: the cheapest
                  relay Python can host, the honest upper reference

Then, per system, the largest real-time K: doubling from the largest fixed level that
passed, then bisecting (bounded in steps), each level streaming ``--seconds``.

``--workers N`` (N > 1) measures capacity that grows with the cores: ``ours`` only, run as
``serve --workers N`` (N processes on one port, SO_REUSEPORT, limits shared through a
``redis-server`` the bench starts on a free port). The server's tree (parent, workers and
that redis, whose CPU is counted with the server's: a multi-worker gateway needs it) is
pinned to cores 0..N-1, each worker to its own core once it is up, and the load generator
to core N, the same one process as with one worker. On a machine without N + 1 cores the
load generator shares the last server core; the run says so, and its figures are then not
a scaling measurement. "server core" is then the tree's CPU over the window in cores (up
to N x 100 %), "core 0 all" the mean of the server cores.

    python bench/e2e.py            # K = 10, 100, 1000, then the search (about 10 minutes)
    python bench/e2e.py --quick    # K = 10 and 100 only
    python bench/e2e.py --levels 10,500 --no-search --systems ours,websockets
    python bench/e2e.py --workers 4 --levels 1000,2000   # 4 workers on cores 0-3, bench on 4
"""

from __future__ import annotations

import argparse
import atexit
import os
import pickle
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

HERE = Path(__file__).resolve().parent
PY = sys.executable
SERVER_CORE = 0
BENCH_CORE = 1
SERVER_CORES = [SERVER_CORE]  # --workers N: cores 0..N-1
GOAL_K = 1000
P99_LIMIT_MS = 20.0
# Issue 12 point 3's other figures, printed as goals after a one-worker run.
GOAL_VS_WEBSOCKETS = 2.0
GOAL_CPU_US = 600
GOAL_KB_PER_STREAM = 40.0
GOAL_P99_K100_MS = 2.0
SYSTEMS = ("ours", "trio-websocket", "websockets", "picows")
LABEL = {"ours": "ours (native)", "trio-websocket": "ours on trio-websocket",
         "websockets": "websockets relay", "picows": "picows relay"}

CHILDREN: list[subprocess.Popen] = []

# --gc-log: run the server under this, which prints each garbage collection over 2 ms.
GC_LOG = """
import gc, runpy, sys, time
import os
start = {}
counts = [0, 0, 0]
last = [0.0]
def cb(phase, info):
    if phase == "start":
        start[0] = time.perf_counter()
        counts[info["generation"]] += 1
        if time.monotonic() - last[0] > 1.0:
            last[0] = time.monotonic()
            print(f"GC counts {counts} at {last[0]:.3f}", file=sys.stderr, flush=True)
    elif (time.perf_counter() - start[0]) > 0.002:
        print(f"GC gen{info['generation']} {(time.perf_counter() - start[0]) * 1e3:.1f} ms "
              f"collected {info['collected']} at {time.monotonic():.3f} objects {len(gc.get_objects())}",
              file=sys.stderr, flush=True)
gc.callbacks.append(cb)
if os.environ.get("E2E_GC_OFF"):  # --gc-off: is the tail the collector's?
    gc.disable()
sys.argv = sys.argv[1:]
if sys.argv[0] == "-m":
    sys.argv = sys.argv[1:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
else:
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


def kill_all() -> None:
    for proc in CHILDREN:
        if proc.poll() is None:
            try:
                proc.kill()
            except OSError:
                pass
    for proc in CHILDREN:
        try:
            proc.wait(timeout=5)
        except Exception:
            pass
    CHILDREN.clear()


def on_signal(signum, frame) -> None:
    kill_all()
    raise SystemExit(130)


class Proc:
    """A child process with its stdout read by a thread (lines into a queue)."""

    nice = 0
    rt = False
    url = ""  # a redis-server's, for --workers N

    def __init__(self, argv: list[str], *, cpu: int | list[int], log: Path,
                 stdin: bool = False, rt_priority: int = 0) -> None:
        self.log = log
        nice = Proc.nice
        rt = Proc.rt and rt_priority > 0
        cores = {cpu} if isinstance(cpu, int) else set(cpu)
        self.extra: list[psutil.Process] = []  # counted with this process (redis)

        def setup() -> None:
            os.sched_setaffinity(0, cores)
            if rt:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(rt_priority))
            elif nice:
                os.setpriority(os.PRIO_PROCESS, 0, nice)

        self.stderr = open(log, "wb")
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=self.stderr,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, text=True, bufsize=1,
            preexec_fn=setup, cwd=HERE.parent)
        CHILDREN.append(self.proc)
        self.ps = psutil.Process(self.proc.pid)
        self.tree = [self.ps]  # fixed by take_tree() once the server is up
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self.proc.args[1]}: no {prefix!r} within {timeout:.0f} s; "
                                   f"stderr tail: {self.tail()}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"{self.proc.args[1]} exited ({self.proc.wait()}) before "
                                   f"{prefix!r}; stderr tail: {self.tail()}")
            if prefix in line:
                return line

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def take_tree(self) -> list[psutil.Process]:
        """Fix the processes counted from now on: this one, its descendants as they are
        (the workers), and ``extra``; the same set at both ends of a window."""
        self.tree = [self.ps, *self.ps.children(recursive=True), *self.extra]
        return self.tree

    def _each(self, what) -> float:
        total = 0.0
        for proc in self.tree:
            try:
                total += what(proc)
            except psutil.NoSuchProcess:
                pass
        return total

    def cpu(self) -> float:
        return self._each(lambda p: sum(p.cpu_times()[:2]))  # user + system, the tree

    def rss(self) -> int:
        return int(self._each(lambda p: p.memory_info().rss))

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-600:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        if self.proc in CHILDREN:
            CHILDREN.remove(self.proc)


@dataclass
class Level:
    system: str
    k: int
    connected: int = 0
    finished: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    cpu_us_per_stream_s: float = float("nan")
    server_cpu_frac: float = float("nan")  # of one core, over the window
    bench_cpu_frac: float = float("nan")   # upstream + clients, of core 1
    core1_busy: float = float("nan")       # core 1 as a whole (other load included)
    core0_busy: float = float("nan")       # core 0 as a whole (server + other load)
    upstream_late_ms: float = float("nan")
    rss_per_session_kib: float = float("nan")
    # p99 by when the frame was sent: the first and last PHASE_S seconds (every session
    # starting, every session ending, K of them within the ramp) and the steady rest.
    phase_p99_ms: tuple[float, float, float] = (float("nan"),) * 3
    window_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def realtime(self) -> bool:
        return (self.connected == self.k and self.finished == self.k and not self.errors
                and self.frames_received == self.frames_sent and self.frames_sent > 0
                and self.p99_ms < P99_LIMIT_MS)

    @property
    def bench_saturated(self) -> bool:
        # The bench's own share near a full core; or the core full of other load while
        # the bench is not SCHED_FIFO (then that load delays its timestamps).
        return self.bench_cpu_frac > 0.85 or (self.core1_busy > 0.9 and not Proc.rt)

    def row(self) -> str:
        lost = self.frames_sent - self.frames_received
        flags = ("real time" if self.realtime else "NOT real time") + (
            "; CORE 1 SATURATED" if self.bench_saturated else "")
        return (f"| {LABEL[self.system]} | {self.k:,} | {self.cpu_us_per_stream_s:,.0f} | "
                f"{self.server_cpu_frac * 100:.0f} % | {self.p50_ms:.2f} | {self.p99_ms:.2f} | "
                f"{self.max_ms:.1f} | {self.rss_per_session_kib:,.1f} | {lost:,} | "
                f"{self.core0_busy * 100:.0f} % | "
                f"{self.bench_cpu_frac * 100:.0f} % / {self.core1_busy * 100:.0f} % | {flags} |")


HEADER = ("| system | K | server CPU us / stream-s | server core | p50 ms | p99 ms | max ms | "
          "RSS KiB / session | frames lost | core 0 all | core 1 (bench / all) | verdict |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="slng-e2e-"))
        self.data_dir = self.tmp / "data"
        self.data_dir.mkdir()
        self.key = self._make_key()
        self.run_no = 0

    def _make_key(self) -> str:
        out = subprocess.run([PY, "-m", "slng_fast", "keys", "--data-dir", str(self.data_dir),
                              "create", "--tier", "enterprise", "--name", "e2e"], capture_output=True, text=True,
                             check=True, cwd=HERE.parent)
        return out.stdout.strip().splitlines()[-1]

    def _config(self, upstream_port: int) -> Path:
        path = self.tmp / "gateway.toml"
        path.write_text(
            "[gateway]\nengines = []\n\n"
            "[tiers.enterprise]\nmax_connections = 100000\nmessages_per_minute = 1000000\n"
            "max_duration_s = 100000\n\n"
            f'[providers.orpheus]\nurl = "ws://127.0.0.1:{upstream_port}/"\n')
        return path

    def start_redis(self) -> Proc:
        """A throwaway redis-server for ``--workers N`` (their shared limits)."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        redis = Proc(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                      "--appendonly", "no", "--loglevel", "warning"],
                     cpu=SERVER_CORES, log=self.tmp / f"{self.run_no:02d}-redis.log")
        redis.url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return redis
            except OSError:
                if time.monotonic() > deadline or redis.proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start: {redis.tail()}") from None
                time.sleep(0.05)

    def start_server(self, system: str, upstream_port: int) -> tuple[Proc, int, list[Proc]]:
        """The server, its port, and the helpers to stop after it (redis)."""
        log = self.tmp / f"{self.run_no:02d}-{system}-server.log"
        workers = self.args.workers
        helpers: list[Proc] = []
        if system in ("websockets", "picows"):
            argv = [PY, str(HERE / f"relay_{system}.py"), "--upstream",
                    f"ws://127.0.0.1:{upstream_port}/"]
        else:
            argv = [PY, "-m", "slng_fast", "serve", "--port", "0", "--data-dir",
                    str(self.data_dir), "--config", str(self._config(upstream_port)),
                    "--transport", "native" if system == "ours" else "trio-websocket"]
            if workers > 1:
                helpers.append(self.start_redis())
                argv += ["--workers", str(workers), "--redis", helpers[0].url]
        if self.args.gc_log:  # diagnosis: time every collection of the server's GC
            argv = [PY, "-c", GC_LOG, *argv[1:]]
        server = Proc(argv, cpu=SERVER_CORES, log=log,
                      rt_priority=5 if self.args.server_rt else 0)
        server.extra = [h.ps for h in helpers]
        try:
            line = server.expect("listening on ws://", 60)
        except RuntimeError:
            server.stop()
            for helper in helpers:
                helper.stop()
            raise
        port = int(re.search(r"ws://[^:]+:(\d+)", line).group(1))
        workers_up = [p for p in server.take_tree() if p not in (server.ps, *server.extra)]
        for core, proc in zip(SERVER_CORES, workers_up):  # one worker per core
            try:
                proc.cpu_affinity([core])
            except psutil.NoSuchProcess:
                pass
        return server, port, helpers

    def run_level(self, system: str, k: int) -> Level:
        args = self.args
        self.run_no += 1
        level = Level(system, k)
        tag = f"{self.run_no:02d}-{system}-{k}"
        upstream = Proc([PY, str(HERE / "e2e_upstream.py"), "--seconds", str(args.seconds)],
                        cpu=BENCH_CORE, log=self.tmp / f"{tag}-upstream.log", stdin=True,
                        rt_priority=10)
        procs = [upstream]
        try:
            uport = int(upstream.expect("port ", 30).split()[1])
            server, port, helpers = self.start_server(system, uport)
            procs += [*helpers, server]  # stopped in reverse: the server before redis
            time.sleep(1.0)  # let startup settle before the baseline RSS
            rss0 = server.rss()
            n_clients = max(1, min(args.client_procs, k))
            clients = []
            first = 1
            for i in range(n_clients):
                count = k // n_clients + (1 if i < k % n_clients else 0)
                out = self.tmp / f"{tag}-clients{i}.pkl"
                clients.append((Proc(
                    [PY, str(HERE / "e2e_clients.py"), "--port", str(port), "--key", self.key,
                     "--k", str(count), "--first", str(first), "--total", str(k),
                     "--ramp", str(args.ramp), "--seconds", str(args.seconds),
                     "--out", str(out)],
                    cpu=BENCH_CORE, log=self.tmp / f"{tag}-clients{i}.log", stdin=True,
                    rt_priority=20), out))
                first += count
            procs += [c for c, _ in clients]
            for client, _ in clients:
                ok, failed = map(int, client.expect("connected", 60 + k / 50).split()[1:3])
                level.connected += ok
                if failed:
                    level.errors.append(f"{failed} sessions did not get ready")
            t0 = time.monotonic() + 0.3
            for client, _ in clients:
                client.tell(f"go {t0!r}")
            bench_procs = [upstream] + [c for c, _ in clients]
            # The window: every stream started (the last flush at t0 + ramp, plus slack)
            # until the first one ends (t0 + seconds).
            w0, w1 = t0 + args.ramp + 0.5, t0 + args.seconds - 0.3
            sleep_until(w0)
            spy = None
            if args.profile and shutil.which("py-spy"):
                spy = subprocess.Popen(
                    ["py-spy", "record", "--nonblocking", "--idle", "-r", "1000", "-f", "speedscope",
                     "-d", str(max(1, int(w1 - w0 - 1))), "-p", str(server.proc.pid),
                     "-o", str(self.tmp / f"{tag}-profile.json")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    preexec_fn=lambda: os.sched_setaffinity(0, {BENCH_CORE}))
                CHILDREN.append(spy)
            a_wall, a_srv = time.monotonic(), server.cpu()
            a_bench = sum(p.cpu() for p in bench_procs)
            a_cores = psutil.cpu_times(percpu=True)
            rss = rss0
            while time.monotonic() < w1 - 0.5:
                time.sleep(min(1.0, max(0.0, w1 - 0.5 - time.monotonic())))
                rss = max(rss, server.rss())
            sleep_until(w1)
            b_wall, b_srv = time.monotonic(), server.cpu()
            b_bench = sum(p.cpu() for p in bench_procs)
            b_cores = psutil.cpu_times(percpu=True)
            window = b_wall - a_wall
            if spy is not None:
                spy.wait(timeout=30)
                CHILDREN.remove(spy)
            level.window_s = window
            level.server_cpu_frac = (b_srv - a_srv) / window
            level.cpu_us_per_stream_s = (b_srv - a_srv) / (k * window) * 1e6
            level.bench_cpu_frac = (b_bench - a_bench) / window
            busy = lambda t: sum(t) - t.idle - getattr(t, "iowait", 0.0)  # noqa: E731
            share = lambda c: ((busy(b_cores[c]) - busy(a_cores[c]))  # noqa: E731
                               / (sum(b_cores[c]) - sum(a_cores[c])))
            level.core1_busy = share(BENCH_CORE)
            level.core0_busy = sum(share(c) for c in SERVER_CORES) / len(SERVER_CORES)
            level.rss_per_session_kib = (rss - rss0) / k / 1024

            recv: dict[int, np.ndarray] = {}
            for client, out in clients:
                client.expect("done", args.seconds + 60)
                data = pickle.loads(out.read_bytes())
                level.finished += data["finished"]
                level.errors += data["errors"][:5]
                if data["out_of_order"] or data["bad_size"]:
                    level.errors.append(f"{data['out_of_order']} chunks out of order, "
                                        f"{data['bad_size']} of a wrong size")
                recv.update({s: np.frombuffer(a, dtype=np.float64) for s, a in data["recv"].items()})
            upstream.tell(f"dump {self.tmp / (tag + '-upstream.pkl')}")
            upstream.expect("dumped", 30)
            up = pickle.loads((self.tmp / (tag + "-upstream.pkl")).read_bytes())
            level.upstream_late_ms = up["late"] * 1e3
            lat, when = [], []
            for session in range(1, k + 1):
                sent = np.frombuffer(up["sent"].get(session, b""), dtype=np.float64)
                got = recv.get(session, np.zeros(0))
                level.frames_sent += len(sent)
                n = min(len(sent), len(got))
                level.frames_received += n
                lat.append(got[:n] - sent[:n])
                when.append(sent[:n])
            if lat:
                all_lat = np.concatenate(lat) * 1e3
                if len(all_lat):
                    level.p50_ms, level.p99_ms = np.percentile(all_lat, [50, 99])
                    level.max_ms = float(all_lat.max())
                    level.phase_p99_ms = phase_p99(all_lat, np.concatenate(when))
            if level.frames_sent != k * round(args.seconds * 25):
                level.errors.append(f"the upstream sent {level.frames_sent:,} frames, "
                                    f"expected {k * round(args.seconds * 25):,}")
        except RuntimeError as exc:
            level.errors.append(str(exc))
        finally:
            for proc in reversed(procs):
                proc.stop()
        return level


PHASE_S = 1.5


def phase_p99(lat_ms: np.ndarray, sent: np.ndarray) -> tuple[float, float, float]:
    """p99 of the frames sent in the first PHASE_S seconds, the middle, the last."""
    t = sent - sent.min()
    parts = (t < PHASE_S, (t >= PHASE_S) & (t < t.max() - PHASE_S), t >= t.max() - PHASE_S)
    return tuple(float(np.percentile(lat_ms[m], 99)) if m.any() else float("nan")
                 for m in parts)  # type: ignore[return-value]


def setup_cores(workers: int) -> bool:
    """Pin the server to cores 0..workers-1 and the load generator to the next one, or
    to the last server core when there is none to spare; returns whether there was."""
    global BENCH_CORE
    if workers == 1:
        return True  # core 0 and core 1, as always
    cores = sorted(os.sched_getaffinity(0))
    SERVER_CORES[:] = cores[:workers]
    LABEL["ours"] = f"ours (native, {workers} workers)"
    spare = len(cores) > workers
    BENCH_CORE = cores[workers] if spare else SERVER_CORES[-1]
    return spare


def sleep_until(t: float) -> None:
    left = t - time.monotonic()
    if left > 0:
        time.sleep(left)


def search(bench: Bench, system: str, results: list[Level], cap: int, steps: int,
           say) -> int:
    """Largest real-time K: from the fixed levels, double until one fails, then bisect."""
    mine = {r.k: r for r in results if r.system == system}
    good = max((k for k, r in mine.items() if r.realtime), default=0)
    bad = min((k for k, r in mine.items() if not r.realtime and k > good), default=None)
    for _ in range(steps):
        if bad is None:
            k = min(good * 2, cap) if good else 10
            if k <= good:
                break
        else:
            if bad - good <= max(25, good // 8):
                break
            k = (good + bad) // 2
        level = bench.run_level(system, k)
        results.append(level)
        say(level)
        if level.realtime:
            good = k
        else:
            bad = k
    return good


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="K = 10 and 100 only, no search")
    parser.add_argument("--levels", default=None, help="comma-separated K (default 10,100,1000)")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--no-search", action="store_true")
    parser.add_argument("--seconds", type=float, default=15.0, help="stream length per level")
    parser.add_argument("--ramp", type=float, default=1.0, help="spread of the session starts (s)")
    parser.add_argument("--search-steps", type=int, default=4, help="levels per system in the search")
    parser.add_argument("--cap", type=int, default=8000, help="largest K tried")
    parser.add_argument("--client-procs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1,
                        help="N > 1: `serve --workers N` (ours only) on cores 0..N-1, each worker "
                             "on its own core, the load generator on core N (see the docstring)")
    parser.add_argument("--nice", type=int, default=-10 if os.geteuid() == 0 else 0,
                        help="priority of the bench's processes (default -10 as root, to shield "
                             "the figures from unrelated load on a shared machine)")
    parser.add_argument("--no-rt", dest="rt", action="store_false",
                        help="do not run upstream and clients (the measuring side) SCHED_FIFO "
                             "(default as root: their timestamps then do not wait for other load)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--server-rt", action="store_true",
                        help="run the server SCHED_FIFO too (diagnosis: shields it from other load "
                             "completely, but starves that load on core 0 while it is saturated)")
    parser.add_argument("--gc-log", action="store_true",
                        help="log the server's garbage collections over 2 ms (in its kept log)")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the server over each window (raw stacks in the kept directory)")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2 or os.cpu_count() < 2:
        raise SystemExit("needs two cores (the server on core 0, the bench on core 1)")
    if args.workers < 1:
        raise SystemExit("--workers must be at least 1")
    if args.workers > 1:
        if args.systems != ",".join(SYSTEMS) and args.systems != "ours":
            raise SystemExit("--workers N measures ours only (the others have no workers)")
        args.systems = "ours"
        if not shutil.which("redis-server"):
            raise SystemExit("--workers N needs redis-server (the workers share limits there)")
    spare = setup_cores(args.workers)
    levels = [int(x) for x in args.levels.split(",")] if args.levels else (
        [10, 100] if args.quick else [10, 100, 1000])
    systems = [s for s in args.systems.split(",") if s]
    search_on = not (args.quick or args.no_search)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    atexit.register(kill_all)
    Proc.nice = args.nice
    Proc.rt = args.rt and os.geteuid() == 0
    bench = Bench(args)
    started = time.monotonic()
    where = (f"core {SERVER_CORE}" if args.workers == 1 else
             f"{args.workers} workers on cores {','.join(map(str, SERVER_CORES))}")
    print(f"e2e: {args.seconds:g} s of 24 kHz PCM16 in 40 ms frames per session; server on "
          f"{where} (nice {args.nice}), upstream + clients on core {BENCH_CORE} "
          f"({'SCHED_FIFO' if Proc.rt else f'nice {args.nice}'}); load average "
          f"{os.getloadavg()[0]:.2f}; logs in {bench.tmp}", flush=True)
    if not spare:
        print(f"NOTE: {os.cpu_count()} cores: no core to spare for the load generator, which "
              f"shares core {BENCH_CORE} with a worker; these figures are not a scaling "
              "measurement", flush=True)
    print(HEADER, flush=True)

    def say(level: Level) -> None:
        print(level.row(), flush=True)
        start, steady, end = level.phase_p99_ms
        print(f"    p99 by phase: starts {start:.2f} ms, steady {steady:.2f} ms, "
              f"ends {end:.2f} ms (first / middle / last {PHASE_S:g} s of frames)", flush=True)
        for err in level.errors[:3]:
            print(f"    ! {err[:300]}", flush=True)

    results: list[Level] = []
    try:
        for k in levels:
            for system in systems:
                level = bench.run_level(system, k)
                results.append(level)
                say(level)
        best: dict[str, int] = {}
        for system in systems:
            if search_on:
                best[system] = search(bench, system, results, args.cap, args.search_steps, say)
            else:
                best[system] = max((r.k for r in results if r.system == system and r.realtime),
                                   default=0)
    finally:
        kill_all()
        if not args.keep:
            shutil.rmtree(bench.tmp, ignore_errors=True)
    elapsed = time.monotonic() - started
    report(results, best, systems, search_on, args, elapsed)


def report(results: list[Level], best: dict[str, int], systems: list[str], searched: bool,
           args: argparse.Namespace, elapsed: float) -> None:
    print()
    print(f"All levels, sorted ({elapsed / 60:.1f} min):")
    print(HEADER)
    for r in sorted(results, key=lambda r: (systems.index(r.system), r.k)):
        print(r.row())
    print()
    what = "largest real-time K found" if searched else "largest real-time K among the levels run"
    print(f"Capacity ({what}; real time = all frames delivered, p99 < {P99_LIMIT_MS:g} ms):")
    for system in systems:
        mine = [r for r in results if r.system == system]
        bad = min((r.k for r in mine if not r.realtime and r.k > best[system]), default=None)
        bound = f" (fails at {bad:,})" if bad else " (no failing level found)"
        sat = any(r.bench_saturated and r.k == bad for r in mine)
        note = ("; core 1 (upstream + clients) saturated at the failing level: a bench limit"
                if sat else "")
        print(f"  {LABEL[system]:24s} {best[system]:>6,}{bound}{note}")

    if "ours" in systems and args.workers == 1:  # the goals are about one core
        print()
        print("Ours against the baselines, same run (ratio > 1: ours better):")
        print("| K | vs | CPU per stream-s | p99 latency | RSS per session |")
        print("|---|---|---|---|---|")
        by = {(r.system, r.k): r for r in results}
        for k in sorted({r.k for r in results if r.system == "ours"}):
            o = by.get(("ours", k))
            for base in systems:
                if base == "ours" or (base, k) not in by:
                    continue
                b = by[(base, k)]
                print(f"| {k:,} | {LABEL[base]} | {ratio(b.cpu_us_per_stream_s, o.cpu_us_per_stream_s)} | "
                      f"{ratio(b.p99_ms, o.p99_ms)} | "
                      f"{ratio(b.rss_per_session_kib, o.rss_per_session_kib)} |")
        for base in systems:
            if base != "ours":
                print(f"| capacity | {LABEL[base]} | {ratio(best['ours'], best[base])} "
                      f"({best['ours']:,} / {best[base]:,}) | | |")
        print()
        ours = best["ours"]
        goal1 = ours >= GOAL_K
        print(f"Goal 1, >= {GOAL_K:,} real-time streams on one core with p99 < {P99_LIMIT_MS:g} ms: "
              f"{'met' if goal1 else 'NOT met'} ({ours:,}).")
        if "websockets" in systems:
            ws = best["websockets"]
            r = ours / ws if ws else float("inf")
            print(f"Goal 2, >= {GOAL_VS_WEBSOCKETS:g}x the websockets relay's capacity: "
                  f"{'met' if r >= GOAL_VS_WEBSOCKETS else 'NOT met'} ({ours:,} / {ws:,} = {r:.2f}x"
                  f"{'' if searched else '; levels only, no search'}).")
        at_goal = by.get(("ours", GOAL_K))
        if at_goal is not None:
            cpu = at_goal.cpu_us_per_stream_s
            print(f"Goal 3, <= {GOAL_CPU_US:,} us of CPU per stream-second at K = {GOAL_K:,}: "
                  f"{'met' if cpu <= GOAL_CPU_US else 'NOT met'} ({cpu:,.0f} us).")
        live = [r.rss_per_session_kib for r in results if r.system == "ours" and r.k >= 100]
        if live:
            kb = max(live) * 1.024  # KiB -> kB
            print(f"Goal 4, <= {GOAL_KB_PER_STREAM:g} kB per live stream (RSS growth over K): "
                  f"{'met' if kb <= GOAL_KB_PER_STREAM else 'NOT met'} ({kb:.1f} kB, the largest "
                  f"at K >= 100; idle connections: bench/idle_connections.py).")
        small = by.get(("ours", 100))
        if small is not None:
            print(f"Goal 5, p99 added latency at K = 100 < {GOAL_P99_K100_MS:g} ms: "
                  f"{'met' if small.p99_ms < GOAL_P99_K100_MS else 'NOT met'} "
                  f"({small.p99_ms:.2f} ms).")


def ratio(base: float, ours: float) -> str:
    if not (base == base and ours == ours) or ours <= 0:
        return "n/a"
    return f"{base / ours:.2f}x"


if __name__ == "__main__":
    main()
