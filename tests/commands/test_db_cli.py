"""`fenliu db upgrade|status|purge` and `fenliu doctor`'s store check, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3

import pytest

from fenliu.commands.cli import main
from fenliu.store.db import Database
from fenliu.store.schema import MIGRATIONS


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/cli.db"
    return request.getfixturevalue("pg_store_url")


def _at_version(url: str, version: int) -> None:
    db = Database(url)
    db.migrate(MIGRATIONS[:version])
    db.execute("INSERT INTO calls(call_id, worker, started_at) VALUES ('kept', 'w0', 1.0)")
    db.close()


def test_status_then_upgrade_then_status(url, monkeypatch, capsys):
    monkeypatch.setenv("FENLIU_STORE__URL", url)
    _at_version(url, 2)
    assert main(["db", "status"]) == 0
    assert f"needs `fenliu db upgrade` (2 → {len(MIGRATIONS)})" in capsys.readouterr().out
    assert main(["db", "upgrade"]) == 0
    assert f"schema 2 → {len(MIGRATIONS)}" in capsys.readouterr().out
    assert main(["db", "upgrade"]) == 0
    assert "already up to date" in capsys.readouterr().out
    assert main(["db", "status"]) == 0
    out = capsys.readouterr().out
    assert "up to date" in out and "outbox: empty" in out
    db = Database(url)
    assert db.scalar("SELECT call_id FROM calls") == "kept"  # the upgrade kept the record
    assert db.scalar("SELECT sip_call_id FROM calls") == "kept"  # its id was the SIP Call-ID: kept as such
    db.close()


def test_a_store_from_a_newer_fenliu_is_refused(url, monkeypatch, capsys):
    monkeypatch.setenv("FENLIU_STORE__URL", url)
    _at_version(url, len(MIGRATIONS))
    db = Database(url)
    db.execute("UPDATE schema_version SET version=99")
    db.close()
    assert main(["db", "upgrade"]) == 2
    assert "newer fenliu" in capsys.readouterr().err
    assert main(["db", "status"]) == 1


def test_unreachable_postgresql_says_what_to_check(monkeypatch, capsys):
    monkeypatch.setenv("FENLIU_STORE__URL", "postgresql://fenliu:pw@127.0.0.1:9/fenliu")
    assert main(["db", "upgrade"]) == 2
    err = capsys.readouterr().err
    assert "cannot connect" in err and "pw" not in err and "fenliu:***@" in err


def test_purge_dry_run_changes_nothing(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path}/p.db"
    _at_version(url, len(MIGRATIONS))
    con = sqlite3.connect(tmp_path / "p.db")
    con.execute("UPDATE calls SET text='caller: 我家楼下吵'")
    con.commit()
    con.close()
    monkeypatch.setenv("FENLIU_STORE__URL", url)
    monkeypatch.setenv("FENLIU_STORE__TRANSCRIPT_DAYS", "30")
    assert main(["db", "purge", "--dry-run"]) == 0
    assert "would blank the transcripts of 1 call(s)" in capsys.readouterr().out
    assert main(["db", "purge"]) == 0
    assert "blanked the transcripts of 1 call(s)" in capsys.readouterr().out
    con = sqlite3.connect(tmp_path / "p.db")
    assert con.execute("SELECT text FROM calls").fetchone()[0] == ""
    con.close()


def test_doctor_checks_a_postgresql_store(pg_store_url, monkeypatch):
    from fenliu.commands.doctor import _store

    assert "schema 0/" in _store(pg_store_url) and "fenliu db upgrade" in _store(pg_store_url)
    _at_version(pg_store_url, len(MIGRATIONS))
    assert "up to date" in _store(pg_store_url)
