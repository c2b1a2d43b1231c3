"""Sessions that hold up when a client or an upstream misbehaves: slots come back the
moment a client is gone, deadlines hold whatever the queues are doing, a client that
floods pings but never reads is still dropped, and frames over the tier's size are
refused by the frame layer with the contract's error and close."""

from __future__ import annotations

import socket
from dataclasses import replace
from functools import partial

import orjson
import trio
import trio_websocket

from harness import make_gateway, start_gateway
from slng_fast.config import DEFAULT_TIERS, Config
from upstreams import (
    client_frame,
    deaf_tts_upstream,
    serve_raw_upstream,
    stalled_stt_upstream,
)
from wsclient import closed_code, connect, recv, recv_until, send

HANDSHAKE = (b"GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
             b"Authorization: Bearer %s\r\n\r\n")


async def raw_client(url: str, path: str, key: str, *, receive_buffer: int = 4096
                     ) -> trio.SocketStream:
    """A hand-made client (small receive buffer) past the handshake's answer."""
    host, port = url.removeprefix("ws://").split(":")
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    await sock.connect((host, int(port)))
    stream = trio.SocketStream(sock)
    await stream.send_all(HANDSHAKE % (path.encode(), key.encode()))
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive_some(1)
    assert b" 101 " in head.split(b"\r\n")[0], head
    return stream


async def read_frames(stream: trio.SocketStream, seconds: float) -> bytes:
    """Whatever the gateway sends within ``seconds`` (or until it closes)."""
    data = b""
    with trio.move_on_after(seconds):
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            data += chunk
    return data


def close_code_of(data: bytes) -> int | None:
    """The code of the first close frame in unmasked server bytes."""
    pos = 0
    while pos + 2 <= len(data):
        opcode, n = data[pos] & 0x0F, data[pos + 1] & 0x7F
        pos += 2
        if n == 126:
            n, pos = int.from_bytes(data[pos:pos + 2], "big"), pos + 2
        elif n == 127:
            n, pos = int.from_bytes(data[pos:pos + 8], "big"), pos + 8
        if opcode == 0x8:
            return int.from_bytes(data[pos:pos + 2], "big")
        pos += n
    return None


def text_events(data: bytes) -> list[dict]:
    """The JSON text frames in unmasked server bytes."""
    events, pos = [], 0
    while pos + 2 <= len(data):
        opcode, n = data[pos] & 0x0F, data[pos + 1] & 0x7F
        pos += 2
        if n == 126:
            n, pos = int.from_bytes(data[pos:pos + 2], "big"), pos + 2
        elif n == 127:
            n, pos = int.from_bytes(data[pos:pos + 8], "big"), pos + 8
        if opcode == 0x1 and pos + n <= len(data):
            events.append(orjson.loads(data[pos:pos + n]))
        pos += n
    return events


# ---- the slot comes back when the client's connection ends -------------------------

async def test_a_clean_close_frees_the_slot_for_an_immediate_reconnect(gw, nursery):
    """Free tier, one connection: a page reload right after a clean close is accepted,
    whatever the upstream's teardown is still doing."""
    for _ in range(3):
        ws = await connect(gw.tts(), gw.keys["free"], nursery=nursery)
        await send(ws, type="init")
        assert (await recv(ws))["type"] == "ready"
        await ws.aclose()  # the close handshake completes on the client's side
        again = await connect(gw.tts(), gw.keys["free"], nursery=nursery)
        await send(again, type="init")
        assert (await recv(again))["type"] == "ready"
        await again.aclose()


async def test_the_slot_is_free_before_an_upstream_that_never_answers_a_close_is_closed(
        nursery, tmp_path, engines):
    urls, info = engines
    upstream = await serve_raw_upstream(nursery, deaf_tts_upstream)
    gw = await start_gateway(nursery, make_gateway(tmp_path, {**urls, "espeak": upstream},
                                                   info))
    for _ in range(3):
        ws = await connect(gw.tts(), gw.keys["free"], nursery=nursery)
        await send(ws, type="init")
        assert (await recv(ws))["type"] == "ready"
        await ws.aclose()
        again = await connect(gw.tts(), gw.keys["free"], nursery=nursery)
        await send(again, type="init")
        assert (await recv(again))["type"] == "ready"
        await again.aclose()


