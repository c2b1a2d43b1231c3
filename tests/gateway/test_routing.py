"""The handshake's pure parts: endpoint paths, drop-in SDK routes, where keys are found."""

from __future__ import annotations

from slng_fast.gateway.routing import find_key, parse_path, redact


def test_unified_paths_and_query_presets():
    route = parse_path("/v1/tts/orpheus-indic-websocket-stream?voice=kanak&sample_rate=16000")
    assert (route.kind, route.name, route.passthrough) == ("tts", "orpheus-indic", None)
    assert route.presets() == {"voice": "kanak", "sample_rate": 16000}
    assert parse_path("/v1/stt/kyutai-websocket-stream").kind == "stt"
    assert parse_path("/v2/tts/x-websocket-stream") is None
    assert parse_path("/nosuch/v1/speak") is None


def test_drop_in_routes_keep_the_providers_path_without_the_gateway_key():
    route = parse_path("/elevenlabs/v1/text-to-speech/VOICE/multi-stream-input?model_id=m")
    assert (route.kind, route.name) == ("tts", "elevenlabs")
    assert route.passthrough == ("/v1/text-to-speech/VOICE/multi-stream-input", "model_id=m")
    route = parse_path("/cartesia/tts/websocket?api_key=gw_secret&cartesia_version=2025-04-16")
    assert route.passthrough == ("/tts/websocket", "cartesia_version=2025-04-16")
    assert route.query["api_key"] == "gw_secret"
    route = parse_path("/deepgram/v1/speak?model=aura-asteria-en&encoding=linear16")
    assert route.passthrough == ("/v1/speak", "model=aura-asteria-en&encoding=linear16")
    assert parse_path("/deepgram/") is None


def test_drop_in_routes_allow_exactly_the_sdk_sockets_after_percent_decoding():
    for path in ("/elevenlabs/v1/text-to-speech/%2e%2e/%2e%2e/v1/user/stream-input",
                 "/elevenlabs/v1/text-to-speech/V%2F..%2F..%2Fuser/stream-input",
                 "/elevenlabs/v1/text-to-speech/../../v1/user/stream-input",
                 "/elevenlabs/v1/voices", "/elevenlabs/v1/text-to-speech/V/stream-input/x",
                 "/elevenlabs/v1/speech-to-text/realtime",
                 "/cartesia/tts/bytes", "/cartesia/voices", "/cartesia/tts/websocket/..",
                 "/cartesia/tts/websocket%2F..%2F..%2Fapi-keys",
                 "/deepgram/v1/listen", "/deepgram/v1/projects", "/deepgram/v1/speak/x",
                 "/deepgram/v1/speak%3Fx=1", "/deepgram/v1/%73peak/../manage"):
        assert parse_path(path) is None, path
    route = parse_path("/cartesia/tts/%77ebsocket?cartesia_version=2025-04-16")
    assert route.passthrough == ("/tts/websocket", "cartesia_version=2025-04-16")
    route = parse_path("/elevenlabs/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM/stream-input")
    assert route.passthrough == ("/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM/stream-input", "")
    assert parse_path("/v1/tts/%6Frpheus-websocket-stream").name == "orpheus"


def test_keys_wherever_clients_and_sdks_put_them():
    assert find_key([("Authorization", "Bearer k1")], [], {}) == ("k1", None)
    assert find_key([("authorization", "Token k2")], [], {}) == ("k2", None)  # Deepgram SDK
    assert find_key([("xi-api-key", "k3")], [], {}) == ("k3", None)  # ElevenLabs SDK
    assert find_key([("X-API-Key", "k4")], [], {}) == ("k4", None)  # Cartesia SDK
    assert find_key([], ["bearer.k5"], {}) == ("k5", "bearer.k5")  # browsers
    assert find_key([], [], {"api_key": "k6"}) == ("k6", None)
    assert find_key([], [], {}) == (None, None)
    assert redact("/v1/tts/x?api_key=secret&voice=a") == "/v1/tts/x?api_key=***&voice=a"


def test_openai_realtime_route_names_the_model_from_the_query():
    route = parse_path("/v1/realtime?intent=transcription&model=kyutai")
    assert route is not None and route.realtime and route.kind == "stt"
    assert route.name == "kyutai" and route.query["intent"] == "transcription"
    bare = parse_path("/v1/realtime/?intent=transcription")
    assert bare is not None and bare.realtime and bare.name == ""
    assert parse_path("/v1/realtime/calls") is None


def test_openai_browser_subprotocol_carries_the_key_and_is_answered_realtime():
    protocols = ["realtime", "openai-insecure-api-key.sk-gw", "openai-beta.realtime-v1"]
    assert find_key([], protocols, {}) == ("sk-gw", "realtime")
    assert find_key([("Authorization", "Bearer hdr")], protocols, {}) == ("hdr", None)
