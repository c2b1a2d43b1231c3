"""`serve --certfile/--keyfile`: the gateway speaks wss:// (SDKs such as ElevenLabs' dial only
wss://). A throwaway CA from trustme signs the certificate for 127.0.0.1."""

from __future__ import annotations

import ssl

import trio_websocket
import trustme

from harness import make_gateway
from slng_fast.gateway.server import serve_gateway
from wsclient import auth, recv, send


async def test_wss_with_a_certificate(nursery, tmp_path, engines):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    urls, info = engines
    running = make_gateway(tmp_path, urls, info)
    port = await nursery.start(lambda task_status: serve_gateway(
        running.gateway, "127.0.0.1", port=0, ssl_context=server_ctx, task_status=task_status))
    url = f"wss://127.0.0.1:{port}/v1/tts/espeak-websocket-stream"
    ws = await trio_websocket.connect_websocket_url(nursery, url, client_ctx,
                                                    extra_headers=auth(running.keys["pro"]))
    await send(ws, type="ping")
    assert (await recv(ws))["type"] == "pong"
    await ws.aclose()
