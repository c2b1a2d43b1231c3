"""The espeak engine over a real socket: the SLNG model-server dialect, end to end."""

from __future__ import annotations

import threading
from functools import partial
from typing import Any

import orjson
import pytest
import trio
from engine_audio import (
    ROUND_TRIP_MIN_HITS,
    ROUND_TRIP_SENTENCES,
    frames,
    recognised,
    silence_16k,
    to_16k,
)
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from slng_fast.engines.espeak import EspeakSynth, SynthesisResult
from slng_fast.engines.espeak_server import (
    MAX_AUDIO_FRAME,
    MAX_BUFFERED_CHARS,
    serve_espeak_engine,
)
from slng_fast.engines.sphinx import SphinxRecognizer

LONG_TEXT = "This sentence is repeated to make a long text for the engine. " * 60
HANG_GUARD = 30  # seconds; only stops a broken test from hanging, never a threshold


class GatedSynth:
    """The real synthesizer, recording each call's result. When ``gated``, a call
    pauses after its second piece of audio until its cancel event is set, so a
    test can act "mid-synthesis" without racing eSpeak's speed."""

    def __init__(self, inner: EspeakSynth) -> None:
        self.inner = inner
        self.results: list[SynthesisResult] = []
        self.gated = False
        self.paused = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def synthesize(self, text: str, **kwargs: Any) -> SynthesisResult:
        on_audio = kwargs.pop("on_audio")
        cancel: threading.Event = kwargs["cancel"]
        count = 0
        gated = self.gated

        def wrapped(pcm: bytes) -> object:
            nonlocal count
            count += 1
            result = on_audio(pcm)
            if gated and count == 2:
                self.paused.set()
                cancel.wait(HANG_GUARD)
            return result

        result = self.inner.synthesize(text, on_audio=wrapped, **kwargs)
        self.results.append(result)
        return result


@pytest.fixture
def gated(synth: EspeakSynth) -> GatedSynth:
    return GatedSynth(synth)


@pytest.fixture
async def url(nursery: trio.Nursery, gated: GatedSynth) -> str:
    port = await nursery.start(partial(serve_espeak_engine, synth=gated), "127.0.0.1", 0)
    return f"ws://127.0.0.1:{port}/"


async def recv_json(ws: WebSocketConnection) -> dict[str, Any]:
    message = await ws.get_message()
    assert isinstance(message, str), f"expected JSON, got {len(message)} bytes of audio"
    return orjson.loads(message)


async def send_json(ws: WebSocketConnection, obj: dict[str, Any]) -> None:
    await ws.send_message(orjson.dumps(obj).decode())


FLUSH = {"type": "control", "action": "flush"}
STOP = {"type": "control", "action": "stop"}


async def until_flushed(ws: WebSocketConnection) -> tuple[bytes, dict[str, Any], int]:
    """Audio and binary frame count up to the next ``flushed`` event."""
    audio = bytearray()
    count = 0
    with trio.fail_after(HANG_GUARD):
        while True:
            message = await ws.get_message()
            if isinstance(message, bytes):
                audio += message
                count += 1
                continue
            event = orjson.loads(message)
            assert event["type"] == "flushed", event
            return bytes(audio), event, count


async def until_closed(ws: WebSocketConnection) -> tuple[bytes, int | None]:
    audio = bytearray()
    with trio.fail_after(HANG_GUARD):
        try:
            while True:
                message = await ws.get_message()
                assert isinstance(message, bytes), message
                audio += message
        except ConnectionClosed as closed:
            return bytes(audio), closed.reason.code


def seconds(audio: bytes, rate: int = 22050) -> float:
    return len(audio) / 2 / rate


async def test_ready_reports_real_capabilities(url: str, synth: EspeakSynth) -> None:
    async with open_websocket_url(url) as ws:
        ready = await recv_json(ws)
    assert ready["type"] == "ready"
    assert ready["sample_rate"] == synth.sample_rate == 22050
    assert len(ready["voices"]) == len(synth.voices()) > 50
    ids = {v["id"] for v in ready["voices"]}
    assert {"en-us", "en", "de", "fr"} <= ids
    assert all({"id", "name", "identifier", "languages", "gender"} <= set(v) for v in ready["voices"])
    assert {"en", "en-us", "de"} <= set(ready["languages"])
    assert ready["default_voice"] == "en-us"
    assert "f3" in {v["id"] for v in ready["variants"]}


