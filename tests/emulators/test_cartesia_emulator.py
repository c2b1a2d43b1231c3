"""The Cartesia emulator alone, over real sockets in front of the real eSpeak engine, and
with the official ``cartesia`` SDK (PyPI ``cartesia[websockets]``) pointed at it."""

from __future__ import annotations

import base64
import struct

import numpy as np
import orjson
import pytest
import trio
import trio_websocket

from harness import EMULATOR_KEY, start_emulator
from slng_fast import _native
from slng_fast.emulators import cartesia as emulator

VERSION = "2026-08-14"
VOICE = "694f9389-aac1-45b6-b726-9d9369183238"
OTHER_VOICE = "f786b574-daa5-4673-aa0c-cbe3e8534c02"


def request(transcript: str, context_id: str = "c1", more: bool = False, **over) -> str:
    message = {"model_id": "sonic-3", "transcript": transcript, "context_id": context_id,
               "voice": {"mode": "id", "id": VOICE}, "continue": more,
               "output_format": {"container": "raw", "encoding": "pcm_s16le",
                                 "sample_rate": 16000},
               "language": "en"}
    message.update(over)
    return orjson.dumps(message).decode()


def handshake(base: str, *, key: str | None = EMULATOR_KEY, version: str | None = VERSION,
              query: str = "", path: str = "/tts/websocket"):
    headers = []
    if key is not None:
        headers.append((b"x-api-key", key.encode()))
    if version is not None:
        headers.append((b"cartesia-version", version.encode()))
    return f"{base}{path}{query}", headers


async def connect(nursery, base: str, **kw):
    url, headers = handshake(base, **kw)
    return await trio_websocket.connect_websocket_url(nursery, url, None, extra_headers=headers)


async def until(ws, kind: str, context_id: str | None = None) -> list[dict]:
    out = []
    while True:
        message = orjson.loads(await ws.get_message())
        out.append(message)
        if message["type"] == kind and (context_id is None or message.get("context_id") == context_id):
            return out


def audio(messages: list[dict], context_id: str | None = None) -> bytes:
    return b"".join(base64.b64decode(m["data"]) for m in messages
                    if m["type"] == "chunk" and (context_id is None or m["context_id"] == context_id))


