"""The native transport's hot-path pieces over real sockets on 127.0.0.1: writes straight
to the descriptor (with a deadline, never cutting a frame on cancellation), ``pump``
(messages handed over in the reader's own task, in order), and UTF-8 text frames built
from bytes. The gateway's collector settings are checked in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import trio
import trio.testing

from slng_fast import _native as native
from slng_fast.gateway.native_transport import NativeWebSocketConnection, serve_native_websocket
from slng_fast.gateway.transport import ConnectionClosed, IncomingRequest, MessageSink

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


async def open_raw(port: int) -> tuple[trio.SocketStream, bytes]:
    """A client that has done the handshake and reads only when told to."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(
        f"GET /x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive_some(4096)
    head, rest = head.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101 ")
    return stream, rest


async def read_messages(stream: trio.SocketStream, ws: native.WsConnection, rest: bytes,
                        count: int) -> list[native._WsEvent]:
    events = list(ws.receive_data(rest)) if rest else []
    with trio.fail_after(20):
        while len(events) < count:
            data = await stream.receive_some(1 << 20)
            assert data, "the server closed early"
            events += ws.receive_data(data)
    return events


async def start_server(nursery: trio.Nursery, body) -> int:
    async def handler(request: IncomingRequest) -> None:
        conn = await request.accept(None)
        assert isinstance(conn, NativeWebSocketConnection)
        await body(conn)

    return await nursery.start(lambda task_status: serve_native_websocket(
        handler, "127.0.0.1", 0, max_message_bytes=1 << 23, task_status=task_status))


async def test_send_within_gives_up_on_a_peer_that_reads_nothing(nursery):
    outcome: dict[str, object] = {}
    done = trio.Event()

    async def body(conn: NativeWebSocketConnection) -> None:
        chunk = b"\0" * (1 << 20)
        sent = 0
        while await conn.send_within(chunk, 0.3):
            sent += 1
            assert sent < 256, "a peer that reads nothing must stop the writer"
        outcome["sent"] = sent
        await conn.abort()
        done.set()

    port = await start_server(nursery, body)
    stream, _ = await open_raw(port)
    with trio.fail_after(30):
        await done.wait()
    # Only what the kernel's buffers hold was taken; the rest was never queued here.
    assert isinstance(outcome["sent"], int) and outcome["sent"] < 64
    await stream.aclose()


async def test_a_cancelled_send_still_finishes_its_frame(nursery):
    big = os.urandom(4 << 20)  # far more than the socket buffers take at once
    cancelled = trio.Event()

    async def body(conn: NativeWebSocketConnection) -> None:
        with trio.CancelScope() as scope:
            nursery.start_soon(_cancel_later, scope, cancelled)
            await conn.send_within(big, 30.0)
        await conn.send("after")
        await trio.sleep(5)

    port = await start_server(nursery, body)
    stream, rest = await open_raw(port)
    with trio.fail_after(10):
        await cancelled.wait()  # the server's send was cancelled while we read nothing
    events = await read_messages(stream, native.WsConnection(1 << 23, client=True), rest, 2)
    assert events[0] == native.BinaryMessage(big)  # whole, not cut at the cancellation
    assert events[1] == native.TextMessage("after")
    await stream.aclose()


async def _cancel_later(scope: trio.CancelScope, cancelled: trio.Event) -> None:
    await trio.sleep(0.3)
    scope.cancel()
    cancelled.set()


async def test_pump_hands_over_queued_then_live_messages_in_order(nursery):
    got: list[str | bytes] = []
    ended: list[int | None] = []
    done = trio.Event()

    async def body(conn: NativeWebSocketConnection) -> None:
        await trio.sleep(0.3)  # the first messages wait in the queue meanwhile

        async def sink(message: str | bytes) -> None:
            got.append(message)
            if len(got) % 7 == 0:
                await trio.sleep(0.001)  # a sink that waits now and then

        try:
            await conn.pump(sink)
        except ConnectionClosed as exc:
            ended.append(exc.code)
        done.set()

    port = await start_server(nursery, body)
    stream, _ = await open_raw(port)
    ws = native.WsConnection(1 << 20, client=True)
    await stream.send_all(b"".join(ws.send_text(str(i)) for i in range(40)))
    await trio.sleep(0.6)  # now the server pumps
    await stream.send_all(b"".join(ws.send_text(str(i)) for i in range(40, 100)))
    await stream.send_all(ws.send_binary(b"end") + ws.send_close(1000, "bye"))
    with trio.fail_after(10):
        await done.wait()
    assert got == [str(i) for i in range(100)] + [b"end"]
    assert ended == [1000]
    await stream.aclose()


