"""The database URL: SQLite by default or at a path, the commands against it, and the
config's ``[gateway] database``. PostgreSQL's own tests are in
tests/gateway/test_postgres_store.py."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from harness import CLI
from slng_fast.config import ConfigError, load_config
from slng_fast.database import open_store
from slng_fast.store import Store


def run(*args: str, home) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SLNG_FAST_HOME": str(home)}
    env.pop("SLNG_FAST_DATABASE_URL", None)
    return subprocess.run(CLI + list(args), env=env, capture_output=True, text=True,
                          timeout=60)


def test_no_url_is_the_data_directorys_file_and_a_sqlite_url_names_a_file(tmp_path):
    default = open_store(None, tmp_path / "data")
    assert isinstance(default, Store) and default.path == tmp_path / "data" / "slng-fast.db"
    default.close()
    elsewhere = open_store(f"sqlite://{tmp_path}/db/keys.db", tmp_path / "data")
    assert isinstance(elsewhere, Store) and elsewhere.path == tmp_path / "db" / "keys.db"
    elsewhere.close()
    with pytest.raises(ValueError, match="sqlite:// or postgresql://"):
        open_store("mysql://x", tmp_path)


def test_keys_and_usage_commands_against_a_sqlite_url(tmp_path):
    url = f"sqlite://{tmp_path}/keys.db"
    created = run("keys", "create", "--tier", "free", "--database", url, home=tmp_path / "h")
    assert created.returncode == 0, created.stderr
    key_id = created.stdout.split()[2]
    assert key_id in run("keys", "--database", url, "list", home=tmp_path / "h").stdout
    assert key_id not in run("keys", "list", home=tmp_path / "h").stdout  # another file
    store = Store(tmp_path, path=tmp_path / "keys.db")
    store.open_session("s1", key_id, "c1", "espeak", 1_800_000_000.0, "w1", kind="tts",
                       upstream="slng")
    store.close_session("s1", context_id="c1", characters=12, audio_ms=1500.0, messages=3,
                        ended_at=1_800_000_002.0, reason="client_closed")
    store.close()
    report = run("usage", "--key", key_id, "--since", "2027-01-15", "--format", "json",
                 "--database", url, home=tmp_path / "h")
    (row,) = json.loads(report.stdout)
    assert row["characters"] == 12 and row["audio_out_s"] == 1.5 and row["audio_in_s"] == 0
    assert row["providers"] == ["slng"] and row["endpoint"] == "espeak"
    assert row["ended_at"] == "2027-01-15T08:00:02.000Z"
    later = run("usage", "--key", key_id, "--since", "2027-01-16", "--database", url,
                home=tmp_path / "h")
    assert later.stdout.splitlines() == [
        "session_id,key_id,endpoint,providers,characters,messages,audio_in_s,audio_out_s,"
        "started_at,ended_at,reason"]
    assert "up to date" in run("db", "migrate", "--database", url, home=tmp_path / "h").stdout


def test_the_config_names_the_database(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text('[gateway]\ndatabase = "postgresql://slng@db.internal/slng"\n')
    assert load_config(path).database == "postgresql://slng@db.internal/slng"
    assert load_config(path, database="sqlite:///x.db").database == "sqlite:///x.db"
    path.write_text('[gateway]\ndatabase = "mysql://x"\n')
    with pytest.raises(ConfigError, match="database"):
        load_config(path)
