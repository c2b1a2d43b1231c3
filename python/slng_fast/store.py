"""The SQLite database in the data directory: API keys (stored hashed) and the usage
ledger. A session's row is written when it starts and completed when it ends, so a
crash leaves open rows that the next start closes with reason ``crashed``."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
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


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    tier: str
    created_at: float
    revoked_at: float | None


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Store:
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "slng-fast.db"
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                  timeout=5.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    # -- keys -----------------------------------------------------------------------
    def create_key(self, tier: str, name: str = "") -> tuple[ApiKey, str]:
        if tier not in TIER_NAMES:
            raise ValueError(f"unknown tier {tier!r}; tiers are {', '.join(TIER_NAMES)}")
        key_id = secrets.token_hex(4)
        secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(24)}"
        now = time.time()
        self.db.execute("INSERT INTO keys (id, name, tier, hash, created_at) VALUES (?,?,?,?,?)",
                        (key_id, name, tier, hash_key(secret), now))
        return ApiKey(key_id, name, tier, now, None), secret

    def list_keys(self) -> list[ApiKey]:
        rows = self.db.execute(
            "SELECT id, name, tier, created_at, revoked_at FROM keys ORDER BY created_at")
        return [ApiKey(*row) for row in rows]

    def revoke_key(self, key_id: str) -> bool:
        cur = self.db.execute("UPDATE keys SET revoked_at=? WHERE id=? AND revoked_at IS NULL",
                              (time.time(), key_id))
        return cur.rowcount == 1

    def authenticate(self, secret: str) -> ApiKey | None:
        """The live key for this secret, or None (unknown or revoked)."""
        row = self.db.execute(
            "SELECT id, name, tier, created_at, revoked_at FROM keys "
            "WHERE hash=? AND revoked_at IS NULL", (hash_key(secret),)).fetchone()
        return ApiKey(*row) if row else None

    def has_keys(self) -> bool:
        return self.db.execute("SELECT 1 FROM keys LIMIT 1").fetchone() is not None

    # -- usage ledger -------------------------------------------------------------------
    def open_session(self, session_id: str, key_id: str, context_id: str, provider: str,
                     started_at: float) -> None:
        self.db.execute(
            "INSERT INTO usage (session_id, key_id, context_id, provider, started_at) "
            "VALUES (?,?,?,?,?)", (session_id, key_id, context_id, provider, started_at))

    def close_session(self, session_id: str, *, context_id: str, characters: int,
                      audio_ms: float, messages: int, ended_at: float, reason: str) -> None:
        self.db.execute(
            "UPDATE usage SET context_id=?, characters=?, audio_ms=?, messages=?, ended_at=?, "
            "reason=? WHERE session_id=?",
            (context_id, characters, audio_ms, messages, ended_at, reason, session_id))

    def close_crashed(self, now: float | None = None) -> int:
        """Close the rows a crashed gateway left open; returns how many."""
        cur = self.db.execute("UPDATE usage SET ended_at=?, reason='crashed' WHERE ended_at IS NULL",
                              (now if now is not None else time.time(),))
        return cur.rowcount

    def usage_rows(self) -> list[dict[str, object]]:
        cur = self.db.execute("SELECT * FROM usage ORDER BY started_at")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]
