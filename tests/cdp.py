"""Headless Chromium driven through the DevTools protocol, for the browser tests: start it
(as root too), open a page, evaluate JavaScript, wait for a condition inside the page,
take a screenshot. Synchronous (websocket-client): a trio test runs a whole browser flow
with ``trio.to_thread.run_sync`` while its gateway serves in the test's own loop."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import websocket

# What Chromium needs to run headless as root in a container, and to stay quiet.
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--remote-allow-origins=*", "--window-size=1280,900")


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("headless Chromium is needed (Debian: apt-get install -y chromium)",
                pytrace=False)


class CdpError(RuntimeError):
    """A DevTools command failed, or JavaScript threw."""


class Browser:
    """One Chromium process and a DevTools connection to its first page. ``log`` gathers
    the page's console messages, exceptions and browser log entries (CSP violations
    among them), for assertions and failure messages."""

    def __init__(self, profile: Path, extra_flags: Sequence[str] = (), *,
                 timeout: float = 60) -> None:
        self.log: list[str] = []
        self._next_id = 0
        self._proc = subprocess.Popen(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", *extra_flags, "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            self._ws = websocket.create_connection(self._page_url(), timeout=timeout)
            for domain in ("Page", "Runtime", "Log"):
                self.call(f"{domain}.enable")
        except BaseException:
            self.close()
            raise

    def _page_url(self) -> str:
        assert self._proc.stderr is not None
        for _ in range(200):
            line = self._proc.stderr.readline()
            match = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if match:
                break
        else:
            raise CdpError("Chromium did not start its DevTools endpoint")
        targets = json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{match.group(1)}/json/list", timeout=10).read())
        return str(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "_ws", None) is not None:
            self._ws.close()
        self._proc.kill()
        self._proc.wait()

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one command; its result (events meanwhile go to ``log`` or are dropped)."""
        self._next_id += 1
        ident = self._next_id
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params or {}}))
        while True:
            message = json.loads(self._ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise CdpError(f"{method}: {message['error']}")
                return dict(message["result"])
            self._note(message)

    def _note(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.consoleAPICalled":
            texts = [str(a.get("value", a.get("description", ""))) for a in params["args"]]
            self.log.append(f"console.{params['type']}: {' '.join(texts)}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            what = details.get("exception", {}).get("description") or details.get("text")
            self.log.append(f"exception: {what}")
        elif method == "Log.entryAdded":
            entry = params["entry"]
            self.log.append(f"log.{entry['level']} ({entry['source']}): {entry['text']}")

    def wait_event(self, method: str) -> dict[str, Any]:
        while True:
            message = json.loads(self._ws.recv())
            if message.get("method") == method:
                return dict(message.get("params", {}))
            self._note(message)

    def navigate(self, url: str) -> None:
        """Open ``url`` and wait for its load event."""
        self.call("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (a promise is awaited)."""
        result = self.call("Runtime.evaluate", {
            "expression": expression, "awaitPromise": True, "returnByValue": True,
            "userGesture": True})
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CdpError(details.get("exception", {}).get("description") or details["text"])
        return result["result"].get("value")

    def wait_for(self, condition: str, timeout: float = 30) -> Any:
        """Poll ``condition`` (JavaScript) inside the page until it is truthy; its value.
        ``timeout`` only stops a broken flow from hanging."""
        found = self.evaluate(f"""new Promise((resolve) => {{
            const started = performance.now();
            const poll = () => {{
                let value; try {{ value = ({condition}); }} catch (e) {{ value = undefined; }}
                if (value) resolve({{ok: true, value}});
                else if (performance.now() - started > {timeout * 1000}) resolve({{ok: false}});
                else setTimeout(poll, 25);
            }};
            poll();
        }})""")
        if not found["ok"]:
            raise AssertionError(f"timed out waiting for {condition}; page log: {self.log}")
        return found["value"]

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport":
                                                    True})["data"]
        path.write_bytes(base64.b64decode(data))
        return path
