"""Peak memory of a data plane streaming every GitHub issue of a sandbox world to an ADBC client, to show
that memory stays bounded however large the result. Prints numbers; asserts nothing.

    e2e/.venv/bin/python e2e/bench_memory.py SCALE [DATA-PLANE FLAGS]   # SCALE 100: 20k issues; 500: 100k
"""

import pathlib
import sys
import tempfile
import time

import adbc_driver_flightsql.dbapi as flight_sql

from conftest import github_only_config, start_data_plane, start_sandbox

TOKEN = "bench-memory-key-0123456789"


def peak_rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return 0.0


def main():
    scale, extra = sys.argv[1], sys.argv[2:]  # extra: more data-plane flags, e.g. --cache-mib 0
    sandbox, apps = start_sandbox("--scale", scale)
    config = pathlib.Path(tempfile.mkdtemp()) / "dataplane.toml"
    config.write_text(github_only_config(apps["github"], "t", "p", TOKEN))
    plane, uri = start_data_plane(config, *extra)
    try:
        before = peak_rss_mib(plane.pid)
        conn = flight_sql.connect(uri, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {TOKEN}"})
        cur = conn.cursor()
        started = time.time()
        cur.execute("SELECT * FROM github.issues")
        rows = nbytes = 0
        for batch in cur.fetch_record_batch():
            rows += batch.num_rows
            nbytes += batch.nbytes
        print(f"scale {scale}: rows {rows}, arrow {nbytes / 1e6:.1f} MB, {time.time() - started:.1f}s; "
              f"data plane peak RSS before {before:.0f} MB, after {peak_rss_mib(plane.pid):.0f} MB")
    finally:
        plane.terminate()
        sandbox.terminate()


if __name__ == "__main__":
    main()
