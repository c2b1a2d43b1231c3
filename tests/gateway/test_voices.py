"""`GET /v1/voices[?provider=X]` over a real socket on the gateway's port, with the real
built-in engines: the catalogue, its key, and its capabilities being those of `ready`.
Native transport only: the trio-websocket baseline answers no plain HTTP (its
`/healthz` is a 400 too), so there is nothing to route there."""

from __future__ import annotations

from dataclasses import replace

import orjson
import trio

from harness import make_gateway, start_gateway
from slng_fast.config import DEFAULT_TIERS, Config, ProviderConfig
from slng_fast.providers.registry import ENDPOINTS
from wsclient import connect, recv, send


async def http_get(url: str, path: str, headers: dict[str, str] | None = None,
                   method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("ws://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    await stream.send_all(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}Content-Length: 0"
                          "\r\nConnection: close\r\n\r\n".encode())
    data = b""
    with trio.fail_after(30):
        while chunk := await stream.receive_some(65536):
            data += chunk
    await stream.aclose()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}, body


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def by_provider(body: bytes) -> dict[str, dict]:
    return {e["provider"]: e for e in orjson.loads(body)["endpoints"]}


async def test_the_catalogue_lists_every_endpoint_with_its_voices(gw):
    status, headers, body = await http_get(gw.url, "/v1/voices", bearer(gw.keys["free"]))
    assert status == 200 and headers["content-type"].startswith("application/json")
    entries = by_provider(body)
    assert set(entries) == set(ENDPOINTS)

    espeak = entries["espeak"]  # what the engine process listed (the gateway never loads it)
    assert espeak["built_in"] and espeak["available"] and espeak["voices_source"] == "engine"
    en_us = next(v for v in espeak["voices"] if v["id"] == "en-us")
    assert en_us == {"id": "en-us", "name": "English (America)", "languages": ["en-us", "en"],
                     "gender": "male", "sample_rate_hz": 22050, "source": "engine"}
    assert len(espeak["voices"]) > 50 and "f3" in espeak["variants"]

    sphinx = entries["pocketsphinx"]
    assert sphinx["kind"] == "stt" and sphinx["available"] and "voices" not in sphinx
    assert sphinx["languages"] == ["en"] and sphinx["models"][0]["sample_rate_hz"] == 16000
    assert sphinx["path"] == "/v1/stt/pocketsphinx-websocket-stream"

    orpheus = entries["orpheus"]  # no upstream configured in this gateway
    assert not orpheus["available"] and orpheus["voices_source"] == "documented"
    assert [v["id"] for v in orpheus["voices"]] == ["tara", "luna", "stella", "athena", "hera"]
    assert orpheus["capabilities"]["voices"] == [v["id"] for v in orpheus["voices"]]

    eleven = entries["elevenlabs"]  # no credential: documented defaults, marked so
    assert not eleven["available"]
    assert eleven["voices"][0]["id"] == eleven["default_voice"] == "21m00Tcm4TlvDq8ikWAM"
    assert {v["source"] for v in eleven["voices"]} == {"documented"}


async def test_capabilities_are_those_ready_carries(gw, nursery):
    ws = await connect(gw.tts(), gw.keys["pro"], nursery=nursery)
    await send(ws, type="init")
    ready = await recv(ws)
    await ws.aclose()
    status, _, body = await http_get(gw.url, "/v1/voices?provider=espeak",
                                     bearer(gw.keys["pro"]))
    assert status == 200
    [entry] = orjson.loads(body)["endpoints"]
    assert entry["capabilities"] == ready["capabilities"]


async def test_one_provider_and_an_unknown_one(gw):
    key = bearer(gw.keys["free"])
    status, _, body = await http_get(gw.url, "/v1/voices?provider=deepgram", key)
    assert status == 200
    assert [e["provider"] for e in orjson.loads(body)["endpoints"]] == ["deepgram"]
    status, headers, body = await http_get(gw.url, "/v1/voices?provider=nosuch", key)
    answer = orjson.loads(body)
    assert status == 404 and headers["content-type"].startswith("application/json")
    assert answer["error"] == "unknown_provider" and answer["provider"] == "nosuch"
    assert "espeak" in answer["tts"] and "pocketsphinx" in answer["stt"]


async def test_it_needs_a_gateway_key(gw):
    for headers in (None, bearer("not-a-key"), {"Authorization": "Basic abc"}):
        status, headers_out, body = await http_get(gw.url, "/v1/voices", headers)
        assert status == 401 and headers_out["content-type"].startswith("application/json")
        assert orjson.loads(body)["error"] == "auth_failed"
    # The other key forms the WebSocket side accepts.
    key = gw.keys["free"]
    assert (await http_get(gw.url, "/v1/voices", {"xi-api-key": key}))[0] == 200
    assert (await http_get(gw.url, f"/v1/voices?api_key={key}&provider=espeak"))[0] == 200
    gw.store.revoke_key(gw.key_ids["free"])
    assert (await http_get(gw.url, "/v1/voices", bearer(key)))[0] == 401


async def test_a_configured_upstream_makes_an_endpoint_available(nursery, tmp_path, engines):
    urls, info = engines
    config = Config(data_dir=tmp_path, providers={
        "orpheus": ProviderConfig(url="ws://127.0.0.1:9/orpheus"),
        "elevenlabs": ProviderConfig(api_key="sk-test")})
    gw = await start_gateway(nursery, make_gateway(tmp_path, urls, info, config=config))
    entries = by_provider((await http_get(gw.url, "/v1/voices", bearer(gw.keys["free"])))[2])
    assert entries["orpheus"]["available"] and entries["elevenlabs"]["available"]
    assert not entries["cartesia"]["available"] and not entries["kyutai"]["available"]


async def test_it_costs_a_message_of_the_keys_tier(nursery, tmp_path, engines):
    urls, info = engines
    tiers = {**DEFAULT_TIERS, "free": replace(DEFAULT_TIERS["free"], messages_per_minute=1)}
    gw = await start_gateway(nursery, make_gateway(tmp_path, urls, info,
                                                   config=Config(data_dir=tmp_path, tiers=tiers)))
    key = bearer(gw.keys["free"])
    assert (await http_get(gw.url, "/v1/voices?provider=espeak", key))[0] == 200
    status, headers, body = await http_get(gw.url, "/v1/voices?provider=espeak", key)
    answer = orjson.loads(body)
    assert status == 429 and answer["error"] == "rate_limited"
    assert int(headers["retry-after"]) >= 1 and answer["retry_after_ms"] > 0
    assert (await http_get(gw.url, "/v1/voices", bearer(gw.keys["pro"])))[0] == 200


async def test_only_get_and_head(gw):
    key = bearer(gw.keys["pro"])
    status, headers, body = await http_get(gw.url, "/v1/voices", key, method="POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    assert orjson.loads(body)["error"] == "method_not_allowed"
    status, headers, body = await http_get(gw.url, "/v1/voices", key, method="HEAD")
    assert status == 200 and body == b""
