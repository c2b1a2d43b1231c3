"""Headless Chromium's own WebSocket against the gateway's native frame layer: the browser
way of presenting a key (the `bearer.<key>` subprotocol), a whole TTS utterance, a ping
and a clean close, driven through the DevTools protocol."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request

import pytest
import trio
import websocket

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


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("headless Chromium is needed (Debian: apt-get install -y chromium)",
                pytrace=False)


def run_in_browser(browser: str, profile: str, expression: str) -> dict:
    proc = subprocess.Popen(
        [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--remote-debugging-port=0", "--remote-allow-origins=*",
         f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for _ in range(200):
            line = proc.stderr.readline()
            match = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if match:
                break
        else:
            raise AssertionError("Chromium did not start its DevTools endpoint")
        targets = json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{match.group(1)}/json/list", timeout=10).read())
        page = next(t for t in targets if t["type"] == "page")
        devtools = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60)
        devtools.send(json.dumps({"id": 1, "method": "Runtime.evaluate", "params": {
            "expression": expression, "awaitPromise": True, "returnByValue": True}}))
        while True:
            answer = json.loads(devtools.recv())
            if answer.get("id") == 1:
                break
        devtools.close()
        return answer["result"]["result"]["value"]
    finally:
        proc.kill()
        proc.wait()


async def test_chromium_speaks_the_unified_protocol_through_the_gateway(gw, tmp_path):
    browser = chromium()
    key = gw.keys["pro"]
    expression = SCRIPT % {"url": json.dumps(gw.tts()), "protocol": json.dumps(f"bearer.{key}"),
                           "text": json.dumps("Hello from a browser. " * 8)}
    result = await trio.to_thread.run_sync(run_in_browser, browser, str(tmp_path / "profile"),
                                           expression)
    assert not result.get("timeout"), result
    assert result["protocol"] == f"bearer.{key}"  # the key's subprotocol is echoed
    assert result["seen"][0] == "ready" and result["seen"][-1] == "pong"
    assert result["seen"].count("audio_end") == 1 and result["audio"] > 48000 * 2
    assert result["biggest"] > 16 * 1024  # frames past the 16-bit length form, unfragmented
    assert result["code"] == 1000
