"""The ElevenLabs emulator by itself, speaking ElevenLabs' public protocol over real
sockets with the real espeak engine behind it, and with the official ``elevenlabs`` SDK."""

from __future__ import annotations

import base64

import orjson
import pytest
import trio
import trio_websocket

from harness import EMULATOR_KEY, start_emulator

VOICE = "21m00Tcm4TlvDq8ikWAM"


@pytest.fixture
async def emulator(nursery, engines):
    urls, _ = engines
    return await start_emulator(nursery, "elevenlabs", urls)


async def connect(nursery, base: str, endpoint: str = "stream-input", query: str = "",
                  key: str | None = EMULATOR_KEY):
    headers = [(b"xi-api-key", key.encode())] if key else []
    url = f"{base}/v1/text-to-speech/{VOICE}/{endpoint}?{query}"
    return await trio_websocket.connect_websocket_url(nursery, url, extra_headers=headers)


async def send(ws, **fields) -> None:
    await ws.send_message(orjson.dumps(fields).decode())


async def answers(ws, *, until_final: int = 1) -> list[dict]:
    """Messages up to the ``until_final``-th ``isFinal`` (or the close)."""
    out, finals = [], 0
    try:
        while finals < until_final:
            message = orjson.loads(await ws.get_message())
            out.append(message)
            finals += bool(message.get("isFinal"))
    except trio_websocket.ConnectionClosed:
        pass
    return out


async def close_code(ws) -> int:
    try:
        while True:
            await ws.get_message()
    except trio_websocket.ConnectionClosed as exc:
        return exc.reason.code


def audio(messages: list[dict], context: str | None = None) -> bytes:
    return b"".join(base64.b64decode(m["audio"]) for m in messages
                    if m.get("audio") and (context is None or m.get("contextId") == context))


def spoken_chars(messages: list[dict]) -> str:
    return "".join("".join(m["alignment"]["chars"]) for m in messages if m.get("audio"))


async def speak_stream(nursery, base: str, fmt: str, text: str = "Hello world. ") -> bytes:
    ws = await connect(nursery, base, query=f"output_format={fmt}")
    await send(ws, text=" ", voice_settings={"stability": 0.5})
    await send(ws, text=text, flush=True)
    await send(ws, text="")
    messages = await answers(ws)
    assert messages[-1] == {"isFinal": True}
    assert await close_code(ws) == 1000
    return audio(messages)


async def test_stream_input_speaks_with_alignment_then_is_final_and_closes(nursery, emulator):
    ws = await connect(nursery, emulator, query="output_format=pcm_24000&model_id=eleven_flash_v2_5")
    await send(ws, text=" ", voice_settings={"stability": 0.5, "similarity_boost": 0.8})
    await send(ws, text="Hello world. ")
    await send(ws, text="How are you? ", flush=True)
    await send(ws, text="")
    messages = await answers(ws)
    assert messages[-1] == {"isFinal": True}
    spoken = [m for m in messages if m.get("audio")]
    assert spoken and all("contextId" not in m for m in messages)
    assert spoken_chars(messages) == "Hello world. How are you? "
    for m in spoken:
        a = m["alignment"]
        assert len(a["chars"]) == len(a["charStartTimesMs"]) == len(a["charDurationsMs"])
        chunk_ms = len(base64.b64decode(m["audio"])) / 2 / 24
        assert all(0 <= t <= chunk_ms for t in a["charStartTimesMs"])  # chunk-relative
    assert len(audio(messages)) > 24000  # over half a second of 24 kHz PCM16
    assert await close_code(ws) == 1000


async def test_output_formats_are_resampled_from_espeak(nursery, emulator):
    native = await speak_stream(nursery, emulator, "pcm_22050")
    n = len(native) // 2
    for fmt, rate, width in (("pcm_16000", 16000, 2), ("pcm_44100", 44100, 2),
                             ("ulaw_8000", 8000, 1), ("alaw_8000", 8000, 1)):
        out = await speak_stream(nursery, emulator, fmt)
        # espeak may differ by a few samples between runs; the rate ratio holds
        assert len(out) / width == pytest.approx(n * rate / 22050, rel=0.005), fmt


async def test_multi_stream_contexts_flush_close_and_answer_with_context_ids(nursery, emulator):
    ws = await connect(nursery, emulator, "multi-stream-input", "output_format=pcm_16000")
    await send(ws, text=" ", context_id="a", voice_settings={"speed": 1.1})
    await send(ws, text="First context. ", context_id="a", flush=True)
    await send(ws, text="Second one. ", context_id="b", flush=True)
    await send(ws, context_id="a", close_context=True)
    await send(ws, context_id="b", close_context=True)
    messages = await answers(ws, until_final=2)
    finals = [m for m in messages if m.get("isFinal")]
    assert sorted(m["contextId"] for m in finals) == ["a", "b"]
    assert {m["contextId"] for m in messages} == {"a", "b"}
    assert audio(messages, "a") and audio(messages, "b")
    await send(ws, text="", context_id="b")  # a keep-alive for a closed context: nothing
    await send(ws, text="Third. ", context_id="c", flush=True)
    await send(ws, close_socket=True)
    rest = await answers(ws)
    assert rest[-1] == {"isFinal": True, "contextId": "c"} and audio(rest, "c")
    assert await close_code(ws) == 1000


async def test_close_context_drops_unflushed_text(nursery, emulator):
    ws = await connect(nursery, emulator, "multi-stream-input", "output_format=pcm_16000")
    await send(ws, text="never flushed ", context_id="x")
    await send(ws, context_id="x", close_context=True)
    assert await answers(ws) == [{"isFinal": True, "contextId": "x"}]
    await ws.aclose()


