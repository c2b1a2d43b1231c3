"""The SQLite database in the data directory: API keys (stored hashed) and the usage
ledger. A session's row is written when it starts, its running totals are saved every
few seconds by the worker that owns it (``worker``, ``saved_at``), and it is completed
when it ends. A row whose saves stopped (its worker died) is closed with reason
``worker_lost`` by a live worker; a restarted single-process gateway closes what is left
open with reason ``crashed``. Either way the row keeps its last saved totals and ends at
its last save.

Every call takes a connection from a small pool, so the gateway can make calls from
several threads at once (reads never wait for a writer: the journal is WAL).

This is one of two backends of one interface (``StoreBackend``); the other,
``pg_store.PostgresStore``, keeps keys and the ledger in PostgreSQL and uses this file's
usage table as its host's outbox: every write bumps the row's ``version``, and a row whose
``version`` is above its ``shipped_version`` is still to be shipped."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from slng_fast.config import TIER_NAMES

KEY_PREFIX = "slng_"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    tier TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS usage (
    session_id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    context_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    characters INTEGER NOT NULL DEFAULT 0,
    audio_ms REAL NOT NULL DEFAULT 0,
    messages INTEGER NOT NULL DEFAULT 0,
    started_at REAL NOT NULL,
    ended_at REAL,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS usage_open ON usage (ended_at) WHERE ended_at IS NULL;
-- With the PostgreSQL backend: this host's copy of the shared keys, so a worker that
-- starts while the database is away still knows the keys it knew.
CREATE TABLE IF NOT EXISTS shared_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    tier TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL,
    hash TEXT NOT NULL,
    version INTEGER NOT NULL
);
"""

# Columns added since the first release: (table, column, declaration). A data directory
# made by an older version gets them when it is opened.
_ADDED_COLUMNS = (
    ("usage", "worker", "TEXT NOT NULL DEFAULT ''"),  # the gateway process that owns the row
    ("usage", "saved_at", "REAL"),  # when its totals were last saved
    ("usage", "kind", "TEXT NOT NULL DEFAULT ''"),  # tts or stt
    ("usage", "upstream", "TEXT NOT NULL DEFAULT ''"),  # the provider (dialect) behind it
    ("usage", "version", "INTEGER NOT NULL DEFAULT 1"),  # bumped by every write
    ("usage", "shipped_version", "INTEGER NOT NULL DEFAULT 0"),  # the last one shipped
    # JSON: which providers served the session and how much each (failover), e.g.
    # {"orpheus": {"characters": 120, "audio_ms": 2300.0}, "kokoro": {...}}
    ("usage", "providers", "TEXT NOT NULL DEFAULT ''"),
)
# Made once the columns above exist.
_INDEXES = """
CREATE INDEX IF NOT EXISTS usage_unshipped ON usage (version) WHERE version > shipped_version;
CREATE INDEX IF NOT EXISTS usage_key_started ON usage (key_id, started_at);
"""

DEFAULT_FILE = "slng-fast.db"


class StoreUnavailable(Exception):
    """The key store or ledger cannot be reached or failed (PostgreSQL down, ...)."""


# What a store call may raise when the database fails: the gateway answers 1011 (or
# retries later) for any of these, whichever backend is in use.
STORE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, StoreUnavailable)


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    tier: str
    created_at: float
    revoked_at: float | None


@dataclass(frozen=True)
class UsageTotals:
    """A session's running totals, as saved while it is open."""

    session_id: str
    context_id: str
    characters: int
    audio_ms: float
    messages: int
    providers: str = ""  # JSON, see _ADDED_COLUMNS