async def test_settings_text_flush_round_trip(url: str, synth: EspeakSynth) -> None:
    """Settings, text in pieces, flush: binary PCM16 then flushed; the audio is speech
    that PocketSphinx recognises."""
    async with open_websocket_url(url) as ws:
        await recv_json(ws)
        await send_json(
            ws,
            {
                "voice": "en-us",
                "language": "en",
                "buffer_size": 5,
                "max_tokens": 2000,
                "repetition_penalty": 1.1,
                "temperature": 0.6,
                "top_p": 0.9,
            },
        )
        utterances = []
        for sentence in ROUND_TRIP_SENTENCES:
            half = len(sentence) // 2
            await ws.send_message(sentence[:half])
            await ws.send_message(sentence[half:])
            await send_json(ws, FLUSH)
            audio, flushed, count = await until_flushed(ws)
            assert flushed == {"type": "flushed"}
            assert 0.8 < seconds(audio) < 4.0
            assert count >= 1
            utterances.append(audio)
    pcm = b"".join(silence_16k(0.5) + to_16k(a) + silence_16k(0.5) for a in utterances)
    recognizer = SphinxRecognizer()
    for frame in frames(pcm):
        recognizer.feed(frame)
    text = recognizer.finalize()
    assert len(recognised(text)) >= ROUND_TRIP_MIN_HITS, text


async def test_audio_frames_are_bounded_whole_samples(url: str) -> None:
    async with open_websocket_url(url) as ws:
        await recv_json(ws)
        await send_json(ws, {"voice": "en-us"})
        await ws.send_message("A somewhat longer sentence, so that several frames are needed.")
        await send_json(ws, FLUSH)
        sizes = []
        with trio.fail_after(HANG_GUARD):
            while True:
                message = await ws.get_message()
                if isinstance(message, str):
                    break
                sizes.append(len(message))
    assert len(sizes) > 1
    assert all(s % 2 == 0 and 0 < s <= MAX_AUDIO_FRAME for s in sizes)


async def test_socket_audio_is_the_synthesizers_audio(url: str, gated: GatedSynth) -> None:
    """Nothing is lost or duplicated between eSpeak's callback and the socket."""
    async with open_websocket_url(url) as ws:
        await recv_json(ws)
        await send_json(ws, {"voice": "en-us"})
        for text in ("Every buffer that eSpeak produces must reach the client.", "In order."):
            await ws.send_message(text)
            await send_json(ws, FLUSH)
            audio, _, count = await until_flushed(ws)
            result = gated.results[-1]
            assert not result.cancelled
            assert len(audio) == 2 * result.samples
            assert count >= len(audio) / MAX_AUDIO_FRAME


async def test_empty_flush_and_plain_text_first(url: str) -> None:
    async with open_websocket_url(url) as ws:
        await recv_json(ws)
        await send_json(ws, FLUSH)  # nothing buffered: flushed at once, no audio
        audio, flushed, _ = await until_flushed(ws)
        assert audio == b"" and flushed == {"type": "flushed"}
    async with open_websocket_url(url) as ws:
        await recv_json(ws)
        await ws.send_message("No settings were sent, so defaults apply.")
        await send_json(ws, FLUSH)
        audio, _, _ = await until_flushed(ws)
        assert seconds(audio) > 1.0


async def test_two_flushes_in_a_row_answer_in_order(url: str) -> None:
    async with open_websocket_url(url) as ws:
        await recv_json(ws)
        await send_json(ws, {"voice": "de"})
        await ws.send_message("Guten Morgen.")
        await send_json(ws, FLUSH)
        await ws.send_message("Wie geht es Ihnen heute?")
        await send_json(ws, FLUSH)
        first, _, _ = await until_flushed(ws)
        second, _, _ = await until_flushed(ws)
    assert 0.3 < seconds(first) < seconds(second)


async def test_end_speaks_the_rest_then_closes(url: str) -> None:
    async with open_websocket_url(url) as ws:
        await recv_json(ws)
        await send_json(ws, {"voice": "en-gb"})
        await ws.send_message("The last words before the end.")
        await ws.send_message("__END__")
        audio, code = await until_closed(ws)
    assert code == 1000
    assert 1.0 < seconds(audio) < 4.0


async def test_bad_voice_in_first_settings_is_refused(url: str) -> None:
    for settings in ({"voice": "no-such-voice"}, {"language": "xx"}, {"voice": "en+nobody"}, {"rate": 5}):
        async with open_websocket_url(url) as ws:
            await recv_json(ws)
            await send_json(ws, settings)
            error = await recv_json(ws)
            assert error["type"] == "error" and error["code"] == "invalid_parameter"
            assert error["message"]
            _, code = await until_closed(ws)
            assert code == 1008


