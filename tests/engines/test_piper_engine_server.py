"""The piper engine's server in the SLNG model-server dialect: the real Piper voice,
real sockets. A gate in the synthesizer lets a test act between two sentences
without racing Piper's speed."""

from __future__ import annotations

import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from engines.piper_voices import another_voice
from slng_fast.engines.piper import PiperSynth, PiperVoiceFile, VoiceError
from slng_fast.engines.piper_server import serve_piper_engine
from slng_fast.engines.tts_server import MAX_BUFFERED_CHARS

HANG_GUARD = 60  # seconds; only stops a broken test from hanging, never a threshold
THREE = "The first sentence is here. The second one follows. And this is the third."


@pytest.fixture(scope="module")
def synth() -> PiperSynth:
    return PiperSynth()


class GatedSynth:
    """The real synthesizer; after each sentence's audio it waits for ``go`` (set by the
    test) or for its cancel event, counting sentences, so a test sees what went out
    between two of them."""

    def __init__(self, inner: PiperSynth) -> None:
        self.inner = inner
        self.go = threading.Event()
        self.sentences = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def synthesize(self, text: str, **kwargs: Any) -> bool:
        if text != THREE:  # only the three-sentence text is gated
            return self.inner.synthesize(text, **kwargs)
        on_audio = kwargs.pop("on_audio")
        cancel: threading.Event = kwargs["cancel"]

        def gated(pcm: bytes) -> object:
            self.sentences += 1
            result = on_audio(pcm)
            give_up = time.monotonic() + HANG_GUARD
            while not (self.go.is_set() or cancel.is_set()) and time.monotonic() < give_up:
                self.go.wait(0.05)
            self.go.clear()
            return result

        return self.inner.synthesize(text, on_audio=gated, **kwargs)


@pytest.fixture
def gated(synth: PiperSynth) -> GatedSynth:
    return GatedSynth(synth)


@pytest.fixture
async def url(nursery: trio.Nursery, gated: GatedSynth) -> str:
    port = await nursery.start(partial(serve_piper_engine, synth=gated), "127.0.0.1", 0)
    return f"ws://127.0.0.1:{port}/"


async def recv_json(ws: WebSocketConnection) -> dict[str, Any]:
    message = await ws.get_message()
    assert isinstance(message, str), "expected a JSON frame"
    result: dict[str, Any] = orjson.loads(message)
    return result


async def test_ready_describes_the_bundled_voice(url: str) -> None:
    async with open_websocket_url(url) as ws:
        with trio.fail_after(HANG_GUARD):
            ready = await recv_json(ws)
    assert ready["type"] == "ready" and ready["engine"] == "piper"
    assert ready["sample_rate"] == 22050 and ready["supports_stop"] is True
    assert ready["default_voice"] == "en_US-joe-medium"
    assert [v["id"] for v in ready["voices"]] == ["en_US-joe-medium"]
    assert "en" in ready["languages"] and "en-us" in ready["languages"]


async def test_first_sentence_goes_out_before_the_next_is_made(url: str, gated: GatedSynth) -> None:
    """The synthesizer waits after the first sentence until the client holds its
    audio: if the server sent nothing before the whole text was made, this would hang."""
    async with open_websocket_url(url) as ws:
        with trio.fail_after(HANG_GUARD):
            await recv_json(ws)
            await ws.send_message(THREE)
            await ws.send_message('{"type":"control","action":"flush"}')
            first = await ws.get_message()
            assert isinstance(first, bytes) and len(first) % 2 == 0
            assert gated.sentences == 1
            audio = first
            while True:
                gated.go.set()
                message = await ws.get_message()
                if isinstance(message, str):
                    break
                audio += message
            assert orjson.loads(message) == {"type": "flushed"}
    assert gated.sentences == 3
    assert len(audio) / 2 / 22050 > 2.0  # three sentences of speech


