"""Fixtures for the engine tests."""

from __future__ import annotations

import pytest

from slng_fast.engines.espeak import EspeakSynth
from slng_fast.engines.sphinx import RecognizerPool


@pytest.fixture(scope="session")
def synth() -> EspeakSynth:
    return EspeakSynth.shared()


@pytest.fixture(scope="session")
def recognizer_pool() -> RecognizerPool:
    """Loaded PocketSphinx models shared by the tests (loading one takes a while)."""
    return RecognizerPool(max_idle=4)
