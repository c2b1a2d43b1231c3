"""Per-key limits shared by every gateway worker and host through one Redis.

Keys (all under `prefix`, default "slng:"):

* `conn:{key_id}`: sorted set of connection leases, member = lease id, score = expiry
  in Redis server milliseconds. A lease lives `lease_ttl_s` (15 s) unless renewed; the
  worker's LeaseKeeper renews all its leases every `lease_ttl_s / 3`. A worker that dies
  (even `kill -9`) stops renewing, so its slots free themselves within one TTL.
* `bucket:{key_id}`: hash {tokens, ts}: the messages-per-minute token bucket, capacity =
  the per-minute number, refilled at per_minute / 60 per second. It expires once it
  would be full again, so idle keys cost nothing.
* `epoch`: a random token, set by the first worker that finds none. A Redis that
  restarted empty (or was flushed) has lost it along with every lease: the first
  `acquire_connection` that notices refuses new sessions of its worker for one renewal
  interval and a retry (`restore_s`), by which every live worker has renewed its open
  sessions' leases into it, so no key is given more than its limit meanwhile.
* `revoked`: hash key_id -> revoked_at (unix seconds). Written by `slng-fast keys revoke
  --redis` and by every worker that finds a revocation in its host's key store
  (`gateway/revocation.py`). Checked by `revoked()` when a session starts, and by every
  renewal for the keys of open sessions, so each worker sees a revocation at the next
  session start and ends open sessions within one renewal interval (LeaseKeeper's
  `on_revoked`; no pub/sub connection to keep alive).

Every script reads the clock with Redis `TIME`, so the hosts' clocks do not matter:
one clock, the server's, decides expiries and refills. Scripts are atomic, so the
count-then-add of a lease and the refill-then-take of a token cannot interleave.

If Redis is unreachable, calls raise RedisUnavailable and `healthy` turns False (logged
once): the gateway refuses new sessions with 1013. Sessions already open go on:
`take_message` then falls back to this process's own bucket instead of failing, and
`release_connection` forgets the lease locally (it expires in Redis by itself).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio

from slng_fast import _native
from slng_fast.config import TierLimits
from slng_fast.gateway.redis_client import RedisClient, RedisUnavailable, Script

log = logging.getLogger("slng_fast.limits")

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS[1] lease set, KEYS[2] the epoch marker; ARGV: max connections, lease id, ttl ms,
# the marker this worker knows. 1 = acquired, 0 = the key is full, -1 = the marker is not
# the one we know (Redis lost its data): nothing is done.
ACQUIRE = Script(_NOW_MS + """
if redis.call('GET', KEYS[2]) ~= ARGV[4] then return -1 end
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
""")

# KEYS[1] revoked hash, KEYS[1+i] lease set of lease i; ARGV: ttl ms, then per lease
# (lease id, key id). Sets every lease's expiry to now + ttl, also one that was lost
# (Redis restarted, or this worker stalled past the TTL): the session is still open,
# so it still counts. Returns the key ids that are revoked.
RENEW = Script(_NOW_MS + """
local ttl = tonumber(ARGV[1])
local revoked = {}
for i = 2, #KEYS do
  local lease, key_id = ARGV[2 * i - 2], ARGV[2 * i - 1]
  redis.call('ZADD', KEYS[i], now + ttl, lease)
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
  if redis.call('HEXISTS', KEYS[1], key_id) == 1 then revoked[#revoked + 1] = key_id end
end
return revoked
""")

# KEYS[1] bucket; ARGV: capacity, refill per second, now ms or "" for Redis TIME.
# Returns the wait in ms before a token is there (0 = one was taken).
TAKE = Script("""
local capacity, rate = tonumber(ARGV[1]), tonumber(ARGV[2]) / 1000
local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(state[1]), tonumber(state[2])
if not tokens or not ts then tokens, ts = capacity, now end
if now > ts then tokens, ts = tokens + (now - ts) * rate, now end
if tokens > capacity then tokens = capacity end
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(ts))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate) + 1000)
return wait
""")

# KEYS[1] the epoch marker; ARGV[1] a new token. The marker (ours if there was none).
EPOCH = Script("""
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
""")

# KEYS[1] lease set. Live leases now.
COUNT = Script(_NOW_MS + "return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')")


class RedisLimits:
    """The shared backend. `lease_ttl_s` bounds how long a dead worker's slots stay
    taken; renewals every third of it leave room for two missed ones."""

    def __init__(self, redis: RedisClient, *, prefix: str = "slng:", lease_ttl_s: float = 15.0,
                 retry_s: float = 1.0) -> None:
        self.redis = redis
        self.prefix = prefix
        self._revoked = prefix + "revoked"
        self.lease_ttl_ms = max(1, int(lease_ttl_s * 1000))
        self.retry_s = retry_s
        self.healthy = True
        self._failed_at = 0.0
        self._leases: dict[str, str] = {}  # lease id -> key id, held by this worker
        # The epoch marker as this worker knows it: a Redis that restarted empty (or was
        # flushed) no longer has it, and has none of the open sessions' leases until
        # every worker's next renewal. Until then (`_admit_after`), no new session.
        self._epoch_key = prefix + "epoch"
        self._epoch: str | None = None
        self._admit_after = 0.0
        self._renew_lock = trio.Lock()  # a release never races a renewal's snapshot
        self._fallback: dict[int, _native.TokenBuckets] = {}

    @property
    def renew_interval_s(self) -> float:
        return self.lease_ttl_ms / 3000

    @property
    def leases(self) -> dict[str, str]:
        return dict(self._leases)

    def _key(self, kind: str, key_id: str) -> str:
        return f"{self.prefix}{kind}:{key_id}"

    async def _run(self, call: Callable[[], Awaitable[Any]]) -> Any:
        try:
            result = await call()
        except RedisUnavailable as exc:
            self._failed_at = time.monotonic()
            if self.healthy:
                self.healthy = False
                log.error("limits backend unreachable (%s): refusing new sessions with "
                          "1013 until it is back; open sessions go on", exc)
            raise
        if not self.healthy:
            self.healthy = True
            log.warning("limits backend %s reachable again: accepting new sessions",
                        self.redis.address)
        return result

    async def check(self) -> None:
        """PING; raises RedisUnavailable (and logs) if Redis cannot be reached. The
        first that succeeds learns the epoch marker (a worker checks when it starts)."""
        await self._run(lambda: self.redis.execute("PING"))
        if self._epoch is None:
            self._epoch = await self._join_epoch()

    @property
    def restore_s(self) -> float:
        """How long new sessions wait after Redis is found to have lost its data: one
        renewal interval and one retry, by which every live worker has put its open
        sessions' leases back."""
        return self.renew_interval_s + self.retry_s

    async def _join_epoch(self) -> str:
        epoch = await self._run(lambda: self.redis.evalsha(
            EPOCH, [self._epoch_key], [uuid.uuid4().hex]))
        return bytes(epoch).decode()

    async def acquire_connection(self, key_id: str, tier: TierLimits, lease_id: str) -> bool:
        """Take one of the key's `max_connections` slots as `lease_id` (unique per
        session). Raises RedisUnavailable: the caller refuses with 1013; also while
        the workers restore their leases into a Redis that lost them."""
        if self._epoch is None:
            self._epoch = await self._join_epoch()
        if time.monotonic() < self._admit_after:
            raise RedisUnavailable("Redis lost its data; the workers are restoring their "
                                   "leases")
        ok = await self._run(lambda: self.redis.evalsha(
            ACQUIRE, [self._key("conn", key_id), self._epoch_key],
            [tier.max_connections, lease_id, self.lease_ttl_ms, self._epoch]))
        if ok == -1:
            # Restarted empty (or flushed): the open sessions of every worker are
            # missing from it until their renewals. Ours go back now; the others'
            # within one renewal interval, which new sessions wait out.
            self._epoch = await self._join_epoch()
            self._admit_after = time.monotonic() + self.restore_s
            log.warning("limits backend %s lost its data: new sessions wait %.1f s while the "
                        "workers restore their leases", self.redis.address, self.restore_s)
            try:
                await self.renew()
            except RedisUnavailable:
                pass
            raise RedisUnavailable("Redis lost its data; the workers are restoring their "
                                   "leases")
        if ok == 1:
            self._leases[lease_id] = key_id
        return bool(ok == 1)

    def forget_lease(self, lease_id: str) -> None:
        """Stop renewing a lease (it expires unless released)."""
        self._leases.pop(lease_id, None)

    async def release_connection(self, key_id: str, lease_id: str) -> None:
        """Give the slot back. Never raises RedisUnavailable: if Redis is gone, or this
        is cancelled, the lease simply expires, since it is no longer renewed."""
        self._leases.pop(lease_id, None)  # first: even if cancelled below
        async with self._renew_lock:  # after a renewal in flight, which may re-add it
            try:
                await self._run(lambda: self.redis.execute(
                    "ZREM", self._key("conn", key_id), lease_id))
            except RedisUnavailable:
                pass

    async def connections(self, key_id: str) -> int:
        """Live leases of the key across all workers."""
        return int(await self._run(lambda: self.redis.evalsha(
            COUNT, [self._key("conn", key_id)])))

    async def renew(self, lease_ids: Iterable[str] | None = None) -> set[str]:
        """Push the expiry of this worker's leases (all of them by default) one TTL
        ahead, in one script call. Returns the key ids among them that are revoked."""
        async with self._renew_lock:
            wanted = self._leases if lease_ids is None else {
                lease: self._leases[lease] for lease in lease_ids if lease in self._leases}
            if not wanted:
                await self.check()
                return set()
            keys = [self._revoked]
            args: list[object] = [self.lease_ttl_ms]
            for lease, key_id in wanted.items():
                keys.append(self._key("conn", key_id))
                args += [lease, key_id]
            revoked = await self._run(lambda: self.redis.evalsha(RENEW, keys, args))
        return {item.decode() for item in revoked}

    async def take_message(self, key_id: str, tier: TierLimits,
                           now_ms: int | None = None) -> float:
        """Take one message token; seconds to wait before the next try (0 = allowed).
        The clock is Redis TIME unless `now_ms` is given (tests, or a deployment that
        wants its own clock; do not mix the two for one key). While Redis is down the
        process's own bucket answers, so open sessions keep a limit and go on."""
        per_minute = tier.messages_per_minute
        if self.healthy or time.monotonic() - self._failed_at >= self.retry_s:
            if not self.healthy:  # one probe per retry_s; the others use the fallback
                self._failed_at = time.monotonic()
            try:
                wait_ms = await self._run(lambda: self.redis.evalsha(
                    TAKE, [self._key("bucket", key_id)],
                    [per_minute, per_minute / 60, "" if now_ms is None else int(now_ms)]))
                return int(wait_ms) / 1000
            except RedisUnavailable:
                pass
        buckets = self._fallback.get(per_minute)
        if buckets is None:
            buckets = self._fallback[per_minute] = _native.TokenBuckets(
                float(per_minute), per_minute / 60)
        return buckets.try_acquire(key_id, time.monotonic())

    async def revoke(self, key_id: str, revoked_at: float | None = None) -> None:
        """Mark the key revoked for every worker (the store's revoked_at, shared)."""
        await self._run(lambda: self.redis.execute(
            "HSET", self._revoked, key_id,
            repr(time.time() if revoked_at is None else revoked_at)))

    async def revoked(self, key_id: str) -> bool:
        """Whether any worker revoked this key; call before accepting a session."""
        found = await self._run(lambda: self.redis.execute(
            "HEXISTS", self._revoked, key_id))
        return bool(found == 1)


