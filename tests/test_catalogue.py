"""The voice catalogue as a pure function (``slng_fast.catalogue``): no sockets, no engines."""

from __future__ import annotations

import orjson
import pytest

from slng_fast.catalogue import UnknownProvider, catalogue, engine_voices
from slng_fast.config import DEFAULT_TIERS, Config
from slng_fast.protocol.actions import SendClient
from slng_fast.protocol.tts import TtsSession
from slng_fast.providers.documented_voices import VOICES
from slng_fast.providers.registry import ENDPOINTS, ProviderRegistry

ESPEAK_INFO = {
    "type": "ready", "sample_rate": 22050,
    "voices": [{"id": "en-us", "name": "English (America)", "languages": ["en-us", "en"],
                "gender": "male"},
               {"id": "de", "name": "German", "languages": ["de"], "gender": ""},
               "fr", {"name": "no id"}, 7, {"id": "en", "languages": ["en-gb", "en"]}],
    "variants": [{"id": "f3", "name": "female3", "gender": "female"}, {"id": 3}],
    "languages": ["de", "en", "en-us", "fr"],
}


def registry(environ: dict[str, str] | None = None, config: Config | None = None,
             with_engines: bool = True) -> ProviderRegistry:
    urls = {"espeak": "ws://127.0.0.1:1/", "pocketsphinx": "ws://127.0.0.1:2/"}
    return ProviderRegistry(config or Config(), urls if with_engines else {},
                            {"espeak": ESPEAK_INFO} if with_engines else {},
                            environ=environ or {})


def build(reg: ProviderRegistry, provider: str | None = None) -> dict:
    endpoints = reg.endpoints()
    return catalogue(endpoints, engine_info=reg.engine_info, capabilities=reg.capabilities(),
                     available={e.name: reg.available(e) for e in endpoints},
                     provider=provider)


def entries(reg: ProviderRegistry) -> dict[str, dict]:
    return {e["provider"]: e for e in build(reg)["endpoints"]}


def test_every_endpoint_once_tts_first_then_stt():
    body = build(registry())
    names = [e["provider"] for e in body["endpoints"]]
    assert sorted(names) == sorted(ENDPOINTS) and len(names) == len(set(names))
    kinds = [e["kind"] for e in body["endpoints"]]
    assert kinds == sorted(kinds, key=lambda k: k != "stt")  # "stt" < "tts"
    orjson.dumps(body)  # plain JSON all the way down


def test_an_engine_lists_what_its_process_reported():
    espeak = entries(registry())["espeak"]
    assert espeak["available"] and espeak["built_in"] and espeak["voices_source"] == "engine"
    assert [v["id"] for v in espeak["voices"]] == ["en-us", "de", "fr", "en"]  # bad ones skipped
    assert espeak["voices"][1] == {"id": "de", "name": "German", "languages": ["de"],
                                   "gender": None, "sample_rate_hz": 22050, "source": "engine"}
    assert espeak["voices"][2]["name"] == "fr" and espeak["variants"] == ["f3"]
    assert espeak["capabilities"]["voices"] == ["en-us", "de", "fr", "en"]
    assert espeak["capabilities"]["languages"] == ESPEAK_INFO["languages"]


def test_an_engines_endpoint_is_built_once_per_listing():
    reg = registry()
    first = reg.endpoint("tts", "espeak")
    assert first is not None and first.sample_rate == 22050
    assert reg.endpoint("tts", "espeak") is first  # not a new object per session
    reg.engine_info["espeak"] = {**ESPEAK_INFO, "sample_rate": 16000}  # the engine restarted
    again = reg.endpoint("tts", "espeak")
    assert again is not first and again is not None and again.sample_rate == 16000


def test_an_engine_not_running_is_unavailable_with_no_voices():
    by_name = entries(registry(with_engines=False))
    assert not by_name["espeak"]["available"] and by_name["espeak"]["voices"] == []
    assert not by_name["pocketsphinx"]["available"]


def test_stt_endpoints_list_models_and_languages_not_voices():
    by_name = entries(registry())
    sphinx = by_name["pocketsphinx"]
    assert "voices" not in sphinx and sphinx["languages"] == ["en"]
    assert sphinx["models"] == [{"id": "pocketsphinx", "languages": ["en"],
                                 "sample_rate_hz": 16000, "source": "engine"}]
    assert sphinx["capabilities"]["languages"] == ["en"]
    assert 8000 in sphinx["capabilities"]["sample_rates"]
    kyutai = by_name["kyutai"]
    assert kyutai["languages"] == ["en", "fr"] and kyutai["models"][0]["source"] == "documented"
    assert "languages" not in kyutai["capabilities"]  # the gateway does not restrict them


