"""Which store a database URL names: ``sqlite:///path`` (or none: the data directory's
file) or ``postgresql://...``. The only place that knows both backends."""

from __future__ import annotations

from pathlib import Path

from slng_fast.store import DEFAULT_FILE, Store, StoreBackend


def sqlite_path(database: str | None, data_dir: Path) -> Path:
    """The file of ``sqlite:///path`` (everything after ``sqlite://``); the data
    directory's ``slng-fast.db`` when no URL or no path is given."""
    if not database or database.rstrip("/") in ("sqlite:", "sqlite:/"):
        return data_dir / DEFAULT_FILE
    return Path(database[len("sqlite://"):]).expanduser()


def check_database_url(database: str | None) -> None:
    """Raise ValueError unless ``database`` is a URL this gateway can use."""
    if database and not database.startswith(("sqlite://", "postgresql://", "postgres://")):
        raise ValueError("the database URL starts with sqlite:// or postgresql://, not "
                         f"{database.split(':')[0]!r}")


def open_store(database: str | None, data_dir: Path) -> StoreBackend:
    """The store ``database`` names: SQLite (``sqlite:///path``, or None: the data
    directory's file) or PostgreSQL (``postgresql://...``, whose host outbox is the
    data directory's file). Opening a PostgreSQL store does not connect yet."""
    check_database_url(database)
    if database and not database.startswith("sqlite://"):
        from slng_fast.pg_store import PostgresStore  # psycopg only when it is used

        return PostgresStore(database, data_dir)
    return Store(data_dir, path=sqlite_path(database, data_dir))
