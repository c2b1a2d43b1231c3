"""A panic in the native core (a bug) fails one session or connection, never the worker:
the release profile unwinds, PyO3 raises `PanicException` (a BaseException), and the
gateway ends that session with `internal_error` and 1011 while the others stream on.
The panics are real ones, from `_native._panic_for_tests`, injected where a native call
is made: in a session step (the dialect's flush) and on the data plane
(`AudioRelay.feed`, in an upstream reader task)."""

from __future__ import annotations

import logging

import pytest

from slng_fast import _native
from slng_fast.protocol.audio import AudioOut
from slng_fast.providers.slng import SlngDialect
from wsclient import closed_code, connect, recv, recv_until, send

LONG = "This sentence goes on for a while so that its audio streams for some time. " * 3


def test_a_panic_is_a_base_exception_not_an_abort():
    with pytest.raises(_native.PanicException, match="on purpose"):
        _native._panic_for_tests("on purpose")
    assert not issubclass(_native.PanicException, Exception)


async def start_long_utterance(gw, nursery, rate: int):
    ws = await connect(gw.tts(query=f"?sample_rate_hz={rate}"), gw.keys["pro"], nursery=nursery)
    await send(ws, type="init")
    assert (await recv(ws))["type"] == "ready"
    await send(ws, type="input_text", text=LONG)
    await send(ws, type="flush")
    assert (await recv(ws))["type"] == "audio_chunk"
    return ws


async def says(gw, nursery) -> bool:
    ws = await connect(gw.tts(query="?sample_rate_hz=16000"), gw.keys["pro"], nursery=nursery)
    await send(ws, type="input_text", text="Still here.")
    await send(ws, type="flush")
    events = await recv_until(ws, "audio_end")
    await ws.aclose()
    return events[-1]["total_duration_ms"] > 0


async def test_a_panic_in_a_session_step_ends_that_session_only(gw, nursery, monkeypatch,
                                                                caplog):
    flush = SlngDialect.flush

    def panicking_flush(self):
        if "panic" in "".join(self._buffer):
            _native._panic_for_tests("a bug in the native core")
        return flush(self)

    monkeypatch.setattr(SlngDialect, "flush", panicking_flush)
    streaming = await start_long_utterance(gw, nursery, 16000)
    doomed = await connect(gw.tts(), gw.keys["pro"], nursery=nursery)
    await send(doomed, type="input_text", text="Now panic.")
    await send(doomed, type="flush")
    events = await recv_until(doomed, "error")
    assert events[-1]["code"] == "internal_error" and events[-1]["retryable"] is True
    assert await closed_code(doomed) == 1011
    end = (await recv_until(streaming, "audio_end"))[-1]  # the other session goes on
    assert end["interrupted"] is False and end["total_duration_ms"] > 3000
    assert await says(gw, nursery)
    assert any(r.levelno >= logging.ERROR and "panic" in r.getMessage()
               and r.exc_info and r.exc_info[0] is _native.PanicException
               for r in caplog.records)


class PanickingRelay:
    """An `AudioRelay` whose data-plane step panics (the native type cannot be patched)."""

    def __init__(self, inner: _native.AudioRelay) -> None:
        self.__dict__["inner"] = inner

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self.inner, name, value)

    def feed(self, *args):
        _native._panic_for_tests("a bug in the relay")


async def test_a_panic_on_the_data_plane_ends_that_connection_only(gw, nursery, monkeypatch,
                                                                   caplog):
    # Only the session at 22050 Hz gets a panicking relay; the one at 16 kHz streams on
    # through a real one.
    new_relay = AudioOut._new_relay

    def doomed_relay(self, *args):
        relay = new_relay(self, *args)
        return PanickingRelay(relay) if self.sample_rate == 22050 else relay

    monkeypatch.setattr(AudioOut, "_new_relay", doomed_relay)
    streaming = await start_long_utterance(gw, nursery, 16000)
    doomed = await start_long_utterance(gw, nursery, 22050)
    assert await closed_code(doomed) == 1011
    end = (await recv_until(streaming, "audio_end"))[-1]
    assert end["interrupted"] is False and end["total_duration_ms"] > 3000
    assert await says(gw, nursery)
    assert any(r.levelno >= logging.ERROR and r.exc_info
               and "bug in the relay" in repr(r.exc_info[1]) for r in caplog.records)
    rows = gw.store.usage_rows()
    assert sum(1 for row in rows if row["reason"] == "error") == 1  # the ledger says so
