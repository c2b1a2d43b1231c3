"""The emulators' REST voice listings, on the same port as their WebSockets: read by the
providers' official SDKs (and checked against the SDKs' own response models, strictly), the
key checked like the WebSocket side, and the WebSocket still served next to them."""

from __future__ import annotations

import httpx
import pytest
import trio

from harness import EMULATOR_KEY, start_emulator


def http_base(ws_url: str) -> str:
    return ws_url.replace("ws://", "http://")


async def get(url: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.get(url, headers=headers)


async def test_elevenlabs_lists_the_engine_voices_for_its_sdk(nursery, engines):
    elevenlabs = pytest.importorskip("elevenlabs")
    from elevenlabs.types import GetVoicesResponse

    base = http_base(await start_emulator(nursery, "elevenlabs", engines[0]))
    raw = await get(f"{base}/v1/voices", **{"xi-api-key": EMULATOR_KEY})
    assert raw.status_code == 200
    GetVoicesResponse.model_validate(raw.json())  # strictly the SDK's model

    def listing() -> list:
        client = elevenlabs.ElevenLabs(api_key=EMULATOR_KEY, base_url=base)
        return client.voices.get_all().voices

    voices = await trio.to_thread.run_sync(listing)
    en_us = next(v for v in voices if v.voice_id == "en-us")
    assert en_us.name == "English (America)" and en_us.labels["gender"] == "male"
    assert en_us.verified_languages[0].locale == "en-US" and len(voices) > 50

    for headers in ({}, {"xi-api-key": "wrong"}):
        refused = await get(f"{base}/v1/voices", **headers)
        assert refused.status_code == 401
        assert refused.json()["detail"]["status"] == "invalid_api_key"
    assert (await get(f"{base}/v1/nothing-here")).status_code == 404


async def test_cartesia_pages_the_engine_voices_for_its_sdk(nursery, engines):
    cartesia = pytest.importorskip("cartesia")
    from cartesia.types import Voice

    base = http_base(await start_emulator(nursery, "cartesia", engines[0]))
    version = {"Cartesia-Version": "2026-08-14"}
    first = await get(f"{base}/voices?limit=5", **{"X-API-Key": EMULATOR_KEY}, **version)
    assert first.status_code == 200 and first.json()["has_more"] is True
    for entry in first.json()["data"]:
        Voice.model_validate(entry)

    def listing() -> list:
        client = cartesia.Cartesia(api_key=EMULATOR_KEY, base_url=base)
        return list(client.voices.list(limit=100))  # every page, by starting_after

    voices = await trio.to_thread.run_sync(listing)
    assert len({v.id for v in voices}) == len(voices) > 50
    en_us = next(v for v in voices if v.id == "en-us")
    assert en_us.language == "en" and en_us.gender == "masculine"
    assert en_us.locales[0].locale == "en-US" and en_us.locales[0].is_native

    assert (await get(f"{base}/voices", **{"X-API-Key": "wrong"}, **version)).status_code == 401
    assert (await get(f"{base}/voices", **{"X-API-Key": EMULATOR_KEY})).status_code == 400


async def test_deepgram_lists_the_engine_voices_as_models_for_its_sdk(nursery, engines):
    pytest.importorskip("deepgram")
    from deepgram.types import ListModelsV1Response
    from test_deepgram_emulator import sdk_client

    ws_base = await start_emulator(nursery, "deepgram", engines[0])
    base, port = http_base(ws_base), int(ws_base.rsplit(":", 1)[1])
    raw = await get(f"{base}/v1/models", Authorization=f"Token {EMULATOR_KEY}")
    assert raw.status_code == 200 and raw.json()["stt"] == []
    ListModelsV1Response.model_validate(raw.json())

    models = await trio.to_thread.run_sync(
        lambda: sdk_client(port, EMULATOR_KEY).manage.v1.models.list().tts)
    en_us = next(m for m in models if m.name == "en-us")
    assert en_us.canonical_name == "aura-en_us-en" and en_us.metadata.tags == ["masculine"]
    assert (await get(f"{base}/v1/models", Authorization="Token wrong")).status_code == 401


def test_a_listed_deepgram_model_speaks_with_its_espeak_voice():
    from slng_fast.emulators.deepgram import espeak_voice

    available = {"en-us", "en-gb", "de"}
    assert espeak_voice("aura-en_gb-en", available).startswith("en-gb+")
    assert espeak_voice("aura-de-de", available).startswith("de+")
    assert espeak_voice("aura-asteria-en", available).startswith("en-us+f")  # as before

