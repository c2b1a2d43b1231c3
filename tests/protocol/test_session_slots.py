"""Sessions are slotted: one is made per accepted connection, before `init`, and with
36 attributes an instance dict is a 64-slot table (1.6 KiB) where slots take 8 bytes
each (bench/RESULTS.md, "Fewer tasks per session")."""

from __future__ import annotations

import pytest

from slng_fast.protocol.realtime_session import RealtimeSttSession
from slng_fast.protocol.stt import SttSession
from slng_fast.protocol.tts import TtsSession


@pytest.mark.parametrize("cls", [TtsSession, SttSession, RealtimeSttSession])
def test_a_session_has_no_instance_dict(cls):
    assert cls.__dictoffset__ == 0
    assert "__dict__" not in dir(cls)