async def test_chunk_length_schedule_speaks_before_flush(nursery, emulator):
    ws = await connect(nursery, emulator, query="output_format=pcm_16000")
    await send(ws, text=" ", generation_config={"chunk_length_schedule": [50]})
    await send(ws, text="This sentence is long enough to pass the first threshold of fifty. ")
    first = orjson.loads(await ws.get_message())  # audio with no flush and no end of input
    assert first["audio"] and first["alignment"]["chars"][0] == "T"
    await ws.aclose()


async def test_wrong_or_missing_key_is_an_error_then_1008(nursery, emulator):
    ws = await connect(nursery, emulator, query="output_format=pcm_16000", key="wrong")
    (message,) = await answers(ws)
    assert set(message) == {"message", "error", "code"} and message["code"] == 1008
    assert message["error"] == "invalid_api_key"
    assert await close_code(ws) == 1008
    ws = await connect(nursery, emulator, query="output_format=pcm_16000", key=None)
    await send(ws, text=" ")
    (message,) = await answers(ws)
    assert message["error"] == "invalid_api_key"
    assert await close_code(ws) == 1008


async def test_key_in_the_first_message_is_accepted(nursery, emulator):
    ws = await connect(nursery, emulator, query="output_format=pcm_16000", key=None)
    await send(ws, text=" ", xi_api_key=EMULATOR_KEY)
    await send(ws, text="Hi. ", flush=True)
    await send(ws, text="")
    messages = await answers(ws)
    assert audio(messages) and messages[-1] == {"isFinal": True}


async def test_mp3_cannot_be_made_here_and_is_refused(nursery, emulator):
    ws = await connect(nursery, emulator)  # no output_format: ElevenLabs' default mp3
    (message,) = await answers(ws)
    assert message["error"] == "invalid_output_format" and "mp3_44100_128" in message["message"]
    assert await close_code(ws) == 1008


async def test_unknown_path_is_404(nursery, emulator):
    with pytest.raises(trio_websocket.ConnectionRejected) as info:
        async with trio_websocket.open_websocket_url(f"{emulator}/v1/voices"):
            pass
    assert info.value.status_code == 404


@pytest.mark.parametrize("query, seconds", [("", 20), ("&inactivity_timeout=60", 60)])
async def test_inactivity_timeout_closes_with_the_documented_error(
        nursery, emulator, autojump_clock, query, seconds):
    ws = await connect(nursery, emulator, "multi-stream-input", f"output_format=pcm_16000{query}")
    start = trio.current_time()
    (message,) = await answers(ws)
    assert message["error"] == "input_timeout_exceeded" and message["code"] == 1008
    assert trio.current_time() - start == pytest.approx(seconds, abs=0.5)
    assert await close_code(ws) == 1008


async def test_a_keep_alive_space_resets_the_inactivity_timer(nursery, emulator, autojump_clock):
    ws = await connect(nursery, emulator, "multi-stream-input", "output_format=pcm_16000")
    start = trio.current_time()
    for _ in range(4):
        await trio.sleep(15)
        await send(ws, text=" ")
    (message,) = await answers(ws)
    assert message["error"] == "input_timeout_exceeded"
    assert trio.current_time() - start == pytest.approx(80, abs=0.5)


# -- the official SDK ----------------------------------------------------------------------

async def test_the_official_sdk_streams_from_the_emulator_over_tls(nursery, engines, monkeypatch,
                                                                 tmp_path):
    """``elevenlabs`` (PyPI) forces wss://, so the emulator serves TLS with a trustme CA
    that the SDK's default SSL context is told to trust (SSL_CERT_FILE)."""
    elevenlabs = pytest.importorskip("elevenlabs")
    trustme = pytest.importorskip("trustme")
    import ssl

    from slng_fast.emulators.elevenlabs import serve_emulator

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    urls, _ = engines

    async def serve(task_status=trio.TASK_STATUS_IGNORED):
        await serve_emulator("127.0.0.1", 0, engine_url=urls["espeak"], api_key=EMULATOR_KEY,
                             ssl_context=server_ctx, task_status=task_status)

    port = await nursery.start(serve)
    client = elevenlabs.ElevenLabs(api_key=EMULATOR_KEY, base_url=f"https://127.0.0.1:{port}")

    def run() -> bytes:
        def text():
            yield "Hello from the official "
            yield "ElevenLabs SDK. "
        return b"".join(client.text_to_speech.convert_realtime(
            voice_id=VOICE, text=text(), model_id="eleven_flash_v2_5",
            output_format="pcm_16000"))

    pcm = await trio.to_thread.run_sync(run)
    assert len(pcm) > 16000 and len(pcm) % 2 == 0  # over half a second of 16 kHz PCM16

    wrong = elevenlabs.ElevenLabs(api_key="wrong", base_url=f"https://127.0.0.1:{port}")

    def refused() -> Exception:
        try:
            b"".join(wrong.text_to_speech.convert_realtime(
                voice_id=VOICE, text=iter(["Hi. "]), output_format="pcm_16000"))
        except Exception as exc:  # the SDK's ApiError, with our JSON body
            return exc
        raise AssertionError("the wrong key was accepted")

    exc = await trio.to_thread.run_sync(refused)
    assert getattr(exc, "status_code", None) == 1008
    assert "invalid_api_key" in str(getattr(exc, "body", ""))  # our close reason or JSON