async def test_bad_settings_later_keep_the_session(url: str) -> None:
    async with open_websocket_url(url) as ws:
        await recv_json(ws)
        await send_json(ws, {"voice": "en-us"})
        await send_json(ws, {"voice": "nope"})
        error = await recv_json(ws)
        assert error["type"] == "error" and "nope" in error["message"]
        await ws.send_message(b"\x00\x01")
        error = await recv_json(ws)
        assert error["code"] == "invalid_message"
        await send_json(ws, {"type": "control", "action": "rewind"})
        error = await recv_json(ws)
        assert error["code"] == "unknown_command"
        await ws.send_message("Still speaking.")
        await send_json(ws, FLUSH)
        audio, flushed, _ = await until_flushed(ws)
        assert seconds(audio) > 0.5 and flushed == {"type": "flushed"}


async def test_stop_interrupts_and_the_session_goes_on(url: str, gated: GatedSynth) -> None:
    gated.gated = True
    async with open_websocket_url(url) as ws:
        await recv_json(ws)
        await ws.send_message(LONG_TEXT)
        await send_json(ws, FLUSH)
        with trio.fail_after(HANG_GUARD):
            first = await ws.get_message()
        assert isinstance(first, bytes)
        await send_json(ws, STOP)
        audio, flushed, _ = await until_flushed(ws)
        assert flushed == {"type": "flushed", "interrupted": True}
        result = gated.results[-1]
        assert result.cancelled
        full = seconds(first + audio)
        assert full < 5.0  # the long text would be minutes of audio

        gated.gated = False
        await ws.send_message("Back again.")
        await send_json(ws, FLUSH)
        audio, flushed, _ = await until_flushed(ws)
        assert flushed == {"type": "flushed"} and seconds(audio) > 0.5


async def test_unflushed_text_is_bounded(url: str) -> None:
    async with open_websocket_url(url) as ws:
        await recv_json(ws)
        await ws.send_message("word " * (MAX_BUFFERED_CHARS // 5 + 1))
        error = await recv_json(ws)
        assert error["type"] == "error" and error["code"] == "text_too_long"
        await ws.send_message("Short.")
        await send_json(ws, FLUSH)
        audio, flushed, _ = await until_flushed(ws)
        assert 0 < seconds(audio) < 2.0 and flushed == {"type": "flushed"}


async def test_stop_drops_unflushed_text(url: str) -> None:
    async with open_websocket_url(url) as ws:
        await recv_json(ws)
        await ws.send_message("This text is never flushed.")
        await send_json(ws, STOP)
        await send_json(ws, FLUSH)
        audio, flushed, _ = await until_flushed(ws)
        assert audio == b"" and flushed == {"type": "flushed"}


async def test_disconnect_mid_synthesis_cancels_and_others_are_served(
    url: str, gated: GatedSynth
) -> None:
    gated.gated = True
    async with open_websocket_url(url) as ws:
        await recv_json(ws)
        await ws.send_message(LONG_TEXT)
        await send_json(ws, FLUSH)
        with trio.fail_after(HANG_GUARD):
            first = await ws.get_message()
        assert isinstance(first, bytes)
        # Leaving the block closes the socket while eSpeak is mid-text.
    gated.gated = False
    async with open_websocket_url(url) as ws:
        await recv_json(ws)
        await ws.send_message("Another client.")
        await send_json(ws, FLUSH)
        audio, flushed, _ = await until_flushed(ws)
        assert flushed == {"type": "flushed"} and seconds(audio) > 0.5
    cancelled, served = gated.results[-2:]
    assert cancelled.cancelled and seconds(b"\0\0" * cancelled.samples) < 5.0
    assert not served.cancelled


async def test_concurrent_clients_each_get_their_audio(url: str) -> None:
    results: dict[int, tuple[bytes, dict[str, Any]]] = {}

    async def client(i: int) -> None:
        async with open_websocket_url(url) as ws:
            await recv_json(ws)
            await send_json(ws, {"voice": "en-us+f3" if i % 2 else "en-us"})
            for _ in range(2):
                await ws.send_message(f"Client number {i} says hello.")
                await send_json(ws, FLUSH)
                results[i] = (await until_flushed(ws))[:2]

    async with trio.open_nursery() as nursery:
        for i in range(4):
            nursery.start_soon(client, i)
    assert sorted(results) == [0, 1, 2, 3]
    for audio, flushed in results.values():
        assert flushed == {"type": "flushed"}
        assert 1.0 < seconds(audio) < 5.0
