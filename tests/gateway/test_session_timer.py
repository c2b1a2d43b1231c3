"""The clock for a session's own deadline, on trio's autojump clock: a real STT session with
the WhisperLive dialect (whose finalize only time can settle when the server is silent) and
a memory channel standing for the bridge, which is told when the deadline passes."""

from __future__ import annotations

import pytest
import trio

from protocol.helpers import PRO, cmd, types
from slng_fast.gateway.session_timer import SessionTimer
from slng_fast.protocol.stt import SttSession
from slng_fast.providers.registry import ENDPOINTS
from slng_fast.providers.whisper import FINALIZE_GRACE_S, FINALIZE_SILENCE_S, WhisperDialect

WHISPER = ENDPOINTS["whisper"]
SECOND = b"\x00\x00" * 16000  # 1 s at 16 kHz pcm16


def started_session(now: float) -> SttSession:
    session = SttSession(endpoint=WHISPER, dialect=WhisperDialect(WHISPER, "ws://w"),
                         tier=PRO, now=now)
    session.receive_text(cmd(type="start", uid="u"), now)
    return session


async def test_the_deadline_is_queued_when_it_passes_and_once(nursery, autojump_clock):
    t0 = trio.current_time()
    session = started_session(t0)
    for _ in range(3):  # 3 s of audio, all at once
        session.receive_binary(SECOND, t0)
    session.receive_text(cmd(type="finalize"), t0)
    deadline = session.deadline()
    assert deadline == pytest.approx(t0 + 3 + FINALIZE_SILENCE_S + FINALIZE_GRACE_S)
    timer = SessionTimer(session)
    send, inbox = trio.open_memory_channel[tuple](8)
    nursery.start_soon(timer.run, lambda: send.send_nowait(("deadline",)))
    with trio.fail_after(3600):
        assert await inbox.receive() == ("deadline",)
    assert trio.current_time() >= deadline
    # the loop's step: the session answers the finalize, and its deadline is cleared
    assert types(session.on_deadline(trio.current_time())) == ["final_transcript"]
    timer.check()
    with trio.move_on_after(3600):
        await inbox.receive()
        pytest.fail("queued again with no deadline left")


async def test_a_deadline_set_by_a_step_rearms_the_timer(nursery, autojump_clock):
    t0 = trio.current_time()
    session = started_session(t0)
    timer = SessionTimer(session)
    send, inbox = trio.open_memory_channel[tuple](8)
    nursery.start_soon(timer.run, lambda: send.send_nowait(("deadline",)))
    await trio.sleep(60)  # no deadline: the timer sleeps
    assert inbox.statistics().current_buffer_used == 0
    now = trio.current_time()
    session.receive_binary(SECOND, now)
    timer.check()  # audio does not move the deadline
    session.receive_text(cmd(type="finalize"), now)
    timer.check()
    with trio.fail_after(3600):  # without the re-arming it would sleep for ever
        assert await inbox.receive() == ("deadline",)
    assert trio.current_time() == pytest.approx(now + 1 + FINALIZE_SILENCE_S
                                                + FINALIZE_GRACE_S)


async def test_another_clock_shares_the_task_and_ends_it(nursery, autojump_clock):
    t0 = trio.current_time()
    session = started_session(t0)
    assert session.deadline() is None
    timer, calls = SessionTimer(session), []

    def also(now: float) -> float | None:
        calls.append(now - t0)
        return None if now >= t0 + 20 else now + 10

    with trio.fail_after(3600):
        await timer.run(lambda: calls.append("fired"), also)
    assert calls == [0, 10, 20]


async def test_wake_asks_the_other_clock_again(nursery, autojump_clock):
    t0 = trio.current_time()
    timer, calls = SessionTimer(started_session(t0)), []
    nursery.start_soon(timer.run, lambda: None,
                       lambda now: calls.append(round(now - t0)) or now + 100)
    await trio.sleep(5)
    timer.wake()
    await trio.sleep(1)
    assert calls == [0, 5]
    await trio.sleep(100)
    assert calls == [0, 5, 105]