async def test_a_client_gone_without_a_close_frees_the_slot_at_once(gw, nursery):
    stream = await raw_client(gw.url, "/v1/tts/espeak-websocket-stream", gw.keys["free"])
    await stream.send_all(client_frame(0x1, b'{"type":"init"}'))
    assert text_events(await read_frames(stream, 1.0))[0]["type"] == "ready"
    await stream.aclose()  # TCP gone, no close frame
    with trio.fail_after(5):
        while gw.gateway.limits.connections(gw.key_ids["free"]):
            await trio.sleep(0.01)


# ---- deadlines do not depend on the queues -----------------------------------------

def short_tiers(**changes: float) -> dict:
    return {name: replace(tier, **changes) for name, tier in DEFAULT_TIERS.items()}


async def test_a_stalled_upstream_cannot_outlive_the_maximum_duration(nursery, tmp_path,
                                                                       engines):
    """Audio faster than an upstream that never reads: the client is slowed (its socket is
    no longer read), the session still ends at its maximum duration, and the slot is free
    at once after."""
    urls, info = engines
    upstream = await serve_raw_upstream(nursery, stalled_stt_upstream, receive_buffer=4096)
    config = Config(data_dir=tmp_path, tiers=short_tiers(max_duration_s=2.0))
    gw = await start_gateway(nursery, make_gateway(
        tmp_path, {**urls, "pocketsphinx": upstream}, info, config=config))
    ws = await connect(gw.stt(), gw.keys["free"], nursery=nursery)
    await send(ws, type="start", sample_rate=16000, encoding="pcm16")
    assert (await recv(ws))["type"] == "ready"
    frame = bytes(640)  # 20 ms

    async def flood() -> None:
        try:
            while True:
                await ws.send_message(frame)
        except trio_websocket.ConnectionClosed:
            pass

    nursery.start_soon(flood)
    with trio.fail_after(8):  # max duration 2 s
        events = await recv_until(ws, "session_ended")
    assert events[-1]["reason"] == "max_duration"
    assert not [e for e in events if e["type"] == "error"], events
    with trio.fail_after(3):
        while gw.gateway.limits.connections(gw.key_ids["free"]):
            await trio.sleep(0.01)
    with trio.fail_after(5):
        while not gw.store.usage_rows()[0]["reason"]:
            await trio.sleep(0.05)
    assert [r["reason"] for r in gw.store.usage_rows()] == ["max_duration"]


