"""Soak: one real gateway (`slng-fast serve` with its eSpeak and PocketSphinx engines) opens
and closes many mixed sessions, and nothing it holds may grow with their number.

Sessions, picked at random (``--seed``) by weight, ``--concurrency`` at a time:

* ``tts_say``: init, text, flush, every chunk to ``audio_end``, close 1000.
* ``tts_stop``: a long utterance, ``stop`` after its first chunk, ``audio_end``, close.
* ``tts_clear``: text, ``clear``, flush (an empty ``audio_end``), a short utterance, close.
* ``tts_bad_input``: an unknown command, a JSON array, a binary frame, a second init (each a
  non-fatal error), a ping, close.
* ``stt_final``: start, half a second of audio as fast as it goes, ``finalize``, its
  ``final_transcript``, close.  ``stt_stop``: start, audio, ``stop`` (the gateway closes).
* ``too_large`` (a frame over the tier: 4002) and ``bad_utf8`` (1008): fatal errors.
* ``rst_mid_utterance``: TCP reset (SO_LINGER 0) after the first audio chunk, no close frame.
* ``fin_mid_stream``: STT audio, then the TCP connection is shut, no close frame.
* ``rst_before_init``: reset right after the handshake.
* ``limit_hit``: a free key (1 connection) opened twice: the second gets 4001; the first
  closes and the key connects again at once (its slot came back).
* ``auth_failed``: an unknown key (4000, no session).

The run is cut in ``--rounds`` rounds; after each, with no session open, it waits for the
``/metrics`` gauge of open sessions to read 0 and takes a quiet sample of the gateway's RSS
and descriptors (/proc), its engines' RSS and descriptors, and ``slng_tasks_living``. A sample
is also taken every ``--sample-s`` seconds under load (reported, not asserted).

It fails (exit 1) unless: every session saw what the contract says; after warm-up (the
first ``--warmup`` of rounds) every quiet sample's gateway RSS is within ``--rss-bound-mib``
of the warm-up sample and each engine's within the same bound, descriptors within
``--fd-slack`` and tasks within ``--task-slack``; each free key connects again at the end;
the ledger (SQLite in the data directory) has exactly one closed row per accepted session
with the expected reason (``client_closed`` for closes, stops and abrupt disconnects,
``error`` for fatal errors); no ERROR line or traceback is in the gateway's log; SIGTERM
stops it with exit 0.

    python bench/soak.py --sessions 20000 --concurrency 12 --seed 1
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import trio

from slng_fast import _native
from slng_fast.store import Store

CLI = [sys.executable, "-m", "slng_fast"]
SESSION_TIMEOUT_S = 120.0  # a session taking longer than this counts as hung
SETTLE_S = 1.0  # descriptor counts must hold still this long before a quiet sample

# Tiers for the soak: many sessions per key, so no messages-per-minute refusals; the
# free tier keeps its one connection (the limit the soak hits on purpose).
CONFIG = """\
[tiers.free]
messages_per_minute = 1000000
[tiers.enterprise]
messages_per_minute = 1000000
"""

KINDS: dict[str, tuple[int, str | None]] = {  # name -> (weight, expected ledger reason)
    "tts_say": (22, "client_closed"),
    "tts_stop": (9, "client_closed"),
    "tts_clear": (7, "client_closed"),
    "tts_bad_input": (7, "client_closed"),
    "stt_final": (14, "client_closed"),
    "stt_stop": (6, "client_closed"),
    "too_large": (4, "error"),
    "bad_utf8": (3, "error"),
    "rst_mid_utterance": (7, "client_closed"),
    "fin_mid_stream": (6, "client_closed"),
    "rst_before_init": (4, "client_closed"),
    "limit_hit": (8, "client_closed"),  # two rows (first and again); the refused one none
    "auth_failed": (3, None),
}

LONG_TEXT = ("This sentence is long on purpose, so that a stop arrives while the words are "
             "still being spoken, and the utterance ends interrupted, or a reset cuts it.")



def tagged(event: Any) -> tuple[Any, ...]:
    """The codec's event as a (kind, value...) tuple, the form this client reads."""
    match event:
        case _native.TextMessage(data):
            return ("text", data)
        case _native.BinaryMessage(data):
            return ("binary", data)
        case _native.InvalidTextMessage(data):
            return ("invalid_text", data)
        case _native.Ping(payload):
            return ("ping", payload)
        case _native.Pong(payload):
            return ("pong", payload)
        case _native.Close(code, reason):
            return ("close", code, reason)
        case _native.ProtocolViolation(code, reason):
            return ("protocol_error", code, reason)
    raise TypeError(f"unknown WebSocket event {event!r}")

