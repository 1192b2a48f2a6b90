"""OmniSQL through the ADBC Flight SQL driver and pyarrow, as a user runs it."""

import json
import subprocess
import threading
import time
import urllib.request
import uuid

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import pytest

from conftest import THREE_APP_JOIN
from services import raw_salesforce


def test_get_info_names_the_server(conn):
    info = conn.adbc_get_info()
    assert info["vendor_name"] == "OmniSQL"


def test_catalog_browsing_lists_each_app_schema_and_its_tables(conn):
    objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
    catalogs = {c["catalog_name"]: c for c in objects}
    assert "omnisql" in catalogs
    schemas = {s["db_schema_name"]: {t["table_name"] for t in s["db_schema_tables"]}
               for s in catalogs["omnisql"]["catalog_db_schemas"]}
    assert {"github", "salesforce", "slack"} <= set(schemas)
    assert {"issues", "pulls", "commits", "repos", "users"} <= schemas["github"]
    assert {"account", "contact", "opportunity", "user", "renewal__c"} <= schemas["salesforce"]
    assert {"channels", "users", "messages"} <= schemas["slack"]


def test_table_schema_of_a_salesforce_custom_object(conn):
    schema = conn.adbc_get_table_schema("renewal__c", db_schema_filter="salesforce")
    assert "amount__c" in schema.names and "account__c" in schema.names


def _get(url: str, headers: dict) -> tuple[object, dict]:
    req = urllib.request.Request(url, headers={"user-agent": "e2e", **headers})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read()), dict(resp.headers)


def _expected_join(dev) -> set:
    """The 3-app join computed independently, straight from the sandbox APIs."""
    gh = dev.app("github")
    h = {"authorization": f"Bearer {gh['credentials']['token']}"}
    logins_by_issue = []
    repos, _ = _get(gh["base_url"] + "/orgs/acme/repos?per_page=100", h)
    for repo in repos:
        page = 1
        while True:
            items, headers = _get(f"{gh['base_url']}/repos/{repo['full_name']}/issues?state=open&per_page=100&page={page}", h)
            logins_by_issue += [(repo["full_name"], i["number"], i["user"]["login"]) for i in items if "pull_request" not in i]
            if 'rel="next"' not in headers.get("link", headers.get("Link", "")):
                break
            page += 1
    emails = {}
    for login in {l for _, _, l in logins_by_issue}:
        user, _ = _get(f"{gh['base_url']}/users/{login}", h)
        emails[login] = user.get("email")

    contacts = {rec["Email"]: rec["AccountId"] for rec in raw_salesforce(dev, "SELECT Email, AccountId FROM Contact")}
    owner = {rec["Id"]: rec["OwnerId"] for rec in raw_salesforce(dev, "SELECT Id, OwnerId FROM Account")}
    user_email = {rec["Id"]: rec["Email"] for rec in raw_salesforce(dev, "SELECT Id, Email FROM User")}

    sl = dev.app("slack")
    members, _ = _get(sl["base_url"] + "/api/users.list?limit=1000", {"authorization": f"Bearer {sl['credentials']['token']}"})
    slack_name = {m["profile"].get("email"): m["profile"]["real_name"] for m in members["members"]}

    expected = set()
    for repo, number, login in logins_by_issue:
        email = emails.get(login)
        if email in contacts:
            owner_email = user_email[owner[contacts[email]]]
            if owner_email in slack_name:
                expected.add((repo, number, email, slack_name[owner_email]))
    return expected


def test_three_app_join_on_email_returns_the_rows_the_apis_hold(conn, dev):
    expected = _expected_join(dev)
    assert len(expected) > 5
    with conn.cursor() as cur:
        cur.execute(THREE_APP_JOIN)
        table = cur.fetch_arrow_table()
    got = set(zip(*(table.column(n).to_pylist() for n in ["repo_full_name", "number", "customer", "owner"])))
    assert got == expected


def test_bound_parameters_filter_like_literals(conn):
    def numbers(cur):
        return [r[0] for r in cur.fetchall()]

    with conn.cursor() as cur:
        results = {}
        for state in ("open", "closed"):
            cur.execute(f"SELECT number FROM github.issues WHERE state = '{state}' AND repo_full_name = 'acme/web' ORDER BY number")
            literal = numbers(cur)
            cur.execute("SELECT number FROM github.issues WHERE state = $1 AND repo_full_name = $2 ORDER BY number", (state, "acme/web"))
            assert numbers(cur) == literal
            # `?`, as JDBC, ODBC and BI tools write them: numbered in the order of the text.
            cur.execute("SELECT number FROM github.issues WHERE state = ? AND repo_full_name = ? ORDER BY number", (state, "acme/web"))
            assert numbers(cur) == literal
            results[state] = literal
    assert results["open"] and results["closed"] and not set(results["open"]) & set(results["closed"])


