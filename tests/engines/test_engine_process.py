"""``python -m slng_fast.engines``: READY line, serving, clean exit on signals;
and the process boundary that keeps eSpeak NG (GPL) out of the gateway."""

from __future__ import annotations

import ast
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
from trio_websocket import open_websocket_url

import slng_fast.engines
from engines.piper_voices import another_voice

HANG_GUARD = 30  # seconds; only stops a broken test from hanging, never a threshold
ENGINES_DIR = Path(slng_fast.engines.__file__).parent


async def read_line(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        if not chunk:
            break
        data += chunk
    return data.decode()


async def start_engine(name: str, *extra: str) -> tuple[trio.Process, int]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "slng_fast.engines", name, "--host", "127.0.0.1", "--port", "0", *extra],
        stdout=subprocess.PIPE,
    )
    with trio.fail_after(HANG_GUARD):
        assert process.stdout is not None
        line = await read_line(process.stdout)
    word, port = line.split()
    assert word == "READY" and line == f"READY {port}\n"
    return process, int(port)


async def first_exchange(name: str, port: int) -> dict[str, Any]:
    async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
        if name == "pocketsphinx":
            await ws.send_message('{"type":"ping"}')
        with trio.fail_after(HANG_GUARD):
            return orjson.loads(await ws.get_message())


@pytest.mark.parametrize(("name", "sig"), [("espeak", signal.SIGTERM), ("piper", signal.SIGTERM),
                                           ("pocketsphinx", signal.SIGINT)])
async def test_entry_point_ready_serves_and_exits_cleanly(name: str, sig: signal.Signals) -> None:
    process, port = await start_engine(name)
    try:
        event = await first_exchange(name, port)
        assert event["type"] == ("pong" if name == "pocketsphinx" else "ready")
        if name != "pocketsphinx":
            assert event["sample_rate"] == 22050
        else:
            maps = Path(f"/proc/{process.pid}/maps")
            if maps.exists():
                assert "espeak" not in maps.read_text(), "the STT engine must not load eSpeak"
        process.send_signal(sig)
        with trio.fail_after(HANG_GUARD):
            code = await process.wait()
        assert code == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_sigterm_with_a_client_connected_closes_it_going_away() -> None:
    process, port = await start_engine("espeak")
    try:
        async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
            await ws.get_message()  # ready
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(HANG_GUARD):
                code = await process.wait()
            assert code == 0
            assert ws.closed is not None and ws.closed.code == 1001
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_piper_voice_option_adds_a_voice(tmp_path: Path) -> None:
    process, port = await start_engine("piper", "--voice", str(another_voice(tmp_path)))
    try:
        ready = await first_exchange("piper", port)
        assert [v["id"] for v in ready["voices"]] == ["en_US-joe-medium", "en_GB-copy-medium"]
        assert "en-gb" in ready["languages"]
    finally:
        process.terminate()
        with trio.fail_after(HANG_GUARD):
            await process.wait()


def test_usage_errors_exit_nonzero() -> None:
    for args in (["nope"], ["espeak", "--port", "70000"], ["espeak", "--voice", "x.onnx"],
                 ["piper", "--voice", "/no/such/voice.onnx"]):
        done = subprocess.run(
            [sys.executable, "-m", "slng_fast.engines", *args], capture_output=True, timeout=HANG_GUARD
        )
        assert done.returncode == 2 and done.stdout == b""


def test_gateway_side_never_loads_espeak_or_piper() -> None:
    """Importing the engine servers (as the gateway's supervisor might) or the
    engines package imports neither eSpeak nor Piper and maps none of their libraries."""
    code = (
        "import sys, pathlib\n"
        "import slng_fast.engines, slng_fast.engines.wire, slng_fast.engines.__main__\n"
        "import slng_fast.engines.server, slng_fast.engines.sphinx_server\n"
        "import slng_fast.engines.espeak_server, slng_fast.engines.piper_server\n"
        "import slng_fast.engines.tts_server, slng_fast.engines.supervisor\n"
        "bad = [m for m in sys.modules if 'espeak' in m.replace('espeak_server', '')\n"
        "       or m.split('.')[0] in ('piper', 'onnxruntime') or m.endswith('engines.piper')]\n"
        "maps = pathlib.Path('/proc/self/maps')\n"
        "files = [line.split()[-1] for line in maps.read_text().splitlines()\n"
        "         if '/' in line] if maps.exists() else []\n"
        "mapped = [f for f in files if 'espeak' in f.rsplit('/', 1)[-1]\n"
        "          or 'onnxruntime' in f or '/site-packages/piper/' in f]\n"
        "print(bad, mapped)\n"
        "sys.exit(1 if bad or mapped else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=HANG_GUARD)
    assert done.returncode == 0, done.stdout + done.stderr


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


# The engines' rooms that do I/O: their servers, the process's main and the supervisor
# the gateway runs. The speech modules (and the wire format) stay free of it.
SERVING = {"__main__.py", "server.py", "tts_server.py", "espeak_server.py", "piper_server.py",
           "sphinx_server.py", "supervisor.py"}


@pytest.mark.parametrize("path", sorted(p for p in ENGINES_DIR.glob("*.py") if p.name not in SERVING),
                         ids=lambda p: p.name)
def test_engines_do_not_import_trio(path: Path) -> None:
    """House rule: the engines' speech code does no I/O; their servers do it."""
    assert not _imports(path) & {"trio", "trio_websocket"}