class SessionFailed(Exception):
    """A session saw something the contract does not allow."""


class ProviderGaveUp(Exception):
    """The gateway gave up on its provider (an engine too slow to answer on a loaded
    machine): an outcome the contract allows, counted apart."""

    def __init__(self, client: Client, event: dict[str, Any]) -> None:
        super().__init__(event.get("message"))
        self.client = client


PROVIDER_ERRORS = ("provider_unavailable", "provider_error")


class Closed(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


# -- a lean client: trio sockets and the native core's framing ------------------------------
class Client:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = _native.WsConnection(client=True)
        self.pending: list[Any] = []
        self.closed_code: int | None = None
        self.ended_reason: str | None = None  # from the gateway's session_ended

    @classmethod
    async def open(cls, port: int, path: str, key: str) -> Client:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        nonce = base64.b64encode(os.urandom(16)).decode()
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {key}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            data = await stream.receive_some(65536)
            if not data:
                raise SessionFailed("EOF during the handshake")
            head += data
        head, _, rest = head.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            await stream.aclose()
            raise SessionFailed(f"handshake answered {status.decode(errors='replace')}")
        client = cls(stream)
        if rest:
            client.pending.extend(map(tagged, client.ws.receive_data(rest)))
        return client

    async def send(self, **fields: Any) -> None:
        await self.stream.send_all(self.ws.send_text(orjson.dumps(fields).decode()))

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(self.ws.send_text(text))

    async def send_binary(self, data: bytes) -> None:
        await self.stream.send_all(self.ws.send_binary(data))

    async def send_raw_text_frame(self, payload: bytes) -> None:
        """A masked text frame with any payload (invalid UTF-8 included)."""
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126
                                else bytes([0x80 | 126]) + struct.pack("!H", n))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        await self.stream.send_all(head + mask + masked)

    async def event(self) -> Any:
        """The next text, binary or close event (pings answered on the way)."""
        while True:
            while self.pending:
                ev = self.pending.pop(0)
                if ev[0] == "ping":
                    await self.stream.send_all(self.ws.send_pong(ev[1]))
                    continue
                if ev[0] in ("close", "protocol_error"):
                    self.closed_code = ev[1]
                    try:
                        await self.stream.send_all(self.ws.send_close(
                            ev[1] if ev[0] == "protocol_error" or ev[1] != 1005 else None))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                if ev[0] != "pong":
                    return ev
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                return ("eof",)
            self.pending.extend(map(tagged, self.ws.receive_data(data)))

    async def recv(self) -> dict[str, Any]:
        """The next JSON event; Closed(code) if the gateway closed instead."""
        while True:
            ev = await self.event()
            if ev[0] == "text":
                parsed: dict[str, Any] = orjson.loads(ev[1])
                if parsed["type"] == "session_ended":
                    self.ended_reason = parsed["reason"]
                elif parsed["type"] == "error" and parsed["code"] in PROVIDER_ERRORS:
                    raise ProviderGaveUp(self, parsed)
                return parsed
            if ev[0] == "close":
                raise Closed(ev[1])
            if ev[0] == "eof":
                raise Closed(1006)
            raise SessionFailed(f"unexpected {ev[0]} frame")

    async def recv_until(self, kind: str) -> list[dict[str, Any]]:
        seen = []
        while True:
            event = await self.recv()
            seen.append(event)
            if event["type"] == kind:
                return seen
            if event["type"] in ("error", "session_ended"):
                raise SessionFailed(f"waiting for {kind}: {event}")

    async def expect(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = await self.recv()
        if event["type"] != kind or any(event.get(k) != v for k, v in fields.items()):
            raise SessionFailed(f"expected {kind} {fields}, got {event}")
        return event

    async def closed_with(self) -> int:
        """Read until the gateway closes: its close code."""
        while True:
            try:
                await self.recv()
            except Closed as closed:
                await self.stream.aclose()
                return closed.code

    async def close(self) -> None:
        """Close handshake from our side: our close frame, theirs back, then the socket."""
        await self.stream.send_all(self.ws.send_close(1000))
        while self.closed_code is None:
            ev = await self.event()
            if ev[0] == "eof":
                break
        await self.stream.aclose()

    async def reset(self) -> None:
        """Vanish: TCP RST, no close frame."""
        self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                      struct.pack("ii", 1, 0))
        await self.stream.aclose()

    async def hang_up(self) -> None:
        """Vanish politely: TCP FIN, no close frame."""
        await self.stream.aclose()


