"""`slng-fast emulate NAME --port 0`: an emulator process in front of its engine process."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import orjson
import pytest
import trio_websocket


@pytest.mark.parametrize("name, path, first", [
    ("slng", "/orpheus", "ready"),
    ("deepgram", "/v1/speak", "Metadata"),
])
async def test_emulate_serves_until_sigterm(name, path, first):
    proc = subprocess.Popen([sys.executable, "-m", "slng_fast", "emulate", name, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"listening on (ws://\S+)", line)
        assert match, line
        async with trio_websocket.open_websocket_url(match.group(1) + path) as ws:
            if name == "slng":
                await ws.send_message('{"voice":"tara"}')
            message = orjson.loads(await ws.get_message())
            assert message["type"] == first
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
