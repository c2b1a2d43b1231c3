"""Plain HTTP/1.1 on the gateway's port (h11, gateway/http.py), over raw sockets:
keep-alive, request bodies sent with a length or chunked, chunked answers, and the
limits on the head and the body (size and time)."""

from __future__ import annotations

import orjson
import pytest
import trio

from harness import Running, make_gateway, start_gateway
from slng_fast.config import Config


class Raw:
    """One client connection that reads answers as they come."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = b""

    async def read_until(self, marker: bytes) -> bytes:
        with trio.fail_after(20):
            while marker not in self.buf:
                data = await self.stream.receive_some(65536)
                if not data:
                    raise EOFError(self.buf)
                self.buf += data
        head, _, self.buf = self.buf.partition(marker)
        return head

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        """One answer: status, headers (lower case), body (a chunked one joined)."""
        head = await self.read_until(b"\r\n\r\n")
        status_line, *lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int(await self.read_until(b"\r\n"), 16)
                while len(self.buf) < size + 2:
                    self.buf += await self.stream.receive_some(65536)
                body, self.buf = body + self.buf[:size], self.buf[size + 2:]
                if size == 0:
                    break
        else:
            length = int(headers.get("content-length", "0"))
            while len(self.buf) < length:
                self.buf += await self.stream.receive_some(65536)
            body, self.buf = self.buf[:length], self.buf[length:]
        return int(status_line.split()[1]), headers, body

    async def closed(self) -> bool:
        with trio.fail_after(20):
            return await self.stream.receive_some(65536) == b""


async def open_raw(gw: Running) -> Raw:
    host, port = gw.url.removeprefix("ws://").split(":")
    return Raw(await trio.open_tcp_stream(host, int(port)))


def speech_request(key: str, body: bytes, *, chunked: bool = False) -> bytes:
    head = (f"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\n")
    if chunked:  # the body in two chunks
        half = len(body) // 2
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + b"".join(
            b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:half], body[half:])
        ) + b"0\r\n\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def test_keep_alive_bodies_and_chunked_answers(gw):
    raw = await open_raw(gw)
    await raw.stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                              b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # pipelined
    status, headers, body = await raw.answer()
    assert status == 200 and orjson.loads(body)["status"] == "ok"
    head = await raw.read_until(b"\r\n\r\n")  # HEAD: the head only
    assert head.startswith(b"HTTP/1.1 200 ") and raw.buf == b""
    body = orjson.dumps({"model": "espeak", "input": "Kept alive.", "voice": "en-us",
                         "response_format": "pcm"})
    for chunked in (False, True):  # still the same connection
        await raw.stream.send_all(speech_request(gw.keys["pro"], body, chunked=chunked))
        status, headers, audio = await raw.answer()
        assert status == 200 and headers["transfer-encoding"] == "chunked"
        assert headers["content-type"] == "audio/pcm" and len(audio) > 10_000
    await raw.stream.send_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = await raw.answer()
    assert status == 401 and orjson.loads(body)["error"]["code"] == "invalid_api_key"
    # A WebSocket upgrade after plain requests: it needs a connection of its own.
    await raw.stream.send_all(b"GET /v1/tts/espeak-websocket-stream HTTP/1.1\r\nHost: x\r\n"
                              b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              b"Sec-WebSocket-Version: 13\r\n\r\n")
    status, _, _ = await raw.answer()
    assert status == 400 and await raw.closed()


async def test_a_body_over_the_tiers_message_size_is_413(gw):
    raw = await open_raw(gw)
    body = orjson.dumps({"model": "espeak", "input": "x" * 20_000, "voice": "en-us"})
    await raw.stream.send_all(speech_request(gw.keys["free"], body))  # free: 16 KB
    status, headers, answer = await raw.answer()
    assert status == 413 and headers["connection"] == "close"
    assert orjson.loads(answer)["error"]["code"] == "request_too_large"
    assert await raw.closed()


async def test_a_malformed_chunked_body_is_400(gw):
    raw = await open_raw(gw)
    await raw.stream.send_all(f"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nAuthorization: "
                              f"Bearer {gw.keys['pro']}\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "zz\r\n".encode())
    status, _, body = await raw.answer()
    error = orjson.loads(body)["error"]
    assert status == 400 and error["code"] == "invalid_request_body"
    assert await raw.closed()


async def test_a_head_over_16_kb_is_431(gw):
    raw = await open_raw(gw)
    await raw.stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
                              + b"a" * 17_000 + b"\r\n\r\n")
    status, _, _ = await raw.answer()
    assert status == 431 and await raw.closed()


async def test_the_wrong_method_is_405(gw):
    raw = await open_raw(gw)
    await raw.stream.send_all(f"GET /v1/audio/speech HTTP/1.1\r\nHost: x\r\nAuthorization: "
                              f"Bearer {gw.keys['pro']}\r\n\r\n".encode())
    status, _, body = await raw.answer()
    assert status == 405 and orjson.loads(body)["error"]["code"] == "method_not_allowed"


@pytest.fixture
async def impatient(nursery, tmp_path, engines) -> Running:
    urls, info = engines
    config = Config(data_dir=tmp_path, http_body_timeout_s=0.5, handshake_timeout_s=0.5)
    return await start_gateway(nursery, make_gateway(tmp_path, urls, info, config=config))


async def test_a_body_that_does_not_arrive_in_time_is_408(impatient):
    raw = await open_raw(impatient)
    body = orjson.dumps({"model": "espeak", "input": "Slow.", "voice": "en-us"})
    await raw.stream.send_all(speech_request(impatient.keys["pro"], body)[:-5])
    status, _, answer = await raw.answer()
    assert status == 408 and orjson.loads(answer)["error"]["code"] == "request_timeout"
    assert await raw.closed()


async def test_an_idle_kept_alive_connection_is_closed(impatient):
    raw = await open_raw(impatient)
    await raw.stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await raw.answer())[0] == 200
    assert await raw.closed()  # no next request within the handshake timeout
