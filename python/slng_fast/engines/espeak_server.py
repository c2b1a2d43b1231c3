"""The eSpeak NG engine's server: the SLNG model-server dialect (``tts_server``) in
front of eSpeak NG, in the engine's own process.

eSpeak NG is GPL: ``slng_fast.engines.espeak`` is imported only inside
:func:`serve_espeak_engine`, so importing this module never loads it. eSpeak runs
several hundred times faster than real time, so the process lock is held briefly."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from slng_fast.engines import wire
from slng_fast.engines.server import serve
from slng_fast.engines.tts_server import FRAME_MS, MAX_BUFFERED_CHARS, TtsEngine

if TYPE_CHECKING:
    from slng_fast.engines.espeak import EspeakSynth

__all__ = ["MAX_AUDIO_FRAME", "MAX_BUFFERED_CHARS", "serve_espeak_engine"]

MAX_AUDIO_FRAME = 22050 * FRAME_MS // 1000 * 2
"""Largest binary audio frame the espeak engine sends: 200 ms at 22.05 kHz PCM16."""


def espeak_engine(synth: EspeakSynth) -> TtsEngine:
    from slng_fast.engines.espeak import DEFAULT_VOICE

    ready = wire.tts_ready(
        synth.sample_rate,
        voices=[v.to_json() for v in synth.voices()],
        languages=synth.languages(),
        variants=[v.to_json() for v in synth.variants()],
        default_voice=DEFAULT_VOICE,
        engine="espeak-ng",
        version=synth.version,
    )
    return TtsEngine("espeak", synth, ready, DEFAULT_VOICE)


async def serve_espeak_engine(
    host: str,
    port: int,
    *,
    synth: EspeakSynth | None = None,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the espeak engine on ``host:port`` (0 picks a port) until cancelled,
    or until ``shutdown`` is set: then open sessions are closed with 1001 (waiting
    up to ``SHUTDOWN_TIMEOUT`` for the clients) and the function returns.

    ``task_status.started`` gets the bound port once eSpeak is loaded and the
    socket listens.
    """
    if synth is None:
        from slng_fast.engines.espeak import EspeakSynth

        synth = await trio.to_thread.run_sync(EspeakSynth.shared)
    engine = espeak_engine(synth)
    await serve(engine.handle, engine.connections, host, port, shutdown, task_status)
