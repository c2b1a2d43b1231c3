"""Fixtures for every test folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engines.engine_audio import round_trip_speech
from harness import RedisServer, Served
from slng_fast.engines.espeak import EspeakSynth


@pytest.fixture(scope="session", autouse=True)
def round_trip_speech_first() -> None:
    """eSpeak's first rendering of the round-trip sentences, whatever runs first
    (`engines.engine_audio.speech_16k`)."""
    round_trip_speech(EspeakSynth.shared())


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A throwaway redis-server for one test."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """`slng-fast serve` in its own data directory, killed after the test if still up."""
    s = Served(tmp_path)
    yield s
    if s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait()
