"""Times the README's 3-app join through ADBC against `omnisql dev` with injected sandbox latency, with
pushdown on and off, and counts the upstream requests each run makes. Prints numbers; asserts nothing.

    e2e/.venv/bin/python e2e/bench_join.py [--latency-ms 100] [--runs 5]
"""

import argparse
import pathlib
import statistics
import subprocess
import tempfile
import time

import adbc_driver_flightsql.dbapi as flight_sql

from conftest import Dev, omnisql_binary
from test_flight_sql_clients import JOIN


class DevWith(Dev):
    def __init__(self, tmp, extra):
        self.extra = extra
        super().__init__(tmp)


def start(latency_ms, extra):
    tmp = pathlib.Path(tempfile.mkdtemp())
    endpoints = tmp / "endpoints.json"
    proc = subprocess.Popen([omnisql_binary(), "dev", "--flight-addr", "127.0.0.1:0", "--pg-addr", "127.0.0.1:0", "--endpoints-file", str(endpoints),
                             "--latency-ms", str(latency_ms), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "Ctrl-C stops it" in line:
            break
    d = Dev.__new__(Dev)
    d.proc, d.log, d.endpoints_file = proc, [], endpoints
    import json, threading
    d.endpoints = json.loads(endpoints.read_text())
    d.uri, d.token = d.endpoints["flight_sql"], d.endpoints["token"]
    threading.Thread(target=d._drain, daemon=True).start()
    return d


def measure(d, runs):
    conn = flight_sql.connect(d.uri, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {d.token}"})
    times, requests, rows = [], [], 0
    for _ in range(runs):
        for app in ("github", "salesforce", "slack"):
            d.sandbox(app, "/_sandbox/stats/reset", {})
        started = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute(JOIN)
            rows = cur.fetch_arrow_table().num_rows
        times.append(time.perf_counter() - started)
        requests.append({app: d.sandbox(app, "/_sandbox/stats")["total"] for app in ("github", "salesforce", "slack")})
    conn.close()
    return times, requests, rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency-ms", type=int, default=100)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    for label, extra in [("pushdown", []), ("no pushdown", ["--no-pushdown"])]:
        d = start(args.latency_ms, extra)
        try:
            times, requests, rows = measure(d, args.runs)
        finally:
            d.stop()
        first, rest = times[0], times[1:] or times
        print(f"{label:>12}: {rows} rows; first run {first*1000:.0f} ms; later runs median {statistics.median(rest)*1000:.0f} ms "
              f"(min {min(rest)*1000:.0f}, max {max(rest)*1000:.0f}); upstream requests per run: {requests[-1]} "
              f"(first run {requests[0]})")


if __name__ == "__main__":
    main()
