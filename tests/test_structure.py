"""House rules that keep the design honest."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "slng_fast"
IO_MODULES = {"trio", "trio_websocket", "socket", "asyncio", "websockets", "ssl"}


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_trio_lives_in_gateway_only():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ("gateway", "emulators") or rel.name in ("__main__.py", "cli.py"):
            continue
        bad = imports(path) & {"trio", "trio_websocket"}
        if bad:
            offenders.append(f"{rel}: {sorted(bad)}")
    assert offenders == []


def test_protocol_and_providers_do_no_io():
    offenders = []
    for folder in ("protocol", "providers"):
        for path in (PACKAGE / folder).rglob("*.py"):
            bad = imports(path) & IO_MODULES
            if bad:
                offenders.append(f"{path.relative_to(PACKAGE)}: {sorted(bad)}")
    assert offenders == []


def test_gateway_process_never_loads_espeak():
    """eSpeak NG is GPL: only the engine's own process may load it. Importing everything
    the gateway process runs must not pull it in."""
    code = (
        "import sys\n"
        "import slng_fast.cli, slng_fast.gateway.run, slng_fast.gateway.server\n"
        "import slng_fast.gateway.engines, slng_fast.providers.registry\n"
        "import importlib, slng_fast.emulators as e\n"
        "for name in e.EMULATORS: importlib.import_module('slng_fast.emulators.' + name)\n"
        "for name in ('elevenlabs', 'deepgram', 'cartesia', 'kyutai', 'whisper'):\n"
        "    importlib.import_module('slng_fast.providers.' + name)\n"
        "bad = [m for m in sys.modules if 'espeak' in m]\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