class StoreBackend(Protocol):
    """What the gateway and the CLI use of a store; SQLite (``Store``) and PostgreSQL
    (``PostgresStore``) implement it. Calls block: the gateway makes them in threads."""

    def close(self) -> None: ...
    def migrate(self) -> list[int]: ...
    def create_key(self, tier: str, name: str = "") -> tuple[ApiKey, str]: ...
    def list_keys(self) -> list[ApiKey]: ...
    def revoke_key(self, key_id: str) -> float | None: ...
    def revoked_at(self, key_id: str) -> float | None: ...
    def revoked_keys(self, among: Iterable[str], since: float) -> dict[str, float]: ...
    def authenticate(self, secret: str) -> ApiKey | None: ...
    def has_keys(self) -> bool: ...
    def open_session(self, session_id: str, key_id: str, context_id: str, provider: str,
                     started_at: float, worker: str = "", *, kind: str = "",
                     upstream: str = "") -> None: ...
    def save_usage(self, totals: Iterable[UsageTotals], saved_at: float) -> None: ...
    def close_session(self, session_id: str, *, context_id: str, characters: int,
                      audio_ms: float, messages: int, ended_at: float, reason: str,
                      providers: str = "") -> None: ...
    def close_lost(self, saved_before: float) -> int: ...
    def close_crashed(self) -> int: ...
    def ship_usage(self, lease_ttl_s: float) -> int: ...
    def usage_rows(self) -> list[dict[str, object]]: ...
    def usage_report(self, key_id: str | None, since: float) -> list[dict[str, Any]]: ...


def _served(value: Any) -> list[str]:
    """The providers that served a session, in order, from the row's ``providers`` JSON
    (failover: ``{"orpheus": {...}, "kokoro": {...}}``); [] when it has none."""
    if not value:
        return []
    try:
        parsed = json.loads(value)
    except ValueError:
        return []
    return [str(name) for name in parsed] if isinstance(parsed, dict) else []


def report_row(row: dict[str, Any], host: str = "") -> dict[str, Any]:
    """A ledger row as reported and as shipped: audio split into seconds in (STT) and
    out (TTS), the providers used as a list."""
    audio_s = float(row["audio_ms"] or 0) / 1000.0
    stt = row.get("kind") == "stt"
    upstream = row.get("upstream") or ""
    served = _served(row.get("providers"))
    return {
        "session_id": row["session_id"], "host": row.get("host", host),
        "worker": row.get("worker", ""), "key_id": row["key_id"],
        "context_id": row["context_id"], "kind": row.get("kind", ""),
        "endpoint": row["provider"], "providers": served or ([upstream] if upstream else []),
        "characters": int(row["characters"] or 0), "messages": int(row["messages"] or 0),
        "audio_in_s": audio_s if stt else 0.0, "audio_out_s": 0.0 if stt else audio_s,
        "started_at": row["started_at"], "saved_at": row.get("saved_at"),
        "ended_at": row["ended_at"], "reason": row["reason"],
        "version": int(row.get("version", 1)),
    }


class _Closable(Protocol):
    def close(self) -> None: ...


_C = TypeVar("_C", bound=_Closable)