def test_bad_sql_gets_a_clear_invalid_argument_error(conn):
    with conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as err:
            cur.execute("SELEC name FROM salesforce.account")
    text = str(err.value)
    assert "invalid query" in text and "SELEC" in text, text
    assert "INVALID_ARGUMENT" in text or "InvalidArgument" in text or "INVALID_ARGUMENT".lower() in text.lower(), text


def test_unknown_table_names_the_table(conn):
    with conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as err:
            cur.execute("SELECT * FROM github.nope")
    assert "github.nope" in str(err.value)


def test_wrong_token_is_rejected_with_unauthenticated(dev):
    with pytest.raises(adbc_driver_manager.Error) as err:
        c = flight_sql.connect(dev.uri, db_kwargs={"adbc.flight.sql.authorization_header": "Bearer not-a-real-key-123456"})
        try:
            with c.cursor() as cur:
                cur.execute("SELECT 1")
        finally:
            c.close()
    text = str(err.value)
    assert "unknown or revoked API key" in text, text


def test_cancelling_a_slow_query_stops_upstream_requests(conn, dev):
    from conftest import SlowGithub

    errors = []
    cur = conn.cursor()

    def run():
        try:
            # Fresh data only: a cached answer would never reach GitHub.
            cur.execute("SET omnisql.max_staleness = '0'; SELECT login, email FROM github.users")
            cur.fetch_arrow_table()
        except Exception as e:  # the cancellation surfaces here
            errors.append(e)

    t = threading.Thread(target=run)
    try:
        with SlowGithub(dev) as github:
            t.start()
            github.wait_until_asked()
            started = time.monotonic()
            cur.adbc_cancel()
            t.join(timeout=10)
            assert not t.is_alive(), "the cancelled query did not return"
            assert time.monotonic() - started < 5
            assert errors, "the cancelled query should fail, not return rows"
            github.assert_stopped()
    finally:
        cur.close()


def test_pyarrow_flight_client_reads_results(dev):
    from pyarrow import flight

    client = flight.FlightClient(dev.uri)
    options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {dev.token}".encode())])
    # A raw Flight SQL CommandStatementQuery, packed as the protocol's Any message.
    from google_any import statement_descriptor  # noqa: E402  (local helper)

    info = client.get_flight_info(statement_descriptor("SELECT name FROM slack.channels ORDER BY name"), options)
    table = client.do_get(info.endpoints[0].ticket, options).read_all()
    assert table.column("name").to_pylist() == sorted(table.column("name").to_pylist())
    assert "general" in table.column("name").to_pylist()


def test_pyarrow_flight_client_lists_tables_and_a_deadline_cancels_a_read(dev):
    """The raw Flight client: Flight SQL's GetTables by hand, and a call deadline stops the query's upstream
    requests."""
    import time

    from pyarrow import flight

    from conftest import SlowGithub
    from google_any import statement_descriptor, tables_descriptor

    client = flight.FlightClient(dev.uri)
    options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {dev.token}".encode())])
    info = client.get_flight_info(tables_descriptor("salesforce"), options)
    tables = client.do_get(info.endpoints[0].ticket, options).read_all()
    assert {"account", "contact", "opportunity"} <= set(tables.column("table_name").to_pylist())
    assert set(tables.column("db_schema_name").to_pylist()) == {"salesforce"}

    try:
        with SlowGithub(dev) as github:
            info = client.get_flight_info(
                statement_descriptor("SET omnisql.max_staleness = '0'; SELECT login, email FROM github.users"), options)
            # A call deadline is how this client cancels: the server sees the stream end and drops the query.
            deadline = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {dev.token}".encode())], timeout=3.0)
            started = time.monotonic()
            with pytest.raises(flight.FlightTimedOutError):
                client.do_get(info.endpoints[0].ticket, deadline).read_all()
            assert time.monotonic() - started < 8
            github.assert_stopped()
    finally:
        client.close()


def test_results_say_how_fresh_each_source_is_and_repeats_come_from_cache(dev):
    """Freshness per source in the last message's metadata; a repeat is a kept result, a variation reads
    the API cache."""
    from pyarrow import flight

    from google_any import statement_descriptor

    client = flight.FlightClient(dev.uri)
    options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {dev.token}".encode())])

    def run(sql):
        info = client.get_flight_info(statement_descriptor(sql), options)
        reader = client.do_get(info.endpoints[0].ticket, options)
        metadata = None
        while True:
            try:
                chunk = reader.read_chunk()
            except StopIteration:
                break
            if chunk.app_metadata is not None:
                metadata = json.loads(chunk.app_metadata.to_pybytes())
        return metadata

    sql = "SELECT count(*) FROM salesforce.opportunity o JOIN slack.channels ch ON true"
    first = run("SET omnisql.max_staleness = '0'; " + sql)
    assert set(first["freshness"]) == {"salesforce", "slack"}
    assert first["api_requests"] > 0 and first["cache_hits"] == 0
    assert all(f["oldest_age_seconds"] < 5 for f in first["freshness"].values())
    again = run("SET omnisql.max_staleness = '10 minutes'; " + sql)
    # The same question again: answered by the kept result, which says how old its data is.
    assert again["api_requests"] == 0 and again["kept_result"] is True
    assert set(again["freshness"]) == set(first["freshness"])
    for source, f in first["freshness"].items():
        assert abs(again["freshness"][source]["as_of_unix"] - f["as_of_unix"]) < 0.01
    # Another statement asking the APIs the same (only an alias differs) reads the cached API answers.
    other = run("SET omnisql.max_staleness = '10 minutes'; " + sql.replace("count(*)", "count(*) AS n"))
    assert other["api_requests"] == 0 and other["cache_hits"] > 0 and other["kept_result"] is False


