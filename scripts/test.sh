#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run all of it:
# the Rust unit tests, the stub check of the native module, and pytest.
# `.ci/run` runs exactly this; the README's second command is this.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "scripts/test.sh: a Rust toolchain (cargo) is needed to build the native core" >&2
    exit 1
fi

# Debian packages the tests use: a real redis-server (the shared-limits tests start their
# own), headless Chromium (a browser's own WebSocket against the native frame layer) and
# PostgreSQL (the shared key store and ledger tests run their own server; Debian keeps
# initdb and pg_ctl under /usr/lib/postgresql/*/bin, off PATH).
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if ! compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null && ! command -v pg_ctl >/dev/null 2>&1; then
    missing+=(postgresql)
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]}"
    if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python3 -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[test,bench,load]"

echo "== lint"
cargo fmt --check
cargo clippy --locked --quiet --all-targets -- -D warnings
cargo clippy --locked --quiet --all-targets --features python -- -D warnings
ruff check python tests bench loadtest scripts
mypy  # strict on python/slng_fast (pyproject.toml [tool.mypy])

echo "== cargo test"
cargo test --locked --quiet

echo "== stubtest"
python -m mypy.stubtest slng_fast._native

echo "== wheel"
# The release wheel must install into a clean environment and work there.
rm -rf dist/wheel-check
maturin build --release --quiet -o dist/wheel-check
WHEEL_VENV="$(pwd)/dist/wheel-check/venv"
python -m venv "$WHEEL_VENV"
"$WHEEL_VENV/bin/python" -m pip install -q dist/wheel-check/*.whl
# Run from elsewhere, so the checkout's python/ cannot be what is imported.
(cd /tmp && "$WHEEL_VENV/bin/python" -c "
import slng_fast, slng_fast._native as n
assert slng_fast.__file__.startswith('$WHEEL_VENV'), slng_fast.__file__
assert len(n.Resampler(24000, 16000).process(bytes(960))) > 0
print('wheel ok:', n.__file__)")
"$WHEEL_VENV/bin/slng-fast" --help >/dev/null

echo "== pytest"
python -m pytest -q -p no:cacheprovider "$@"
