"""The SQLite database in the data directory: API keys (stored hashed) and the usage
ledger. A session's row is written when it starts, its running totals are saved every
few seconds by the worker that owns it (``worker``, ``saved_at``), and it is completed
when it ends. A row whose saves stopped (its worker died) is closed with reason
``worker_lost`` by a live worker; a restarted single-process gateway closes what is left
open with reason ``crashed``. Either way the row keeps its last saved totals and ends at
its last save.

Every call takes a connection from a small pool, so the gateway can make calls from
several threads at once (reads never wait for a writer: the journal is WAL)."""

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
"""

# Columns added since the first release: (table, column, declaration). A data directory
# made by an older version gets them when it is opened.
_ADDED_COLUMNS = (
    ("usage", "worker", "TEXT NOT NULL DEFAULT ''"),  # the gateway process that owns the row
    ("usage", "saved_at", "REAL"),  # when its totals were last saved
    # JSON: which providers served the session and how much each (failover), e.g.
    # {"orpheus": {"characters": 120, "audio_ms": 2300.0}, "kokoro": {...}}
    ("usage", "providers", "TEXT NOT NULL DEFAULT ''"),
)


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

def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Store:
    def __init__(self, data_dir: Path, *, timeout: float = 5.0) -> None:
        """``timeout``: how long a write waits for another connection's write lock
        before it fails with ``sqlite3.OperationalError``."""
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "slng-fast.db"
        self.timeout = timeout
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        with self._connection() as db:
            db.execute("PRAGMA journal_mode=WAL")  # a property of the file: set once
            db.executescript(_SCHEMA)
            _add_missing_columns(db)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                             timeout=self.timeout)
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A connection for one call, from the pool (or a new one); one thread at a time."""
        with self._lock:
            db = self._idle.pop() if self._idle else None
        if db is None:
            db = self._connect()
        try:
            yield db
        finally:
            if db.in_transaction:
                db.rollback()
            with self._lock:
                if self._closed:
                    db.close()
                else:
                    self._idle.append(db)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for db in idle:
            db.close()

    # -- keys -----------------------------------------------------------------------
    def create_key(self, tier: str, name: str = "") -> tuple[ApiKey, str]:
        if tier not in TIER_NAMES:
            raise ValueError(f"unknown tier {tier!r}; tiers are {', '.join(TIER_NAMES)}")
        key_id = secrets.token_hex(4)
        secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(24)}"
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
                     started_at: float, worker: str = "") -> None:
        with self._connection() as db:
            db.execute(
                "INSERT INTO usage (session_id, key_id, context_id, provider, started_at, "
                "worker) VALUES (?,?,?,?,?,?)",
                (session_id, key_id, context_id, provider, started_at, worker))

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
                "providers=?, saved_at=? WHERE session_id=? AND ended_at IS NULL", rows)
            db.execute("COMMIT")

    def close_session(self, session_id: str, *, context_id: str, characters: int,
                      audio_ms: float, messages: int, ended_at: float, reason: str,
                      providers: str = "") -> None:
        """The final totals. They win over a ``worker_lost`` close (a worker that was
        only stalled, not dead, still knows best)."""
        with self._connection() as db:
            db.execute(
                "UPDATE usage SET context_id=?, characters=?, audio_ms=?, messages=?, "
                "ended_at=?, saved_at=?, reason=?, providers=? WHERE session_id=?",
                (context_id, characters, audio_ms, messages, ended_at, ended_at, reason,
                 providers, session_id))

    def close_lost(self, saved_before: float) -> int:
        """Close the open rows last saved (or, never saved, started) before
        ``saved_before``: their worker is gone. They end at that last save, with its
        totals, reason ``worker_lost``. Returns how many."""
        with self._connection() as db:
            cur = db.execute(
                "UPDATE usage SET ended_at=COALESCE(saved_at, started_at), reason='worker_lost' "
                "WHERE ended_at IS NULL AND COALESCE(saved_at, started_at) < ?", (saved_before,))
        return cur.rowcount

    def close_crashed(self) -> int:
        """Close every row left open (a single-process gateway restarting: no other
        process can own them); each ends at its last save. Returns how many."""
        with self._connection() as db:
            cur = db.execute(
                "UPDATE usage SET ended_at=COALESCE(saved_at, started_at), reason='crashed' "
                "WHERE ended_at IS NULL")
        return cur.rowcount

    def usage_rows(self) -> list[dict[str, object]]:
        with self._connection() as db:
            cur = db.execute("SELECT * FROM usage ORDER BY started_at")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]


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


def ensure_dev_key(store: Store, data_dir: Path) -> str | None:
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
