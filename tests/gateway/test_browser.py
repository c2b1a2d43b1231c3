"""Headless Chromium's own WebSocket against the gateway's native frame layer: the browser
way of presenting a key (the `bearer.<key>` subprotocol), a whole TTS utterance, a ping
and a clean close, driven through the DevTools protocol."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from cdp import Browser

SCRIPT = """
new Promise((resolve) => {
  const ws = new WebSocket(%(url)s, [%(protocol)s]);
  const seen = []; let audio = 0; let biggest = 0;
  ws.onopen = () => {
    ws.send(JSON.stringify({type: "init", sample_rate_hz: 48000}));
    ws.send(JSON.stringify({type: "input_text", text: %(text)s}));
    ws.send(JSON.stringify({type: "flush"}));
  };
  ws.onmessage = (m) => {
    biggest = Math.max(biggest, m.data.length);
    const e = JSON.parse(m.data); seen.push(e.type);
    if (e.type === "audio_chunk") audio += atob(e.data).length;
    if (e.type === "audio_end") ws.send(JSON.stringify({type: "ping"}));
    if (e.type === "pong") ws.close(1000, "done");
  };
  ws.onclose = (c) => resolve({seen, audio, biggest, code: c.code, protocol: ws.protocol});
  setTimeout(() => resolve({timeout: true, seen}), 30000);
})
"""


def run_in_browser(profile: Path, expression: str) -> dict:
    with Browser(profile) as browser:
        return browser.evaluate(expression)


async def test_chromium_speaks_the_unified_protocol_through_the_gateway(gw, tmp_path):
    key = gw.keys["pro"]
    expression = SCRIPT % {"url": json.dumps(gw.tts()), "protocol": json.dumps(f"bearer.{key}"),
                           "text": json.dumps("Hello from a browser. " * 8)}
    result = await trio.to_thread.run_sync(run_in_browser, tmp_path / "profile",
                                           expression)
    assert not result.get("timeout"), result
    assert result["protocol"] == f"bearer.{key}"  # the key's subprotocol is echoed
    assert result["seen"][0] == "ready" and result["seen"][-1] == "pong"
    assert result["seen"].count("audio_end") == 1 and result["audio"] > 48000 * 2
    assert result["biggest"] > 16 * 1024  # frames past the 16-bit length form, unfragmented
    assert result["code"] == 1000
