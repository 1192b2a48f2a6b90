"""OmniSQL over the Postgres wire protocol, with psql (Debian's postgresql-client, which scripts/test
installs with PostgreSQL): the same answers, settings, errors and audit as over Flight SQL."""

import shutil
import subprocess

import pytest

QUERY = "SELECT name, annual_revenue FROM salesforce.account WHERE annual_revenue IS NOT NULL ORDER BY annual_revenue DESC, name LIMIT 5"


def psql(dev, *commands, password=None, verbose=False):
    psql_bin = shutil.which("psql")
    assert psql_bin, "psql is not installed: scripts/test installs postgresql"
    host, port = dev.endpoints["postgres"].rsplit(":", 1)
    args = [psql_bin, f"host={host} port={port} user=demo dbname=omnisql sslmode=disable",
            "--no-psqlrc", "-X", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1"]
    if verbose:
        args += ["-v", "VERBOSITY=verbose"]
    for c in commands:
        args += ["-c", c]
    env = {"PGPASSWORD": password if password is not None else dev.token, "PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "10"}
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)


def test_psql_answers_like_flight_sql(dev, conn):
    out = psql(dev, QUERY)
    assert out.returncode == 0, out.stderr
    rows = [line.split("|") for line in out.stdout.strip().splitlines()]
    with conn.cursor() as cur:
        cur.execute(QUERY)
        expected = [[name, repr(float(revenue))] for name, revenue in cur.fetchall()]
    assert len(rows) == 5
    assert [[n, repr(float(r))] for n, r in rows] == expected


def test_settings_last_for_the_connection_and_each_statement_is_audited(dev):
    marker = "SELECT count(*) AS n FROM github.issues WHERE number > 7"
    out = psql(dev, "SET omnisql.max_staleness = '0'", marker,
               "SELECT outcome, api_requests FROM omnisql.api_requests WHERE sql LIKE '%number > 7%' AND sql NOT LIKE '%api_requests%'")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "SET"
    assert int(lines[1]) > 0
    outcome, api_requests = lines[-1].split("|")
    # Fresh data asked for by the connection's SET: the statement went upstream.
    assert outcome == "ok" and int(api_requests) >= 1, lines


@pytest.mark.parametrize("statement,code,words", [
    ("SELEC name FROM salesforce.account", "42000", "SELEC"),
    ("SELECT * FROM github.nope", "42000", "github.nope"),
    ("DELETE FROM github.issues", "42000", "not allowed"),
    ("SET omnisql.max_staleness = 'soon'", "42000", "omnisql.max_staleness"),
])
def test_errors_carry_a_sqlstate_and_say_what_went_wrong(dev, statement, code, words):
    out = psql(dev, statement, verbose=True)
    assert out.returncode != 0
    assert f"ERROR:  {code}:" in out.stderr and words in out.stderr, out.stderr


def test_a_wrong_api_key_is_refused_at_sign_in(dev):
    out = psql(dev, "SELECT 1", password="not-a-key")
    assert out.returncode != 0
    assert "FATAL:  unknown or revoked API key" in out.stderr and "the password is your OmniSQL API key" in out.stderr, out.stderr


# psycopg 3 and SQLAlchemy (PyPI): the extended query protocol, typed parameters, transactions and
# catalog browsing as those libraries do them.

def pg_dsn(dev, password=None):
    host, port = dev.endpoints["postgres"].rsplit(":", 1)
    return f"host={host} port={port} user=demo dbname=omnisql sslmode=disable password={password or dev.token}"


def test_psycopg_binds_typed_parameters_on_the_server(dev, conn):
    import psycopg

    sql = ("SELECT name, annual_revenue FROM salesforce.account WHERE annual_revenue > {} AND industry <> {} "
           "ORDER BY annual_revenue DESC, name LIMIT 5")
    with conn.cursor() as cur:
        cur.execute(sql.format("$1", "$2"), parameters=[1_000_000, "Retail"])
        expected = [(n, float(r)) for n, r in cur.fetchall()]
    assert expected
    with psycopg.connect(pg_dsn(dev)) as pg:
        # Server-side binding (psycopg's default): Parse with `$1`, `$2`, Bind with an int8 and a text value.
        rows = pg.execute(sql.format("%s", "%s"), (1_000_000, "Retail")).fetchall()
        assert [(n, float(r)) for n, r in rows] == expected
        # Binary results decode to the same values.
        with pg.cursor(binary=True) as cur:
            cur.execute(sql.format("%s", "%s"), (1_000_000, "Retail"))
            assert [(n, float(r)) for n, r in cur.fetchall()] == expected
        # A prepared statement run again with other values.
        for industry in ["Retail", "Technology"]:
            got = pg.execute("SELECT count(*) FROM salesforce.account WHERE industry = %s", (industry,), prepare=True).fetchone()
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM salesforce.account WHERE industry = $1", parameters=[industry])
                assert got[0] == cur.fetchone()[0]
        # Not in autocommit mode psycopg opens a transaction first; commit and rollback are acknowledged.
        assert pg.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        pg.commit()
        pg.execute("SELECT 1")
        pg.rollback()


def test_psycopg_errors_carry_sqlstate_and_the_session_goes_on(dev):
    import psycopg

    with psycopg.connect(pg_dsn(dev), autocommit=True) as pg:
        with pytest.raises(psycopg.errors.SyntaxErrorOrAccessRuleViolation) as err:
            pg.execute("SELECT * FROM github.nope WHERE number = %s", (1,))
        assert "github.nope" in str(err.value)
        with pytest.raises(psycopg.Error) as err:
            pg.execute("SET statement_timeout = 'soon'")
        assert err.value.sqlstate == "22023"
        pg.execute("SET application_name = 'report'")
        assert pg.execute("SHOW application_name").fetchone() == ("report",)
        assert pg.execute("SHOW transaction isolation level").fetchone() == ("read committed",)
        assert pg.execute("SELECT 41 + %s", (1,)).fetchone() == (42,)
    with pytest.raises(psycopg.OperationalError) as err:
        psycopg.connect(pg_dsn(dev, password="not-a-key"))
    assert "unknown or revoked API key" in str(err.value)


def test_cancelling_a_streaming_statement_stops_it_and_its_upstream_requests(dev):
    import threading
    import time

    import psycopg

    from conftest import SlowGithub

    errors = []
    with psycopg.connect(pg_dsn(dev), autocommit=True) as pg:
        def run():
            try:
                pg.execute("SET omnisql.max_staleness = '0'")
                pg.execute("SELECT login, email FROM github.users").fetchall()
            except Exception as e:  # the cancellation surfaces here
                errors.append(e)

        with SlowGithub(dev) as github:
            t = threading.Thread(target=run)
            t.start()
            # Upstream requests are made while rows stream: the statement is past planning.
            github.wait_until_asked()
            started = time.monotonic()
            pg.cancel_safe()
            t.join(timeout=10)
            assert not t.is_alive(), "the cancelled statement did not return"
            assert time.monotonic() - started < 5
            assert errors and isinstance(errors[0], psycopg.errors.QueryCanceled), errors
            github.assert_stopped()
        # The connection is usable afterwards.
        assert pg.execute("SELECT 1").fetchone() == (1,)


def test_sqlalchemy_queries_and_browses_the_catalog(dev, conn):
    import sqlalchemy as sa

    host, port = dev.endpoints["postgres"].rsplit(":", 1)
    url = sa.engine.URL.create("postgresql+psycopg", username="demo", password=dev.token, host=host, port=int(port),
                               database="omnisql", query={"sslmode": "disable"})
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            rows = c.execute(sa.text("SELECT name FROM salesforce.account WHERE industry = :industry ORDER BY name"),
                             {"industry": "Technology"}).fetchall()
        with conn.cursor() as cur:
            cur.execute("SELECT name FROM salesforce.account WHERE industry = 'Technology' ORDER BY name")
            assert [r[0] for r in rows] == [r[0] for r in cur.fetchall()] and rows
        inspector = sa.inspect(engine)
        assert {"salesforce", "github", "slack"} <= set(inspector.get_schema_names())
        assert {"account", "opportunity", "contact"} <= set(inspector.get_table_names(schema="salesforce"))
        columns = {c["name"]: c for c in inspector.get_columns("account", schema="salesforce")}
        assert {"id", "name", "annual_revenue"} <= set(columns)
        # SQLAlchemy Core's own statements (bound literals, functions) run too.
        account = sa.table("account", *(sa.column(name) for name in columns), schema="salesforce")
        with engine.connect() as c:
            count = c.execute(sa.select(sa.func.count()).select_from(account).where(account.c.industry == "Technology")).scalar()
        assert count == len(rows)
    finally:
        engine.dispose()


def test_psql_lists_schemas_tables_and_columns(dev):
    out = psql(dev, r"\dn")
    assert out.returncode == 0, out.stderr
    assert {"salesforce", "github", "slack"} <= {line.split("|")[0] for line in out.stdout.split()}, out.stdout
    out = psql(dev, r"\dt salesforce.*")
    assert out.returncode == 0, out.stderr
    tables = {line.split("|")[1] for line in out.stdout.strip().splitlines()}
    assert {"account", "opportunity", "contact"} <= tables, out.stdout
    out = psql(dev, r"\d salesforce.account")
    assert out.returncode == 0, out.stderr
    columns = {line.split("|")[0] for line in out.stdout.strip().splitlines()}
    assert {"id", "name", "annual_revenue"} <= columns, out.stdout


def test_tls_with_the_data_planes_certificate_and_no_password_in_clear(tmp_path):
    """With a certificate the Postgres listener speaks TLS (the Flight SQL certificate), psql and psycopg
    verify it against the private CA, and a client that does not negotiate TLS is turned away before it
    sends its key."""
    import psycopg

    from conftest import Dev
    from services import tls_pair

    ca, crt, key = tls_pair(tmp_path / "tls")
    (tmp_path / "ca.pem").write_text(ca)
    tls = Dev(tmp_path, "--flight-tls-cert", str(crt), "--flight-tls-key", str(key))
    try:
        host, port = tls.endpoints["postgres"].rsplit(":", 1)
        base = f"host={host} port={port} user=demo dbname=omnisql password={tls.token}"
        with psycopg.connect(f"{base} sslmode=verify-full sslrootcert={tmp_path / 'ca.pem'}") as pg:
            assert pg.pgconn.ssl_in_use
            assert pg.execute("SELECT count(*) FROM slack.channels WHERE name = %s", ("general",)).fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError) as refused:
            psycopg.connect(f"{base} sslmode=disable")
        assert "TLS only" in str(refused.value)
        # A certificate the client does not trust is refused by the client.
        with pytest.raises(psycopg.OperationalError) as untrusted:
            psycopg.connect(f"{base} sslmode=verify-full sslrootcert=system")
        assert "certificate" in str(untrusted.value)
        # SQLAlchemy passes the same settings to psycopg.
        import sqlalchemy as sa

        url = sa.engine.URL.create("postgresql+psycopg", username="demo", password=tls.token, host=host, port=int(port),
                                   database="omnisql",
                                   query={"sslmode": "verify-full", "sslrootcert": str(tmp_path / "ca.pem")})
        engine = sa.create_engine(url)
        try:
            with engine.connect() as c:
                assert c.execute(sa.text("SELECT name FROM slack.channels WHERE name = :n"), {"n": "general"}).scalar() == "general"
        finally:
            engine.dispose()
        psql_bin = shutil.which("psql")
        out = subprocess.run([psql_bin, f"{base} sslmode=verify-full sslrootcert={tmp_path / 'ca.pem'}", "-X", "-A", "-t",
                              "-c", "SELECT name FROM slack.channels WHERE name = 'general'"],
                             capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
        assert out.returncode == 0 and out.stdout.strip() == "general", out.stderr
    finally:
        tls.stop()


# Catalog queries of the kinds BI tools send when they connect and browse (written for these tests, after
# the constructs Grafana's, DBeaver's and Metabase's Postgres sources use: `current_setting`, `quote_ident`
# over information_schema, `parse_ident`, privilege checks, `format_type` over pg_attribute, `::regclass`).
# Each must answer, and answer with the tenant's own objects.
BROWSING = [
    ("server version", "SELECT current_setting('server_version_num')::int / 100 AS version", lambda rows: rows == [(1600,)]),
    ("schemas", "SELECT schema_name FROM information_schema.schemata WHERE schema_name NOT IN "
                "('information_schema', 'pg_catalog') ORDER BY schema_name",
     lambda rows: {"github", "salesforce", "slack"} <= {r[0] for r in rows}),
    ("tables of a schema", "SELECT quote_ident(table_name) AS t FROM information_schema.tables "
                           "WHERE quote_ident(table_schema) = 'salesforce' ORDER BY 1",
     lambda rows: {"account", "contact", "opportunity"} <= {r[0] for r in rows}),
    ("columns of a table", "SELECT quote_ident(column_name), data_type FROM information_schema.columns "
                           "WHERE table_schema = 'salesforce' AND table_name = 'account'",
     lambda rows: {"id", "name", "annual_revenue"} <= {r[0] for r in rows}),
    ("a qualified name split", "SELECT (parse_ident('salesforce.account'))[1], (parse_ident('salesforce.account'))[2]",
     lambda rows: rows == [("salesforce", "account")]),
    ("schemas the user may use", "SELECT nspname FROM pg_catalog.pg_namespace "
                                 "WHERE has_schema_privilege(nspname, 'USAGE') ORDER BY nspname",
     lambda rows: {"github", "salesforce", "slack"} <= {r[0] for r in rows}),
    ("tables the user may read", "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                                 "ON n.oid = c.relnamespace WHERE n.nspname = 'github' AND c.relkind IN ('r', 'v', 'f') "
                                 "AND has_table_privilege(c.oid, 'SELECT') ORDER BY 1",
     lambda rows: {"issues", "repos", "users"} <= {r[0] for r in rows}),
    ("columns with Postgres types", "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a "
                                    "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid JOIN pg_catalog.pg_namespace n "
                                    "ON n.oid = c.relnamespace WHERE n.nspname = 'slack' AND c.relname = 'channels' "
                                    "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
     lambda rows: ("name", "text") in rows and ("is_private", "boolean") in rows),
    ("databases", "SELECT datname FROM pg_catalog.pg_database", lambda rows: ("omnisql",) in rows),
    ("session", "SELECT current_schema(), current_database()", lambda rows: rows == [("public", "omnisql")]),
    ("type oids", "SELECT t.oid, t.typname FROM pg_catalog.pg_type t WHERE t.typname IN ('int8', 'text') ORDER BY 1",
     lambda rows: rows == [(20, "int8"), (25, "text")]),
    ("a name as an oid", "SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid = 'salesforce.account'::regclass",
     lambda rows: rows == [("account",)]),
    ("search path", "SHOW search_path", lambda rows: rows == [("public",)]),
    ("tables on the search path, qualified elsewhere",
     "SELECT CASE WHEN quote_ident(table_schema) IN (SELECT trim(p[i]) FROM generate_series(array_lower("
     "string_to_array(current_setting('search_path'), ','), 1), array_upper(string_to_array(current_setting("
     "'search_path'), ','), 1)) AS i, string_to_array(current_setting('search_path'), ',') p) THEN quote_ident(table_name) "
     "ELSE quote_ident(table_schema) || '.' || quote_ident(table_name) END AS t FROM information_schema.tables "
     "WHERE table_schema NOT IN ('information_schema', 'pg_catalog') ORDER BY 1",
     lambda rows: {"salesforce.account", "github.issues", "slack.channels"} <= {r[0] for r in rows}),
]


@pytest.mark.parametrize("what,sql,check", BROWSING, ids=[b[0] for b in BROWSING])
def test_what_bi_tools_send_to_browse_answers_with_the_tenants_objects(dev, what, sql, check):
    import psycopg

    with psycopg.connect(pg_dsn(dev), autocommit=True) as pg:
        rows = pg.execute(sql).fetchall()
        assert check(rows), rows


def test_psql_cancels_a_running_statement_on_ctrl_c(dev):
    """psql sends a cancel request on SIGINT (Ctrl-C); the statement stops with 57014."""
    import signal
    import time

    from conftest import SlowGithub

    host, port = dev.endpoints["postgres"].rsplit(":", 1)
    with SlowGithub(dev) as github:
        proc = subprocess.Popen(
            [shutil.which("psql"), f"host={host} port={port} user=demo dbname=omnisql sslmode=disable", "-X", "-A", "-t",
             "-v", "VERBOSITY=verbose", "-c", "SET omnisql.max_staleness = '0'", "-c", "SELECT login, email FROM github.users"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={"PGPASSWORD": dev.token, "PATH": "/usr/bin:/bin"})
        github.wait_until_asked()
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        assert time.monotonic() - started < 5
        assert "57014" in err and "canceling statement due to user request" in err, err
        github.assert_stopped()


def test_arrow_types_arrive_as_their_postgres_types_in_text_and_binary(dev, conn):
    """Timestamps with time zone, lists and decimals: typed columns (OIDs) and the same values as Flight SQL."""
    import psycopg

    sql = ("SELECT created_at, labels, CAST(number AS DECIMAL(10,2)) AS n, number, state FROM github.issues "
           "WHERE repo_full_name = 'acme/api' ORDER BY number LIMIT 20")
    with conn.cursor() as cur:
        cur.execute(sql)
        expected = [(c, list(labels), n, number, state) for c, labels, n, number, state in cur.fetchall()]
    assert any(row[1] for row in expected), "some issue should have labels"
    with psycopg.connect(pg_dsn(dev), autocommit=True) as pg:
        for binary in (False, True):
            with pg.cursor(binary=binary) as cur:
                cur.execute(sql)
                # timestamptz, text[], numeric, int8, text
                assert [c.type_code for c in cur.description] == [1184, 1009, 1700, 20, 25]
                rows = cur.fetchall()
                assert all(r[0].tzinfo is not None for r in rows)
                assert [(r[0].timestamp(), r[1], r[2], r[3], r[4]) for r in rows] == \
                    [(e[0].timestamp(), e[1], e[2], e[3], e[4]) for e in expected]
