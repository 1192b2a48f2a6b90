"""OpenTelemetry traces through a real OpenTelemetry Collector (built by scripts/tools): `omnisql dev` exports
over OTLP/gRPC to the collector, whose OTLP/HTTP exporter hands the spans to this test as JSON. A client's
W3C trace context continues through the 3-source join: one `query` span with children for planning, each
scan, each upstream request (app, endpoint, bucket, status, cache hit, wait) and the audit write; the admin
API's spans continue a caller's trace the same way; log lines of a query carry its trace id."""

import http.server
import json
import os
import pathlib
import secrets
import subprocess
import threading
import time
import urllib.request

import pytest

from conftest import THREE_APP_JOIN, Dev
from services import free_port, wait_for_port

COLLECTOR = pathlib.Path(os.environ.get("OMNISQL_TOOLS_DIR", "/var/tmp/omnisql-tools")) / "bin" / "otelcol"


class Sink(http.server.ThreadingHTTPServer):
    """Where the collector's OTLP/HTTP exporter posts what it received (JSON)."""

    def __init__(self):
        self.spans: list[dict] = []
        self.lock = threading.Lock()
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with sink.lock:
                    for rs in body.get("resourceSpans", []):
                        service = next((a["value"].get("stringValue") for a in rs["resource"].get("attributes", [])
                                        if a["key"] == "service.name"), None)
                        for ss in rs.get("scopeSpans", []):
                            for s in ss.get("spans", []):
                                s["service"] = service
                                s["attrs"] = {a["key"]: next(iter(a["value"].values()), None) for a in s.get("attributes", [])}
                                sink.spans.append(s)
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def trace(self, trace_id: str) -> list[dict]:
        with self.lock:
            return [s for s in self.spans if s["traceId"] == trace_id]


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    if not COLLECTOR.exists():
        pytest.fail("the OpenTelemetry Collector is not built: run scripts/tools (scripts/test does)")
    tmp = tmp_path_factory.mktemp("tracing")
    sink = Sink()
    port = free_port()
    config = tmp / "collector.yaml"
    config.write_text(f"""
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
exporters:
  otlp_http:
    endpoint: http://127.0.0.1:{sink.server_address[1]}
    encoding: json
    compression: none
    retry_on_failure:
      enabled: false
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp_http]
""")
    collector = subprocess.Popen([str(COLLECTOR), "--config", f"file:{config}"], stdout=subprocess.DEVNULL,
                                 stderr=open(tmp / "collector.log", "w"))
    wait_for_port(port)
    dev = Dev(tmp, env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_BSP_SCHEDULE_DELAY": "100",
                        "OMNISQL_LOG_FORMAT": "json"})
    yield dev, sink
    dev.stop()
    collector.terminate()
    sink.shutdown()


def wait_for(what, check, seconds=20.0, evidence=lambda: ""):
    deadline = time.monotonic() + seconds
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s{evidence()}"
        time.sleep(0.2)


