"""A second Piper voice for the tests: the bundled voice's model under another name and
language, as a user's own voice files would be."""

from __future__ import annotations

import json
from pathlib import Path

from slng_fast.engines.piper import bundled_voice_path


def another_voice(folder: Path) -> Path:
    bundled = bundled_voice_path()
    model = folder / "en_GB-copy-medium.onnx"
    model.symlink_to(bundled)
    meta = json.loads(Path(f"{bundled}.json").read_text())
    meta["dataset"] = "copy"
    meta["language"] = {"code": "en_GB"}
    Path(f"{model}.json").write_text(json.dumps(meta))
    return model
