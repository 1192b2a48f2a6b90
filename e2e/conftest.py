"""Starts `omnisql dev` once per session, as a user would, and hands tests its endpoints."""

import json
import os
import pathlib
import subprocess
import threading
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def omnisql_binary() -> str:
    if os.environ.get("OMNISQL_BIN"):
        return os.environ["OMNISQL_BIN"]
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return str(target / "debug" / "omnisql")


class SlowGithub:
    """GitHub answering each request after 1.5 s, its request count reset: a scan of `github.users` then
    takes 50+ requests over a minute, long enough to cancel. Use as `with SlowGithub(dev) as gh:`."""

    def __init__(self, dev: "Dev"):
        self.dev = dev

    def __enter__(self) -> "SlowGithub":
        self.dev.sandbox("github", "/_sandbox/settings", {"latency": {"fixed_ms": 1500, "jitter_pct": 0}})
        self.dev.sandbox("github", "/_sandbox/stats/reset", {})
        return self

    def __exit__(self, *exc):
        self.dev.sandbox("github", "/_sandbox/settings", {"latency": {"fixed_ms": 0, "jitter_pct": 0}})

    def requests(self) -> int:
        return self.dev.sandbox("github", "/_sandbox/stats")["total"]

    def wait_until_asked(self, seconds: float = 20):
        deadline = time.monotonic() + seconds
        while self.requests() == 0:
            assert time.monotonic() < deadline, "the query never reached GitHub"
            time.sleep(0.05)

    def assert_stopped(self):
        """No more than what was already in flight arrives in two latency periods, far from a full scan."""
        at_cancel = self.requests()
        time.sleep(3.5)
        after = self.requests()
        assert after - at_cancel <= 16, (at_cancel, after)
        assert after < 40, f"a full scan needs 50+ requests, the cancelled one made {after}"


class Dev:
    """A running `omnisql dev` and what its endpoints file says."""

    def __init__(self, tmp: pathlib.Path, *flags: str, env: dict | None = None):
        self.endpoints_file = tmp / "endpoints.json"
        self.log: list[str] = []
        self.proc = subprocess.Popen(
            [omnisql_binary(), "dev", "--flight-addr", "127.0.0.1:0", "--pg-addr", "127.0.0.1:0",
             "--endpoints-file", str(self.endpoints_file), *flags],
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        # The banner is printed once everything listens; read up to it, then keep draining the log.
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            if "Ctrl-C stops it" in line:
                break
        else:
            raise RuntimeError("omnisql dev exited before it was ready:\n" + "".join(self.log))
        threading.Thread(target=self._drain, daemon=True).start()
        self.endpoints = json.loads(self.endpoints_file.read_text())
        self.uri = self.endpoints["flight_sql"]
        self.token = self.endpoints["token"]

    def _drain(self):
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    def app(self, name: str) -> dict:
        return self.endpoints[name]

    def sandbox(self, app: str, path: str, body: dict | None = None) -> dict:
        """GET (or POST `body` to) a sandbox control route of one app."""
        url = self.endpoints[app]["base_url"] + path
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_sandbox(*flags: str) -> tuple[subprocess.Popen, dict]:
    """`omnisql sandbox` on free ports; returns the process and the endpoints it printed (one JSON document)."""
    proc = subprocess.Popen([omnisql_binary(), "sandbox", "--github-port", "0", "--salesforce-port", "0", "--slack-port", "0",
                             "--jira-port", "0", "--stripe-port", "0", "--hubspot-port", "0", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    text = ""
    for line in proc.stdout:
        text += line
        if line.startswith("}"):
            break
    return proc, json.loads(text)


def github_only_config(github: dict, tenant: str, principal: str, token: str, connection: str = "github") -> str:
    """A data-plane TOML with one tenant, one API key and one GitHub connection to the sandbox."""
    return f"""
[[tenants]]
id = "{tenant}"
[[tenants.api_keys]]
principal = "{principal}"
token = "{token}"
[[tenants.connections]]
name = "{connection}"
connector = "github"
version = "1.0.0"
options = {{ base_url = "{github['base_url']}", token = "{github['credentials']['token']}", orgs = "acme" }}
"""


def start_data_plane(config: pathlib.Path, *flags: str) -> tuple[subprocess.Popen, str]:
    """`omnisql data-plane` on a free port; returns the process and its Flight SQL URI."""
    state = config.parent / f"state-{config.stem}"
    proc = subprocess.Popen([omnisql_binary(), "data-plane", "--config", str(config), "--flight-addr", "127.0.0.1:0",
                             "--state-dir", str(state), *flags],
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    uri = None
    for line in proc.stderr:
        if "Flight SQL on" in line:
            uri = line.strip().split("Flight SQL on ")[1]
        if "Postgres protocol on" in line:
            # With `--pg-addr`: where it listens, e.g. `127.0.0.1:5432`.
            proc.pg_addr = line.split("Postgres protocol on ")[1].split()[0]
        if "health endpoints on " in line:
            # With `--health-addr`: `http://127.0.0.1:PORT`, serving /live, /ready and /metrics.
            proc.health_url = line.split("health endpoints on ")[1].split()[0]
        if uri and ("--pg-addr" not in flags or hasattr(proc, "pg_addr")) and (
                "--health-addr" not in flags or hasattr(proc, "health_url")):
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, uri
    raise RuntimeError("the data plane exited before it listened")


@pytest.fixture(scope="session")
def dev(tmp_path_factory):
    d = Dev(tmp_path_factory.mktemp("dev"))
    yield d
    d.stop()


@pytest.fixture()
def conn(dev):
    import adbc_driver_flightsql.dbapi as flight_sql

    c = flight_sql.connect(dev.uri, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {dev.token}"})
    yield c
    c.close()


# The README's question: open GitHub issues from customers (Salesforce contacts) and who owns their account
# (Salesforce user, found in Slack).
THREE_APP_JOIN = """
    SELECT i.repo_full_name, i.number, c.email AS customer, su.real_name AS owner
    FROM github.issues i
    JOIN github.users gu ON gu.login = i.user_login
    JOIN salesforce.contact c ON c.email = gu.email
    JOIN salesforce.account a ON a.id = c.account_id
    JOIN salesforce."user" u ON u.id = a.owner_id
    JOIN slack.users su ON su.email = u.email
    WHERE i.state = 'open' AND NOT i.is_pull_request
"""
