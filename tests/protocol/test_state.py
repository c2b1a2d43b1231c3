"""The session lifecycle as a table: the moves it has, the refusals it gives, and the TTS
and STT sessions walking it."""

from __future__ import annotations

import pytest
from helpers import PRO, client_events, cmd

from slng_fast.protocol.state import (
    TRANSITIONS,
    SessionEvent,
    SessionMachine,
    SessionProtocolError,
    SessionState,
)
from slng_fast.protocol.stt import SttSession
from slng_fast.protocol.tts import TtsSession
from slng_fast.providers.registry import ENDPOINTS
from slng_fast.providers.slng import SlngDialect
from slng_fast.providers.unified import UnifiedSttDialect

S, E = SessionState, SessionEvent


def test_every_state_but_ended_can_end_and_ended_is_final():
    for state in S:
        if state is S.ENDED:
            assert not [event for (src, event) in TRANSITIONS if src is S.ENDED]
        else:
            assert TRANSITIONS[state, E.END] is S.ENDED


def test_a_second_open_is_already_initialized_and_changes_nothing():
    machine = SessionMachine("started")
    machine.move(E.UNIFIED_FRAME)
    machine.move(E.OPEN)
    with pytest.raises(SessionProtocolError) as refused:
        machine.move(E.OPEN)
    assert refused.value.code == "already_initialized" and "already started" in refused.value.message
    assert machine.state is S.OPEN


def test_a_move_the_table_lacks_is_an_internal_error_with_its_close_code():
    machine = SessionMachine()
    machine.move(E.NATIVE_FRAME)
    with pytest.raises(SessionProtocolError) as refused:
        machine.move(E.OPEN)
    assert refused.value.code == "internal_error" and refused.value.fatal_close_code == 1011
    assert machine.state is S.NATIVE


def test_tts_session_walks_the_table():
    endpoint = ENDPOINTS["espeak"]
    s = TtsSession(endpoint=endpoint, dialect=SlngDialect(endpoint, "ws://engine.invalid/"),
                   tier=PRO, now=0.0)
    assert s.state is S.IDLE and s.mode is None
    s.receive_text(cmd(type="ping"), 0.0)
    assert s.state is S.AWAITING_OPEN and s.mode == "unified"
    s.receive_text(cmd(type="init"), 0.0)
    assert s.state is S.OPEN and s.opened
    (err,) = client_events(s.receive_text(cmd(type="init"), 0.0))
    assert err["code"] == "already_initialized" and s.state is S.OPEN
    s.end("client_closed", 1.0)
    assert s.state is S.ENDED and s.ended == "client_closed" and s.mode == "unified"
    assert s.receive_text(cmd(type="flush"), 2.0) == []


def test_stt_commands_before_start_are_refused_and_audio_implies_start():
    endpoint = ENDPOINTS["pocketsphinx"]
    s = SttSession(endpoint=endpoint, dialect=UnifiedSttDialect(endpoint, "ws://engine.invalid/"),
                   tier=PRO, now=0.0)
    (err,) = client_events(s.receive_text(cmd(type="finalize"), 0.0))
    assert err["code"] == "invalid_message" and "'start' before 'finalize'" in err["message"]
    assert s.state is S.AWAITING_OPEN
    s.receive_binary(b"\0" * 640, 0.1)
    assert s.state is S.OPEN
