"""The control plane and a data plane as separate processes, on real PostgreSQL and a real KMS-compatible
server (moto): sealed credentials opened by the data plane, revocation across processes, and the audit
trail through `kill -9` of the data plane and an outage of the control plane."""

import threading
import time

import pytest
from adbc_driver_flightsql import dbapi as flight_sql

from conftest import start_sandbox
from services import Admin, Moto, Postgres, control_plane, data_plane, free_port, stop_all


# The ADBC driver manager complains when a cursor of a failed connection is garbage-collected late.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def run_query(uri: str, key: str, sql: str) -> str:
    """'ok', or the error the client saw."""
    try:
        conn = flight_sql.connect(uri, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {key}"})
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                cur.fetch_arrow_table()
            return "ok"
        finally:
            conn.close()
    except Exception as e:  # noqa: BLE001 - every failure is recorded as the client saw it
        return f"error: {e}"


def all_events(admin: Admin, tenant: str) -> list[dict]:
    events, after = [], None
    while True:
        path = f"/v1/tenants/{tenant}/audit?limit=500" + (f"&after={after}" if after else "")
        page = admin.ok("GET", path)
        events += page["items"]
        after = page.get("next")
        if not after:
            return events


def test_control_plane_with_postgres_and_kms_survives_kill9_and_an_outage(tmp_path):
    pg, moto, sandbox, cp, dp = Postgres(), Moto(), None, None, None
    try:
        key_id = moto.create_key()
        sandbox, apps = start_sandbox()
        http, grpc, flight = free_port(), free_port(), free_port()
        operator_file = tmp_path / "operator.key"
        start_cp = lambda: control_plane(http, grpc, pg.url, moto.endpoint, key_id, operator_file)  # noqa: E731
        cp = start_cp()
        admin = Admin(f"http://127.0.0.1:{http}", operator_file.read_text().strip())

        admin.ok("POST", "/v1/tenants", {"id": "acme", "name": "Acme", "region": "eu"})
        admin.ok("POST", "/v1/tenants/acme/principals", {"id": "ann", "kind": "user", "role": "tenant_member"})
        created = admin.ok("POST", "/v1/tenants/acme/api-keys", {"principal": "ann"})
        key, key_ref = created["key"], created["api_key"]["id"]
        github_token = apps["github"]["credentials"]["token"]
        admin.ok("POST", "/v1/tenants/acme/connections", {
            "name": "github", "connector": "github",
            "options": {"base_url": apps["github"]["base_url"], "token": github_token, "orgs": "acme"}})
        # Sealed with the tenant's KMS key: the database holds no plaintext credential or API key.
        dump = pg.psql("SELECT row_to_json(c)::text FROM connections c") + pg.psql("SELECT row_to_json(k)::text FROM api_keys k")
        assert "sealed:v1:" in dump and github_token not in dump and key not in dump

        token = admin.ok("POST", "/v1/enrollment-tokens", {"region": "eu"})["token"]
        state = tmp_path / "dp-state"
        dp = data_plane(grpc, flight, state, moto.endpoint, token)
        uri = f"grpc://127.0.0.1:{flight}"
        deadline = time.monotonic() + 20
        while run_query(uri, key, "SELECT count(*) FROM github.repos") != "ok":
            assert time.monotonic() < deadline, "the data plane never served the tenant:\n" + "".join(dp.log[-20:])
            time.sleep(0.1)

        # A tenant's statement timeout set in the control plane reaches the data plane; a session cannot
        # raise it.
        admin.ok("PATCH", "/v1/tenants/acme", {"statement_timeout_seconds": 1})
        bomb = "SET omnisql.statement_timeout = '5s'; SELECT count(*) FROM generate_series(1, 5000000000)"
        deadline = time.monotonic() + 20
        while "past its timeout of 1 s" not in (outcome := run_query(uri, key, bomb)):
            assert time.monotonic() < deadline, outcome
        admin.ok("PATCH", "/v1/tenants/acme", {"statement_timeout_seconds": 120})

        # Load from three clients; kill -9 the data plane, stop the control plane, bring both back.
        results: dict[int, str] = {}
        counter = iter(range(1, 1_000_000))
        lock = threading.Lock()
        running = threading.Event()
        running.set()

        def client():
            while running.is_set():
                with lock:
                    n = next(counter)
                results[n] = run_query(uri, key, f"SELECT count(*) AS n, 'attempt-{n}' AS tag FROM github.repos")

        workers = [threading.Thread(target=client) for _ in range(3)]
        for w in workers:
            w.start()
        time.sleep(1.5)
        dp.kill9()
        time.sleep(0.3)
        cp.stop()
        time.sleep(0.5)
        dp = data_plane(grpc, flight, state, moto.endpoint)  # the control plane is down: serves from disk
        time.sleep(1.5)
        cp = start_cp()
        time.sleep(1.5)
        running.clear()
        for w in workers:
            w.join(timeout=60)

        answered = {n for n, r in results.items() if r == "ok"}
        failed = {n for n, r in results.items() if r != "ok"}
        assert len(answered) > 10, results

        # Every answered attempt is stored exactly once; a failed one at most once.
        deadline = time.monotonic() + 30
        while True:
            events = [e for e in all_events(admin, "acme") if "attempt-" in e["sql"]]
            tags = [int(e["sql"].split("'attempt-")[1].split("'")[0]) for e in events]
            if answered <= set(tags) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(tags) == len(set(tags)), "an audit event was stored twice"
        assert answered <= set(tags), f"missing events for answered attempts {sorted(answered - set(tags))[:10]}"
        assert set(tags) <= answered | failed
        by_tag = {int(e["sql"].split("'attempt-")[1].split("'")[0]): e for e in events}
        assert all(by_tag[n]["outcome"] == "ok" for n in answered)
        interrupted = sum(1 for e in events if e["outcome"] == "interrupted")
        reached = len(tags) - len(answered)
        verify = admin.ok("GET", "/v1/tenants/acme/audit/verify")
        assert verify["valid"], verify
        print(f"\nattempts {len(results)}: answered {len(answered)}, failed at the client {len(failed)} "
              f"(of which reached a data plane: {reached}, interrupted by kill -9: {interrupted}); "
              f"stored events {len(tags)} = answered {len(answered)} + reached-but-unanswered {reached}; "
              f"chain of {verify['events']} events valid")

        # Revocation across processes.
        started = time.monotonic()
        admin.ok("DELETE", f"/v1/tenants/acme/api-keys/{key_ref}")
        api_done = time.monotonic()
        while "unknown or revoked" not in run_query(uri, key, "SELECT 1"):
            assert time.monotonic() - started < 10, "the revocation did not reach the data plane within 10 s"
        print(f"revocation: admin call {1000 * (api_done - started):.0f} ms, refused by the data plane "
              f"{1000 * (time.monotonic() - api_done):.0f} ms later")
        planes = admin.ok("GET", "/v1/data-planes")
        assert planes[0]["region"] == "eu" and planes[0]["last_heartbeat_at"]
        # Heartbeats report when the data plane last accepted each key.
        deadline = time.monotonic() + 15
        while not [k for k in admin.ok("GET", "/v1/tenants/acme/api-keys")["items"] if k["id"] == key_ref][0]["last_used_at"]:
            assert time.monotonic() < deadline, "the key's last use never reached the control plane"
            time.sleep(0.5)
    finally:
        stop_all(dp, cp, sandbox, moto, pg)
