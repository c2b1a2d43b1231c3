"""`GET /healthz` and `GET /metrics` over plain HTTP on the gateway's own port, and the
trio-websocket transport kept as the baseline behind the same interface."""

from __future__ import annotations

import re

import orjson
import pytest
import trio

from harness import make_gateway, start_gateway
from slng_fast.config import Config
from slng_fast.gateway.server import serve_gateway
from slng_fast.metrics import Metrics
from wsclient import closed_code, connect, recv, recv_until, send


async def http_get(url: str, path: str,
                   token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("ws://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
                          .encode())
    data = b""
    with trio.fail_after(10):
        while chunk := await stream.receive_some(65536):
            data += chunk
    await stream.aclose()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


async def test_healthz(gw):
    status, headers, body = await http_get(gw.url, "/healthz")
    assert status == 200 and headers["content-type"].startswith("application/json")
    health = orjson.loads(body)
    assert health["status"] == "ok" and set(health["engines"]) == {"espeak", "pocketsphinx"}
    status, _, _ = await http_get(gw.url, "/nosuch")
    assert status == 404


async def test_metrics_and_healthz_can_require_a_key(nursery, tmp_path, engines):
    urls, info = engines
    config = Config(data_dir=tmp_path, metrics_key="scrape-secret")
    gw = await start_gateway(nursery, make_gateway(tmp_path, urls, info, config=config))
    for token in (None, "wrong", gw.keys["enterprise"]):  # a gateway key is not the key
        status, _, body = await http_get(gw.url, "/metrics", token)
        assert status == 401 and orjson.loads(body)["error"] == "unauthorized"
    status, _, _ = await http_get(gw.url, "/metrics", "scrape-secret")
    assert status == 200
    status, _, _ = await http_get(gw.url, "/healthz")  # load balancers probe without one
    assert status == 200

    both = Config(data_dir=tmp_path / "2", metrics_key="scrape-secret", healthz_needs_key=True)
    gw2 = await start_gateway(nursery, make_gateway(tmp_path / "2", urls, info, config=both))
    assert (await http_get(gw2.url, "/healthz"))[0] == 401
    status, _, body = await http_get(gw2.url, "/healthz", "scrape-secret")
    assert status == 200 and orjson.loads(body)["status"] == "ok"


def sample(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())  # in rendered order
    pattern = re.escape(name + ("{" + wanted + "}" if wanted else "")) + r" (\S+)"
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


async def test_metrics_count_sessions_latency_audio_errors_and_refusals(gw, nursery):
    ws = await connect(gw.tts(), gw.keys["free"], nursery=nursery)
    await send(ws, type="init")
    await recv(ws)
    await ws.send_message('{"type":"nope"}')
    assert (await recv(ws))["code"] == "unknown_command"
    await send(ws, type="input_text", text="One two three.")
    await send(ws, type="flush")
    await recv_until(ws, "audio_end")
    refused = await connect(gw.tts(), gw.keys["free"], nursery=nursery)  # free: 1 connection
    assert await closed_code(refused) == 4001
    status, headers, body = await http_get(gw.url, "/metrics")
    text = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert sample(text, "slng_sessions_active", provider="espeak", tier="free") == 1
    assert sample(text, "slng_errors_total", code="unknown_command") == 1
    assert sample(text, "slng_refusals_total", limit="concurrent_connections") == 1
    assert sample(text, "slng_time_to_first_audio_seconds_count", provider="espeak") == 1
    assert sample(text, "slng_added_latency_seconds_count", provider="espeak") >= 1
    await ws.aclose()
    for _ in range(100):
        if gw.gateway.active == 0:
            break
        await trio.sleep(0.02)
    text = (await http_get(gw.url, "/metrics"))[2].decode()
    assert sample(text, "slng_sessions_active", provider="espeak", tier="free") == 0
    assert sample(text, "slng_audio_seconds_total", provider="espeak") > 0.5
    assert sample(text, "slng_characters_total", provider="espeak") == len("One two three.")
    assert "api_key" not in text and gw.keys["free"] not in text


async def test_metrics_count_living_tasks_and_they_come_back_after_a_session(gw, nursery):
    """`slng_tasks_living` is the loop's task count at the scrape: a session's tasks
    show in it while it is open, and are gone once it has ended."""
    async def living() -> float:
        text = (await http_get(gw.url, "/metrics"))[2].decode()
        assert "# TYPE slng_tasks_living gauge" in text
        match = re.search(r"^slng_tasks_living (\S+)$", text, re.MULTILINE)
        assert match is not None
        return float(match.group(1))

    before = await living()
    assert before > 0
    ws = await connect(gw.tts(), gw.keys["pro"], nursery=nursery)
    await send(ws, type="init")
    await recv(ws)
    during = await living()
    assert during > before
    await ws.aclose()
    with trio.fail_after(30):
        while gw.gateway.active or await living() != before:
            await trio.sleep(0.05)


def test_metrics_render_histograms_cumulatively():
    m = Metrics()
    for value in (0.0005, 0.003, 0.003, 7.0):
        m.observe("slng_added_latency_seconds", value, provider="p")
    text = m.render()
    assert sample(text, "slng_added_latency_seconds_bucket", provider="p", le="0.001") == 1
    assert sample(text, "slng_added_latency_seconds_bucket", provider="p", le="0.005") == 3
    assert sample(text, "slng_added_latency_seconds_bucket", provider="p", le="+Inf") == 4
    assert sample(text, "slng_added_latency_seconds_count", provider="p") == 4


@pytest.fixture
async def trio_gw(nursery, tmp_path, engines):
    urls, info = engines
    running = make_gateway(tmp_path, urls, info)
    port = await nursery.start(lambda task_status: serve_gateway(
        running.gateway, "127.0.0.1", 0, transport="trio-websocket", task_status=task_status))
    running.url = f"ws://127.0.0.1:{port}"
    return running


async def test_the_trio_websocket_transport_still_serves_sessions(trio_gw, nursery):
    ws = await connect(trio_gw.tts(), trio_gw.keys["pro"], nursery=nursery)
    await send(ws, type="init")
    await recv(ws)
    await send(ws, type="input_text", text="Hello.")
    await send(ws, type="flush")
    events = await recv_until(ws, "audio_end")
    assert any(e["type"] == "audio_chunk" for e in events)
    await ws.send_message("[1]")
    assert (await recv(ws))["code"] == "invalid_message"
    await send(ws, type="input_text", text="x" * 40_000)
    assert [e["type"] for e in await recv_until(ws, "session_ended")] == ["error",
                                                                           "session_ended"]
    assert await closed_code(ws) == 4002