def test_set_max_staleness_lasts_for_the_connection(conn, dev):
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM slack.channels")  # warm the cache
        cur.fetchall()
        cur.execute("SET omnisql.max_staleness = '0'")
        dev.sandbox("slack", "/_sandbox/stats/reset", {})
        cur.execute("SELECT count(*) FROM slack.channels")
        cur.fetchall()
    assert dev.sandbox("slack", "/_sandbox/stats")["total"] > 0, "after SET … '0' the connection's queries go to Slack"


def test_recent_queries_and_their_upstream_cost_are_queryable(conn):
    marker = "SELECT count(*) AS n FROM salesforce.opportunity WHERE amount > 1"
    with conn.cursor() as cur:
        cur.execute("SET omnisql.max_staleness = '0'; " + marker)
        cur.fetchall()
        cur.execute("SELECT outcome, api_requests, sql FROM omnisql.api_requests WHERE sql LIKE '%amount > 1%' AND sql NOT LIKE '%api_requests%'")
        rows = cur.fetchall()
    assert rows, "the query is listed"
    outcome, api_requests, sql = rows[-1]
    assert outcome == "ok" and api_requests >= 1 and marker in sql


def test_flight_sql_over_tls_with_adbc_pyarrow_and_the_cli(tmp_path):
    from pyarrow import flight

    from conftest import Dev, omnisql_binary
    from google_any import statement_descriptor
    from services import tls_pair

    ca, crt, key = tls_pair(tmp_path / "tls")
    dev = Dev(tmp_path, "--flight-tls-cert", str(crt), "--flight-tls-key", str(key))
    query = "SELECT name FROM slack.channels WHERE name = 'general'"
    auth = {"adbc.flight.sql.authorization_header": f"Bearer {dev.token}"}
    try:
        assert dev.uri.startswith("grpc+tls://127.0.0.1:"), dev.uri
        # ADBC trusting the private CA.
        with flight_sql.connect(dev.uri, db_kwargs={**auth, "adbc.flight.sql.client_option.tls_root_certs": ca}) as c:
            with c.cursor() as cur:
                cur.execute(query)
                assert cur.fetchall() == [("general",)]
        # Without the CA the certificate is refused, and plain text is not served on the TLS port.
        for uri, why in ((dev.uri, "certificate signed by unknown authority"),
                         (dev.uri.replace("grpc+tls://", "grpc://"), "server preface")):
            with pytest.raises(adbc_driver_manager.Error) as refused:
                with flight_sql.connect(uri, db_kwargs=auth) as c, c.cursor() as cur:
                    cur.execute(query)
            print(uri, "->", str(refused.value).splitlines()[0])
            assert why in str(refused.value), refused.value
        # pyarrow Flight.
        client = flight.FlightClient(dev.uri, tls_root_certs=ca.encode())
        options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {dev.token}".encode())])
        info = client.get_flight_info(statement_descriptor(query), options)
        assert client.do_get(info.endpoints[0].ticket, options).read_all().column("name").to_pylist() == ["general"]
        client.close()
        # `omnisql sql` with the CA file, and without it.
        ca_file = tmp_path / "ca.pem"
        ca_file.write_text(ca)
        cli = [omnisql_binary(), "sql", "--endpoint", dev.uri, "--token", dev.token]
        out = subprocess.run([*cli, "--ca-file", str(ca_file), query], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "| general |" in out.stdout, out.stderr
        out = subprocess.run([*cli, query], capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and "is not trusted (UnknownIssuer)" in out.stderr and "--ca-file" in out.stderr, out.stderr
        print("omnisql sql without the CA:", out.stderr.strip().splitlines()[0])
    finally:
        dev.stop()


def test_adbc_repeats_are_answered_from_kept_results(conn):
    """ADBC prepares every statement; a repeat is answered from the first run's kept result, rows and all."""
    marker = uuid.uuid4().hex[:8]
    sql = f"SELECT name AS name_{marker}, annual_revenue FROM salesforce.account ORDER BY name LIMIT 5"

    def served(cur):
        cur.execute("SELECT results_served FROM omnisql.cache_stats")
        return cur.fetchall()[0][0]

    with conn.cursor() as cur:
        before = served(cur)
        cur.execute(sql)
        first = cur.fetchall()
        assert served(cur) == before, "the first run plans and runs"
        cur.execute(sql)
        again = cur.fetchall()
        assert served(cur) == before + 1, "the repeat is a kept result"
    assert len(first) == 5 and again == first
