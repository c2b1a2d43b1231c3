"""TTS providers that misbehave, through the gateway: each case is a row of
docs/decisions.md, "Faults and what the client sees", "Upstreams". Real sockets and
engines; the provider is its emulator told to misbehave (`slng_fast.emulators.faults`).
Each case asserts what the client sees, and that a healthy session on the same gateway
streams on undisturbed and a new session works after (`faults.upstream`)."""

from __future__ import annotations

import pytest
import trio
import trio_websocket

from faults.upstream import (
    beside_a_healthy_session,
    errors_of,
    speak,
    still_open,
)
from harness import Running, free_port, start_engines, start_fronting_gateway
from slng_fast.emulators.faults import FaultPlan
from wsclient import connect, send


@pytest.mark.parametrize("kind", ["malformed-json", "wrong-types", "binary"])
async def test_tts_unreadable_message_is_dropped(faulty, nursery, kind):
    """An ElevenLabs message the dialect cannot read (in place of the first audio) is
    dropped; the utterance ends as usual, and the session goes on."""
    gw = await faulty("elevenlabs", garbage=kind)

    async def case() -> tuple[list[dict], int | None, bool]:
        ws, events, code = await speak(gw, nursery, "elevenlabs")
        return events, code, await still_open(ws)

    events, code, open_after = await beside_a_healthy_session(gw, nursery, case)
    assert code is None and open_after
    assert errors_of(events) == []
    assert events[-1]["type"] == "audio_end" and events[-1]["interrupted"] is False


def assert_interrupted(events: list[dict], code: int | None, *, retryable: bool) -> dict:
    """A TTS utterance cut short by its provider: one retryable-or-not `provider_error`,
    then `audio_end` interrupted; the session stays open."""
    assert code is None, events
    [error] = errors_of(events)
    assert error["code"] == "provider_error" and error["retryable"] is retryable, error
    assert events[-1]["type"] == "audio_end" and events[-1]["interrupted"] is True
    return error


async def tts_cut_short(gw: Running, nursery: trio.Nursery, provider: str
                        ) -> tuple[list[dict], int | None, bool]:
    ws, events, code = await speak(gw, nursery, provider)
    return events, code, code is None and await still_open(ws)


@pytest.mark.parametrize("faults", [
    {"close_code": 1008}, {"close_code": 1011}, {"close_code": 4000},
    {"fail_after_ms": 0},  # reset, no close frame
    {"garbage": "oversized"},  # the gateway refuses a message over 4 MiB
], ids=str)
async def test_tts_provider_failing_mid_utterance(faulty, nursery, faults):
    gw = await faulty("elevenlabs", **faults)
    events, code, open_after = await beside_a_healthy_session(
        gw, nursery, lambda: tts_cut_short(gw, nursery, "elevenlabs"))
    assert_interrupted(events, code, retryable=True)
    assert open_after


@pytest.mark.parametrize("close_code, retryable", [
    (1003, False), (1008, False), (1009, False), (1011, True),
])
async def test_tts_provider_error_closes_as_deepgram_documents(faulty, nursery, close_code,
                                                               retryable):
    gw = await faulty("deepgram", close_code=close_code)
    events, code, open_after = await beside_a_healthy_session(
        gw, nursery, lambda: tts_cut_short(gw, nursery, "deepgram"))
    error = assert_interrupted(events, code, retryable=retryable)
    assert f"close {close_code}" in error["message"]
    assert open_after


async def test_tts_oversized_message_is_not_blamed_on_the_client(faulty, nursery):
    """The gateway closes an upstream that sends a message over 4 MiB with 1009; that
    code is the gateway's, not the provider's (Deepgram's own 1009 means "your message
    was too large", which is not what happened)."""
    gw = await faulty("deepgram", garbage="oversized")
    events, code, open_after = await beside_a_healthy_session(
        gw, nursery, lambda: tts_cut_short(gw, nursery, "deepgram"))
    error = assert_interrupted(events, code, retryable=True)
    assert "refused a message" not in error["message"]
    assert open_after


async def test_tts_provider_stalling_mid_utterance(faulty, nursery):
    gw = await faulty("elevenlabs", stall_after_bytes=1)  # after the first audio message
    events, code, open_after = await beside_a_healthy_session(
        gw, nursery, lambda: tts_cut_short(gw, nursery, "elevenlabs"))
    error = assert_interrupted(events, code, retryable=True)
    assert "sent nothing" in error["message"]
    assert open_after


@pytest.mark.parametrize("faults", [
    {"refuse": True},  # 503 to the upgrade
    {"handshake_delay_ms": 60_000},  # takes the connection, never answers in time
    "no listener",  # nothing listens: the TCP connection is refused
], ids=str)
async def test_tts_provider_that_cannot_be_reached(faulty, nursery, faults):
    if faults == "no listener":
        gw = await faulty("elevenlabs", url=f"ws://127.0.0.1:{free_port()}")
    else:
        gw = await faulty("elevenlabs", **faults)

    async def case() -> tuple[list[dict], int | None]:
        _, events, code = await speak(gw, nursery, "elevenlabs")
        return events, code

    events, code = await beside_a_healthy_session(gw, nursery, case)
    [error] = errors_of(events)
    assert error["code"] == "provider_unavailable" and error["retryable"] is True
    assert events[-1]["type"] == "session_ended" and code == 1013


async def test_a_provider_still_connecting_is_not_quiet(nursery, tmp_path):
    """The provider's silence counts from its connection's open: one that never answers
    the upgrade is unreachable (after the connect budget), never "quiet mid-utterance",
    however short `provider_timeout_s` is beside that budget."""
    engines = await start_engines(nursery)
    gw = await start_fronting_gateway(nursery, tmp_path, engines, "elevenlabs",
                                      faults=FaultPlan(handshake_delay_ms=60_000),
                                      provider_timeout_s=0.3, upstream_connect_timeout_s=1.5)
    _, events, code = await speak(gw, nursery, "elevenlabs")
    [error] = errors_of(events)
    assert error["code"] == "provider_unavailable", error
    assert events[-1]["type"] == "session_ended" and code == 1013


async def test_native_session_when_the_provider_breaks_the_protocol(faulty, nursery):
    """A native (drop-in) session relays the provider's own close codes; a provider the
    gateway had to drop for a message over 4 MiB is no close of the provider's: the client
    gets 1011 with the reason, not our 1009 (its message was fine) nor 1000."""
    gw = await faulty("deepgram", garbage="oversized")

    async def case() -> tuple[int, str]:
        ws = await connect(gw.url + "/deepgram/v1/speak?encoding=linear16&sample_rate=16000",
                           gw.keys["pro"], nursery=nursery)
        await send(ws, type="Speak", text="Hello through the gateway.")
        await send(ws, type="Flush")
        try:
            while True:
                await ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            return exc.reason.code, exc.reason.reason or ""

    code, reason = await beside_a_healthy_session(gw, nursery, case)
    assert code == 1011 and "protocol" in reason