def test_the_slng_family_lists_exactly_its_registry_voices():
    by_name = entries(registry())
    for name, endpoint in ENDPOINTS.items():
        if endpoint.dialect == "slng" and endpoint.needs_url:
            voices = by_name[name]["voices"]
            assert tuple(v["id"] for v in voices) == endpoint.voices, name
            assert voices[0]["id"] == endpoint.default_voice
            assert {v["source"] for v in voices} == {"documented"}
            assert {v["sample_rate_hz"] for v in voices} == {endpoint.sample_rate}
    assert by_name["orpheus-indic"]["voices"][0]["languages"] == list(
        ENDPOINTS["orpheus-indic"].languages)


def test_cloud_providers_list_documented_voices_default_first():
    by_name = entries(registry())
    for name in ("elevenlabs", "deepgram", "cartesia"):
        entry = by_name[name]
        assert entry["voices_source"] == "documented" and not entry["available"]
        assert entry["voices"][0]["id"] == ENDPOINTS[name].default_voice
        assert all(v["source"] == "documented" for v in entry["voices"])
        # No fixed list in the session either: any voice the provider accepts goes.
        assert entry["capabilities"]["voices"] == []
    genders = {v.gender for v in VOICES["deepgram"]}
    assert genders == {"female", "male"}


def test_available_follows_the_configured_credential():
    assert entries(registry({"ELEVENLABS_API_KEY": "k"}))["elevenlabs"]["available"]
    assert not entries(registry({"ELEVENLABS_API_KEY": "k"}))["deepgram"]["available"]
    assert entries(registry({"ORPHEUS_URL": "ws://m/orpheus"}))["orpheus"]["available"]


def test_one_provider_or_unknown():
    body = build(registry(), "cartesia")
    assert [e["provider"] for e in body["endpoints"]] == ["cartesia"]
    with pytest.raises(UnknownProvider):
        build(registry(), "nosuch")
    with pytest.raises(UnknownProvider):
        build(registry(), "")


@pytest.mark.parametrize("name", sorted(n for n, e in ENDPOINTS.items() if e.kind == "tts"))
def test_capabilities_are_what_ready_carries(name):
    reg = registry({"ELEVENLABS_API_KEY": "k", "DEEPGRAM_API_KEY": "k",
                    "CARTESIA_API_KEY": "k", f"{name.upper().replace('-', '_')}_URL": "ws://m/"})
    endpoint = reg.endpoint("tts", name)
    assert endpoint is not None
    session = TtsSession(endpoint=endpoint, dialect=reg.dialect(endpoint),
                         tier=DEFAULT_TIERS["pro"], now=0.0)
    actions = session.receive_text('{"type":"init"}', 0.0)
    ready = orjson.loads(next(a.frame for a in actions if isinstance(a, SendClient)))
    assert ready["type"] == "ready"
    assert build(reg, name)["endpoints"][0]["capabilities"] == ready["capabilities"]


def test_engine_voices_tolerates_a_listing_that_is_not_one():
    assert engine_voices({}, 22050) == []
    assert engine_voices({"voices": "en"}, 22050) == []
    assert engine_voices({"voices": [{"id": "x", "languages": "en", "gender": 1}]}, 8000) == [
        {"id": "x", "name": "x", "languages": [], "gender": None, "sample_rate_hz": 8000,
         "source": "engine"}]


def test_a_providers_own_listing_replaces_its_documented_voices():
    reg = registry()
    endpoints = reg.endpoints()
    listed = [{"id": "v1", "name": "One", "languages": ["en"], "gender": "female",
               "sample_rate_hz": 24000, "source": "provider"}]
    body = catalogue(endpoints, engine_info=reg.engine_info, capabilities=reg.capabilities(),
                     available={e.name: reg.available(e) for e in endpoints},
                     provider_voices={"elevenlabs": listed})
    by_name = {e["provider"]: e for e in body["endpoints"]}
    assert by_name["elevenlabs"]["voices"] == listed
    assert by_name["elevenlabs"]["voices_source"] == "provider"
    assert by_name["cartesia"]["voices_source"] == "documented"  # nothing fetched for it
    assert [v["id"] for v in by_name["cartesia"]["voices"]] == \
        [v.id for v in VOICES["cartesia"]]