def audio(seconds: float, rng: random.Random) -> bytes:
    """PCM16 at 16 kHz: a few tones with a little noise (something for the recogniser)."""
    n = int(16000 * seconds)
    f1, f2 = rng.uniform(150, 300), rng.uniform(600, 1200)
    return b"".join(struct.pack("<h", int(4000 * math.sin(2 * math.pi * f1 * i / 16000)
                                          + 2000 * math.sin(2 * math.pi * f2 * i / 16000)
                                          + rng.uniform(-300, 300)))
                    for i in range(n))


# -- the sessions ---------------------------------------------------------------------------
@dataclass
class Soak:
    port: int
    enterprise_keys: list[str]
    free_keys: list[str]
    rng: random.Random
    clip: bytes
    expected: dict[str, str] = field(default_factory=dict)  # context id -> ledger reason
    kinds: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    gave_up: Counter[str] = field(default_factory=Counter)  # provider errors, by kind
    done: int = 0

    def tts(self, context_id: str) -> str:
        return f"/v1/tts/espeak-websocket-stream?context_id={context_id}"

    def stt(self, context_id: str) -> str:
        return f"/v1/stt/pocketsphinx-websocket-stream?context_id={context_id}"

    async def run_one(self, n: int, kind: str, worker: int) -> None:
        key, free = self.enterprise_keys[worker], self.free_keys[worker]
        cid = f"soak-{n}"
        reason = KINDS[kind][1]
        try:
            with trio.fail_after(SESSION_TIMEOUT_S):
                try:
                    await getattr(self, kind)(cid, key, free)
                except ProviderGaveUp as gave_up:
                    reason = await self.after_provider_gave_up(gave_up.client)
                    self.gave_up[kind] += 1
        except (SessionFailed, Closed, ProviderGaveUp, OSError, trio.BrokenResourceError,
                trio.TooSlowError, _native.WsClosedError) as exc:
            self.failures.append(f"{cid} {kind}: {type(exc).__name__} {exc}")
        if reason is not None and kind != "limit_hit":
            self.expected[cid] = reason
        self.kinds[kind] += 1
        self.done += 1

    async def after_provider_gave_up(self, c: Client) -> str:
        """Fatal (STT: 1013): the gateway ends the session, and its ledger row says what
        `session_ended` said. Not fatal (TTS: the utterance ends interrupted): we close."""
        with trio.move_on_after(5):
            while c.closed_code is None and c.ended_reason is None:
                try:
                    await c.recv()
                except Closed:
                    break
        if c.ended_reason is not None:
            await c.closed_with()
            return c.ended_reason
        await c.close()
        return "client_closed"

    async def tts_say(self, cid: str, key: str, _free: str) -> None:
        c = await Client.open(self.port, self.tts(cid), key)
        await c.send(type="init")
        await c.expect("ready")
        await c.send(type="input_text", text=f"Session {cid[5:]} says hello.")
        await c.send(type="flush")
        seen = await c.recv_until("audio_end")
        if seen[-1]["interrupted"] or not any(e["type"] == "audio_chunk" for e in seen):
            raise SessionFailed(f"no audio: {seen[-1]}")
        await c.close()

    async def tts_stop(self, cid: str, key: str, _free: str) -> None:
        c = await Client.open(self.port, self.tts(cid), key)
        await c.send(type="init")
        await c.expect("ready")
        await c.send(type="input_text", text=LONG_TEXT)
        await c.send(type="flush")
        await c.expect("audio_chunk")
        await c.send(type="stop")
        await c.recv_until("audio_end")  # interrupted, unless it had all been sent already
        await c.close()

    async def tts_clear(self, cid: str, key: str, _free: str) -> None:
        c = await Client.open(self.port, self.tts(cid), key)
        await c.send(type="init")
        await c.expect("ready")
        await c.send(type="input_text", text="Never to be said.")
        await c.send(type="clear")
        await c.send(type="flush")
        await c.expect("audio_end", total_duration_ms=0)
        await c.send(type="input_text", text="Cleared.")
        await c.send(type="flush")
        await c.recv_until("audio_end")
        await c.close()

    async def tts_bad_input(self, cid: str, key: str, _free: str) -> None:
        c = await Client.open(self.port, self.tts(cid), key)
        await c.send(type="init")
        await c.expect("ready")
        await c.send(type="no_such_command")
        await c.expect("error", code="unknown_command")
        await c.send_text("[1, 2]")
        await c.expect("error", code="invalid_message")
        await c.send_binary(b"\x00" * 320)
        await c.expect("error", code="invalid_message")
        await c.send(type="init")
        await c.expect("error", code="already_initialized")
        await c.send(type="ping")
        await c.expect("pong")
        await c.close()

    async def _stt_started(self, cid: str, key: str) -> Client:
        c = await Client.open(self.port, self.stt(cid), key)
        await c.send(type="start", sample_rate=16000, encoding="pcm16")
        await c.expect("ready")
        for i in range(0, len(self.clip), 640):  # 20 ms frames, as fast as they go
            await c.send_binary(self.clip[i:i + 640])
        return c

    async def stt_final(self, cid: str, key: str, _free: str) -> None:
        c = await self._stt_started(cid, key)
        await c.send(type="finalize")
        await c.recv_until("final_transcript")
        await c.close()

    async def stt_stop(self, cid: str, key: str, _free: str) -> None:
        c = await self._stt_started(cid, key)
        await c.send(type="stop")
        while (event := await c.recv())["type"] == "transcript":
            pass
        if event["type"] != "session_ended" or event["reason"] != "client_closed":
            raise SessionFailed(f"stop answered {event}")
        if (code := await c.closed_with()) != 1000:
            raise SessionFailed(f"stop closed with {code}")

    async def too_large(self, cid: str, key: str, _free: str) -> None:
        c = await Client.open(self.port, self.tts(cid), key)
        await c.send(type="init")
        await c.expect("ready")
        try:  # over the enterprise tier's 128 KiB: refused from the frame header
            await c.send(type="input_text", text="x" * (130 * 1024))
        except trio.BrokenResourceError:
            pass
        await c.expect("error", code="message_too_large")
        await c.expect("session_ended", reason="error")
        if (code := await c.closed_with()) != 4002:
            raise SessionFailed(f"too large closed with {code}")

    async def bad_utf8(self, cid: str, key: str, _free: str) -> None:
        c = await Client.open(self.port, self.tts(cid), key)
        await c.send(type="init")
        await c.expect("ready")
        await c.send_raw_text_frame(b'{"type":"input_text","text":"\xff\xfe"}')
        await c.expect("error", code="invalid_message")
        await c.expect("session_ended", reason="error")
        if (code := await c.closed_with()) != 1008:
            raise SessionFailed(f"invalid UTF-8 closed with {code}")

    async def rst_mid_utterance(self, cid: str, key: str, _free: str) -> None:
        c = await Client.open(self.port, self.tts(cid), key)
        await c.send(type="init")
        await c.expect("ready")
        await c.send(type="input_text", text=LONG_TEXT)
        await c.send(type="flush")
        await c.expect("audio_chunk")
        await c.reset()

    async def fin_mid_stream(self, cid: str, key: str, _free: str) -> None:
        c = await self._stt_started(cid, key)
        await c.hang_up()

    async def rst_before_init(self, cid: str, key: str, _free: str) -> None:
        c = await Client.open(self.port, self.tts(cid), key)
        await c.reset()

    async def limit_hit(self, cid: str, _key: str, free: str) -> None:
        first = await Client.open(self.port, self.tts(cid), free)
        await first.send(type="init")
        await first.expect("ready")
        self.expected[cid] = "client_closed"
        second = await Client.open(self.port, self.tts(cid + "-refused"), free)
        await second.expect("error", code="too_many_connections")
        if (code := await second.closed_with()) != 4001:
            raise SessionFailed(f"over the limit closed with {code}")
        await first.close()
        again = await Client.open(self.port, self.tts(cid + "-again"), free)
        await again.send(type="init")
        await again.expect("ready")  # the slot came back at once
        self.expected[cid + "-again"] = "client_closed"
        await again.close()

    async def auth_failed(self, cid: str, _key: str, _free: str) -> None:
        c = await Client.open(self.port, self.tts(cid), "slng_nosuch_key")
        await c.expect("error", code="auth_failed")
        if (code := await c.closed_with()) != 4000:
            raise SessionFailed(f"unknown key closed with {code}")


