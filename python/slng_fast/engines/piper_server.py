"""The Piper engine's server: the SLNG model-server dialect (``tts_server``) in front
of Piper, in the engine's own process.

``piper-tts`` is GPL-3.0-or-later: ``slng_fast.engines.piper`` is imported only inside
:func:`serve_piper_engine`, so importing this module never loads it (nor ONNX Runtime).
Piper makes a text's audio sentence by sentence; each sentence goes to the client as soon
as it is made, and ``stop`` takes effect before the next one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from slng_fast.engines import wire
from slng_fast.engines.server import serve
from slng_fast.engines.tts_server import TtsEngine

if TYPE_CHECKING:
    from slng_fast.engines.piper import PiperSynth


def piper_engine(synth: PiperSynth) -> TtsEngine:
    default = synth.voices()[0].id  # the bundled voice
    ready = wire.tts_ready(
        synth.sample_rate,
        voices=[v.to_json() for v in synth.voices()],
        languages=synth.languages(),
        variants=[],
        default_voice=default,
        engine="piper",
        version=synth.version,
    )
    return TtsEngine("piper", synth, ready, default)


async def serve_piper_engine(
    host: str,
    port: int,
    *,
    voices: Sequence[str | Path] = (),
    synth: PiperSynth | None = None,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the piper engine on ``host:port`` (0 picks a port) as
    :func:`~slng_fast.engines.espeak_server.serve_espeak_engine` does. ``voices``: more
    Piper voice files besides the bundled one."""
    if synth is None:
        from slng_fast.engines.piper import PiperSynth

        synth = await trio.to_thread.run_sync(PiperSynth, voices)
    engine = piper_engine(synth)
    await serve(engine.handle, engine.connections, host, port, shutdown, task_status)