class IdleConnections(Generic[_C]):
    """The open connections of a pool that wait for their next call, shared by both
    backends: once the pool is closed, a connection handed back is closed, not kept."""

    def __init__(self, most: int | None = None) -> None:
        self._most = most
        self._idle: list[_C] = []
        self._lock = threading.Lock()
        self._closed = False

    def take(self) -> _C | None:
        with self._lock:
            return self._idle.pop() if self._idle else None

    def give_back(self, conn: _C, *, reusable: bool = True) -> None:
        with self._lock:
            if self._closed or not reusable or (
                    self._most is not None and len(self._idle) >= self._most):
                conn.close()
            else:
                self._idle.append(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def new_key(tier: str) -> tuple[str, str]:
    """A new key of ``tier`` (ValueError if there is no such tier): (its id, its secret)."""
    if tier not in TIER_NAMES:
        raise ValueError(f"unknown tier {tier!r}; tiers are {', '.join(TIER_NAMES)}")
    key_id = secrets.token_hex(4)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(24)}"


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Store:
    def __init__(self, data_dir: Path, *, timeout: float = 5.0, path: Path | None = None) -> None:
        """``timeout``: how long a write waits for another connection's write lock
        before it fails with ``sqlite3.OperationalError``. ``path``: the database file
        (default ``slng-fast.db`` in ``data_dir``)."""
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = path if path is not None else data_dir / DEFAULT_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self._idle: IdleConnections[sqlite3.Connection] = IdleConnections()
        with self._connection() as db:
            db.execute("PRAGMA journal_mode=WAL")  # a property of the file: set once
            db.executescript(_SCHEMA)
            _add_missing_columns(db)
            db.executescript(_INDEXES)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                             timeout=self.timeout)
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A connection for one call, from the pool (or a new one); one thread at a time."""
        db = self._idle.take()
        if db is None:
            db = self._connect()
        try:
            yield db
        finally:
            if db.in_transaction:
                db.rollback()
            self._idle.give_back(db)

    def close(self) -> None:
        self._idle.close()

    # -- keys -----------------------------------------------------------------------
    def create_key(self, tier: str, name: str = "") -> tuple[ApiKey, str]:
        key_id, secret = new_key(tier)
        now = time.time()
        with self._connection() as db:
            db.execute("INSERT INTO keys (id, name, tier, hash, created_at) VALUES (?,?,?,?,?)",
                       (key_id, name, tier, hash_key(secret), now))
        return ApiKey(key_id, name, tier, now, None), secret

    def list_keys(self) -> list[ApiKey]:
        with self._connection() as db:
            rows = db.execute(
                "SELECT id, name, tier, created_at, revoked_at FROM keys ORDER BY created_at")
            return [ApiKey(*row) for row in rows]

    def revoke_key(self, key_id: str) -> float | None:
        """Revoke a live key; its ``revoked_at``, or None if there is no live key ``key_id``."""
        now = time.time()
        with self._connection() as db:
            cur = db.execute("UPDATE keys SET revoked_at=? WHERE id=? AND revoked_at IS NULL",
                             (now, key_id))
        return now if cur.rowcount == 1 else None

    def revoked_at(self, key_id: str) -> float | None:
        """When the key was revoked (None: unknown or live)."""
        with self._connection() as db:
            row = db.execute("SELECT revoked_at FROM keys WHERE id=?", (key_id,)).fetchone()
        return row[0] if row else None

    def revoked_keys(self, among: Iterable[str], since: float) -> dict[str, float]:
        """Revoked keys that are in ``among`` or were revoked at ``since`` or later:
        key id -> revoked_at. One query, whatever the number of keys."""
        with self._connection() as db:
            rows = db.execute(
                "SELECT id, revoked_at FROM keys WHERE revoked_at IS NOT NULL AND "
                "(revoked_at >= ? OR id IN (SELECT value FROM json_each(?)))",
                (since, json.dumps(sorted(set(among))))).fetchall()
        return {key_id: at for key_id, at in rows}

    def authenticate(self, secret: str) -> ApiKey | None:
        """The live key for this secret, or None (unknown or revoked)."""
        with self._connection() as db:
            row = db.execute(
                "SELECT id, name, tier, created_at, revoked_at FROM keys "
                "WHERE hash=? AND revoked_at IS NULL", (hash_key(secret),)).fetchone()
        return ApiKey(*row) if row else None

    def has_keys(self) -> bool:
        with self._connection() as db:
            return db.execute("SELECT 1 FROM keys LIMIT 1").fetchone() is not None

    # -- usage ledger -------------------------------------------------------------------
    def open_session(self, session_id: str, key_id: str, context_id: str, provider: str,
                     started_at: float, worker: str = "", *, kind: str = "",
                     upstream: str = "") -> None:
        with self._connection() as db:
            db.execute(
                "INSERT INTO usage (session_id, key_id, context_id, provider, started_at, "
                "worker, kind, upstream) VALUES (?,?,?,?,?,?,?,?)",
                (session_id, key_id, context_id, provider, started_at, worker, kind, upstream))

    def save_usage(self, totals: Iterable[UsageTotals], saved_at: float) -> None:
        """Save open sessions' running totals in one transaction (rows already closed
        are left as they are: their final totals are newer)."""
        rows = [(t.context_id, t.characters, t.audio_ms, t.messages, t.providers, saved_at,
                 t.session_id) for t in totals]
        if not rows:
            return
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "UPDATE usage SET context_id=?, characters=?, audio_ms=?, messages=?, "
                "providers=?, saved_at=?, version=version+1 "
                "WHERE session_id=? AND ended_at IS NULL", rows)
            db.execute("COMMIT")

    def close_session(self, session_id: str, *, context_id: str, characters: int,
                      audio_ms: float, messages: int, ended_at: float, reason: str,
                      providers: str = "") -> None:
        """The final totals. They win over a ``worker_lost`` close (a worker that was
        only stalled, not dead, still knows best)."""
        with self._connection() as db:
            db.execute(
                "UPDATE usage SET context_id=?, characters=?, audio_ms=?, messages=?, "
                "ended_at=?, saved_at=?, reason=?, providers=?, version=version+1 "
                "WHERE session_id=?",
                (context_id, characters, audio_ms, messages, ended_at, ended_at, reason,
                 providers, session_id))

    def close_lost(self, saved_before: float) -> int:
        """Close the open rows last saved (or, never saved, started) before
        ``saved_before``: their worker is gone. They end at that last save, with its
        totals, reason ``worker_lost``. Returns how many."""
        with self._connection() as db:
            cur = db.execute(
                "UPDATE usage SET ended_at=COALESCE(saved_at, started_at), reason='worker_lost', "
                "version=version+1 "
                "WHERE ended_at IS NULL AND COALESCE(saved_at, started_at) < ?", (saved_before,))
        return cur.rowcount

    def close_crashed(self) -> int:
        """Close every row left open (a single-process gateway restarting: no other
        process can own them); each ends at its last save. Returns how many."""
        with self._connection() as db:
            cur = db.execute(
                "UPDATE usage SET ended_at=COALESCE(saved_at, started_at), reason='crashed', "
                "version=version+1 "
                "WHERE ended_at IS NULL")
        return cur.rowcount

    def usage_rows(self) -> list[dict[str, object]]:
        with self._connection() as db:
            cur = db.execute("SELECT * FROM usage ORDER BY started_at")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def migrate(self) -> list[int]:
        """Nothing left to do: opening the file brought it up to date."""
        return []

    def ship_usage(self, lease_ttl_s: float) -> int:
        """Nothing to ship: this file is the ledger."""
        return 0

    def usage_report(self, key_id: str | None, since: float) -> list[dict[str, Any]]:
        """The sessions (of ``key_id``, or every key) started at ``since`` or later."""
        with self._connection() as db:
            cur = db.execute(
                "SELECT * FROM usage WHERE started_at >= ? AND (? IS NULL OR key_id = ?) "
                "ORDER BY started_at", (since, key_id, key_id))
            names = [d[0] for d in cur.description]
            return [report_row(dict(zip(names, row))) for row in cur.fetchall()]

    # -- the outbox (PostgreSQL backend) --------------------------------------------------
    def unshipped(self, limit: int) -> list[dict[str, Any]]:
        """Rows written since they were last shipped, oldest change first."""
        with self._connection() as db:
            cur = db.execute("SELECT * FROM usage WHERE version > shipped_version "
                             "ORDER BY version LIMIT ?", (limit,))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def prune_shipped(self, ended_before: float) -> int:
        """Forget rows that ended before ``ended_before`` and were shipped as they are."""
        with self._connection() as db:
            cur = db.execute("DELETE FROM usage WHERE ended_at < ? "
                             "AND version = shipped_version", (ended_before,))
        return cur.rowcount

    def shared_keys(self) -> list[tuple[Any, ...]]:
        """The host's copy of the shared keys: (id, name, tier, created_at, revoked_at,
        hash, version) rows."""
        with self._connection() as db:
            return db.execute("SELECT id, name, tier, created_at, revoked_at, hash, version "
                              "FROM shared_keys").fetchall()

    def keep_shared_keys(self, rows: Iterable[tuple[Any, ...]]) -> None:
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT OR REPLACE INTO shared_keys (id, name, tier, created_at, "
                           "revoked_at, hash, version) VALUES (?,?,?,?,?,?,?)", rows)
            db.execute("COMMIT")

    def mark_shipped(self, shipped: Iterable[tuple[str, int]]) -> None:
        """(session id, version) pairs now in the shared database; a row written again
        meanwhile stays to be shipped."""
        rows = [(version, session_id, version) for session_id, version in shipped]
        if not rows:
            return
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("UPDATE usage SET shipped_version=? WHERE session_id=? "
                           "AND shipped_version < ?", rows)
            db.execute("COMMIT")


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Bring an older database up to date, under the write lock (several worker
    processes may open it at once)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for table, column, declaration in _ADDED_COLUMNS:
            have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        db.execute("COMMIT")
    except BaseException:
        db.rollback()
        raise


DEV_KEY_FILE = "dev-key"


def ensure_dev_key(store: StoreBackend, data_dir: Path) -> str | None:
    """On a first start with no keys, make a `pro` development key; return it once.
    Its file is created private (0600), never readable by others even for a moment;
    a file of that name left from an older key store is replaced, not reused."""
    if store.has_keys():
        return None
    _, secret = store.create_key("pro", "development")
    path = data_dir / DEV_KEY_FILE
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(secret + "\n")
    return secret
