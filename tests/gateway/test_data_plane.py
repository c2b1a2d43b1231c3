"""The worker's epoll data plane (rust/src/plane.rs, gateway/data_plane.py) over real
sockets on 127.0.0.1: a provider server, the gateway's upstream connection to it, and a
client connection the gateway accepted. A lent stream's frames reach the client as the
session's own path would make them; everything that is not the steady state comes back
to the reader task, in order: a message the relay does not own, a write of the
session's to the client, `stop_relay`, a client that reads nothing, ends of either side."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import trio
import trio.testing
from tests.gateway.test_native_fast_path import open_raw, start_server

from slng_fast import _native as native
from slng_fast.gateway import data_plane
from slng_fast.gateway.native_transport import NativeWebSocketConnection, open_native_upstream
from slng_fast.gateway.transport import ConnectionClosed, Relay
from slng_fast.protocol.audio import AudioOut

pytestmark = pytest.mark.skipif(data_plane._NativePlane is None, reason="Linux only")

FRAME = 1920  # 40 ms of 24 kHz PCM16


def audio(i: int, size: int = FRAME) -> bytes:
    return bytes((i * 7 + k) % 251 for k in range(size))


def new_out() -> AudioOut:
    return AudioOut(codec="pcm16", sample_rate=24000, max_chunk_bytes=4800, context_id="c")


@dataclass
class Stream:
    """One provider -> gateway -> client path, the relay not yet started."""
    provider: NativeWebSocketConnection
    upstream: NativeWebSocketConnection
    client: NativeWebSocketConnection  # the gateway's side of the client
    raw: trio.SocketStream  # the client itself
    rest: bytes
    out: AudioOut = field(default_factory=new_out)
    sink: list[str | bytes] = field(default_factory=list)  # what reached the session
    reports: list[native.RelayReport] = field(default_factory=list)
    lost: list[ConnectionClosed | None] = field(default_factory=list)
    ended: trio.Event = field(default_factory=trio.Event)

    def relay(self, timeout: float = 5.0) -> Relay:
        async def lost(closed: ConnectionClosed | None) -> None:
            self.lost.append(closed)

        return Relay(self.out._relay, self.client, timeout, self.reports.append,
                     lambda seconds: None, lost)

    async def send(self, *frames: bytes | str) -> None:
        wire = b"".join(native.ws_encode_frame(1 if isinstance(f, str) else 2,
                                               f.encode() if isinstance(f, str) else f)
                        for f in frames)
        await self.provider._write(wire)

    async def client_events(self, count: int) -> list[native._WsEvent]:
        ws = self.__dict__.setdefault("_ws", native.WsConnection(1 << 24, client=True))
        events = list(ws.receive_data(self.rest))
        self.rest = b""
        with trio.fail_after(20):
            while len(events) < count:
                data = await self.raw.receive_some(1 << 20)
                assert data, "the gateway closed the client early"
                events += ws.receive_data(data)
        return events


async def open_stream(nursery: trio.Nursery) -> Stream:
    accepted: list[NativeWebSocketConnection] = []
    got = trio.Event()

    async def body(conn: NativeWebSocketConnection) -> None:
        accepted.append(conn)
        got.set()
        await trio.sleep_forever()

    port = await start_server(nursery, body)
    raw, rest = await open_raw(port)
    await got.wait()
    client = accepted.pop()
    got = trio.Event()
    upstream = await open_native_upstream(f"ws://127.0.0.1:{port}/x", [], [], nursery)
    await got.wait()
    assert isinstance(upstream, NativeWebSocketConnection)
    stream = Stream(accepted.pop(), upstream, client, raw, rest)

    async def pump() -> None:
        try:
            await upstream.pump(_append(stream.sink))
        except ConnectionClosed:
            stream.ended.set()

    nursery.start_soon(pump)
    await trio.testing.wait_all_tasks_blocked()
    return stream


def _append(sink: list[str | bytes]):
    async def put(message: str | bytes) -> None:
        sink.append(message)
    return put


def expected_frames(*pieces: bytes) -> list[str]:
    """What the session's own path sends for this audio."""
    out = new_out()
    frames: list[str] = []
    for piece in pieces:
        made, _ = out._relay.push(piece)
        frames += [f.decode() for f in made]
    return frames


def texts(events: list[native._WsEvent]) -> list[str]:
    assert all(isinstance(e, native.TextMessage) for e in events), events
    return [e.data for e in events]  # type: ignore[union-attr]


def count_lends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    lends: list[int] = []
    lend = data_plane.DataPlane.lend

    def counting(self, *args):
        lent = lend(self, *args)
        lends.append(lent.key)
        return lent

    monkeypatch.setattr(data_plane.DataPlane, "lend", counting)
    return lends


async def carry_two(s: Stream) -> list[str]:
    """Lend the stream and carry two frames (the first may take the reader's path, the
    second the plane's): the frames the client got, checked against the session's path."""
    assert s.upstream.start_relay(s.relay())
    await s.send(audio(0))
    await trio.sleep(0.05)
    await s.send(audio(1))
    want = expected_frames(audio(0), audio(1))
    assert texts(await s.client_events(len(want))) == want
    return want


