"""TokenBuckets and ConnectionCounter: behaviour, a reference model, threads."""

from __future__ import annotations

import math
import sys
import threading
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slng_fast._native import ConnectionCounter, InvalidArgumentError, TokenBuckets

# ---- token buckets -------------------------------------------------------------


def test_new_key_starts_full_then_waits() -> None:
    tb = TokenBuckets(3, 0.5)
    assert [tb.try_acquire("k", 10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert tb.try_acquire("k", 10.0) == pytest.approx(2.0)
    assert tb.try_acquire("k", 11.0) == pytest.approx(1.0)
    assert tb.try_acquire("k", 12.0) == 0.0
    assert tb.try_acquire("other", 12.0, 3) == 0.0
    assert len(tb) == 2


def test_messages_per_minute() -> None:
    # The free tier: 20 messages per minute, refilled continuously.
    tb = TokenBuckets(20, 20 / 60)
    now = 1000.0
    assert all(tb.try_acquire("key", now) == 0.0 for _ in range(20))
    wait = tb.try_acquire("key", now)
    assert wait == pytest.approx(3.0)
    assert math.ceil(wait * 1000) == 3000  # retry_after_ms
    assert tb.try_acquire("key", now + wait) == 0.0


def test_refill_is_continuous_and_capped() -> None:
    tb = TokenBuckets(10, 2)
    assert tb.try_acquire("k", 0.0, 10) == 0.0
    assert tb.try_acquire("k", 1.25, 2.5) == 0.0
    assert tb.try_acquire("k", 1.25, 0.5) == pytest.approx(0.25)
    assert tb.try_acquire("k", 1000.0, 10) == 0.0
    assert tb.try_acquire("k", 1000.0, 1) == pytest.approx(0.5)


def test_denied_takes_nothing() -> None:
    tb = TokenBuckets(5, 1)
    assert tb.try_acquire("k", 0.0, 4) == 0.0
    assert tb.try_acquire("k", 0.0, 3) == pytest.approx(2.0)
    assert tb.try_acquire("k", 0.0, 3) == pytest.approx(2.0)
    assert tb.try_acquire("k", 0.0, 1) == 0.0


def test_waiting_the_answer_is_enough() -> None:
    tb = TokenBuckets(7, 0.1)
    now = 5.5
    tb.try_acquire("k", now, 7)
    for _ in range(100):
        wait = tb.try_acquire("k", now)
        assert wait > 0.0
        now += wait
        assert tb.try_acquire("k", now) == 0.0


def test_cost_above_capacity_is_infinite() -> None:
    tb = TokenBuckets(5, 1)
    assert tb.try_acquire("k", 0.0, 6) == math.inf
    assert len(tb) == 0, "a denied new key is not tracked"
    tb.set_limits("small", 1, 1)
    assert tb.try_acquire("small", 0.0, 2) == math.inf


def test_time_going_backwards_adds_no_tokens() -> None:
    tb = TokenBuckets(2, 1)
    assert tb.try_acquire("k", 100.0, 2) == 0.0
    assert tb.try_acquire("k", 50.0) == pytest.approx(51.0)
    assert tb.try_acquire("k", 99.5) == pytest.approx(1.5)
    assert tb.try_acquire("k", 100.5) == pytest.approx(0.5)
    assert tb.try_acquire("k", 101.0) == 0.0
    assert tb.try_acquire("k", -sys.float_info.max) > 0.0


def test_set_limits_overrides_one_key() -> None:
    tb = TokenBuckets(10, 1)
    assert tb.try_acquire("k", 0.0, 2) == 0.0  # 8 left
    tb.set_limits("k", 5, 10)  # clamped to 5
    assert tb.limits("k") == (5.0, 10.0)
    assert tb.try_acquire("k", 0.0, 5) == 0.0
    assert tb.try_acquire("k", 0.0) == pytest.approx(0.1)
    tb.set_limits("fresh", 3, 1)
    assert tb.try_acquire("fresh", 7.0, 3) == 0.0
    assert tb.limits("other") == (10.0, 1.0)
    assert (tb.capacity, tb.refill_per_second, tb.idle_seconds) == (10.0, 1.0, 600.0)
    assert tb.remove("k") and not tb.remove("k")
    assert tb.limits("k") == (10.0, 1.0)


def test_idle_full_keys_are_evicted() -> None:
    tb = TokenBuckets(10, 1, idle_seconds=60)
    tb.try_acquire("a", 0.0, 1)  # full again at 1
    tb.try_acquire("b", 30.0, 10)  # idle from 90
    tb.set_limits("own", 1, 1)  # never evicted
    assert tb.evict_idle(59.0) == 0
    assert tb.evict_idle(60.0) == 1
    assert tb.evict_idle(1e9) == 1
    assert len(tb) == 1


def test_eviction_happens_by_itself() -> None:
    tb = TokenBuckets(1, 1, idle_seconds=10)
    for i in range(3000):
        assert tb.try_acquire(f"key-{i}", 0.0) == 0.0
    assert len(tb) == 3000
    for i in range(4000):
        tb.try_acquire("hot", 100.0 + i)
    assert len(tb) == 1
    assert tb.try_acquire("key-0", 5000.0) == 0.0


@pytest.mark.parametrize(
    "args",
    [(0, 1), (-1, 1), (math.nan, 1), (math.inf, 1), (1, 0), (1, -1), (1, math.nan), (1, 1, 0), (1, 1, -5), (1, 1, math.nan)],
)
def test_invalid_limits(args: tuple[float, ...]) -> None:
    with pytest.raises(InvalidArgumentError, match="must be a finite number greater than zero"):
        TokenBuckets(*args)


def test_invalid_arguments() -> None:
    tb = TokenBuckets(1, 1)
    for now in (math.nan, math.inf, -math.inf):
        with pytest.raises(InvalidArgumentError, match="now must be a finite number"):
            tb.try_acquire("k", now)
    for cost in (0, -1, math.nan, math.inf):
        with pytest.raises(InvalidArgumentError, match="cost"):
            tb.try_acquire("k", 0.0, cost)
    with pytest.raises(InvalidArgumentError, match="capacity"):
        tb.set_limits("k", 0, 1)
    with pytest.raises(InvalidArgumentError, match="refill_per_second"):
        tb.set_limits("k", 1, math.nan)
    with pytest.raises(TypeError):
        tb.try_acquire(b"k", 0.0)  # type: ignore[arg-type]
    assert len(tb) == 0
    assert issubclass(InvalidArgumentError, ValueError)


def test_keyword_arguments_and_int_time() -> None:
    tb = TokenBuckets(capacity=2, refill_per_second=1, idle_seconds=30)
    assert tb.try_acquire(key="k", now=0, cost=2) == 0.0
    assert tb.try_acquire("k", 0) == pytest.approx(1.0)


EPSILON = 1e-9


@dataclass
class _Bucket:
    tokens: float
    last: float
    capacity: float
    rate: float


class ReferenceBuckets:
    """A plain token bucket per key, written from the documented rules."""

    def __init__(self, capacity: float, rate: float) -> None:
        self.defaults = (capacity, rate)
        self.buckets: dict[str, _Bucket] = {}

    def try_acquire(self, key: str, now: float, cost: float) -> float:
        b = self.buckets.get(key)
        if b is None:
            capacity, rate = self.defaults
            b = _Bucket(capacity, now, capacity, rate)
        t = max(now, b.last)
        if t > b.last:
            b.tokens = min(b.tokens + (t - b.last) * b.rate, b.capacity)
            b.last = t
        if b.tokens >= cost - EPSILON:
            b.tokens = max(b.tokens - cost, 0.0)
            self.buckets[key] = b
            return 0.0
        if key in self.buckets:
            self.buckets[key] = b
        if cost - EPSILON > b.capacity:
            return math.inf
        return (cost - b.tokens) / b.rate + (t - now)

    def set_limits(self, key: str, capacity: float, rate: float) -> None:
        b = self.buckets.get(key)
        if b is None:
            self.buckets[key] = _Bucket(capacity, -math.inf, capacity, rate)
        else:
            b.tokens = min(b.tokens, capacity)
            b.capacity, b.rate = capacity, rate


acquire_ops = st.tuples(
    st.just("acquire"),
    st.sampled_from(["a", "b", "c"]),
    st.one_of(st.floats(0, 5), st.floats(-1, 0), st.just(0.0)),
    st.sampled_from([0.25, 0.5, 1.0, 1.0, 1.0, 2.0, 3.0, 7.5, 20.0]),
)
limit_ops = st.tuples(
    st.just("set_limits"),
    st.sampled_from(["a", "b", "d"]),
    st.sampled_from([0.5, 1.0, 4.0, 10.0]),
    st.sampled_from([0.1, 1.0, 3.0]),
)


@given(
    capacity=st.sampled_from([1.0, 2.0, 5.0, 10.0, 20.0]),
    rate=st.sampled_from([0.05, 1 / 3, 1.0, 2.0, 20 / 60]),
    start=st.floats(-1e6, 1e6),
    ops=st.lists(st.one_of(acquire_ops, acquire_ops, acquire_ops, limit_ops), max_size=80),
)
@settings(max_examples=300, deadline=None)
def test_buckets_agree_with_reference_model(
    capacity: float, rate: float, start: float, ops: list[tuple[str, str, float, float]]
) -> None:
    ours = TokenBuckets(capacity, rate)
    model = ReferenceBuckets(capacity, rate)
    now = start
    for op, key, a, b in ops:
        if op == "set_limits":
            ours.set_limits(key, a, b)
            model.set_limits(key, a, b)
            continue
        now += a
        got = ours.try_acquire(key, now, b)
        want = model.try_acquire(key, now, b)
        if want == 0.0 or math.isinf(want):
            assert got == want, (key, now, b)
        else:
            assert got > 0.0
            assert got == pytest.approx(want, rel=1e-9, abs=1e-12), (key, now, b)
        assert len(ours) == len(model.buckets)


def test_buckets_from_many_threads() -> None:
    tb = TokenBuckets(7000, 1e-9)
    allowed = [0] * 4
    barrier = threading.Barrier(4)

    def hammer(i: int) -> None:
        barrier.wait()
        for n in range(5000):
            if tb.try_acquire("shared", 1.0 + (n % 3) * 1e-12) == 0.0:
                allowed[i] += 1
            tb.try_acquire(f"own-{i}", 1.0)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 7000
    assert len(tb) == 5


# ---- connection counter ------------------------------------------------------


def test_connection_counter() -> None:
    cc = ConnectionCounter()
    assert cc.acquire("k", 2) and cc.acquire("k", 2)
    assert not cc.acquire("k", 2)
    assert cc.acquire("k", 3)
    assert not cc.acquire("k", 1), "a lowered limit holds"
    assert cc.count("k") == 3 and len(cc) == 1
    assert cc.release("k") and cc.release("k") and cc.release("k")
    assert cc.count("k") == 0 and len(cc) == 0
    assert cc.release("k") is False
    assert cc.release("never") is False
    assert len(cc) == 0 and cc.count("never") == 0


@pytest.mark.parametrize("limit", [0, -1])
def test_connection_limit_must_be_positive(limit: int) -> None:
    with pytest.raises(InvalidArgumentError, match="limit must be a finite number greater than zero"):
        ConnectionCounter().acquire("k", limit)


@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["acquire", "release"]), st.sampled_from(["a", "b", "c"]), st.integers(1, 4)),
        max_size=100,
    )
)
@settings(max_examples=300, deadline=None)
def test_connection_counter_agrees_with_a_dict(ops: list[tuple[str, str, int]]) -> None:
    cc = ConnectionCounter()
    model: dict[str, int] = {}
    for op, key, limit in ops:
        if op == "acquire":
            want = model.get(key, 0) < limit
            if want:
                model[key] = model.get(key, 0) + 1
            assert cc.acquire(key, limit) is want
        else:
            want = model.get(key, 0) > 0
            if want:
                model[key] -= 1
                if model[key] == 0:
                    del model[key]
            assert cc.release(key) is want
        assert cc.count(key) == model.get(key, 0)
        assert len(cc) == len(model)
    for key, n in list(model.items()):
        for _ in range(n):
            assert cc.release(key)
    assert len(cc) == 0


@given(limit=st.integers(1, 5), ops=st.lists(st.booleans(), max_size=60))
@settings(max_examples=200, deadline=None)
def test_connection_count_never_exceeds_the_limit(limit: int, ops: list[bool]) -> None:
    cc = ConnectionCounter()
    held = 0
    for acquire in ops:
        if acquire:
            held += cc.acquire("k", limit)
        elif cc.release("k"):
            held -= 1
        assert 0 <= cc.count("k") == held <= limit
    while cc.release("k"):
        held -= 1
    assert held == 0 and len(cc) == 0


def test_connection_counter_from_many_threads() -> None:
    cc = ConnectionCounter()
    barrier = threading.Barrier(4)
    granted = [0] * 4
    over = []

    def hammer(i: int) -> None:
        barrier.wait()
        for _ in range(3000):
            if cc.acquire("shared", 3):
                if cc.count("shared") > 3:
                    over.append(cc.count("shared"))
                assert cc.release("shared")
            if cc.acquire("capped", 50):
                granted[i] += 1

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not over
    assert cc.count("shared") == 0
    assert sum(granted) == 50 and cc.count("capped") == 50
    for _ in range(50):
        assert cc.release("capped")
    assert len(cc) == 0