def pitch(pcm: bytes, rate: int) -> float:
    """The median pitch (Hz) of the voiced parts, by autocorrelation."""
    x = np.frombuffer(pcm, "<i2").astype(float)
    size = rate // 20
    found = []
    for i in range(0, len(x) - size, size // 2):
        w = x[i:i + size]
        if np.abs(w).mean() < 500:
            continue
        w = w - w.mean()
        ac = np.correlate(w, w, "full")[size - 1:]
        lo, hi = rate // 400, rate // 60
        found.append(rate / (lo + int(np.argmax(ac[lo:hi]))))
    return float(np.median(found))


def loudness(pcm: bytes) -> float:
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    return sum(abs(s) for s in samples) / max(1, len(samples))


@pytest.fixture
async def base(nursery, engines):
    urls, _info = engines
    return await start_emulator(nursery, "cartesia", urls)


async def test_speaks_a_context_as_chunks_then_done(nursery, base):
    ws = await connect(nursery, base)
    await ws.send_message(request("Hello world. This is the emulator.", add_timestamps=True))
    messages = await until(ws, "done")
    assert {m["context_id"] for m in messages} == {"c1"}
    chunks = [m for m in messages if m["type"] == "chunk"]
    assert chunks and all(m["done"] is False and m["status_code"] == 206 for m in chunks)
    assert all(isinstance(m["step_time"], float) for m in chunks)
    pcm = audio(messages)
    assert len(pcm) % 2 == 0 and 1.0 < len(pcm) / 2 / 16000 < 6
    assert loudness(pcm) > 200  # speech, not silence
    stamps = [m for m in messages if m["type"] == "timestamps"]
    words = [w for m in stamps for w in m["word_timestamps"]["words"]]
    assert words == ["Hello", "world.", "This", "is", "the", "emulator."]
    starts = [s for m in stamps for s in m["word_timestamps"]["start"]]
    ends = [e for m in stamps for e in m["word_timestamps"]["end"]]
    assert starts == sorted(starts) and all(s < e for s, e in zip(starts, ends))
    assert ends[-1] <= len(pcm) / 2 / 16000 + 1e-3
    assert messages[-1] == {"type": "done", "context_id": "c1", "status_code": 206,
                            "done": True}
    await ws.aclose()


async def test_continuations_flush_done_and_one_done(nursery, base):
    ws = await connect(nursery, base)
    await ws.send_message(request("Stay hungry, ", more=True))
    await ws.send_message(request("stay foolish", more=True, flush=True))
    first = await until(ws, "flush_done")
    assert first[-1]["flush_id"] == 1 and first[-1]["flush_done"] is True
    assert audio(first)
    await ws.send_message(request("And again.", more=True))
    await ws.send_message(request("", more=False))
    rest = await until(ws, "done")
    assert audio(rest) and [m["type"] for m in rest].count("done") == 1
    await ws.aclose()


async def test_encodings_and_rates(nursery, base):
    ws = await connect(nursery, base)
    got = {}
    for n, (encoding, rate) in enumerate([("pcm_s16le", 8000), ("pcm_mulaw", 8000),
                                          ("pcm_alaw", 8000), ("pcm_f32le", 44100),
                                          ("pcm_s16le", 44100)]):
        fmt = {"container": "raw", "encoding": encoding, "sample_rate": rate}
        await ws.send_message(request("One two three.", f"e{n}", output_format=fmt))
        got[(encoding, rate)] = audio(await until(ws, "done", f"e{n}"))
    # eSpeak's output varies a little from run to run: compare lengths and pitch, not bytes.
    pcm8 = got[("pcm_s16le", 8000)]
    for decoded in (_native.mulaw_to_pcm16(got[("pcm_mulaw", 8000)]),
                    _native.alaw_to_pcm16(got[("pcm_alaw", 8000)])):
        assert len(decoded) == pytest.approx(len(pcm8), rel=0.01)
        assert pitch(decoded, 8000) == pytest.approx(pitch(pcm8, 8000), rel=0.1)
    pcm44 = got[("pcm_s16le", 44100)]
    f32 = _native.f32_to_pcm16(got[("pcm_f32le", 44100)])
    assert len(f32) == pytest.approx(len(pcm44), rel=0.01)
    assert len(pcm44) / 44100 == pytest.approx(len(pcm8) / 8000, rel=0.01)
    assert pitch(f32, 44100) == pytest.approx(pitch(pcm8, 8000), rel=0.1)
    await ws.aclose()


async def test_the_voice_id_picks_the_voice(nursery, base):
    ws = await connect(nursery, base)
    results = []
    for n, voice in enumerate([VOICE, OTHER_VOICE, VOICE]):
        await ws.send_message(request("Same words.", f"v{n}", voice={"mode": "id", "id": voice}))
        results.append(audio(await until(ws, "done", f"v{n}")))
    same, other, again = (pitch(r, 16000) for r in results)
    assert again == pytest.approx(same, rel=0.05)
    assert abs(other - same) > 0.3 * same  # another eSpeak variant
    await ws.aclose()


async def test_cancel_stops_a_context_and_the_socket_goes_on(nursery, base):
    ws = await connect(nursery, base)
    await ws.send_message(request("Words without an end", "a", more=True,
                                  max_buffer_delay_ms=5000))
    await ws.send_message(orjson.dumps({"context_id": "a", "cancel": True}).decode())
    await ws.send_message(request("Second context.", "b"))
    messages = await until(ws, "done", "b")
    assert {m["context_id"] for m in messages} == {"b"}
    await ws.send_message(request("more", "a"))  # a cancelled context is over
    (err,) = await until(ws, "error")
    assert err["context_id"] == "a"
    await ws.aclose()


async def test_bad_requests_get_a_context_error_and_the_socket_stays_open(nursery, base):
    ws = await connect(nursery, base)
    bad = [
        request("x", "e1", output_format={"container": "raw", "encoding": "mp3",
                                          "sample_rate": 16000}),
        request("x", "e2", output_format={"container": "raw", "encoding": "pcm_s16le",
                                          "sample_rate": 12345}),
        request("x", "e3", model_id="whisper"),
        request("x", "e4", voice={"mode": "embedding", "embedding": [0.1]}),
        request("x", "e5", language="xx"),
        orjson.dumps({"context_id": "e6", "transcript": "x"}).decode(),
    ]
    for n, frame in enumerate(bad, 1):
        await ws.send_message(frame)
        (err,) = await until(ws, "error")
        assert err["context_id"] == f"e{n}" and err["done"] is True
        assert err["status_code"] in (400, 404) and err["message"]
    await ws.send_message("not json")
    (err,) = await until(ws, "error")
    assert "context_id" not in err
    await ws.send_message(request("Still here.", "ok"))
    assert audio(await until(ws, "done", "ok"))
    await ws.send_message(request("more", "ok"))  # a done context cannot be continued
    (err,) = await until(ws, "error")
    assert err["context_id"] == "ok"
    await ws.aclose()


async def test_handshake_needs_the_key_and_the_version(nursery, base):
    for kw, status in (({"key": None}, 401), ({"key": "wrong"}, 401), ({"version": None}, 400),
                       ({"version": "latest"}, 400), ({"path": "/v1/elsewhere"}, 404)):
        url, headers = handshake(base, **kw)
        with pytest.raises(trio_websocket.ConnectionRejected) as info:
            async with trio_websocket.open_websocket_url(url, extra_headers=headers):
                pass
        assert info.value.status_code == status
        assert orjson.loads(info.value.body)["message"]
    ws = await connect(nursery, base, key=None, version=None,
                       query=f"?api_key={EMULATOR_KEY}&cartesia_version={VERSION}")
    await ws.send_message(request("Query auth."))
    assert audio(await until(ws, "done"))
    await ws.aclose()


async def test_without_a_key_anyone_may_connect(nursery, engines):
    urls, _info = engines
    open_base = await start_emulator(nursery, "cartesia", urls, api_key=None)
    ws = await connect(nursery, open_base, key=None)
    await ws.send_message(request("Open."))
    assert audio(await until(ws, "done"))
    await ws.aclose()


async def test_idle_socket_is_closed_after_the_timeout(nursery, autojump_clock):
    # No engine: nothing is spoken. The clock jumps over the five idle minutes.
    base = await start_emulator(nursery, "cartesia", {"espeak": "ws://127.0.0.1:9/"})
    before = emulator.stats["idle_closed"]
    ws = await connect(nursery, base)
    start = trio.current_time()
    with pytest.raises(trio_websocket.ConnectionClosed) as info:
        await ws.get_message()
    assert info.value.reason.code == 1000
    assert trio.current_time() - start >= emulator.IDLE_TIMEOUT
    assert emulator.stats["idle_closed"] == before + 1


async def test_engine_unavailable_is_a_retryable_context_error(nursery):
    base = await start_emulator(nursery, "cartesia", {"espeak": "ws://127.0.0.1:9/"})
    ws = await connect(nursery, base)
    await ws.send_message(request("Nobody speaks."))
    (err,) = await until(ws, "error")
    assert err["context_id"] == "c1" and err["status_code"] == 503
    await ws.aclose()


# -- the official SDK ------------------------------------------------------------------------

def sdk_speak(base: str) -> dict:
    import cartesia

    client = cartesia.Cartesia(api_key=EMULATOR_KEY, websocket_base_url=base)
    out: dict = {"audio": b"", "words": [], "types": [], "flush_ids": []}
    with client.tts.websocket_connect() as connection:
        ctx = connection.context(
            model_id="sonic-3", voice={"mode": "id", "id": VOICE},
            output_format={"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000},
            language="en", add_timestamps=True)
        ctx.push("Hello from ")
        ctx.push("the official SDK.", flush=True)
        ctx.push("Goodbye.")
        ctx.no_more_inputs()
        for response in ctx.receive():
            out["types"].append(response.type)
            if response.type == "chunk" and response.audio:
                out["audio"] += response.audio
            elif response.type == "timestamps" and response.word_timestamps:
                out["words"] += response.word_timestamps.words
            elif response.type == "flush_done":
                out["flush_ids"].append(response.flush_id)
        # a second context on the same connection, cancelled before it ends
        other = connection.context(
            model_id="sonic-3", voice={"mode": "id", "id": OTHER_VOICE},
            output_format={"container": "raw", "encoding": "pcm_f32le", "sample_rate": 44100},
            max_buffer_delay_ms=5000)
        other.push("This is never finished")
        other.cancel()
        third = connection.context(
            model_id="sonic-3", voice={"mode": "id", "id": OTHER_VOICE},
            output_format={"container": "raw", "encoding": "pcm_f32le", "sample_rate": 44100})
        third.push("Float audio.")
        third.no_more_inputs()
        out["f32"] = b"".join(r.audio for r in third.receive() if r.type == "chunk" and r.audio)
    return out


async def test_the_official_sdk_speaks_with_the_emulator(base):
    pytest.importorskip("cartesia")
    pytest.importorskip("websockets")
    got = await trio.to_thread.run_sync(sdk_speak, base)
    assert got["types"][-1] == "done" and got["flush_ids"] == [1]
    assert got["words"] == ["Hello", "from", "the", "official", "SDK.", "Goodbye."]
    assert 1.0 < len(got["audio"]) / 2 / 24000 < 8 and loudness(got["audio"]) > 200
    assert got["f32"] and len(got["f32"]) % 4 == 0