async def test_stop_between_sentences(url: str, gated: GatedSynth) -> None:
    async with open_websocket_url(url) as ws:
        with trio.fail_after(HANG_GUARD):
            await recv_json(ws)
            await ws.send_message(THREE)
            await ws.send_message('{"type":"control","action":"flush"}')
            assert isinstance(await ws.get_message(), bytes)
            await ws.send_message("words never flushed")
            await ws.send_message('{"type":"control","action":"stop"}')
            while True:
                message = await ws.get_message()
                if isinstance(message, str):
                    break
            assert orjson.loads(message) == {"type": "flushed", "interrupted": True}
            gated.go.set()  # let the worker see the cancel
            assert gated.sentences == 1
            # the session goes on; the unflushed words were dropped with the stop
            await ws.send_message('{"type":"control","action":"flush"}')
            assert orjson.loads(await ws.get_message()) == {"type": "flushed"}


async def test_clear_drops_unflushed_text(url: str) -> None:
    async with open_websocket_url(url) as ws:
        with trio.fail_after(HANG_GUARD):
            await recv_json(ws)
            await ws.send_message("forgotten words")
            await ws.send_message('{"type":"control","action":"clear"}')
            await ws.send_message('{"type":"control","action":"flush"}')
            assert orjson.loads(await ws.get_message()) == {"type": "flushed"}


async def test_invalid_settings_close_the_session(url: str) -> None:
    async with open_websocket_url(url) as ws:
        with trio.fail_after(HANG_GUARD):
            await recv_json(ws)
            await ws.send_message('{"voice":"nobody"}')
            error = await recv_json(ws)
            assert error["type"] == "error" and error["code"] == "invalid_parameter"
            assert "nobody" in error["message"]


def test_more_voices_from_files(tmp_path: Path) -> None:
    synth = PiperSynth([another_voice(tmp_path)])
    assert [v.id for v in synth.voices()] == ["en_US-joe-medium", "en_GB-copy-medium"]
    assert synth.resolve_voice("copy").id == "en_GB-copy-medium"
    assert synth.resolve_voice(None, "en-GB").id == "en_GB-copy-medium"
    assert synth.resolve_voice(None, "en").id == "en_US-joe-medium"
    pieces: list[bytes] = []
    synth.synthesize("Hello there.", voice="en_GB-copy-medium", on_audio=pieces.append)
    assert sum(map(len, pieces)) > 22050  # over half a second of speech
    with pytest.raises(VoiceError):
        synth.resolve_voice("nobody")
    with pytest.raises(VoiceError):
        PiperVoiceFile.read(tmp_path / "missing.onnx")


def test_rate_changes_the_pace(synth: PiperSynth) -> None:
    def seconds(rate: float | None) -> float:
        pieces: list[bytes] = []
        synth.synthesize("One two three four five six.", rate=rate, on_audio=pieces.append)
        return sum(map(len, pieces)) / 2 / synth.sample_rate

    assert seconds(350) < seconds(None) < seconds(100)
    with pytest.raises(VoiceError):
        synth.check_rate(10)


async def test_too_much_unflushed_text_is_refused(url: str) -> None:
    async with open_websocket_url(url) as ws:
        with trio.fail_after(HANG_GUARD):
            await recv_json(ws)
            await ws.send_message("a" * (MAX_BUFFERED_CHARS + 1))
            error = await recv_json(ws)
            assert error["type"] == "error" and error["code"] == "text_too_long"
            await ws.send_message('{"type":"control","action":"flush"}')
            assert orjson.loads(await ws.get_message()) == {"type": "flushed"}


async def test_a_short_text_is_not_held_up_by_a_long_one(url: str, gated: GatedSynth) -> None:
    """Sessions take turns sentence by sentence: while the long text waits between its
    sentences, another session's sentence is made and sent (else this would hang)."""
    async with open_websocket_url(url) as long_ws, open_websocket_url(url) as short_ws:
        with trio.fail_after(HANG_GUARD):
            await recv_json(long_ws)
            await recv_json(short_ws)
            await long_ws.send_message(THREE)
            await long_ws.send_message('{"type":"control","action":"flush"}')
            assert isinstance(await long_ws.get_message(), bytes)  # paused after one
            await short_ws.send_message("Hello there.")
            await short_ws.send_message('{"type":"control","action":"flush"}')
            audio = b""
            while isinstance(message := await short_ws.get_message(), bytes):
                audio += message
            assert orjson.loads(message) == {"type": "flushed"} and len(audio) > 22050
            assert gated.sentences == 1  # the long text is still between sentences
            gated.go.set()
