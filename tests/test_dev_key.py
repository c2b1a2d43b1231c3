"""The development key file that the first `slng-fast serve` writes: private from the
moment it exists. An audit hook looks at the file at every audited step of writing it
(opening, changing its mode, ...), so a moment when others could read it is seen."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from slng_fast.store import DEV_KEY_FILE, Store, ensure_dev_key

_watched: dict[str, object] = {"path": None, "modes": [], "busy": False}


def _look(event: str, args: tuple) -> None:
    path = _watched["path"]
    if path is None or _watched["busy"]:
        return
    _watched["busy"] = True
    try:
        if os.path.lexists(path):
            _watched["modes"].append((event, stat.S_IMODE(os.lstat(path).st_mode)))
    finally:
        _watched["busy"] = False


sys.addaudithook(_look)  # audit hooks cannot be removed; it only looks while a test asks


@pytest.mark.parametrize("left_over", [False, True])
def test_the_dev_key_file_is_never_readable_by_others(tmp_path: Path, left_over: bool):
    path = tmp_path / DEV_KEY_FILE
    if left_over:  # a world-readable file from an older key store is replaced, not reused
        path.write_text("stale\n")
        path.chmod(0o644)
    store = Store(tmp_path)
    umask = os.umask(0o022)
    _watched.update(path=str(path), modes=[])
    try:
        secret = ensure_dev_key(store, tmp_path)
    finally:
        _watched["path"] = None
        os.umask(umask)
        store.close()
    assert secret and path.read_text() == secret + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Every look at the file, but the stale file's last one as it is removed.
    modes = [(event, mode) for event, mode in _watched["modes"] if event != "os.remove"]
    assert modes, "the audit hook saw no step of writing the file"
    exposed = [(event, oct(mode)) for event, mode in modes if mode & 0o077]
    assert exposed == [], f"others could read the key file at {exposed}"