class LeaseKeeper:
    """The worker's renewal task: keeps its leases alive while it lives, probes Redis
    so `healthy` recovers on its own, and hands revoked key ids to `on_revoked` (the
    gateway ends those sessions)."""

    def __init__(self, limits: RedisLimits, *, interval_s: float | None = None,
                 on_revoked: Callable[[set[str]], None] | None = None) -> None:
        self.limits = limits
        self.interval_s = limits.renew_interval_s if interval_s is None else interval_s
        self.on_revoked = on_revoked

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            # While Redis is down, probe more often so new sessions resume promptly.
            interval = self.interval_s if self.limits.healthy else min(
                self.interval_s, self.limits.retry_s)
            await trio.sleep(interval)
            try:
                revoked = await self.limits.renew()
            except RedisUnavailable:
                continue
            if revoked and self.on_revoked is not None:
                self.on_revoked(revoked)


class SharedLimits:
    """`RedisLimits` behind the gateway's limits interface (the one `LocalLimits` has):
    a lease id per session, `healthy` for the handshake's 1013."""

    def __init__(self, limits: RedisLimits, worker_id: str) -> None:
        self.limits = limits
        self.worker_id = worker_id
        # Slots given back synchronously (`release_soon`), returned to Redis in order by
        # `run_releases`; one that is never sent (Redis down, shutdown) expires by itself.
        self._releases_in, self._releases = trio.open_memory_channel[tuple[str, str]](10_000)
        # Set by the gateway: ends the open sessions of these keys.
        self.on_revoked: Callable[[set[str]], None] | None = None

    async def run_releases(self, *,
                           task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for key_id, lease in self._releases:
            await self.limits.release_connection(key_id, lease)

    def revoked_seen(self, key_ids: set[str]) -> None:
        """LeaseKeeper's ``on_revoked``: keys of open sessions that some process revoked."""
        if self.on_revoked is not None:
            self.on_revoked(key_ids)

    @property
    def healthy(self) -> bool:
        return self.limits.healthy

    async def open_connection(self, key_id: str, tier: TierLimits) -> str | None:
        lease = f"{self.worker_id}:{uuid.uuid4().hex}"
        return lease if await self.limits.acquire_connection(key_id, tier, lease) else None

    async def close_connection(self, key_id: str, lease: str) -> None:
        await self.limits.release_connection(key_id, lease)

    def release_soon(self, key_id: str, lease: str) -> None:
        """Give the slot back now: no longer renewed from this instant, removed from Redis
        by the release task right after (in order, before any later acquire)."""
        self.limits.forget_lease(lease)
        try:
            self._releases_in.send_nowait((key_id, lease))
        except trio.WouldBlock:
            pass  # it expires within one lease TTL

    async def take_message(self, key_id: str, tier: TierLimits, now: float) -> float:
        return await self.limits.take_message(key_id, tier)

    async def is_revoked(self, key_id: str) -> bool:
        return await self.limits.revoked(key_id)

    async def revoke(self, key_id: str, revoked_at: float) -> None:
        """Publish a revocation to every worker and host (raises RedisUnavailable)."""
        await self.limits.revoke(key_id, revoked_at)

    def connections(self, key_id: str) -> int:
        return sum(1 for k in self.limits.leases.values() if k == key_id)