async def test_steady_audio_is_carried_by_the_plane_as_the_session_would_frame_it(
        nursery, monkeypatch):
    lends = count_lends(monkeypatch)
    s = await open_stream(nursery)
    assert s.upstream.start_relay(s.relay())
    pieces = [audio(i) for i in range(40)]
    for piece in pieces:
        await s.send(piece)
        await trio.sleep(0.002)
    want = expected_frames(*pieces)
    assert texts(await s.client_events(len(want))) == want
    assert sum(r.in_bytes for r in s.reports) == 40 * FRAME
    assert s.reports[-1].next_sequence == len(want)
    assert s.sink == [] and s.lost == []
    # The first read may take the reader's path; then one lend carried every other.
    assert len(lends) == 1
    s.upstream.stop_relay()


async def test_one_wake_up_serves_every_ready_stream(nursery, monkeypatch):
    batches: list[int] = []

    class Counting:
        def __init__(self) -> None:
            self.inner = native.DataPlane()

        def __getattr__(self, name: str):
            return getattr(self.inner, name)

        def serve(self):
            out = self.inner.serve()
            batches.append(len(out))
            return out

    monkeypatch.setattr(data_plane, "_NativePlane", Counting)
    streams = [await open_stream(nursery) for _ in range(8)]
    for s in streams:
        assert s.upstream.start_relay(s.relay())
    for i in range(10):
        for s in streams:  # every stream has input before the plane's task runs
            await s.provider._write(native.ws_encode_frame(2, audio(i)))
        await trio.sleep(0.01)
    want = expected_frames(*(audio(i) for i in range(10)))
    for s in streams:
        assert texts(await s.client_events(len(want))) == want
        s.upstream.stop_relay()
    assert max(batches) > 1, batches


async def test_a_message_the_relay_does_not_own_comes_back_in_order(nursery):
    s = await open_stream(nursery)
    assert s.upstream.start_relay(s.relay())
    await s.send(audio(0))
    await trio.sleep(0.05)
    await s.send(audio(1), '{"type":"done"}', audio(2))
    want = expected_frames(audio(0), audio(1))
    assert texts(await s.client_events(len(want))) == want
    with trio.fail_after(10):
        while len(s.sink) < 2:
            await trio.sleep(0.01)
    assert s.sink == ['{"type":"done"}', audio(2)]  # the relay stopped at the text


async def test_a_write_to_the_client_takes_the_stream_back_first(nursery, monkeypatch):
    lends = count_lends(monkeypatch)
    s = await open_stream(nursery)
    first = await carry_two(s)
    assert s.client._lent is not None
    await s.client.send('{"type":"control"}')  # the session's own write
    assert s.client._lent is None
    await s.send(audio(2))
    both = expected_frames(audio(0), audio(1), audio(2))
    rest = texts(await s.client_events(len(both) - len(first) + 1))
    assert rest == ['{"type":"control"}'] + both[len(first):]
    assert len(lends) == 2  # lent again after the write


async def test_stop_relay_takes_the_stream_back(nursery):
    s = await open_stream(nursery)
    await carry_two(s)
    assert s.upstream._lent is not None
    s.upstream.stop_relay()
    assert s.upstream._lent is None
    await s.send(audio(3))
    with trio.fail_after(10):
        while not s.sink:
            await trio.sleep(0.01)
    assert s.sink == [audio(3)]


async def test_a_client_that_reads_nothing_is_lost_within_its_timeout(nursery):
    s = await open_stream(nursery)
    assert s.upstream.start_relay(s.relay(timeout=0.5))
    big = audio(0, 48000)
    with trio.fail_after(30):
        while not s.lost:  # the client never reads: its buffers fill, then the timeout
            await s.send(big)
            await trio.sleep(0.01)
    assert s.lost == [None]  # too slow, not gone
    assert s.upstream._relay is None and s.client._lent is None


async def test_an_upstream_that_drops_ends_the_stream(nursery):
    s = await open_stream(nursery)
    await carry_two(s)
    assert s.upstream._lent is not None
    await trio.aclose_forcefully(s.provider._stream)
    with trio.fail_after(10):
        await s.ended.wait()
    assert s.upstream.closed is not None and s.upstream.closed.code == 1006
    assert s.lost == []


async def test_a_client_that_goes_is_never_written_to_again(nursery):
    s = await open_stream(nursery)
    await carry_two(s)
    await trio.aclose_forcefully(s.raw)
    with trio.fail_after(10):
        while s.client.closed is None:
            await trio.sleep(0.01)
    assert s.client._lent is None
    for i in range(2, 6):  # what arrives now goes to the session, or the relay is lost
        await s.send(audio(i))
        await trio.sleep(0.02)
    assert s.sink or s.lost
    assert all(isinstance(c, ConnectionClosed) for c in s.lost)