async def test_deliver_hands_on_queued_then_live_messages_and_the_end_with_no_task_waiting(
        nursery):
    """`Connection.deliver`: the caller's task returns at once after the queued messages;
    the reader hands on the rest in order, then the end once (from its teardown), and
    then lets go of the sink (no cycle through the session is left)."""
    got: list[str | bytes] = []
    ended: list[int | None] = []
    too_large: list[str] = []
    done = trio.Event()
    returned = trio.Event()
    held: list[NativeWebSocketConnection] = []

    async def body(conn: NativeWebSocketConnection) -> None:
        held.append(conn)
        await trio.sleep(0.3)  # the first messages wait in the queue meanwhile

        async def message(frame: str | bytes) -> None:
            got.append(frame)
            if len(got) % 7 == 0:
                await trio.sleep(0.001)  # a sink that waits now and then (backpressure)

        async def oversize(reason: str) -> None:
            too_large.append(reason)

        def closed(exc: ConnectionClosed) -> None:
            ended.append(exc.code)
            done.set()

        assert await conn.deliver(MessageSink(message, oversize, closed))
        assert got == [str(i) for i in range(40)]  # the queued ones, in this task
        returned.set()
        await done.wait()

    port = await start_server(nursery, body)
    stream, _ = await open_raw(port)
    ws = native.WsConnection(1 << 20, client=True)
    await stream.send_all(b"".join(ws.send_text(str(i)) for i in range(40)))
    with trio.fail_after(10):
        await returned.wait()
    await stream.send_all(b"".join(ws.send_text(str(i)) for i in range(40, 100)))
    await stream.send_all(ws.send_binary(b"end") + ws.send_close(1000, "bye"))
    with trio.fail_after(10):
        await done.wait()
    assert got == [str(i) for i in range(100)] + [b"end"]
    assert ended == [1000] and too_large == []
    assert held[0]._sink is None
    await stream.aclose()


def test_text_frames_from_utf8_bytes():
    ws = native.WsConnection()
    text = '{"type":"audio_chunk","data":"AAEC"} €'
    assert ws.send_text_utf8(text.encode()) == native.WsConnection().send_text(text)
    with pytest.raises(ValueError):
        ws.send_text_utf8(b"\xff\xfe not UTF-8")


@pytest.mark.parametrize("mode, frozen", [("tuned", True), ("default", False)])
def test_serving_process_collector_settings(mode, frozen):
    code = ("import gc; from slng_fast.gateway.collector import THRESHOLDS, tune_collector; "
            "tune_collector(); print(gc.get_threshold() == THRESHOLDS, gc.get_freeze_count() > 0)")
    env = {**os.environ, "SLNG_GC": mode}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == [str(frozen), str(frozen)]


async def test_no_relay_starts_while_a_reads_messages_are_handed_on(nursery):
    """The data plane (`start_relay`) is refused while the messages of a read are still
    being handed to the sink: a relay started from the sink (the session, on one of them)
    would write the next read's audio before the rest of them reached the session."""
    from slng_fast.gateway.native_transport import open_native_upstream
    from slng_fast.gateway.transport import Relay
    from slng_fast.protocol.audio import AudioOut

    async def body(conn: NativeWebSocketConnection) -> None:
        await conn._write(b"".join(native.ws_encode_frame(2, bytes([i]) * 4) for i in range(3)))
        await trio.sleep_forever()

    port = await start_server(nursery, body)
    upstream = await open_native_upstream(f"ws://127.0.0.1:{port}/x", [], [], nursery)
    out = AudioOut(codec="pcm16", sample_rate=24000, max_chunk_bytes=4800, context_id="c")

    async def lost(closed: ConnectionClosed | None) -> None:
        raise AssertionError("not reached")

    assert isinstance(upstream, NativeWebSocketConnection)
    relay = Relay(out._relay, upstream, 1.0, lambda report: None, lambda seconds: None, lost)
    answers: list[bool] = []
    with trio.CancelScope() as scope:
        async def sink(message: str | bytes) -> None:
            answers.append(upstream.start_relay(relay))
            upstream.stop_relay()
            if len(answers) == 3:
                scope.cancel()

        await upstream.pump(sink)
    assert answers == [False, False, False]
    await trio.testing.wait_all_tasks_blocked()
    assert upstream.start_relay(relay)  # the read is all handed on
    upstream.stop_relay()


