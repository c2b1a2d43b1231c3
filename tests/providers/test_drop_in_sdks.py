"""The official Python SDKs of ElevenLabs, Deepgram and Cartesia, unchanged but for their
base URL and key, speaking through the gateway's drop-in routes to the emulators. The
gateway key goes where each SDK puts its API key; the gateway holds the provider's."""

from __future__ import annotations

import ssl

import pytest
import trio
import trio_websocket

from harness import EMULATOR_KEY, make_gateway, start_emulator
from slng_fast.config import ProviderConfig
from slng_fast.gateway.server import serve_gateway
from wsclient import auth


async def gateway_for(nursery, tmp_path, engines, name: str, ssl_context=None):
    urls, info = engines
    base = await start_emulator(nursery, name, urls)
    running = make_gateway(tmp_path, urls, info,
                           providers={name: ProviderConfig(url=base, api_key=EMULATOR_KEY)})
    port = await nursery.start(lambda task_status: serve_gateway(
        running.gateway, "127.0.0.1", 0, ssl_context=ssl_context, task_status=task_status))
    return running, port


def usage_of(running, provider: str) -> list[dict]:
    return [row for row in running.store.usage_rows() if row["provider"] == provider]


async def wait_for_ledger(running, provider: str) -> dict:
    for _ in range(200):
        rows = [r for r in usage_of(running, provider) if r["ended_at"] is not None]
        if rows:
            return rows[-1]
        await trio.sleep(0.05)
    raise AssertionError("the session was not written to the ledger")


async def test_elevenlabs_sdk_through_the_gateway_over_wss(nursery, tmp_path, engines,
                                                           monkeypatch):
    elevenlabs = pytest.importorskip("elevenlabs")
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # the SDK always dials wss://
    running, port = await gateway_for(nursery, tmp_path, engines, "elevenlabs", server_ctx)
    client = elevenlabs.ElevenLabs(api_key=running.keys["pro"],
                                   base_url=f"https://127.0.0.1:{port}/elevenlabs")

    def speak() -> bytes:
        def text():
            yield "Hello through the "
            yield "gateway. "
        return b"".join(client.text_to_speech.convert_realtime(
            voice_id="21m00Tcm4TlvDq8ikWAM", text=text(), model_id="eleven_flash_v2_5",
            output_format="pcm_16000"))

    pcm = await trio.to_thread.run_sync(speak)
    assert len(pcm) > 16000 and len(pcm) % 2 == 0
    row = await wait_for_ledger(running, "elevenlabs")
    assert row["key_id"] == running.key_ids["pro"] and row["characters"] > 0

    wrong = elevenlabs.ElevenLabs(api_key="not-a-gateway-key",
                                  base_url=f"https://127.0.0.1:{port}/elevenlabs")

    def refused() -> Exception:
        try:
            b"".join(wrong.text_to_speech.convert_realtime(
                voice_id="x", text=iter(["Hi. "]), output_format="pcm_16000"))
        except Exception as exc:
            return exc
        raise AssertionError("a wrong gateway key was accepted")

    exc = await trio.to_thread.run_sync(refused)
    assert "4000" in repr(exc) or getattr(exc, "status_code", None) == 4000, repr(exc)


async def test_deepgram_sdk_through_the_gateway(nursery, tmp_path, engines):
    deepgram = pytest.importorskip("deepgram")
    from deepgram.environment import DeepgramClientEnvironment
    from deepgram.speak.v1 import SpeakV1Text

    running, port = await gateway_for(nursery, tmp_path, engines, "deepgram")
    base = f"127.0.0.1:{port}/deepgram"
    environment = DeepgramClientEnvironment(base=f"http://{base}", production=f"ws://{base}",
                                            agent=f"ws://{base}", agent_rest=f"http://{base}")
    client = deepgram.DeepgramClient(api_key=running.keys["pro"], environment=environment,
                                     reconnect=False)

    def speak() -> tuple[list[str], bytes]:
        kinds, audio = [], bytearray()
        with client.speak.v1.connect(model="aura-asteria-en", encoding="linear16",
                                     sample_rate="16000") as connection:
            connection.send_text(SpeakV1Text(type="Speak", text="Hello through the gateway."))
            connection.send_flush()
            for message in connection:
                if isinstance(message, bytes):
                    audio += message
                    continue
                kinds.append(message.type)
                if message.type == "Flushed":
                    break
            connection.send_close()
        return kinds, bytes(audio)

    kinds, audio = await trio.to_thread.run_sync(speak)
    assert kinds == ["Metadata", "Flushed"]  # Deepgram's own messages, relayed unchanged
    assert len(audio) > 16000
    row = await wait_for_ledger(running, "deepgram")
    assert row["audio_ms"] > 500 and row["characters"] > 0


async def test_cartesia_sdk_through_the_gateway(nursery, tmp_path, engines):
    cartesia = pytest.importorskip("cartesia")
    pytest.importorskip("websockets")
    running, port = await gateway_for(nursery, tmp_path, engines, "cartesia")
    client = cartesia.Cartesia(api_key=running.keys["pro"],
                               websocket_base_url=f"ws://127.0.0.1:{port}/cartesia")

    def speak() -> tuple[list[str], bytes]:
        kinds, audio = [], b""
        with client.tts.websocket_connect() as connection:
            ctx = connection.context(
                model_id="sonic-3", voice={"mode": "id", "id": "a0e99841-438c-4a64-b679-ae501e7d6091"},
                output_format={"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000},
                language="en", add_timestamps=True)
            ctx.push("Hello through the gateway.")
            ctx.no_more_inputs()
            for response in ctx.receive():
                kinds.append(response.type)
                if response.type == "chunk" and response.audio:
                    audio += response.audio
        return kinds, audio

    kinds, audio = await trio.to_thread.run_sync(speak)
    assert kinds[-1] == "done" and "chunk" in kinds and "timestamps" in kinds
    assert len(audio) > 24000
    await wait_for_ledger(running, "cartesia")


@pytest.mark.parametrize("name, path", [
    ("cartesia", "/cartesia/voices"),
    ("cartesia", "/cartesia/tts/websocket%2F..%2F..%2Fapi-keys"),
    ("elevenlabs", "/elevenlabs/v1/text-to-speech/%2e%2e/%2e%2e/v1/user/stream-input"),
    ("elevenlabs", "/elevenlabs/v1/user"),
    ("deepgram", "/deepgram/v1/listen"),
])
async def test_other_paths_under_a_drop_in_route_are_refused_at_the_handshake(
        nursery, tmp_path, engines, name, path):
    running, port = await gateway_for(nursery, tmp_path, engines, name)
    with pytest.raises(trio_websocket.HandshakeError) as refused:
        async with trio_websocket.open_websocket_url(
                f"ws://127.0.0.1:{port}{path}", extra_headers=auth(running.keys["pro"])):
            pass
    assert refused.value.status_code == 404  # as an unknown endpoint; nothing went upstream
    assert usage_of(running, name) == []
