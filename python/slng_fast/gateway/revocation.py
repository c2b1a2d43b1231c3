"""Revocation reaching open sessions, on every worker of every host.

``slng-fast keys revoke`` writes the key store (SQLite, shared by the workers of a host;
or PostgreSQL, shared by every host, whose store syncs its key cache on each check).
Every worker asks the store, every ``revocation_check_s``, which keys are revoked
among those of its open sessions and among those revoked lately; it ends its sessions of
those keys and publishes the keys to the limits backend (Redis's ``revoked`` hash), where
the workers of other hosts find them at their next lease renewal (``LeaseKeeper``'s
``on_revoked``) and end theirs. The query runs in a worker thread, like every store call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import trio

from slng_fast.gateway.ledger import Ledger
from slng_fast.store import STORE_ERRORS

log = logging.getLogger("slng_fast.gateway")

# A revocation is published to the limits backend when its revoked_at is at most this old
# when a worker first sees it (a window, so one committed just after a check is not missed).
RECENT_S = 60.0


class RevocationWatch:
    def __init__(self, ledger: Ledger, limits: Any, end_sessions: Callable[[set[str]], None],
                 interval_s: float) -> None:
        self.ledger = ledger
        self.limits = limits
        self.end_sessions = end_sessions
        self.interval_s = interval_s
        self._published: set[str] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self.interval_s)
            try:
                await self.check(time.time() - RECENT_S)
            except STORE_ERRORS as exc:
                log.error("could not check for revoked keys (%s); retrying", exc)

    async def check(self, since: float) -> None:
        """End the sessions of revoked keys, and publish the keys revoked since ``since``
        (and those of open sessions) to the limits backend, each once."""
        open_keys = {opened.key_id for opened in self.ledger.sessions.values()}
        revoked = await self.ledger.call(self.ledger.store.revoked_keys, open_keys, since)
        ending = set(revoked) & {opened.key_id for opened in self.ledger.sessions.values()}
        if ending:
            log.warning("ending the open sessions of %d revoked key(s)", len(ending))
            self.end_sessions(ending)
        for key_id, revoked_at in revoked.items():
            if key_id in self._published:
                continue
            try:
                await self.limits.revoke(key_id, revoked_at)
            except OSError:  # the backend is unreachable: the next check tries again
                continue
            self._published.add(key_id)
