"""A hostile tenant through a real Flight SQL client (ADBC): it cannot touch the data plane's host, end
its process, take its memory or hold a statement past the timeout; every refusal is an error that says
why, and the data plane goes on serving."""

import os
import pathlib
import threading
import time

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import pytest

from conftest import github_only_config, start_data_plane, start_sandbox
from fuzz import rss

TOKEN = "hostile-tenant-key-0123456789"
MEMORY_LIMIT = 512 << 20


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("isolation")
    sandbox, endpoints = start_sandbox()
    config = tmp / "plane.toml"
    # Another tenant on the same data plane, whose connection the hostile one must not even see.
    config.write_text(github_only_config(endpoints["github"], "hostile", "mallory", TOKEN)
                      + github_only_config(endpoints["github"], "victim", "victor", "victim-tenant-key-0123456789",
                                           connection="victim_github"))
    proc, uri = start_data_plane(config, "--memory-limit", f"{MEMORY_LIMIT}", "--statement-timeout", "20s",
                                 "--pg-addr", "127.0.0.1:0")
    yield proc, uri, tmp
    proc.terminate()
    proc.wait(timeout=10)
    sandbox.terminate()
    sandbox.wait(timeout=10)


@pytest.fixture()
def cur(plane):
    _, uri, _ = plane
    conn = flight_sql.connect(uri, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {TOKEN}"})
    cursor = conn.cursor()
    yield cursor
    cursor.close()
    conn.close()


def refused(cur, sql: str) -> str:
    with pytest.raises(adbc_driver_manager.Error) as err:
        cur.execute(sql)
        cur.fetchall()
    return str(err.value)


def still_serving(cur):
    cur.execute("SELECT count(*) FROM github.repos")
    assert cur.fetchall()[0][0] > 0


def test_no_statement_reaches_the_hosts_files(plane, cur):
    proc, _, tmp = plane
    written = tmp / "written.csv"
    secret = tmp / "secret.csv"
    secret.write_text("name\nthe-host-secret\n")
    for sql in [
        f"COPY (SELECT 1) TO '{written}'",
        f"CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '{secret}'",
        f"SELECT * FROM '{secret}'",
        "CREATE TABLE x AS SELECT 1",
        "SET datafusion.execution.batch_size = 0",
    ]:
        message = refused(cur, sql)
        assert "the-host-secret" not in message
        assert "is not allowed" in message or "not found" in message, f"{sql}: {message}"
    assert not written.exists()
    # Each refusal is an attempt on record, with its error.
    cur.execute("SELECT sql, outcome, error, queued_ms FROM omnisql.api_requests WHERE sql LIKE 'COPY%'")
    rows = cur.fetchall()
    assert rows and rows[0][1] == "error" and "COPY … TO is not allowed" in rows[0][2] and rows[0][3] == 0, rows
    assert proc.poll() is None
    still_serving(cur)


def test_huge_statements_fail_alone_and_the_process_lives(plane, cur):
    proc, _, _ = plane
    message = refused(cur, " UNION ALL ".join(["SELECT 1"] * 3000))
    assert "3000 UNION/INTERSECT/EXCEPT arms; the limit is 256" in message
    message = refused(cur, "SELECT " + " + ".join(["1"] * 5000))
    assert "operators; the limit is 1000" in message
    assert proc.poll() is None
    still_serving(cur)


def test_memory_bombs_are_refused_within_the_limit(plane, cur):
    proc, _, _ = plane
    assert "repeat() would build 1.9 GiB" in refused(cur, "SELECT repeat('x', 2000000000)")
    assert "memory limit of 128 MiB per query" in refused(
        cur, "SELECT array_agg(v) FROM generate_series(1, 300000000) t(v)")
    resident = rss(proc.pid)
    print(f"data plane RSS after the bombs: {resident / 2**20:.0f} MiB (query memory limit {MEMORY_LIMIT / 2**20:.0f} MiB)")
    assert resident < MEMORY_LIMIT + (256 << 20)
    still_serving(cur)


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_after_100_ms(pid: int) -> float:
    """CPU seconds the process spends in the half second that starts 100 ms from now."""
    time.sleep(0.1)
    before = cpu_seconds(pid)
    time.sleep(0.5)
    return cpu_seconds(pid) - before


@pytest.mark.parametrize("bomb", [
    "SELECT count(*) FROM generate_series(1, 5000000000)",
    "SELECT count(*) FROM github.issues a, github.issues b, github.issues c, github.issues d",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
])
def test_a_statement_stops_at_the_timeout_the_session_set_and_its_work_stops(plane, cur, bomb):
    proc, _, _ = plane
    cur.execute("SET omnisql.statement_timeout = '1s'")
    started = time.monotonic()
    message = refused(cur, bomb)
    took = time.monotonic() - started
    assert "ran past its timeout of 1 s" in message
    assert took < 2.0, took
    # Nothing of the statement runs on: within 100 ms the data plane is idle again.
    busy = cpu_after_100_ms(proc.pid)
    print(f"{bomb[:40]}…: stopped after {took:.2f} s; CPU in the 0.5 s after 100 ms: {busy:.2f} s")
    assert busy < 0.1, f"the data plane kept working after the timeout: {busy:.2f} CPU seconds in 0.5 s"


def test_a_cancelled_statement_stops_within_100_ms(plane, cur):
    proc, _, _ = plane
    outcome = {}

    def run():
        started = time.monotonic()
        try:
            cur.execute("SELECT count(*) FROM github.issues a, github.issues b, github.issues c, github.issues d")
            cur.fetchall()
            outcome["result"] = "finished"
        except Exception as e:  # the client's cancellation error
            outcome["result"] = str(e)
        outcome["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(1.0)
    before = cpu_seconds(proc.pid)
    time.sleep(0.3)
    assert cpu_seconds(proc.pid) - before > 0.1, "the statement was not running"
    cur.adbc_cancel()
    worker.join(timeout=10)
    assert not worker.is_alive() and outcome["result"] != "finished", outcome
    busy = cpu_after_100_ms(proc.pid)
    print(f"cancelled after {outcome['seconds']:.2f} s ({outcome['result'][:80]}); CPU in the 0.5 s after 100 ms: {busy:.2f} s")
    assert busy < 0.1, f"the data plane kept working after the cancel: {busy:.2f} CPU seconds in 0.5 s"
    still_serving(cur)


def test_a_planned_schema_is_the_one_streamed(cur):
    # Folding the constant narrows the column to non-null; the client still gets the planned schema.
    cur.execute("SELECT regexp_replace(repeat('a', 1000), '(a*)*b', 'c') AS r")
    assert cur.fetchall()[0][0] == "a" * 1000


def test_over_postgres_the_catalog_shows_only_the_tenants_own_tables(plane):
    """pg_catalog, information_schema and psql's listings are built from the caller's session: another
    tenant's connection is not listed, and naming it fails as if it did not exist."""
    import psycopg

    proc, _, _ = plane
    host, port = proc.pg_addr.rsplit(":", 1)
    with psycopg.connect(f"host={host} port={port} user=mallory dbname=omnisql sslmode=disable password={TOKEN}",
                         autocommit=True) as pg:
        namespaces = {r[0] for r in pg.execute("SELECT nspname FROM pg_catalog.pg_namespace").fetchall()}
        assert "github" in namespaces and "victim_github" not in namespaces, namespaces
        schemas = {r[0] for r in pg.execute("SELECT DISTINCT table_schema FROM information_schema.tables").fetchall()}
        assert "github" in schemas and "victim_github" not in schemas, schemas
        relations = pg.execute("SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                               "ON n.oid = c.relnamespace WHERE n.nspname = 'victim_github'").fetchone()[0]
        assert relations == 0
        with pytest.raises(psycopg.Error) as err:
            pg.execute("SELECT count(*) FROM victim_github.repos")
        assert "victim_github" in str(err.value)
        # The files of the host stay out of reach over this protocol too.
        for sql in ["SELECT * FROM '/etc/passwd'", "COPY (SELECT 1) TO '/tmp/x'", "SELECT pg_read_file('/etc/passwd')"]:
            with pytest.raises(psycopg.Error):
                pg.execute(sql)
        assert pg.execute("SELECT count(*) FROM github.repos").fetchone()[0] > 0
