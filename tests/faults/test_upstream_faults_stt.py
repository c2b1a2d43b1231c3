"""STT providers that misbehave, through the gateway (as test_upstream_faults.py for
TTS): a Kyutai emulator told to misbehave, a healthy session beside each case."""

from __future__ import annotations

import pytest
import trio

from faults.upstream import (
    HANG_GUARD,
    beside_a_healthy_session,
    errors_of,
    still_open,
    transcribe,
)


@pytest.mark.parametrize("kind", ["malformed-json", "wrong-types", "binary"])
async def test_stt_unreadable_message_is_dropped(faulty, nursery, speech, kind):
    """A Kyutai message the dialect cannot read is dropped; transcripts go on and the
    finalize is answered."""
    gw = await faulty("kyutai", garbage=kind)

    async def case() -> tuple[list[dict], int | None, bool]:
        ws, events, code = await transcribe(gw, nursery, speech)
        return events, code, await still_open(ws)

    events, code, open_after = await beside_a_healthy_session(gw, nursery, case)
    assert code is None and open_after
    assert errors_of(events) == []
    assert events[-1]["type"] == "final_transcript" and events[-1]["text"]


@pytest.mark.parametrize("faults", [
    {"close_code": 1011}, {"close_code": 4000},
    {"fail_after_ms": 0},  # reset, no close frame
    {"garbage": "oversized"},
    {"stall_after_bytes": 1},  # the finalize is never answered
    {"refuse": True},
    {"handshake_delay_ms": 60_000},
], ids=str)
async def test_stt_provider_failing(faulty, nursery, speech, faults):
    """Audio already sent cannot be replayed to a new connection: any failure of the
    recogniser ends the session with `provider_unavailable` and close 1013."""
    gw = await faulty("kyutai", **faults)

    async def case() -> tuple[list[dict], int | None]:
        _, events, code = await transcribe(gw, nursery, speech)
        return events, code

    events, code = await beside_a_healthy_session(gw, nursery, case)
    [error] = errors_of(events)
    assert error["code"] == "provider_unavailable" and error["retryable"] is True, error
    assert events[-1]["type"] == "session_ended" and code == 1013


async def test_audio_pushed_while_the_upstream_connects(faulty, nursery, speech):
    """A slow upgrade while the client pushes more audio than the upstream's outbox
    holds: the session's loop waits for room in that outbox, and the connecting task
    must not wait for room in the loop's inbox to say it is open (each would wait for
    the other); the finalize is answered."""
    gw = await faulty("kyutai", handshake_delay_ms=1000)
    pushed = bytes(16000 * 2 * 20) + speech  # 20 s of silence first: 2 MiB for Kyutai

    async def case() -> tuple[list[dict], int | None]:
        _, events, code = await transcribe(gw, nursery, pushed)
        return events, code

    with trio.fail_after(HANG_GUARD):
        events, code = await beside_a_healthy_session(gw, nursery, case)
    assert code is None and errors_of(events) == [], events
    assert events[-1]["type"] == "final_transcript"