async def test_a_slow_upstream_slows_the_client_instead_of_ending_the_session(
        nursery, tmp_path, engines):
    """More audio than the upstream's queue holds, sent at once to an upstream that reads
    slowly: no error, every byte arrives upstream, in order, and finalize is answered."""
    urls, info = engines
    received: list[bytes] = []

    async def slow_upstream(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.get_message()  # start
        await ws.send_message('{"type":"ready","sample_rate":16000}')
        while True:
            message = await ws.get_message()
            if isinstance(message, bytes):
                received.append(message)
                if len(received) % 100 == 0:
                    await trio.sleep(0.05)
            elif orjson.loads(message).get("type") == "finalize":
                total = sum(len(m) for m in received)
                await ws.send_message(orjson.dumps({
                    "type": "final_transcript", "text": f"{total} bytes",
                    "audio_duration_seconds": total / 32000}).decode())

    server = await nursery.start(trio_websocket.serve_websocket, slow_upstream, "127.0.0.1", 0,
                                 None)
    gw = await start_gateway(nursery, make_gateway(
        tmp_path, {**urls, "pocketsphinx": f"ws://127.0.0.1:{server.port}/"}, info))
    ws = await connect(gw.stt(), gw.keys["pro"], nursery=nursery)
    await send(ws, type="start", sample_rate=16000, encoding="pcm16")
    assert (await recv(ws))["type"] == "ready"
    frames = [i.to_bytes(2, "little") * 320 for i in range(3000)]  # 60 s of audio, 20 ms each
    with trio.fail_after(60):
        for frame in frames:
            await ws.send_message(frame)
        await send(ws, type="finalize")
        events = await recv_until(ws, "final_transcript")
    assert not [e for e in events if e["type"] == "error"], events
    assert events[-1]["text"] == f"{640 * 3000} bytes"
    assert b"".join(received) == b"".join(frames)
    await ws.aclose()


# ---- a ping flood does not keep a client that reads nothing alive ----------------------

async def test_a_client_flooding_pings_and_reading_nothing_is_dropped(nursery, tmp_path,
                                                                      engines):
    urls, info = engines
    config = Config(data_dir=tmp_path, slow_client_timeout_s=2.0)
    gw = await start_gateway(nursery, make_gateway(tmp_path, urls, info, config=config))
    stream = await raw_client(gw.url, "/v1/tts/espeak-websocket-stream", gw.keys["enterprise"])
    text = ("This sentence is long enough to take a while to say out loud. " * 150)[:9000]
    for message in ({"type": "init", "sample_rate_hz": 48000},
                    {"type": "input_text", "text": text}, {"type": "flush"}):
        await stream.send_all(client_frame(0x1, orjson.dumps(message)))
    ping = client_frame(0x9, b"p" * 125)

    async def flood() -> None:
        try:
            while True:
                await stream.send_all(ping * 16)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    nursery.start_soon(flood)
    with trio.fail_after(15):  # dropped as a slow client after about 2 s, not never
        while not [r for r in gw.store.usage_rows() if r["reason"] == "slow_client"]:
            await trio.sleep(0.1)
    with trio.fail_after(3):
        while gw.gateway.limits.connections(gw.key_ids["enterprise"]):
            await trio.sleep(0.01)
    await stream.aclose()


# ---- frames over the tier's size --------------------------------------------------------

async def test_a_frame_over_the_tier_size_is_refused_from_its_header(gw, nursery):
    """Free tier (16 KB): a frame announcing 1 MiB is refused as soon as its header is
    read (nothing of it is buffered), with the contract's error and close."""
    stream = await raw_client(gw.url, "/v1/tts/espeak-websocket-stream", gw.keys["free"])
    await stream.send_all(client_frame(0x1, b'{"type":"init"}'))
    await stream.send_all(client_frame(0x2, b"\x00" * 1000, declared=1 << 20))
    data = await read_frames(stream, 5.0)
    events = text_events(data)
    assert [e["type"] for e in events][-2:] == ["error", "session_ended"], events
    assert events[-2]["code"] == "message_too_large"
    assert close_code_of(data) == 4002
    await stream.aclose()


async def test_a_frame_over_every_limit_gets_message_too_large_not_1009(gw, nursery):
    stream = await raw_client(gw.url, "/v1/tts/espeak-websocket-stream", gw.keys["enterprise"])
    await stream.send_all(client_frame(0x1, b'{"type":"init"}'))
    await stream.send_all(client_frame(0x1, b"{", declared=5 << 20))
    data = await read_frames(stream, 5.0)
    events = text_events(data)
    assert events[-2]["code"] == "message_too_large", events
    assert close_code_of(data) == 4002
    await stream.aclose()


async def test_a_fragmented_message_over_the_tier_size_is_refused(gw, nursery):
    ws = await connect(gw.tts(), gw.keys["free"], nursery=nursery)
    await send(ws, type="init")
    await recv(ws)
    await ws.send_message("x" * 40_000)
    assert await closed_code(ws) == 4002


# ---- reaching a provider has one budget ---------------------------------------------------

async def test_a_provider_that_never_answers_the_handshake_is_given_up_on_in_one_budget(
        nursery, tmp_path, engines):
    """A provider that takes the TCP connection and never answers the upgrade: one attempt
    uses the whole `upstream_connect_timeout_s` budget (not one budget per retry), then the
    client gets provider_unavailable and 1013."""
    urls, info = engines
    attempts = []

    async def silent(stream: trio.SocketStream) -> None:
        attempts.append(stream)
        await trio.sleep_forever()

    listeners = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    config = Config(data_dir=tmp_path, upstream_connect_timeout_s=1.0)
    gw = await start_gateway(nursery, make_gateway(
        tmp_path, {**urls, "espeak": f"ws://127.0.0.1:{port}/"}, info, config=config))
    ws = await connect(gw.tts(), gw.keys["free"], nursery=nursery)
    await send(ws, type="init")
    with trio.fail_after(30):
        events = await recv_until(ws, "error")
        assert events[-1]["code"] == "provider_unavailable"
        assert await closed_code(ws) == 1013
    assert len(attempts) == 1


async def test_a_burst_faster_than_the_loop_is_relayed_once_the_session_caught_up(
        nursery, tmp_path, engines, monkeypatch):
    """An upstream far ahead of real time, and a session step made slower (as a loaded
    worker's is): the session asks for the relay after the first frame while the rest of
    the burst waits in the loop, so the bridge holds the upstream's reads until those are
    handled, then lends the stream. Without the hold the backlog kept every frame on the
    session's path. Every chunk arrives, whole and in order."""
    import base64
    import time

    from slng_fast.protocol.tts import TtsSession
    from upstreams import bursting_tts_upstream

    relayed: list[int] = []
    counted, receive = TtsSession.relayed, TtsSession.receive_upstream

    def counting(self, epoch, report, now) -> None:
        relayed.append(report.in_bytes)
        counted(self, epoch, report, now)

    def loaded(self, epoch, frame, now):
        time.sleep(0.002)
        return receive(self, epoch, frame, now)

    monkeypatch.setattr(TtsSession, "relayed", counting)
    monkeypatch.setattr(TtsSession, "receive_upstream", loaded)
    urls, info = engines
    frames = 300
    upstream = await serve_raw_upstream(nursery, bursting_tts_upstream(frames))
    gw = await start_gateway(nursery, make_gateway(tmp_path, {**urls, "espeak": upstream},
                                                   info))
    ws = await connect(gw.tts(), gw.keys["pro"], nursery=nursery)
    await send(ws, type="init", sample_rate=24000)
    assert (await recv(ws))["type"] == "ready"
    await send(ws, type="input_text", text="Hello there.")
    await send(ws, type="flush")
    with trio.fail_after(30):
        events = await recv_until(ws, "audio_end")
    chunks = [e for e in events if e["type"] == "audio_chunk"]
    assert [c["sequence"] for c in chunks] == list(range(len(chunks)))
    audio = b"".join(base64.b64decode(c["data"]) for c in chunks)
    want = b"".join(i.to_bytes(2, "little") * 960 for i in range(frames))
    assert audio == want
    assert sum(relayed) > len(want) // 2, "the data plane carried most of the burst"
    await ws.aclose()


async def test_a_relay_is_only_lent_while_the_session_still_asks_for_it(
        nursery, tmp_path, engines, monkeypatch):
    """A short burst ends (`flushed`) among the messages the loop works through while
    the upstream's reads are held: the session no longer wants the relay when the loop
    catches up, so nothing is lent (lending on that stale request relayed behind the
    session's back: after a shutdown's `session_ended`, audio still came)."""
    import time

    from slng_fast.gateway.native_transport import NativeWebSocketConnection
    from slng_fast.protocol.tts import TtsSession
    from upstreams import bursting_tts_upstream

    sessions: list[TtsSession] = []
    receive, start_relay = TtsSession.receive_upstream, NativeWebSocketConnection.start_relay
    wanted: list[bool] = []

    def loaded(self, epoch, frame, now):
        sessions.append(self)
        time.sleep(0.002)
        return receive(self, epoch, frame, now)

    def checked(self, relay):
        started = start_relay(self, relay)
        if started:
            wanted.append(sessions[-1].relaying)
        return started

    monkeypatch.setattr(TtsSession, "receive_upstream", loaded)
    monkeypatch.setattr(NativeWebSocketConnection, "start_relay", checked)
    urls, info = engines
    upstream = await serve_raw_upstream(nursery, bursting_tts_upstream(10))
    gw = await start_gateway(nursery, make_gateway(tmp_path, {**urls, "espeak": upstream},
                                                   info))
    ws = await connect(gw.tts(), gw.keys["pro"], nursery=nursery)
    await send(ws, type="init", sample_rate=24000)
    assert (await recv(ws))["type"] == "ready"
    for _ in range(3):
        await send(ws, type="input_text", text="Hello there.")
        await send(ws, type="flush")
        with trio.fail_after(30):
            events = await recv_until(ws, "audio_end")
        assert sum(e["type"] == "audio_chunk" for e in events) == 10
    assert all(wanted), wanted  # every relay lent was one the session stood by
    await ws.aclose()
