"""The clock for a session's own deadline, on trio's autojump clock: a real STT session with
the WhisperLive dialect (whose finalize only time can settle when the server is silent) and
a memory channel standing for the bridge, which is told when the deadline passes. Every
timer of the run waits in one heap served by one task (`Deadlines`)."""

from __future__ import annotations

import pytest
import trio

from protocol.helpers import PRO, cmd, types
from slng_fast.gateway.session_timer import COMPACT_FROM, SessionTimer, current_deadlines
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
    timer.start(lambda: send.send_nowait(("deadline",)))
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
    timer.start(lambda: send.send_nowait(("deadline",)))
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


async def test_another_clock_shares_the_timer_and_stops_it(nursery, autojump_clock):
    t0 = trio.current_time()
    session = started_session(t0)
    assert session.deadline() is None
    timer, calls = SessionTimer(session), []

    def also(now: float) -> float | None:
        calls.append(now - t0)
        return None if now >= t0 + 20 else now + 10

    timer.start(lambda: calls.append("fired"), also)
    await trio.sleep(3600)
    assert calls == [0, 10, 20]
    assert len(current_deadlines()) == 0


async def test_wake_asks_the_other_clock_again(nursery, autojump_clock):
    t0 = trio.current_time()
    timer, calls = SessionTimer(started_session(t0)), []
    timer.start(lambda: None, lambda now: calls.append(round(now - t0)) or now + 100)
    await trio.sleep(5)
    timer.wake()
    await trio.sleep(1)
    assert calls == [0, 5]
    await trio.sleep(100)
    assert calls == [0, 5, 105]


async def test_many_timers_share_one_task_and_fire_in_order(nursery, autojump_clock):
    t0 = trio.current_time()
    fired: list[int] = []
    timers = []
    for i in (5, 1, 4, 2, 3):
        timer = SessionTimer(started_session(t0))
        timer.start(lambda: None, lambda now, i=i: (fired.append(i) if now > t0 else None)
                    or (None if now > t0 else t0 + i))
        timers.append(timer)
    tasks = len(trio.lowlevel.current_root_task().child_nurseries[0].child_tasks)
    await trio.sleep(10)
    assert fired == [1, 2, 3, 4, 5]
    # no task per timer: the run's tasks are the test's and the one serving the heap
    assert tasks <= 3


async def test_a_deadline_that_moves_later_costs_no_entry_until_the_old_one_fires(
        nursery, autojump_clock):
    t0 = trio.current_time()
    last = [t0]
    calls: list[float] = []

    def idle(now: float) -> float | None:  # the bridge's idle timeout, pushed on by messages
        calls.append(round(now - t0))
        return None if now >= last[0] + 10 else last[0] + 10

    timer = SessionTimer(started_session(t0))
    timer.start(lambda: None, idle)
    deadlines = current_deadlines()
    for _ in range(24):  # a message every second pushes the timeout on
        await trio.sleep(1)
        last[0] = trio.current_time()
        assert len(deadlines) == 1
    await trio.sleep(60)
    # asked at the start, each time an old entry came due (about every 10 s: a message
    # at the same second may come just before or after), then at the end (34): not
    # once per message
    assert len(calls) == 5 and calls[0] == 0 and calls[-1] == 34
    assert all(9 <= b - a <= 10 for a, b in zip(calls, calls[1:-1]))


async def test_stopped_timers_are_dropped_from_the_heap(nursery, autojump_clock):
    t0 = trio.current_time()
    deadlines = current_deadlines()
    timers = []
    for _ in range(COMPACT_FROM * 2):
        timer = SessionTimer(started_session(t0))
        timer.start(lambda: None, lambda now: now + 3600)
        timers.append(timer)
    assert len(deadlines) == COMPACT_FROM * 2
    for timer in timers:
        timer.stop()
    assert len(deadlines) < COMPACT_FROM  # compacted, not kept for an hour
    await trio.sleep(7200)
    assert len(deadlines) == 0


async def test_a_failing_clock_stops_its_own_timer_only(nursery, autojump_clock, caplog):
    t0 = trio.current_time()
    calls: list[str] = []

    def broken(now: float) -> float:
        if now > t0:
            raise RuntimeError("a bug in one session")
        return now + 1

    bad, good = SessionTimer(started_session(t0)), SessionTimer(started_session(t0))
    bad.start(lambda: None, broken)
    good.start(lambda: None, lambda now: calls.append("good") or now + 1)
    await trio.sleep(3.5)
    assert calls == ["good"] * 4
    assert "a session timer failed" in caplog.text