def test_a_federated_query_is_one_span_tree_under_the_clients_trace(traced):
    import adbc_driver_flightsql.dbapi as flight_sql

    dev, sink = traced
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    with flight_sql.connect(dev.uri, db_kwargs={
        "adbc.flight.sql.authorization_header": f"Bearer {dev.token}",
        "adbc.flight.sql.rpc.call_header.traceparent": f"00-{trace_id}-{client_span}-01",
    }) as conn, conn.cursor() as cur:
        cur.execute("SET omnisql.max_staleness = '0'; " + THREE_APP_JOIN)
        rows = cur.fetchall()
    assert rows

    def complete():
        spans = sink.trace(trace_id)
        names = [s["name"] for s in spans]
        return spans if "query" in names and "audit_write" in names else None

    spans = wait_for("the query's spans at the collector", complete)
    by_id = {s["spanId"]: s for s in spans}
    children = lambda parent: [s for s in spans if s.get("parentSpanId") == parent["spanId"]]  # noqa: E731

    [query] = [s for s in spans if s["name"] == "query"]
    assert query["parentSpanId"] == client_span, "the query span continues the client's span"
    assert query["service"] == "omnisql-dev"
    assert query["attrs"]["tenant"] == "demo" and query["attrs"]["principal"] == "demo-user"
    assert query["attrs"]["outcome"] == "ok" and query["attrs"]["query_id"]
    assert query["attrs"]["trace_id"] == trace_id

    under_query = [s["name"] for s in children(query)]
    assert "plan" in under_query and "audit_write" in under_query, under_query
    scans = [s for s in children(query) if s["name"] == "scan"]
    tables = {s["attrs"]["table"] for s in scans}
    assert {"issues", "users", "contact", "account", "user"} <= {t.split(".")[-1] for t in tables}, tables

    requests = [s for s in spans if s["name"] == "upstream_request"]
    assert {r["attrs"]["app"] for r in requests} >= {"GitHub", "Salesforce", "Slack"}, requests
    for r in requests:
        parent = by_id.get(r.get("parentSpanId"))
        assert parent is not None and parent["name"] in ("scan", "plan"), (r["name"], parent and parent["name"])
        assert r["attrs"]["endpoint"].startswith("/")
        assert r["attrs"]["cache_hit"] is False, "a fresh query goes upstream"
        assert r["attrs"]["status"] == "200" and r["attrs"]["bucket"], r["attrs"]
        assert float(r["attrs"]["waited_ms"]) >= 0
    # The trace went on with each upstream request: every app saw the query's trace id in `traceparent`.
    for app in ("github", "salesforce", "slack"):
        assert trace_id in dev.sandbox(app, "/_sandbox/stats")["trace_ids"], app
    # Every span of the query lies within it.
    start, end = int(query["startTimeUnixNano"]), int(query["endTimeUnixNano"])
    for s in spans:
        if s is not query and s["name"] != "admin_api":
            assert start <= int(s["startTimeUnixNano"]) and int(s["endTimeUnixNano"]) <= end + 5_000_000, s["name"]

    # The query's log line names its trace.
    logged = wait_for("the query's log line", lambda: [json.loads(line) for line in dev.log
                                                       if line.startswith("{") and trace_id in line])
    assert any(entry.get("fields", {}).get("message") == "query" and entry["span"]["query_id"] == query["attrs"]["query_id"]
               for entry in logged), logged


def test_admin_api_requests_continue_the_callers_trace(traced):
    dev, sink = traced
    trace_id, caller = secrets.token_hex(16), secrets.token_hex(8)
    req = urllib.request.Request(dev.endpoints["admin_api"] + "/v1/me", headers={
        "authorization": f"Bearer {dev.endpoints['operator_key']}", "traceparent": f"00-{trace_id}-{caller}-01"})
    urllib.request.urlopen(req, timeout=10).read()
    def evidence():
        # What to look at if it never comes: the exporter's own complaints, and what did arrive.
        with sink.lock:
            admin = [(x["traceId"], x["attrs"].get("route")) for x in sink.spans if x["name"] == "admin_api"]
            total = len(sink.spans)
        otel = [line.strip() for line in dev.log if "opentelemetry" in line.lower() or "otlp" in line.lower()][-20:]
        return f"\nspans received: {total}; admin_api spans: {admin[-10:]}\nexporter log lines: {otel}"

    # A batch may wait for an export that a loaded machine slows (up to the exporter's 10 s timeout).
    [span] = wait_for("the admin API span", lambda: sink.trace(trace_id), seconds=60.0, evidence=evidence)
    assert span["name"] == "admin_api" and span["parentSpanId"] == caller
    assert span["attrs"]["route"] == "/v1/me" and span["attrs"]["method"] == "GET" and int(span["attrs"]["status"]) == 200
    # The data plane's configuration arrived over the watch: a push span.
    with sink.lock:
        pushes = [s for s in sink.spans if s["name"] == "config_push"]
    assert pushes and pushes[0]["attrs"]["region"] == "local"
