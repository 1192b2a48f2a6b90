"""Control-plane benchmark: admin API latency and configuration propagation to a data plane.

    e2e/.venv/bin/python e2e/bench_control_plane.py [--runs 200] [--backend sqlite|postgres|both]

For each store backend it starts `omnisql control-plane` (Postgres runs with the moto KMS, SQLite with
the local key), a sandbox and an enrolled `omnisql data-plane`, then prints p50/p95/p99 of:
- admin API calls over one keep-alive HTTP connection: a read (list connections) and a write (create
  an API key, which also bumps the configuration revision);
- propagation: from the admin API's answer until the data plane logs `configuration applied` (read from
  its log as it is written), and until a fresh Flight SQL connection with a new key is first accepted /
  with a revoked key first refused (polling; each includes a connect and a query, printed separately).
"""

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
import pathlib

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from conftest import start_sandbox  # noqa: E402
from services import Moto, Postgres, Process, control_plane, data_plane, free_port, stop_all  # noqa: E402
from test_control_plane import run_query  # noqa: E402
from conftest import omnisql_binary  # noqa: E402,F401


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Api:
    def __init__(self, port: int, key: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port)
        self.key = key

    def call(self, method: str, path: str, body=None):
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None,
                          headers={"authorization": f"Bearer {self.key}", "content-type": "application/json"})
        resp = self.conn.getresponse()
        data = resp.read()
        assert 200 <= resp.status < 300, (path, resp.status, data)
        return json.loads(data) if data else None


def timed(f):
    started = time.perf_counter()
    out = f()
    return (time.perf_counter() - started) * 1000, out


def run(backend: str, runs: int) -> dict:
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f"omnisql-bench-cp-{backend}-"))
    pg = moto = sandbox = cp = dp = None
    try:
        sandbox, apps = start_sandbox()
        http_port, grpc_port, flight_port = free_port(), free_port(), free_port()
        operator_file = tmp / "operator.key"
        if backend == "postgres":
            pg, moto = Postgres(), Moto()
            cp = control_plane(http_port, grpc_port, pg.url, moto.endpoint, moto.create_key(), operator_file)
            kms = ["--kms", "aws-kms", "--kms-endpoint", moto.endpoint, "--kms-region", "us-east-1"]
        else:
            cp = Process(["control-plane", "--http-addr", f"127.0.0.1:{http_port}", "--grpc-addr", f"127.0.0.1:{grpc_port}",
                          "--data-dir", str(tmp / "cp"), "--bootstrap-key-file", str(operator_file)], "OmniSQL control plane:")
            kms = ["--kms", "local", "--kms-key-file", str(tmp / "cp" / "master.key")]
        api = Api(http_port, operator_file.read_text().strip())
        api.call("POST", "/v1/tenants", {"id": "acme", "name": "Acme", "region": "eu"})
        api.call("POST", "/v1/tenants/acme/principals", {"id": "ann", "kind": "user", "role": "tenant_member"})
        api.call("POST", "/v1/tenants/acme/connections", {
            "name": "github", "connector": "github",
            "options": {"base_url": apps["github"]["base_url"], "token": apps["github"]["credentials"]["token"], "orgs": "acme"}})
        token = api.call("POST", "/v1/enrollment-tokens", {"region": "eu"})["token"]
        if backend == "postgres":
            dp = data_plane(grpc_port, flight_port, tmp / "dp", moto.endpoint, token)
        else:
            dp = Process(["data-plane", "--control-plane", f"http://127.0.0.1:{grpc_port}", "--state-dir", str(tmp / "dp"),
                          "--flight-addr", f"127.0.0.1:{flight_port}", "--enrollment-token", token, *kms], "Flight SQL on")
        uri = f"grpc://127.0.0.1:{flight_port}"

        reads, writes = [], []
        for _ in range(runs):
            reads.append(timed(lambda: api.call("GET", "/v1/tenants/acme/connections"))[0])
            writes.append(timed(lambda: api.call("POST", "/v1/tenants/acme/api-keys", {"principal": "ann"}))[0])

        applied, grant, revoke = [], [], []
        for _ in range(max(5, runs // 10)):
            before = len(dp.log)
            created = api.call("POST", "/v1/tenants/acme/api-keys", {"principal": "ann"})
            t0 = time.perf_counter()
            applied.append((dp.wait_for_line("configuration applied", before) - t0) * 1000)
            while run_query(uri, created["key"], "SELECT 1") != "ok":
                pass
            grant.append((time.perf_counter() - t0) * 1000)
            before = len(dp.log)
            api.call("DELETE", f"/v1/tenants/acme/api-keys/{created['api_key']['id']}")
            t0 = time.perf_counter()
            applied.append((dp.wait_for_line("configuration applied", before) - t0) * 1000)
            while "unknown or revoked" not in run_query(uri, created["key"], "SELECT 1"):
                pass
            revoke.append((time.perf_counter() - t0) * 1000)
        poll = statistics.median(timed(lambda: run_query(uri, "omk_x" * 8, "SELECT 1"))[0] for _ in range(20))
        key = api.call("POST", "/v1/tenants/acme/api-keys", {"principal": "ann"})["key"]
        while run_query(uri, key, "SELECT 1") != "ok":
            pass
        ok = statistics.median(timed(lambda: run_query(uri, key, "SELECT 1"))[0] for _ in range(20))
        return {"backend": backend, "read": reads, "write": writes, "applied": applied, "grant": grant, "revoke": revoke, "poll_ms": poll, "ok_ms": ok}
    finally:
        stop_all(dp, cp, sandbox, moto, pg)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = ap.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    print(f"{'store':<9} {'measure':<44} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for b in backends:
        r = run(b, args.runs)
        rows = [("admin API read (list connections)", r["read"]), ("admin API write (create API key)", r["write"]),
                ("propagation: change applied on the data plane", r["applied"]),
                ("propagation: new key accepted by data plane", r["grant"]),
                ("propagation: revoked key refused by data plane", r["revoke"])]
        for name, xs in rows:
            print(f"{b:<9} {name:<44} {len(xs):>4} {pct(xs, 50):>8.1f} {pct(xs, 95):>8.1f} {pct(xs, 99):>8.1f}")
        print(f"{b:<9} (a poll: connect + refused query median {r['poll_ms']:.1f} ms, connect + accepted SELECT 1 median "
              f"{r['ok_ms']:.1f} ms; the propagation numbers include the last poll)")


if __name__ == "__main__":
    main()
