"""The PostgreSQL backend of the store, for many hosts: keys, tiers, revocations and the
usage ledger shared by every gateway.

* **Keys** live in ``slng_keys``. Every write (create, revoke) takes the table's write
  lock and stamps the row with the next ``slng_key_version``, so versions become
  visible in the order they were given. Each gateway process keeps every key in memory
  and asks only for the rows past the highest version it has (``sync_keys``): the
  revocation watch does so every ``revocation_check_s``, and a secret the cache does not
  know waits for one that starts after it arrived. A known key is checked without the
  database, so an outage refuses no session the cache allows.
* **Usage** is written on the host first: the ledger's rows go to the data directory's
  SQLite file (``store.Store``), as with the SQLite backend, and ``ship_usage`` copies
  the rows written since their last shipping into ``slng_usage`` with an upsert keyed by
  the session id (a uuid made on the host) that keeps the higher ``version``. Shipping
  twice, or from two workers at once, changes nothing; an outage only delays it. One
  worker of a host ships at a time (a ``flock`` beside the file). The keys a host has
  seen are kept in the same file too (``shared_keys``), for a restart during an outage.
* **Schema** changes are numbered migrations (``MIGRATIONS``), applied in one
  transaction under an advisory lock, so workers and hosts starting at once apply each
  exactly once (``migrate``).

psycopg 3, synchronous: the gateway makes every store call in a thread of a small
bounded set (``ledger.STORE_THREADS``), so no query holds up the trio loop, and no
thread is made per query. Connections come from a small pool of our own (``_Pool``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from slng_fast.store import (
    ApiKey,
    IdleConnections,
    Store,
    StoreUnavailable,
    UsageTotals,
    hash_key,
    new_key,
    report_row,
)

log = logging.getLogger("slng_fast.store")

# Rows shipped and ended stay in the host's outbox this long (a local record), then go.
OUTBOX_KEEP_S = 7 * 86400.0
# Rows shipped per statement.
SHIP_BATCH = 500
# The PostgreSQL advisory lock that serialises migrations ("slngfast" in ASCII).
MIGRATION_LOCK = 0x736C6E6766617374

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, """
CREATE SEQUENCE slng_key_version;
CREATE TABLE slng_keys (
    id text PRIMARY KEY,
    name text NOT NULL DEFAULT '',
    tier text NOT NULL,
    hash text NOT NULL UNIQUE,
    created_at double precision NOT NULL,
    revoked_at double precision,
    version bigint NOT NULL
);
CREATE INDEX slng_keys_version ON slng_keys (version);
CREATE TABLE slng_usage (
    session_id text PRIMARY KEY,
    host text NOT NULL,
    worker text NOT NULL DEFAULT '',
    key_id text NOT NULL,
    context_id text NOT NULL,
    kind text NOT NULL DEFAULT '',
    endpoint text NOT NULL,
    providers text[] NOT NULL DEFAULT '{}',
    characters bigint NOT NULL DEFAULT 0,
    messages bigint NOT NULL DEFAULT 0,
    audio_in_s double precision NOT NULL DEFAULT 0,
    audio_out_s double precision NOT NULL DEFAULT 0,
    started_at double precision NOT NULL,
    saved_at double precision,
    ended_at double precision,
    reason text,
    version bigint NOT NULL
);
CREATE INDEX slng_usage_key_started ON slng_usage (key_id, started_at);
CREATE INDEX slng_usage_open ON slng_usage (saved_at) WHERE ended_at IS NULL;
"""),
)

_USAGE_COLUMNS = ("session_id", "host", "worker", "key_id", "context_id", "kind", "endpoint",
                  "providers", "characters", "messages", "audio_in_s", "audio_out_s",
                  "started_at", "saved_at", "ended_at", "reason", "version")
_UPSERT = (
    f"INSERT INTO slng_usage ({', '.join(_USAGE_COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * len(_USAGE_COLUMNS))}) "
    "ON CONFLICT (session_id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _USAGE_COLUMNS[1:])
    + " WHERE slng_usage.version < EXCLUDED.version")
_KEY_COLUMNS = "id, name, tier, created_at, revoked_at"


class _Pool:
    """A few open connections, reused; a connection that failed is dropped, and the
    next call connects afresh (one attempt, ``connect_timeout``): after an outage the
    first call that finds the server back succeeds, with no backoff state to wait out."""

    def __init__(self, url: str, size: int, connect_timeout: float) -> None:
        self.url = url
        self.size = size
        # Ours unless the URL says otherwise: a server that vanishes without a reset
        # (a partition) fails a call within seconds instead of holding its thread.
        self.params: dict[str, Any] = {
            "connect_timeout": max(1, round(connect_timeout)), "keepalives": 1,
            "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 2,
            "tcp_user_timeout": 10_000, "application_name": "slng-fast",
            **conninfo_to_dict(url), "autocommit": True}
        self._idle: IdleConnections[psycopg.Connection[Any]] = IdleConnections(size)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        conn = self._idle.take()
        try:
            if conn is None:
                conn = psycopg.connect(**self.params)
            yield conn
        except psycopg.Error as exc:
            if conn is not None:
                conn.close()
            raise StoreUnavailable(f"PostgreSQL: {exc}".strip()) from exc
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        else:
            self._idle.give_back(conn, reusable=not conn.closed)

    def close(self) -> None:
        self._idle.close()


@dataclass(frozen=True)
class _CachedKey:
    key: ApiKey
    hash: str


class PostgresStore:
    """``StoreBackend`` over PostgreSQL, with this host's SQLite file as the outbox."""

    def __init__(self, url: str, data_dir: Path, *, pool_size: int = 4,
                 connect_timeout: float = 2.0) -> None:
        self.url = url
        self.outbox = Store(data_dir)
        self._ship_lock = data_dir / "outbox.lock"
        self.host = socket.gethostname()
        self._pool = _Pool(url, pool_size, connect_timeout)
        self._cache_lock = threading.Lock()
        self._by_hash: dict[str, _CachedKey] = {}
        self._by_id: dict[str, _CachedKey] = {}
        self._version = 0
        self._sync_lock = threading.Lock()
        self._synced_from = -1e18  # when the last sync that succeeded started (monotonic)
        self._failed_from = -1e18  # when the last one that failed started
        self._remember(self.outbox.shared_keys())  # known even if the database is away

    def close(self) -> None:
        self._pool.close()
        self.outbox.close()

    def migrate(self) -> list[int]:
        """Apply the migrations this database lacks, in one transaction under an
        advisory lock; the numbers applied (none if another process did it first)."""
        applied: list[int] = []
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS slng_schema (version integer PRIMARY KEY, "
                         "applied_at double precision NOT NULL)")
            row = conn.execute("SELECT COALESCE(max(version), 0) FROM slng_schema").fetchone()
            have = int(row[0]) if row else 0
            for number, sql in MIGRATIONS:
                if number > have:
                    conn.execute(sql.encode())
                    conn.execute("INSERT INTO slng_schema VALUES (%s, %s)",
                                 (number, time.time()))
                    applied.append(number)
        return applied

    # -- keys -------------------------------------------------------------------------
    def create_key(self, tier: str, name: str = "") -> tuple[ApiKey, str]:
        key_id, secret = new_key(tier)
        now = time.time()
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("LOCK TABLE slng_keys IN EXCLUSIVE MODE")
            conn.execute("INSERT INTO slng_keys (id, name, tier, hash, created_at, version) "
                         "VALUES (%s, %s, %s, %s, %s, nextval('slng_key_version'))",
                         (key_id, name, tier, hash_key(secret), now))
        return ApiKey(key_id, name, tier, now, None), secret

    def list_keys(self) -> list[ApiKey]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM slng_keys ORDER BY created_at").fetchall()
        return [ApiKey(*row) for row in rows]

    def revoke_key(self, key_id: str) -> float | None:
        now = time.time()
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("LOCK TABLE slng_keys IN EXCLUSIVE MODE")
            cur = conn.execute("UPDATE slng_keys SET revoked_at = %s, "
                               "version = nextval('slng_key_version') "
                               "WHERE id = %s AND revoked_at IS NULL", (now, key_id))
        try:
            self.sync_keys()  # this process's cache knows at once
        except StoreUnavailable:
            pass  # the revocation watch's next sync will
        return now if cur.rowcount == 1 else None

    def revoked_at(self, key_id: str) -> float | None:
        with self._pool.connection() as conn:
            row = conn.execute("SELECT revoked_at FROM slng_keys WHERE id = %s",
                               (key_id,)).fetchone()
        return row[0] if row else None

    def has_keys(self) -> bool:
        with self._pool.connection() as conn:
            return conn.execute("SELECT 1 FROM slng_keys LIMIT 1").fetchone() is not None

    def sync_keys(self, *, unless_since: float | None = None) -> int:
        """Bring the key cache up to date: one query for the rows changed since the
        last sync. One sync at a time; with ``unless_since`` (a monotonic time), none if
        one that started after it has finished meanwhile. Returns how many changed."""
        with self._sync_lock:
            if unless_since is not None:
                if self._synced_from > unless_since:
                    return 0
                if self._failed_from > unless_since:  # waiting callers share a failure
                    raise StoreUnavailable("PostgreSQL: the key cache could not sync")
            started = time.monotonic()
            with self._cache_lock:
                after = self._version
            try:
                with self._pool.connection() as conn:
                    rows = conn.execute(
                        f"SELECT {_KEY_COLUMNS}, hash, version FROM slng_keys "
                        "WHERE version > %s ORDER BY version", (after,)).fetchall()
            except StoreUnavailable:
                self._failed_from = started
                raise
            if rows:
                self._remember(rows)
                try:
                    self.outbox.keep_shared_keys(rows)
                except sqlite3.Error as exc:  # only a restart during an outage needs it
                    log.warning("could not keep the key cache on this host: %s", exc)
            self._synced_from = started
        return len(rows)

    def _remember(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """(id, name, tier, created_at, revoked_at, hash, version) rows into the cache."""
        with self._cache_lock:
            for *fields, key_hash, version in rows:
                cached = _CachedKey(ApiKey(*fields), key_hash)
                self._by_hash[key_hash] = cached
                self._by_id[cached.key.id] = cached
                self._version = max(self._version, int(version))

    def authenticate(self, secret: str) -> ApiKey | None:
        """The live key for this secret, from the cache. An unknown secret waits for a
        sync that starts after it arrived (a key made on another host a moment ago is
        found); unknown secrets arriving together share one, so a flood of bad keys
        costs the database one query at a time per process, not one each."""
        arrived = time.monotonic()
        key_hash = hash_key(secret)
        with self._cache_lock:
            cached = self._by_hash.get(key_hash)
        if cached is None:
            self.sync_keys(unless_since=arrived)
            with self._cache_lock:
                cached = self._by_hash.get(key_hash)
        if cached is None or cached.key.revoked_at is not None:
            return None
        return cached.key

    def revoked_keys(self, among: Iterable[str], since: float) -> dict[str, float]:
        """Sync the cache, then as ``Store.revoked_keys``."""
        self.sync_keys()
        wanted = set(among)
        with self._cache_lock:
            return {c.key.id: c.key.revoked_at for c in self._by_id.values()
                    if c.key.revoked_at is not None
                    and (c.key.id in wanted or c.key.revoked_at >= since)}

    # -- usage: written to the host's outbox, shipped ----------------------------------
    def open_session(self, session_id: str, key_id: str, context_id: str, provider: str,
                     started_at: float, worker: str = "", *, kind: str = "",
                     upstream: str = "") -> None:
        self.outbox.open_session(session_id, key_id, context_id, provider, started_at, worker,
                                 kind=kind, upstream=upstream)

    def save_usage(self, totals: Iterable[UsageTotals], saved_at: float) -> None:
        self.outbox.save_usage(totals, saved_at)

    def close_session(self, session_id: str, *, context_id: str, characters: int,
                      audio_ms: float, messages: int, ended_at: float, reason: str,
                      providers: str = "") -> None:
        self.outbox.close_session(session_id, context_id=context_id, characters=characters,
                                  audio_ms=audio_ms, messages=messages, ended_at=ended_at,
                                  reason=reason, providers=providers)

    def close_lost(self, saved_before: float) -> int:
        return self.outbox.close_lost(saved_before)

    def close_crashed(self) -> int:
        return self.outbox.close_crashed()

    def usage_rows(self) -> list[dict[str, object]]:
        """This host's rows (the outbox), as ``Store.usage_rows``."""
        return self.outbox.usage_rows()

    def ship_usage(self, lease_ttl_s: float) -> int:
        """Ship the outbox's changed rows; then close the shared rows whose host stopped
        shipping them for two leases (a host gone with its disk). One worker of a host
        at a time (a file lock beside the outbox; the others skip their turn). Returns
        rows shipped."""
        fd = os.open(self._ship_lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:  # released when closed, or when the process dies
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # another worker of this host is shipping: the same rows
            return self._ship(lease_ttl_s)
        finally:
            os.close(fd)

    def _ship(self, lease_ttl_s: float) -> int:
        shipped = 0
        self.outbox.prune_shipped(time.time() - OUTBOX_KEEP_S)
        while True:
            rows = self.outbox.unshipped(SHIP_BATCH)
            if not rows:
                break
            values = [report_row(row, self.host) for row in rows]
            with self._pool.connection() as conn, conn.transaction():
                with conn.cursor() as cur:
                    cur.executemany(_UPSERT, [tuple(v[c] for c in _USAGE_COLUMNS)
                                              for v in values])
            self.outbox.mark_shipped((v["session_id"], v["version"]) for v in values)
            shipped += len(rows)
            if len(rows) < SHIP_BATCH:
                break
        with self._pool.connection() as conn:
            conn.execute("UPDATE slng_usage SET ended_at = COALESCE(saved_at, started_at), "
                         "reason = 'worker_lost' WHERE ended_at IS NULL "
                         "AND COALESCE(saved_at, started_at) < %s",
                         (time.time() - 2 * lease_ttl_s,))
        return shipped

    def usage_report(self, key_id: str | None, since: float) -> list[dict[str, Any]]:
        with self._pool.connection() as conn:
            cur = conn.execute(
                f"SELECT {', '.join(_USAGE_COLUMNS)} FROM slng_usage WHERE started_at >= %s "
                "AND (%s::text IS NULL OR key_id = %s) ORDER BY started_at",
                (since, key_id, key_id))
            return [dict(zip(_USAGE_COLUMNS, row)) for row in cur.fetchall()]
