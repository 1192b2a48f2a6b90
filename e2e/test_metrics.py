"""Prometheus metrics of both planes, scraped over HTTP and parsed with the reference client's parser: a data
plane's queries, upstream requests, cache and audit backlog after real queries; the control plane's admin API
requests and its data planes' heartbeat age, revision lag and audit backlog, for platform operators only."""

import time
import urllib.error
import urllib.request

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import github_only_config, start_data_plane, start_sandbox


def scrape(url: str, key: str | None = None) -> dict:
    """`{(name, frozenset(labels)): value}` of every sample at `url`."""
    req = urllib.request.Request(url, headers={"authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def run(uri: str, token: str, sql: str):
    import adbc_driver_flightsql.dbapi as flight_sql

    with flight_sql.connect(uri, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {token}"}) as c:
        with c.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    """A data plane of its own (one tenant, GitHub in a sandbox) with its health endpoints."""
    sandbox, apps = start_sandbox()
    config = tmp_path_factory.mktemp("metrics") / "metrics.toml"
    config.write_text(github_only_config(apps["github"], "metrics_co", "ana", "metrics-api-key-0001"))
    proc, uri = start_data_plane(config, "--health-addr", "127.0.0.1:0", "--pg-addr", "127.0.0.1:0")
    proc.uri = uri
    yield proc
    proc.terminate()
    sandbox.terminate()


def test_a_data_planes_metrics_count_its_queries_requests_and_cache(plane):
    uri = plane.uri
    metrics = plane.health_url + "/metrics"
    before = scrape(metrics)
    assert value(before, "omnisql_queries_total", tenant="metrics_co") == 0
    sql = "SELECT number FROM github.issues WHERE repo_full_name = 'acme/api' AND state = 'open'"
    fresh = run(uri, "metrics-api-key-0001", "SET omnisql.max_staleness = '0'; " + sql)
    assert run(uri, "metrics-api-key-0001", sql) == fresh
    with pytest.raises(Exception):
        run(uri, "metrics-api-key-0001", "SELECT no_such_column FROM github.repos")
    host, port = plane.pg_addr.rsplit(":", 1)
    with psycopg.connect(host=host, port=port, user="ana", password="metrics-api-key-0001", dbname="omnisql"):
        during = scrape(metrics)
    # The server notices the closed session a moment after the client closed it.
    deadline = time.monotonic() + 5
    while value(after := scrape(metrics), "omnisql_postgres_sessions") != 0 and time.monotonic() < deadline:
        time.sleep(0.1)

    assert value(after, "omnisql_queries_total", tenant="metrics_co", outcome="ok") == 2
    assert value(after, "omnisql_queries_total", tenant="metrics_co", outcome="error") == 1
    assert value(after, "omnisql_query_duration_seconds_count", tenant="metrics_co") == 3
    assert value(after, "omnisql_active_queries", tenant="metrics_co") == 0
    assert value(during, "omnisql_postgres_sessions") == 1
    assert value(after, "omnisql_postgres_sessions") == 0
    # The fresh query went upstream; the second was answered without a request.
    github_ok = value(after, "omnisql_upstream_requests_total", app="GitHub", status="200")
    assert github_ok >= 1
    assert value(after, "omnisql_upstream_request_duration_seconds_count", app="GitHub") >= github_ok
    assert value(after, "omnisql_upstream_wait_seconds_count", app="GitHub") >= github_ok
    assert value(after, "omnisql_cache_lookups_total", tenant="metrics_co") >= 1
    assert value(after, "omnisql_cache_bytes", cache="responses") > 0
    # Events stay in the outbox: this data plane has no control plane to ship them to.
    assert value(after, "omnisql_audit_backlog") >= 3
    # Labels never carry SQL text or principals.
    assert all("ana" not in dict(ls).values() and not any("SELECT" in v for v in dict(ls).values())
               for (_, ls) in after)


def test_the_control_planes_metrics_are_for_operators_and_show_each_data_plane(dev):
    admin = dev.endpoints["admin_api"]
    operator = dev.endpoints["operator_key"]
    with pytest.raises(urllib.error.HTTPError) as no_key:
        scrape(admin + "/metrics")
    assert no_key.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as member:
        scrape(admin + "/metrics", dev.token)
    assert member.value.code == 403

    urllib.request.urlopen(urllib.request.Request(admin + "/v1/me", headers={"authorization": f"Bearer {operator}"}))
    samples = scrape(admin + "/metrics", operator)
    assert value(samples, "omnisql_http_requests_total", method="GET", route="/v1/me", status="200") >= 1
    assert value(samples, "omnisql_http_request_duration_seconds_count", method="GET", route="/v1/me") >= 1
    ages = [v for (n, ls), v in samples.items() if n == "omnisql_data_plane_heartbeat_age_seconds"]
    assert len(ages) == 1 and 0 <= ages[0] < 15, ages
    assert value(samples, "omnisql_data_plane_revision_lag", region="local") >= 0
    assert ("omnisql_data_plane_audit_backlog", frozenset({("data_plane", next(
        dict(ls)["data_plane"] for (n, ls) in samples if n == "omnisql_data_plane_heartbeat_age_seconds")), ("region", "local")})) in samples
    # The dev data plane ships its audit events here.
    run(dev.uri, dev.token, "SELECT 1")
    deadline = time.monotonic() + 15
    while value(scrape(admin + "/metrics", operator), "omnisql_audit_events_stored_total", tenant="demo") == 0:
        assert time.monotonic() < deadline, "no audit event stored for the demo tenant"
        time.sleep(0.3)


def test_every_metric_the_grafana_dashboard_charts_is_exported(dev, plane):
    """Every series name the dashboard queries, among what a data plane and a control plane export."""
    import json
    import pathlib
    import re

    dashboard = json.loads((pathlib.Path(__file__).parent.parent / "charts/grafana/omnisql-dashboard.json").read_text())
    wanted = {name for p in dashboard["panels"] for t in p["targets"] for name in re.findall(r"\bomnisql_[a-z_]+", t["expr"])}
    assert len(wanted) >= 12, wanted
    run(dev.uri, dev.token, "SET omnisql.max_staleness = '0'; SELECT count(*) FROM github.repos")
    psycopg.connect(host=dev.endpoints["postgres"].rsplit(":", 1)[0], port=dev.endpoints["postgres"].rsplit(":", 1)[1],
                    user="demo", password=dev.token, dbname="omnisql").close()
    deadline = time.monotonic() + 15
    while True:
        names = {n for (n, _) in scrape(dev.endpoints["admin_api"] + "/metrics", dev.endpoints["operator_key"])}
        names |= {n for (n, _) in scrape(plane.health_url + "/metrics")}
        missing = sorted(w for w in wanted if w not in names)
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert missing == [], f"charted but not exported: {missing}"


def test_a_real_prometheus_scrapes_both_planes_and_answers_every_grafana_query(dev, plane, tmp_path):
    """Prometheus itself (Debian's package) scrapes a data plane and the control plane (with the operator's key,
    from a file), finds both targets up, and every expression the Grafana dashboard charts evaluates there to a
    non-empty answer."""
    import json
    import pathlib
    import shutil
    import subprocess
    import urllib.parse

    from services import free_port, wait_for_port

    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("Prometheus is not installed: scripts/test installs it (apt-get install prometheus)")
    key_file = tmp_path / "operator.key"
    key_file.write_text(dev.endpoints["operator_key"])
    control_plane = urllib.parse.urlsplit(dev.endpoints["admin_api"]).netloc
    data_plane = urllib.parse.urlsplit(plane.health_url).netloc
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({  # YAML is a superset of JSON
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "data-plane", "static_configs": [{"targets": [data_plane]}]},
            {"job_name": "control-plane", "authorization": {"type": "Bearer", "credentials_file": str(key_file)},
             "static_configs": [{"targets": [control_plane]}]},
        ],
    }))
    port = free_port()
    prometheus = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "w"))
    try:
        wait_for_port(port)

        def query(expr: str) -> list:
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
            with urllib.request.urlopen(url, timeout=10) as resp:
                answer = json.loads(resp.read())
            assert answer["status"] == "success", (expr, answer)
            return answer["data"]["result"]

        # Something to count on both planes, then scrapes before and after it.
        run(plane.uri, "metrics-api-key-0001", "SET omnisql.max_staleness = '0'; SELECT count(*) FROM github.repos")
        run(dev.uri, dev.token, "SELECT 1")
        dashboard = json.loads((pathlib.Path(__file__).parent.parent / "charts/grafana/omnisql-dashboard.json").read_text())
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        deadline = time.monotonic() + 30
        while True:
            up = {r["metric"]["job"]: r["value"][1] for r in query("up")}
            empty = [e for e in exprs if not query(e)]
            if (up == {"data-plane": "1", "control-plane": "1"} and not empty) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert up == {"data-plane": "1", "control-plane": "1"}, (up, (tmp_path / "prometheus.log").read_text()[-2000:])
        assert empty == [], f"Grafana expressions with no answer from Prometheus: {empty}"
        # The scraped numbers are the data plane's own: its tenant's queries, counted.
        ok = query('sum(omnisql_queries_total{tenant="metrics_co", outcome="ok"})')
        assert float(ok[0]["value"][1]) >= 3, ok
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=20)
