"""Graceful drain for rolling deploys: while draining, new sessions are refused (503),
/healthz says so, an utterance in flight finishes, then its session ends with
`server_shutdown`; `serve --drain-s` does it on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import orjson
import trio

from harness import listening_url
from wsclient import closed_code, connect, recv, recv_until, send

LONG = "This sentence is long enough to keep the engine busy for a little while. " * 4


async def test_draining_refuses_new_sessions_and_lets_an_utterance_finish(gw, nursery):
    busy = await connect(gw.tts(), gw.keys["pro"], nursery=nursery)
    await send(busy, type="init")
    await recv(busy)
    idle = await connect(gw.tts(), gw.keys["pro"], nursery=nursery)
    await send(idle, type="init")
    await recv(idle)
    await send(busy, type="input_text", text=LONG)
    await send(busy, type="flush")
    assert (await recv(busy))["type"] == "audio_chunk"  # the utterance is under way
    gw.gateway.draining.set()
    # the idle session ends at once
    events = await recv_until(idle, "session_ended")
    assert events[-1]["reason"] == "server_shutdown"
    assert await closed_code(idle) == 1001
    # a new session is refused
    stream = await trio.open_tcp_stream("127.0.0.1", int(gw.url.rsplit(":", 1)[1]))
    await stream.send_all(
        b"GET /v1/tts/espeak-websocket-stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer "
        + gw.keys["pro"].encode() + b"\r\n\r\n")
    answer = await stream.receive_some(4096)
    assert answer.startswith(b"HTTP/1.1 503 ") and b'"draining"' in answer
    await stream.aclose()
    # the busy one gets its whole utterance, then ends
    events = await recv_until(busy, "session_ended")
    types = [e["type"] for e in events]
    assert types[-2:] == ["audio_end", "session_ended"]
    assert events[-2]["interrupted"] is False and events[-1]["reason"] == "server_shutdown"
    assert await closed_code(busy) == 1001


def test_serve_drain_s_on_sigterm(tmp_path):
    env = {**os.environ, "SLNG_FAST_HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "slng_fast", "serve", "--port", "0",
                             "--drain-s", "20"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        url = listening_url(proc)
        key = (tmp_path / "dev-key").read_text().strip()

        async def main() -> tuple[list[dict], int, dict]:
            async with trio.open_nursery() as nursery:
                ws = await connect(f"{url}/v1/tts/espeak-websocket-stream", key,
                                   nursery=nursery)
                await send(ws, type="init")
                await recv(ws)
                await send(ws, type="input_text", text=LONG)
                await send(ws, type="flush")
                assert (await recv(ws))["type"] == "audio_chunk"
                proc.send_signal(signal.SIGTERM)
                health: dict = {}
                with trio.fail_after(10):  # /healthz says draining meanwhile
                    while health.get("status") != "draining":
                        health = await trio.to_thread.run_sync(healthz, url)
                        await trio.sleep(0.05)
                events = await recv_until(ws, "session_ended")
                return events, await closed_code(ws), health

        events, code, health = trio.run(main)
        assert [e["type"] for e in events][-2:] == ["audio_end", "session_ended"]
        assert events[-2]["interrupted"] is False
        assert events[-1]["reason"] == "server_shutdown" and code == 1001
        assert proc.wait(timeout=30) == 0  # and it exits once the session is done
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def healthz(url: str) -> dict:
    import http.client

    host, port = url.removeprefix("ws://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "/healthz")
        return orjson.loads(conn.getresponse().read())
    except OSError:
        return {}
    finally:
        conn.close()