async def test_an_uplink_carries_a_clients_audio_and_hands_back_the_rest(nursery):
    """The STT direction (`start_uplink`): refused while a message already read waits to
    be received; then each read's audio goes straight to the upstream's socket, reported
    first, and the first message it does not own is received as usual, in order."""
    from slng_fast.gateway.native_transport import open_native_upstream
    from slng_fast.gateway.transport import Uplink

    heard: list[str | bytes] = []
    ended = trio.Event()

    async def provider(conn: NativeWebSocketConnection) -> None:
        while (message := await conn.receive()) != "end":
            heard.append(message)
        ended.set()

    accepted: list[NativeWebSocketConnection] = []
    ready = trio.Event()

    async def gateway(conn: NativeWebSocketConnection) -> None:
        accepted.append(conn)
        ready.set()
        await trio.sleep_forever()

    upstream = await open_native_upstream(
        f"ws://127.0.0.1:{await start_server(nursery, provider)}/x", [], [], nursery)
    stream, _ = await open_raw(await start_server(nursery, gateway))
    await ready.wait()
    conn = accepted[0]
    ws = native.WsConnection(1 << 20, client=True)
    reports: list[native.RelayReport] = []

    async def lost(closed: ConnectionClosed | None) -> None:
        raise AssertionError("not reached")

    state = native.AudioUplink(codec="pcm16", sample_rate=16000, model_rate=16000)
    uplink = Uplink(state, upstream, 5.0, reports.append, lost)
    await stream.send_all(ws.send_binary(b"\x01\x00" * 8))
    await trio.testing.wait_all_tasks_blocked()
    assert not conn.start_uplink(uplink)  # that message comes first
    assert await conn.receive() == b"\x01\x00" * 8
    assert conn.start_uplink(uplink)
    a, b = os.urandom(640), os.urandom(642)
    await stream.send_all(ws.send_binary(a) + ws.send_binary(b) + ws.send_text("finalize"))
    with trio.fail_after(10):
        assert await conn.receive() == "finalize"
        await upstream.send("end")
        await ended.wait()
    assert heard == [a, b]
    assert sum(r.messages for r in reports) == 2
    assert sum(r.in_bytes for r in reports) == len(a) + len(b)
    assert conn._uplink is None  # handed back at the text message
    await stream.aclose()


class _PanickingFraming:
    """A frame codec whose next parse panics (the native type cannot be patched)."""

    def __init__(self, inner: native.WsConnection) -> None:
        self.inner = inner

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def receive_data(self, data: bytes):
        if data:
            raise native.PanicException("a bug in the framing")
        return self.inner.receive_data(data)


async def test_a_fault_in_the_reader_is_not_lost_to_a_cancellation_in_its_teardown():
    """The reader ends with a panic, and its holder lets go of the connection (cancels
    the scope around it) in that instant (here from `on_closing`, which the teardown
    calls). The panic must still come out: a cancellation at the teardown's await would
    replace it, and the scope would then swallow it (a session was left waiting)."""
    left, right = trio.socket.socketpair()
    conn = NativeWebSocketConnection(trio.SocketStream(left),
                                     _PanickingFraming(native.WsConnection(1 << 20)))
    scope = trio.CancelScope()
    conn.on_closing = scope.cancel
    await right.send(b"anything")
    with pytest.raises(BaseExceptionGroup) as caught:
        with scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn._reader, b"")
    assert caught.group_contains(native.PanicException)
    right.close()
