"""OmniSQL through the Arrow Flight SQL JDBC driver and the PostgreSQL JDBC driver: a JUnit suite
(e2e/jdbc) built and run with Maven against the session's `omnisql dev`."""

import os
import pathlib
import shutil
import subprocess
import urllib.parse

HERE = pathlib.Path(__file__).resolve().parent


def test_the_jdbc_driver_connects_queries_binds_browses_and_uses_tls(dev, tmp_path):
    assert shutil.which("mvn"), "Maven is not installed: scripts/test installs it"
    from conftest import Dev
    from services import tls_pair

    def jdbc_url(uri: str, query: str) -> str:
        endpoint = urllib.parse.urlparse(uri)
        return f"jdbc:arrow-flight-sql://{endpoint.hostname}:{endpoint.port}/?{query}"

    def pg_url(d, query: str) -> str:
        return f"jdbc:postgresql://{d.endpoints['postgres']}/omnisql?{query}"

    ca, crt, key = tls_pair(tmp_path / "tls")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(ca)
    tls = Dev(tmp_path, "--flight-tls-cert", str(crt), "--flight-tls-key", str(key))
    # Built outside the source tree, so a run leaves nothing behind.
    build = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", HERE.parent / "target")) / "jdbc-e2e"
    try:
        result = subprocess.run(
            ["mvn", "-B", "-q", "test", f"-Domnisql.build.dir={build}",
             f"-Domnisql.jdbc.url={jdbc_url(dev.uri, 'useEncryption=false')}", f"-Domnisql.token={dev.token}",
             f"-Domnisql.jdbc.tls.url={jdbc_url(tls.uri, f'useEncryption=true&tlsRootCerts={ca_file}')}",
             f"-Domnisql.jdbc.tls.untrusted.url={jdbc_url(tls.uri, 'useEncryption=true')}",
             f"-Domnisql.pg.url={pg_url(dev, 'sslmode=disable')}",
             f"-Domnisql.pg.tls.url={pg_url(tls, f'sslmode=verify-full&sslrootcert={ca_file}')}",
             f"-Domnisql.pg.tls.untrusted.url={pg_url(tls, 'sslmode=verify-full')}",
             f"-Domnisql.tls.token={tls.token}", f"-Domnisql.github.url={dev.app('github')['base_url']}"],
            cwd=HERE / "jdbc", capture_output=True, text=True, timeout=900,
        )
    finally:
        tls.stop()
    reports = "".join(p.read_text() for p in (build / "surefire-reports").glob("*.txt")) if (build / "surefire-reports").exists() else ""
    assert result.returncode == 0, reports[-6000:] + result.stdout[-4000:] + result.stderr[-2000:]
    print(reports)
