"""OmniSQL through pgx, Go's Postgres driver: a `go test` suite (e2e/go) against the session's `omnisql dev`,
its modules fetched through the Go module proxy."""

import os
import pathlib
import shutil
import subprocess

HERE = pathlib.Path(__file__).resolve().parent


def test_pgx_connects_queries_binds_browses_cancels_and_uses_tls(dev, tmp_path):
    assert shutil.which("go"), "Go is not installed"
    from conftest import Dev
    from services import tls_pair

    ca, crt, key = tls_pair(tmp_path / "tls")
    (tmp_path / "ca.pem").write_text(ca)
    tls = Dev(tmp_path, "--flight-tls-cert", str(crt), "--flight-tls-key", str(key))

    def dsn(d, mode: str) -> str:
        host, port = d.endpoints["postgres"].rsplit(":", 1)
        return f"host={host} port={port} user=demo dbname=omnisql password={d.token} {mode}"

    env = {
        **os.environ,
        "OMNISQL_PG_DSN": dsn(dev, "sslmode=disable"),
        "OMNISQL_PG_TLS_DSN": dsn(tls, f"sslmode=verify-full sslrootcert={tmp_path / 'ca.pem'}"),
        "OMNISQL_PG_UNTRUSTED_DSN": dsn(tls, "sslmode=verify-full"),
        "OMNISQL_GITHUB_URL": dev.app("github")["base_url"],
        "GOTOOLCHAIN": "local",  # the installed Go, never a download
    }
    try:
        result = subprocess.run(["go", "test", "-count=1", "-v", "./..."], cwd=HERE / "go", env=env,
                                capture_output=True, text=True, timeout=900)
    finally:
        tls.stop()
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert result.stdout.count("--- PASS") == 5, result.stdout
