"""Authentication, every limit and close code of PROTOCOL.md sections 6 and 7, over real
sockets. Timers run on trio's autojump clock: no test waits for real minutes."""

from __future__ import annotations

import orjson
import pytest
import trio
import trio_websocket

from wsclient import auth, closed_code, connect, recv, recv_until, send


async def test_unknown_provider_is_404_with_the_known_ones(gw, nursery):
    with pytest.raises(trio_websocket.ConnectionRejected) as info:
        async with trio_websocket.open_websocket_url(
                gw.tts("nosuch"), extra_headers=auth(gw.keys["pro"])):
            pass
    assert info.value.status_code == 404
    body = orjson.loads(info.value.body)
    assert "espeak" in body["tts"] and "pocketsphinx" in body["stt"]


@pytest.mark.parametrize("key", [None, "slng_bogus_key"])
async def test_missing_or_unknown_key_is_auth_failed_4000(gw, nursery, key):
    ws = await connect(gw.tts(), key, nursery=nursery)
    event = await recv(ws)
    assert event["type"] == "error" and event["code"] == "auth_failed"
    assert event["retryable"] is False
    assert await closed_code(ws) == 4000


async def test_key_by_subprotocol_and_by_query(gw, nursery):
    ws = await trio_websocket.connect_websocket_url(
        nursery, gw.tts(), None, subprotocols=[f"bearer.{gw.keys['pro']}"])
    assert ws.subprotocol == f"bearer.{gw.keys['pro']}"
    await send(ws, type="ping")
    assert (await recv(ws))["type"] == "pong"
    await ws.aclose()
    ws = await connect(gw.tts(query=f"?api_key={gw.keys['pro']}"), None, nursery=nursery)
    await send(ws, type="ping")
    assert (await recv(ws))["type"] == "pong"
    await ws.aclose()


async def test_revoked_key_is_refused(gw, nursery):
    gw.store.revoke_key(gw.key_ids["enterprise"])
    ws = await connect(gw.tts(), gw.keys["enterprise"], nursery=nursery)
    assert (await recv(ws))["code"] == "auth_failed"
    assert await closed_code(ws) == 4000


async def test_concurrent_connections_per_tier_4001(gw, nursery):
    first = await connect(gw.tts(), gw.keys["free"], nursery=nursery)
    await send(first, type="ping")
    await recv(first)
    second = await connect(gw.tts(), gw.keys["free"], nursery=nursery)
    event = await recv(second)
    assert event["code"] == "too_many_connections" and event["retryable"] is True
    assert await closed_code(second) == 4001
    await first.aclose()
    for _ in range(100):  # the slot frees as soon as the gateway sees the close
        if gw.gateway.limits.connections(gw.key_ids["free"]) == 0:
            break
        await trio.sleep(0.01)
    third = await connect(gw.tts(), gw.keys["free"], nursery=nursery)
    await send(third, type="ping")
    assert (await recv(third))["type"] == "pong"
    await third.aclose()


async def test_messages_per_minute_rate_limited_not_processed(gw, nursery):
    ws = await connect(gw.tts(), gw.keys["free"], nursery=nursery)
    for _ in range(20):
        await send(ws, type="ping")
        assert (await recv(ws))["type"] == "pong"
    await send(ws, type="ping")
    event = await recv(ws)
    assert event["type"] == "error" and event["code"] == "rate_limited"
    assert 0 < event["retry_after_ms"] <= 3000 and event["retryable"] is True
    await ws.aclose()


async def test_binary_audio_frames_do_not_count_as_messages(gw, nursery):
    ws = await connect(gw.stt(), gw.keys["free"], nursery=nursery)
    await send(ws, type="start")
    await recv(ws)
    for _ in range(40):
        await ws.send_message(bytes(640))
    await send(ws, type="ping")
    event = await recv_until(ws, "pong")
    assert all(e["type"] != "error" for e in event)
    await ws.aclose()


async def test_oversize_audio_frame_4002(gw, nursery):
    ws = await connect(gw.stt(), gw.keys["free"], nursery=nursery)
    await send(ws, type="start")
    await recv(ws)
    await ws.send_message(bytes(16 * 1024 + 2))
    events = await recv_until(ws, "session_ended")
    assert events[-2]["code"] == "message_too_large"
    assert await closed_code(ws) == 4002


async def test_text_too_long_is_not_fatal(gw, nursery):
    ws = await connect(gw.tts(), gw.keys["free"], nursery=nursery)
    await send(ws, type="input_text", text="y" * 501)
    events = await recv_until(ws, "error")
    assert events[-1]["code"] == "text_too_long"
    await send(ws, type="ping")
    assert (await recv(ws))["type"] == "pong"
    await ws.aclose()


async def test_provider_without_upstream_is_provider_unavailable_1013(gw, nursery):
    ws = await connect(gw.tts("orpheus"), gw.keys["pro"], nursery=nursery)
    events = await recv_until(ws, "session_ended")
    assert events[0]["code"] == "provider_unavailable" and events[0]["retryable"] is True
    assert await closed_code(ws) == 1013


