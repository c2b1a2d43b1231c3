"""The stand-in client of an HTTP request's session, without sockets: the script in
order, the session's events out, the end as the bridge sees it."""

from __future__ import annotations

import pytest
import trio

from slng_fast.gateway.http_session import EVENT_QUEUE, HttpSessionConnection
from slng_fast.gateway.transport import ConnectionClosed


async def test_script_then_events_then_a_normal_close():
    conn = HttpSessionConnection(['{"type":"init"}', b"\x00\x01"])
    closing = []
    conn.on_closing = lambda: closing.append(1)
    assert await conn.receive() == '{"type":"init"}'
    assert await conn.receive() == b"\x00\x01"
    assert await conn.send_within(b'{"type":"ready"}', 1.0, text=True)
    await conn.send('{"type":"audio_end","id":1}')
    assert await conn.events.receive() == {"type": "ready"}
    assert (await conn.events.receive())["type"] == "audio_end"
    conn.finish()
    conn.finish()  # once is enough
    assert closing == [1]
    with pytest.raises(ConnectionClosed) as closed:
        await conn.receive()
    assert closed.value.code == 1000
    assert await conn.send_within('{"type":"session_ended"}', 1.0)  # nobody's: dropped


async def test_a_gone_client_is_1006_and_the_script_stops():
    conn = HttpSessionConnection(["a", "b"])
    assert await conn.receive() == "a"
    conn.finish(gone=True)
    with pytest.raises(ConnectionClosed) as closed:
        await conn.receive()
    assert closed.value.code == 1006


async def test_an_unread_answer_is_a_slow_client(autojump_clock):
    conn = HttpSessionConnection([])
    for _ in range(EVENT_QUEUE):
        assert await conn.send_within('{"type":"audio_chunk"}', 1.0)
    assert not await conn.send_within('{"type":"audio_chunk"}', 1.0)  # the bridge aborts


async def test_the_session_closing_ends_the_events(autojump_clock):
    conn = HttpSessionConnection([])
    await conn.send('{"type":"error","code":"provider_unavailable"}')
    await conn.close(1013, "unavailable")
    assert [e["type"] async for e in conn.events] == ["error"]
    assert conn.close_code == 1013
    with trio.move_on_after(0.1):  # the session's reader waits for the HTTP side's end
        await conn.receive()
