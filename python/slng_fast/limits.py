"""Per-key limits by tier. The in-process backend uses the native token bucket and
connection counter; a shared backend (Redis) arrives with the scale issue."""

from __future__ import annotations

from collections.abc import Callable

from slng_fast import _native
from slng_fast.config import TierLimits


class LocalLimits:
    """Limits that hold within one gateway process. The async methods are the interface
    the gateway uses for every backend (``gateway.shared_limits.SharedLimits`` is the
    Redis one); here they never wait."""

    healthy = True
    # Set by the gateway; a shared backend calls it with keys other processes revoked.
    on_revoked: Callable[[set[str]], None] | None = None

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, int], _native.TokenBuckets] = {}
        self._connections = _native.ConnectionCounter()

    async def open_connection(self, key_id: str, tier: TierLimits) -> str | None:
        """A lease on one of the key's connection slots, or None when all are taken."""
        return key_id if self.acquire_connection(key_id, tier) else None

    async def close_connection(self, key_id: str, lease: str) -> None:
        self.release_connection(key_id)

    def release_soon(self, key_id: str, lease: str) -> None:
        """Give the slot back now, synchronously (called as a client's close arrives)."""
        self.release_connection(key_id)

    async def take_message(self, key_id: str, tier: TierLimits, now: float) -> float:
        return self.message_limiter(key_id, tier)(now)

    async def is_revoked(self, key_id: str) -> bool:
        return False  # the key store says so; nothing shared to ask

    async def revoke(self, key_id: str, revoked_at: float) -> None:
        """Nothing to publish: the key store is all there is."""

    def acquire_connection(self, key_id: str, tier: TierLimits) -> bool:
        return self._connections.acquire(key_id, tier.max_connections)

    def release_connection(self, key_id: str) -> None:
        self._connections.release(key_id)

    def connections(self, key_id: str) -> int:
        return self._connections.count(key_id)

    def message_limiter(self, key_id: str, tier: TierLimits) -> Callable[[float], float]:
        """A function of `now` that takes one message token and returns the wait (0 = ok).
        Messages per minute is a bucket of that capacity refilled continuously."""
        per_minute = tier.messages_per_minute
        buckets = self._buckets.get((tier.name, per_minute))
        if buckets is None:
            buckets = _native.TokenBuckets(float(per_minute), per_minute / 60.0)
            self._buckets[(tier.name, per_minute)] = buckets

        def take(now: float) -> float:
            return buckets.try_acquire(key_id, now)

        return take