async def test_idle_timeout(gw, nursery, autojump_clock):
    ws = await connect(gw.tts(), gw.keys["pro"], nursery=nursery)
    await send(ws, type="ping")
    await recv(ws)
    start = trio.current_time()
    events = await recv_until(ws, "session_ended")
    assert events[-1]["reason"] == "idle_timeout"
    assert 299 <= trio.current_time() - start <= 302
    assert await closed_code(ws) == 1000


async def test_max_connection_duration(gw, nursery, autojump_clock):
    ws = await connect(gw.tts(), gw.keys["free"], nursery=nursery)
    # Timed from the first answer: the session starts after the handshake's store calls,
    # which run in threads (an autojump clock moves on while a thread works).
    await send(ws, type="ping")
    assert (await recv(ws))["type"] == "pong"
    start = trio.current_time()

    async def keep_busy():
        while True:
            await trio.sleep(100)
            await send(ws, type="ping")

    nursery.start_soon(keep_busy)
    while True:
        event = await recv(ws)
        if event["type"] == "session_ended":
            break
    assert event["reason"] == "max_duration"
    assert 299 <= trio.current_time() - start <= 302


async def test_heartbeat_ends_a_peer_that_never_answers_pings(gw, nursery, autojump_clock):
    """A raw client that completes the handshake and then never answers a ping. It is
    timed by the frames it reads (the session's end is written to the ledger in a
    thread afterwards, and an autojump clock moves on while a thread works)."""
    host, port = gw.url.removeprefix("ws://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(
        b"GET /v1/tts/espeak-websocket-stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer " + gw.keys["pro"].encode()
        + b"\r\n\r\n")
    while not gw.gateway.ledger.sessions:  # running (its store calls ran in threads)
        await trio.sleep(0.01)
    start = trio.current_time()
    received = b""
    async def more() -> bytes:
        data = await stream.receive_some(4096)
        assert data, f"closed without a close frame after {opcodes}"
        return data

    opcodes: list[tuple[int, float]] = []
    while b"\r\n\r\n" not in received:
        received += await more()
    received = received.split(b"\r\n\r\n", 1)[1]
    while not opcodes or opcodes[-1][0] != 0x8:  # server frames until its close frame
        while len(received) < 2:
            received += await more()
        size, head = received[1] & 0x7F, 2
        if size == 126:
            while len(received) < 4:
                received += await more()
            size, head = int.from_bytes(received[2:4], "big"), 4
        while len(received) < head + size:
            received += await more()
        opcodes.append((received[0] & 0x0F, trio.current_time() - start))
        received = received[head + size:]
    assert opcodes[0][0] == 0x9 and 29 <= opcodes[0][1] <= 31  # 30 s to the ping
    assert 59 <= opcodes[-1][1] <= 61  # 30 s for its pong
    await stream.aclose()


async def test_tier_numbers_from_the_config_are_enforced(nursery, tmp_path, engines):
    from dataclasses import replace

    from harness import make_gateway, start_gateway
    from slng_fast.config import DEFAULT_TIERS, Config

    tiers = {**DEFAULT_TIERS, "free": replace(DEFAULT_TIERS["free"], messages_per_minute=3,
                                              max_text_chars=10)}
    urls, info = engines
    gw = await start_gateway(nursery, make_gateway(tmp_path, urls, info,
                                                   config=Config(data_dir=tmp_path, tiers=tiers)))
    ws = await connect(gw.tts(), gw.keys["free"], nursery=nursery)
    await send(ws, type="input_text", text="x" * 11)
    events = await recv_until(ws, "error")
    assert events[-1]["code"] == "text_too_long"
    for _ in range(2):
        await send(ws, type="ping")
        assert (await recv(ws))["type"] == "pong"
    await send(ws, type="ping")
    assert (await recv(ws))["code"] == "rate_limited"
    await ws.aclose()


@pytest.mark.parametrize("provider", ["elevenlabs", "deepgram", "cartesia"])
async def test_cloud_provider_without_credentials_is_provider_unavailable_1013(gw, nursery,
                                                                              provider):
    """No key in the config file nor the environment: refused at once, not a hang."""
    ws = await connect(gw.tts(provider), gw.keys["pro"], nursery=nursery)
    events = await recv_until(ws, "session_ended")
    assert events[0]["code"] == "provider_unavailable" and events[0]["retryable"] is True
    assert "_API_KEY" in events[0]["message"]
    assert await closed_code(ws) == 1013


def test_provider_credentials_come_from_the_config_then_the_environment(tmp_path):
    from slng_fast.config import Config, ProviderConfig
    from slng_fast.providers.registry import ENDPOINTS, ProviderRegistry

    eleven = ENDPOINTS["elevenlabs"]
    env = {"ELEVENLABS_API_KEY": "from-env", "KYUTAI_URL": "ws://asr.example:8080"}
    assert ProviderRegistry(Config(data_dir=tmp_path), environ=env).upstream(eleven) == (
        "wss://api.elevenlabs.io", "from-env")
    configured = Config(data_dir=tmp_path, providers={
        "elevenlabs": ProviderConfig(url="ws://proxy.example", api_key="from-config")})
    assert ProviderRegistry(configured, environ=env).upstream(eleven) == (
        "ws://proxy.example", "from-config")
    assert ProviderRegistry(Config(data_dir=tmp_path), environ=env).upstream(
        ENDPOINTS["kyutai"]) == ("ws://asr.example:8080", None)
