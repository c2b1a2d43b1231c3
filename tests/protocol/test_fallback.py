"""The failover decisions, pure (protocol/fallback.py): which entry next, what is said
again, the STT replay buffer, the health's backoff."""

from __future__ import annotations

import pytest

from slng_fast.errors import GatewayError
from slng_fast.protocol.fallback import (
    FAST_SPEECH_MS_PER_CHAR,
    FallbackEntry,
    ProviderHealth,
    ReplayBuffer,
    close_switches,
    first_entry,
    next_entry,
    pace,
    parse_chain,
    refusal_switches,
    sentences,
    speakable,
    unheard_rest,
)


def test_parse_chain_takes_objects_and_names():
    assert parse_chain([{"provider": "kokoro", "voice_id": "af"}, "espeak"]) == (
        FallbackEntry("kokoro", {"voice_id": "af"}), FallbackEntry("espeak"))
    assert parse_chain(None) == ()


@pytest.mark.parametrize("bad, code", [
    ("kokoro", "invalid_message"), ([{"voice_id": "af"}], "invalid_message"), ([3], "invalid_message"),
    (["kokoro", "kokoro"], "invalid_parameter"),
    ([{"provider": "kokoro", "codec": "mulaw"}], "invalid_parameter"),
    (["a", "b", "c", "d", "e"], "invalid_parameter"),
])
def test_parse_chain_refuses(bad, code):
    with pytest.raises(GatewayError) as info:
        parse_chain(bad)
    assert info.value.kind.code == code


def test_next_entry_skips_down_ones_unless_all_are():
    names = ["orpheus", "kokoro", "espeak"]
    down = {"kokoro"}
    assert next_entry(names, 0, lambda n, t: n in down, 0.0) == 2
    assert next_entry(names, 0, lambda n, t: True, 0.0) == 1  # all down: the next anyway
    assert next_entry(names, 2, lambda n, t: False, 0.0) is None
    assert first_entry(names, lambda n, t: n == "orpheus", 0.0) == 1
    assert first_entry(names, lambda n, t: True, 0.0) == 0


def test_switching_causes():
    assert refusal_switches(None) and refusal_switches(503) and refusal_switches(429)
    assert not refusal_switches(401) and not refusal_switches(404)
    assert close_switches(None, client_fault=False) and not close_switches(1008, client_fault=True)


def test_sentences_keep_every_character():
    text = "One. Two? Three!  Four and no stop"
    assert "".join(sentences(text)) == text
    assert sentences(text)[0] == "One. "
    assert not speakable("  ... ?! ") and speakable(" a ")


def test_unheard_rest_never_repeats_a_started_sentence():
    text = "A" * 20 + ". " + "B" * 20 + ". " + "C" * 20 + "."
    ms = 50.0
    assert unheard_rest(text, 0, ms) == text  # nothing heard: all of it
    assert unheard_rest(text, 1, ms).startswith("B")  # the first under way: skipped
    assert unheard_rest(text, 22 * ms, ms).startswith("B")  # B starts exactly there
    assert unheard_rest(text, 22 * ms + 1, ms).startswith("C")
    assert unheard_rest(text, 10_000, ms) == ""


def test_pace_errs_toward_fast_speech():
    assert pace(0, 0) == FAST_SPEECH_MS_PER_CHAR
    assert pace(7000, 100) == FAST_SPEECH_MS_PER_CHAR  # slow speech: the fast bound
    assert pace(3000, 100) == pytest.approx(24.0)


def test_replay_buffer_keeps_what_no_final_covers_in_order():
    buf = ReplayBuffer(max_bytes=10)
    buf.push(b"aaaa")
    buf.finalize()
    buf.push(b"bbbb")
    assert buf.replay() == [("audio", b"aaaa"), ("finalize", b""), ("audio", b"bbbb")]
    buf.finalized()  # the first finalize answered: its audio is covered
    assert buf.replay() == [("audio", b"bbbb")]
    buf.push(b"cccccccc")  # over 10 bytes: the oldest goes
    assert b"".join(d for _, d in buf.replay()) == b"bbcccccccc"
    buf.finalize()
    assert buf.replay() == [("audio", b"bb"), ("audio", b"cccccccc"), ("finalize", b"")]


def test_health_backoff_and_probe():
    health = ProviderHealth(backoff=(1.0, 2.0, 4.0))
    assert health.failed("orpheus", 10.0) == 1.0
    assert health.is_down("orpheus", 10.5) and health.due(10.5) == []
    assert health.due(11.0) == ["orpheus"]
    assert health.probe_failed("orpheus", 11.0) == 2.0
    assert health.probe_failed("orpheus", 13.0) == 4.0
    assert health.probe_failed("orpheus", 17.0) == 4.0  # capped
    health.probe_answered("orpheus")
    assert not health.is_down("orpheus", 18.0)
    assert health.failed("orpheus", 20.0) == 1.0  # a fresh mark starts over
    health.shared = {"kokoro": 30.0}  # another worker's mark, until it lapses
    assert health.is_down("kokoro", 29.0) and not health.is_down("kokoro", 31.0)
