"""OmniSQL through the Arrow Flight SQL JDBC driver: a JUnit suite (e2e/jdbc) built and run with Maven
against the session's `omnisql dev`."""

import os
import pathlib
import shutil
import subprocess
import urllib.parse

HERE = pathlib.Path(__file__).resolve().parent


def test_the_jdbc_driver_connects_queries_binds_and_browses(dev):
    assert shutil.which("mvn"), "Maven is not installed: scripts/test installs it"
    endpoint = urllib.parse.urlparse(dev.uri)
    url = f"jdbc:arrow-flight-sql://{endpoint.hostname}:{endpoint.port}/?useEncryption=false"
    # Built outside the source tree, so a run leaves nothing behind.
    build = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", HERE.parent / "target")) / "jdbc-e2e"
    result = subprocess.run(
        ["mvn", "-B", "-q", "test", f"-Domnisql.jdbc.url={url}", f"-Domnisql.token={dev.token}",
         f"-Domnisql.build.dir={build}"],
        cwd=HERE / "jdbc", capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