# -- the gateway and what it holds ------------------------------------------------------------
class Gateway:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        (data_dir / "soak.toml").write_text(CONFIG)
        self.log = open(data_dir / "gateway.log", "w")
        env = {**os.environ, "SLNG_FAST_HOME": str(data_dir)}
        self.proc = subprocess.Popen(
            CLI + ["serve", "--port", "0", "--config", str(data_dir / "soak.toml"),
                   "--log-level", "warning"],
            stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit(f"serve exited: {(data_dir / 'gateway.log').read_text()}")
            if match := re.search(r"listening on ws://[^:]+:(\d+)", line):
                self.port = int(match.group(1))
                break
        else:
            raise SystemExit("serve did not say where it listens")
        # The rest of stdout is read (and dropped) so the gateway never blocks on it.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def engines(self) -> dict[str, int]:
        out = {}
        for proc in Path("/proc").iterdir():
            try:
                stat = (proc / "stat").read_text()
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except (OSError, ValueError):
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.proc.pid and b"slng_fast.engines" in cmdline:
                out[cmdline[cmdline.index(b"slng_fast.engines") + 1].decode()] = int(proc.name)
        return out


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def scrape(port: int) -> dict[str, float]:
    """/metrics: the open-sessions gauge (summed over labels) and the living tasks."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    with trio.fail_after(30):
        while chunk := await stream.receive_some(65536):
            data += chunk
    await stream.aclose()
    text = data.partition(b"\r\n\r\n")[2].decode()
    gauge = sum(float(m.group(1)) for m in
                re.finditer(r"^slng_sessions_active\{[^}]*\} (\S+)$", text, re.MULTILINE))
    tasks = re.search(r"^slng_tasks_living (\S+)$", text, re.MULTILINE)
    return {"gauge": gauge, "tasks": float(tasks.group(1)) if tasks else -1.0}


@dataclass
class Sample:
    t: float
    phase: str  # "load" or "quiet"
    done: int
    rss: float
    fds: int
    tasks: float
    gauge: float
    engines: dict[str, tuple[float, int]]  # name -> (rss MiB, fds)


async def take_sample(gw: Gateway, soak: Soak, started: float, phase: str) -> Sample:
    metrics = await scrape(gw.port)
    engines = {}
    for name, pid in sorted(gw.engines().items()):
        try:
            engines[name] = (rss_mib(pid), fds(pid))
        except OSError:
            pass
    return Sample(time.monotonic() - started, phase, soak.done, rss_mib(gw.proc.pid),
                  fds(gw.proc.pid), metrics["tasks"], metrics["gauge"], engines)


async def wait_quiet(gw: Gateway) -> float:
    """Wait for the open-sessions gauge to read 0 (30 s at most); the last reading."""
    gauge = -1.0
    with trio.move_on_after(30):
        while (gauge := (await scrape(gw.port))["gauge"]) != 0:
            await trio.sleep(0.1)
    return gauge


async def settle(gw: Gateway) -> None:
    """Sockets still closing (an upstream's close handshake after the session ended, TIME_WAIT
    aside) show as descriptors for a moment: wait until the counts hold still for two
    seconds (15 s at most)."""
    def counts() -> list[int]:
        out = [fds(gw.proc.pid)]
        for pid in gw.engines().values():
            try:
                out.append(fds(pid))
            except OSError:
                out.append(-1)
        return out

    with trio.move_on_after(15):
        last, still = counts(), 0
        while still < 2:
            await trio.sleep(SETTLE_S)
            now = counts()
            still = still + 1 if now == last else 0
            last = now


# -- the run --------------------------------------------------------------------------------
async def soak_main(args: argparse.Namespace, gw: Gateway, soak: Soak,
                    plan: list[str]) -> list[Sample]:
    samples: list[Sample] = []
    started = time.monotonic()
    rounds = args.rounds
    bounds = [round(len(plan) * r / rounds) for r in range(rounds + 1)]
    samples.append(await take_sample(gw, soak, started, "quiet"))
    print(sample_header(gw), flush=True)
    print(sample_row(samples[-1]), flush=True)

    async def sample_under_load(cancel: trio.CancelScope) -> None:
        with cancel:
            while True:
                await trio.sleep(args.sample_s)
                samples.append(await take_sample(gw, soak, started, "load"))
                print(sample_row(samples[-1]), flush=True)

    for r in range(rounds):
        numbers = iter(range(bounds[r], bounds[r + 1]))

        async def worker(w: int, numbers: Any = numbers) -> None:
            for n in numbers:
                await soak.run_one(n, plan[n], w)

        sampler = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample_under_load, sampler)
            async with trio.open_nursery() as workers:
                for w in range(args.concurrency):
                    workers.start_soon(worker, w)
            sampler.cancel()
        gauge = await wait_quiet(gw)
        if gauge != 0:
            soak.failures.append(f"round {r + 1}: the open-sessions gauge stayed at {gauge}")
        await settle(gw)
        samples.append(await take_sample(gw, soak, started, "quiet"))
        print(sample_row(samples[-1]), flush=True)
    return samples


async def slots_come_back(soak: Soak) -> list[str]:
    """Each free key (one connection) connects again once everything is over."""
    problems = []
    for i, free in enumerate(soak.free_keys):
        cid = f"soak-final-{i}"
        try:
            with trio.fail_after(30):
                c = await Client.open(soak.port, soak.tts(cid), free)
                await c.send(type="init")
                await c.expect("ready")
                await c.close()
            soak.expected[cid] = "client_closed"
        except (SessionFailed, Closed, OSError, trio.TooSlowError) as exc:
            problems.append(f"free key {i} did not connect again: {exc}")
    return problems


def sample_header(gw: Gateway) -> str:
    names = sorted(gw.engines())
    engine_cols = "".join(f" | {n} rss MiB | {n} fds" for n in names)
    return ("| t s | phase | sessions | rss MiB | fds | tasks | gauge" + engine_cols + " |\n|"
            + "---|" * (7 + 2 * len(names)))


def sample_row(s: Sample) -> str:
    engine_cols = "".join(f" | {rss:.1f} | {n}" for rss, n in s.engines.values())
    return (f"| {s.t:.0f} | {s.phase} | {s.done} | {s.rss:.1f} | {s.fds} | {s.tasks:.0f} | "
            f"{s.gauge:.0f}{engine_cols} |")


def check_flat(args: argparse.Namespace, samples: list[Sample]) -> tuple[list[str], str]:
    quiet = [s for s in samples if s.phase == "quiet"]
    base_index = max(1, math.ceil(args.warmup * args.rounds))
    base = quiet[base_index]
    later = quiet[base_index + 1:] or [base]
    problems = []
    worst_rss = max(s.rss for s in later) - base.rss
    worst_fds = max(s.fds for s in later) - base.fds
    worst_tasks = max(s.tasks for s in later) - base.tasks
    if worst_rss > args.rss_bound_mib:
        problems.append(f"gateway RSS grew {worst_rss:.1f} MiB after warm-up "
                        f"(bound {args.rss_bound_mib} MiB)")
    if worst_fds > args.fd_slack:
        problems.append(f"gateway descriptors grew by {worst_fds} (slack {args.fd_slack})")
    if worst_tasks > args.task_slack:
        problems.append(f"trio tasks grew by {worst_tasks:.0f} (slack {args.task_slack})")
    if quiet[-1].gauge != 0:
        problems.append(f"open-sessions gauge ended at {quiet[-1].gauge}")
    summary = (f"after warm-up (quiet sample {base_index}, {base.done} sessions): gateway RSS "
               f"{base.rss:.1f} MiB, worst growth {worst_rss:+.1f} MiB (bound "
               f"{args.rss_bound_mib}); fds {base.fds}, worst {worst_fds:+d} (slack "
               f"{args.fd_slack}); tasks {base.tasks:.0f}, worst {worst_tasks:+.0f} (slack "
               f"{args.task_slack})")
    for name, (base_rss, base_fds) in base.engines.items():
        seen = [s.engines[name] for s in later if name in s.engines]
        if not seen:
            problems.append(f"engine {name} was not found at the later samples")
            continue
        # An engine is judged at the last quiet sample: a leak accumulates and shows there,
        # while its allocator's drift with the decoders it loads and frees (PocketSphinx:
        # +-30 MiB from one quiet sample to the next) and a socket still closing come and go.
        worst = max(rss for rss, _ in seen) - base_rss
        grew = seen[-1][0] - base_rss
        fd_grew = seen[-1][1] - base_fds
        summary += (f"\n  engine {name}: RSS {base_rss:.1f} MiB, at the end {grew:+.1f} (worst "
                    f"{worst:+.1f}); fds {base_fds}, at the end {fd_grew:+d}")
        if grew > args.engine_rss_bound_mib:
            problems.append(f"engine {name} RSS grew {grew:.1f} MiB by the end (bound "
                            f"{args.engine_rss_bound_mib} MiB)")
        if fd_grew > args.fd_slack:
            problems.append(f"engine {name} descriptors grew by {fd_grew}")
    return problems, summary


def check_ledger(data_dir: Path, expected: dict[str, str]) -> tuple[list[str], Counter[str]]:
    store = Store(data_dir)
    rows = [r for r in store.usage_rows() if str(r["context_id"]).startswith("soak-")]
    store.close()
    problems = []
    by_context = Counter(str(r["context_id"]) for r in rows)
    doubles = [c for c, n in by_context.items() if n > 1]
    if doubles:
        problems.append(f"{len(doubles)} sessions have more than one row, e.g. {doubles[:3]}")
    missing = sorted(set(expected) - set(by_context))
    if missing:
        problems.append(f"{len(missing)} accepted sessions have no row, e.g. {missing[:3]}")
    extra = sorted(set(by_context) - set(expected))
    if extra:
        problems.append(f"{len(extra)} rows for sessions never accepted, e.g. {extra[:3]}")
    wrong = [(r["context_id"], r["reason"], expected.get(str(r["context_id"])))
             for r in rows if str(r["context_id"]) in expected
             and (r["ended_at"] is None or r["reason"] != expected[str(r["context_id"])])]
    if wrong:
        problems.append(f"{len(wrong)} rows with the wrong end (got, want), e.g. {wrong[:3]}")
    return problems, Counter(str(r["reason"]) for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10,
                        help="quiet samples are taken between rounds")
    parser.add_argument("--warmup", type=float, default=0.2,
                        help="fraction of the rounds before the baseline sample")
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--rss-bound-mib", type=float, default=10.0)
    parser.add_argument("--engine-rss-bound-mib", type=float, default=32.0)
    parser.add_argument("--fd-slack", type=int, default=4)
    parser.add_argument("--task-slack", type=int, default=2)
    parser.add_argument("--data-dir", help="keep the gateway's data here (default: temporary)")
    args = parser.parse_args(argv)
    if args.rounds < 3 or args.concurrency < 1 or args.concurrency > 50:
        parser.error("at least 3 rounds; concurrency 1-50 (the enterprise tier's connections)")

    with tempfile.TemporaryDirectory(prefix="slng-soak-") as tmp:
        data_dir = Path(args.data_dir) if args.data_dir else Path(tmp)
        data_dir.mkdir(parents=True, exist_ok=True)
        store = Store(data_dir)
        enterprise = [store.create_key("enterprise", f"soak-{w}")[1]
                      for w in range(args.concurrency)]
        free = [store.create_key("free", f"soak-free-{w}")[1] for w in range(args.concurrency)]
        store.close()
        rng = random.Random(args.seed)
        names = list(KINDS)
        plan = rng.choices(names, [KINDS[n][0] for n in names], k=args.sessions)
        gw = Gateway(data_dir)
        print(f"soak: {args.sessions} sessions, concurrency {args.concurrency}, seed "
              f"{args.seed}, gateway pid {gw.proc.pid} on port {gw.port}, engines "
              f"{gw.engines()}", flush=True)
        soak = Soak(gw.port, enterprise, free, rng, audio(0.5, rng))
        wall = time.monotonic()
        try:
            samples = trio.run(soak_main, args, gw, soak, plan)
            slot_problems = trio.run(slots_come_back, soak)
            wall = time.monotonic() - wall
            final_gauge = trio.run(wait_quiet, gw)
        finally:
            if gw.proc.poll() is None:
                gw.proc.send_signal(signal.SIGTERM)
            try:
                exit_code = gw.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                gw.proc.kill()
                exit_code = gw.proc.wait()
            gw.log.close()
        problems = list(soak.failures[:20])
        if len(soak.failures) > 20:
            problems.append(f"... and {len(soak.failures) - 20} more failed sessions")
        flat_problems, summary = check_flat(args, samples)
        problems += flat_problems + slot_problems
        if final_gauge != 0:
            problems.append(f"open-sessions gauge at the end: {final_gauge}")
        ledger_problems, reasons = check_ledger(data_dir, soak.expected)
        problems += ledger_problems
        log_text = (data_dir / "gateway.log").read_text()
        bad_lines = [line for line in log_text.splitlines() if "Traceback" in line
                     or re.search(r'"level": "(error|critical)"', line)]
        if bad_lines:
            problems.append(f"{len(bad_lines)} error lines in the gateway log, first: "
                            f"{bad_lines[0][:300]}")
        if exit_code != 0:
            problems.append(f"the gateway exited {exit_code} on SIGTERM")

        print(f"\nsessions by kind ({sum(soak.kinds.values())} in {wall:.0f} s, "
              f"{sum(soak.kinds.values()) / wall:.1f}/s):")
        for name in names:
            print(f"  {name:18} {soak.kinds[name]}")
        print(f"ledger rows by reason: {dict(reasons)} ({len(soak.expected)} expected)")
        print(f"failed sessions: {len(soak.failures)}")
        print(f"sessions whose provider the gateway gave up on (error, then as the contract "
              f"says): {sum(soak.gave_up.values())} {dict(soak.gave_up)}")
        print("\nquiet samples (no session open):")
        print(sample_header(gw))
        for s in samples:
            if s.phase == "quiet":
                print(sample_row(s))
        print("\n" + summary)
        if problems:
            print("\nSOAK FAILED:")
            for p in problems:
                print("  - " + p)
            return 1
        print("\nsoak passed")
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
