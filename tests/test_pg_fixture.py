"""The throw-away PostgreSQL cluster really runs: per-test databases are real and separate."""

from __future__ import annotations

import psycopg

from tests.pg import PgCluster


def test_pg_store_url_is_a_fresh_writable_database(pg_store_url: str) -> None:
    assert pg_store_url.startswith("postgresql://postgres@127.0.0.1:")
    with psycopg.connect(pg_store_url, connect_timeout=5) as con:
        assert con.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
        con.execute("CREATE TABLE calls (call_id text PRIMARY KEY, note text)")
        con.execute("INSERT INTO calls VALUES (%s, %s)", ("c1", "噪音扰民"))
        con.commit()
    with psycopg.connect(pg_store_url, connect_timeout=5) as con:
        assert con.execute("SELECT call_id, note FROM calls").fetchall() == [("c1", "噪音扰民")]


def test_session_database_and_loopback_only(pg_url: str, pg_cluster: PgCluster) -> None:
    with psycopg.connect(pg_url, connect_timeout=5) as con:
        row = con.execute("SELECT current_database(), current_setting('listen_addresses'), "
                          "current_setting('fsync')").fetchone()
    assert row == ("fenliu_test", "127.0.0.1", "off")
    assert pg_url == pg_cluster.url("fenliu_test")


def test_dropped_database_is_gone(pg_cluster: PgCluster) -> None:
    url = pg_cluster.create_database("t_dropcheck")
    con = psycopg.connect(url, connect_timeout=5)  # still connected: WITH (FORCE) must cope
    try:
        pg_cluster.drop_database("t_dropcheck")
    finally:
        con.close()
    with psycopg.connect(pg_cluster.url("postgres"), connect_timeout=5) as admin:
        assert admin.execute("SELECT 1 FROM pg_database WHERE datname = 't_dropcheck'").fetchone() is None
