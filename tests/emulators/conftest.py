"""Emulator tests: the built-in engines and one emulator in front of them, on 127.0.0.1."""

from __future__ import annotations

import pytest

from harness import start_engines


@pytest.fixture
async def engines(nursery):
    return await start_engines(nursery)
