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
