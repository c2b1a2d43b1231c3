"""A client that reads nothing: the gateway stops reading that session's upstream instead of
buffering, drops the client after `slow_client_timeout_s`, writes the ledger, and the other
sessions on the same gateway go on answering meanwhile."""

from __future__ import annotations

import socket

import trio

from harness import make_gateway, start_gateway
from slng_fast.config import Config
from wsclient import connect, recv, recv_until, send


async def stalled_client(url: str, key: str) -> trio.SocketStream:
    """A hand-made client with a tiny receive buffer that asks for a lot of speech and
    then never reads."""
    host, port = url.removeprefix("ws://").split(":")
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect((host, int(port)))
    stream = trio.SocketStream(sock)
    await stream.send_all(
        b"GET /v1/tts/espeak-websocket-stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer " + key.encode() + b"\r\n\r\n")
    text = ("This sentence is long enough to take a while to say out loud. " * 150)[:9000]
    for message in ('{"type":"init","sample_rate_hz":48000}',
                    '{"type":"input_text","text":"%s"}' % text, '{"type":"flush"}'):
        payload = message.encode()
        mask = b"\x00\x00\x00\x00"
        header = bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big") if len(payload) > 125 \
            else bytes([0x81, 0x80 | len(payload)])
        await stream.send_all(header + mask + payload)
    return stream


async def test_a_client_that_reads_nothing_is_dropped_and_others_go_on(nursery, tmp_path,
                                                                        engines):
    urls, info = engines
    config = Config(data_dir=tmp_path, slow_client_timeout_s=2.0)
    gw = await start_gateway(nursery, make_gateway(tmp_path, urls, info, config=config))
    stalled = await stalled_client(gw.url, gw.keys["enterprise"])
    other = await connect(gw.tts(), gw.keys["pro"], nursery=nursery)
    await send(other, type="init")
    await recv(other)
    started = trio.current_time()
    answered = 0
    while trio.current_time() - started < 30:
        await send(other, type="ping")  # the other session keeps answering throughout
        assert (await recv(other))["type"] == "pong"
        answered += 1
        rows = [r for r in gw.store.usage_rows() if r["reason"] == "slow_client"]
        if rows:
            break
        await trio.sleep(0.5)
    else:
        raise AssertionError("the stalled client was never dropped")
    assert answered >= 3
    # what the stalled session took from the engine is bounded: far less than it asked for
    (row,) = rows
    assert row["key_id"] == gw.key_ids["enterprise"] and row["characters"] == 9000
    assert row["audio_ms"] < 300_000  # 9,000 characters are about 10 minutes of speech
    await send(other, type="input_text", text="Still here.")
    await send(other, type="flush")
    events = await recv_until(other, "audio_end")
    assert events[-1]["interrupted"] is False
    await other.aclose()
    await stalled.aclose()