async def test_a_write_to_the_source_leaves_the_stream_lent(nursery, monkeypatch):
    """The plane only reads the source: the session's writes to the upstream (more text
    to speak) do not take the stream back."""
    lends = count_lends(monkeypatch)
    s = await open_stream(nursery)
    first = await carry_two(s)
    lent = s.upstream._lent
    assert lent is not None
    await s.upstream.send('{"text":"more"}')
    assert s.upstream._lent is lent
    assert await s.provider.receive() == '{"text":"more"}'
    await s.send(audio(2))
    both = expected_frames(audio(0), audio(1), audio(2))
    assert texts(await s.client_events(len(both) - len(first))) == both[len(first):]
    assert len(lends) == 1


class Gate:
    """A `Lent.back` the test opens: after a hand-back the reader task sleeps on until
    then, so that the test's own write runs first."""

    def __init__(self) -> None:
        self.handed = trio.Event()
        self.opened = trio.Event()

    def set(self) -> None:
        self.handed.set()

    async def wait(self) -> None:
        await self.handed.wait()
        await self.opened.wait()


@pytest.mark.parametrize("stop_first", [False, True])
async def test_a_write_between_a_hand_back_and_its_reader_goes_after_the_unwritten_bytes(
        nursery, monkeypatch, stop_first):
    """The plane hands a stream back with bytes the client's socket did not take (a
    frame cut in the middle); a session write to the client that runs before the
    reader task finishes them must not land inside that frame, also when the session
    stopped the relay first (`stop_relay` takes the stream back: the sink keeps the
    bytes; found by the soak under load as text frames of invalid UTF-8)."""
    gates: list[data_plane.Lent] = []
    lend = data_plane.DataPlane.lend

    def gated(self, *args):
        lent = lend(self, *args)
        lent.back = Gate()  # type: ignore[assignment]
        gates.append(lent)
        return lent

    monkeypatch.setattr(data_plane.DataPlane, "lend", gated)
    s = await open_stream(nursery)
    assert s.upstream.start_relay(s.relay(timeout=30))
    big = audio(0, 48000)
    sent = 0
    with trio.fail_after(30):  # the client reads nothing: its socket fills
        while not (gates and gates[-1].outcome is not None and gates[-1].outcome[1]):
            await s.send(big)
            sent += 1
            await trio.sleep(0.01)
    if stop_first:
        s.upstream.stop_relay()
    nursery.start_soon(s.client.send, '{"type":"control"}')
    await trio.testing.wait_all_tasks_blocked()
    gates[-1].back.opened.set()  # type: ignore[attr-defined]
    ws = native.WsConnection(1 << 24, client=True)
    events = list(ws.receive_data(s.rest))
    with trio.fail_after(30):
        while not any(getattr(e, "data", None) == '{"type":"control"}' for e in events):
            data = await s.raw.receive_some(1 << 20)
            assert data
            events += ws.receive_data(data)
    got = texts(events)
    control = got.index('{"type":"control"}')
    want = expected_frames(*[big] * sent)
    assert got[:control] == want[:control]  # whole frames, in order, then the write


async def test_a_clients_audio_is_carried_to_the_upstream_by_the_plane(nursery, monkeypatch):
    """The STT direction (`Uplink`): the client is the source, the upstream the sink;
    the provider gets each audio message as sent, the session's report counts them, and
    the first message the uplink does not own is received as usual, in order."""
    from slng_fast.gateway.transport import Uplink

    lends = count_lends(monkeypatch)
    s = await open_stream(nursery)
    reports: list[native.RelayReport] = []

    async def lost(closed: ConnectionClosed | None) -> None:
        raise AssertionError("not reached")

    state = native.AudioUplink(codec="pcm16", sample_rate=16000, model_rate=16000)
    assert s.client.start_uplink(Uplink(state, s.upstream, 5.0, reports.append, lost))
    ws = native.WsConnection(1 << 20, client=True)
    pieces = [audio(i, 640) for i in range(30)]
    for piece in pieces:
        await s.raw.send_all(ws.send_binary(piece))
        await trio.sleep(0.002)
    with trio.fail_after(10):
        heard = [await s.provider.receive() for _ in pieces]
    assert heard == pieces
    assert s.client._lent is not None  # still lent: nothing it does not own came
    await s.client.send('{"type":"transcript"}')  # a write to the source: still lent
    assert s.client._lent is not None
    await s.raw.send_all(ws.send_binary(audio(99, 640)) + ws.send_text('{"type":"finalize"}'))
    with trio.fail_after(10):
        assert await s.provider.receive() == audio(99, 640)
        assert await s.client.receive() == '{"type":"finalize"}'
    assert s.client._uplink is None and s.client._lent is None
    assert sum(r.messages for r in reports) == 31
    assert sum(r.in_bytes for r in reports) == 31 * 640
    assert len(lends) == 1  # the first read may take the reader's path
