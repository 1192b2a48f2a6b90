"""The `omnisql` binary as a user drives it: dev's endpoints file, `sql`, `data-plane`, `sandbox`, Ctrl-C."""

import json
import pathlib
import signal
import subprocess

import adbc_driver_flightsql.dbapi as flight_sql

from conftest import Dev, SlowGithub, github_only_config, omnisql_binary, start_data_plane, start_sandbox


def sql(dev, *args, stdin=None):
    endpoint = dev.uri.replace("grpc://", "http://")
    return subprocess.run([omnisql_binary(), "sql", "--endpoint", endpoint, "--token", dev.token, *args],
                          input=stdin, capture_output=True, text=True, timeout=60)


def test_endpoints_file_names_flight_sql_the_token_and_each_sandbox_app(dev):
    e = dev.endpoints
    assert e["flight_sql"].startswith("grpc://127.0.0.1:") and e["token"]
    assert set(e["github"]["credentials"]) == {"token"}
    assert set(e["salesforce"]["credentials"]) == {"client_id", "client_secret"}
    assert set(e["slack"]["credentials"]) == {"token"}
    for app in ("github", "salesforce", "slack"):
        assert e[app]["base_url"].startswith("http://127.0.0.1:")


def test_sql_command_prints_a_table_and_the_row_count(dev):
    out = sql(dev, "SELECT name FROM slack.channels WHERE name = 'general'")
    assert out.returncode == 0, out.stderr
    assert "| general |" in out.stdout and "1 row in" in out.stdout


def test_sql_command_browses_schemas_tables_and_columns(dev):
    out = sql(dev, "SHOW TABLES")
    assert out.returncode == 0, out.stderr
    assert "| salesforce" in out.stdout and "| account" in out.stdout, out.stdout
    out = sql(dev, "SELECT column_name, data_type FROM information_schema.columns "
                   "WHERE table_schema = 'slack' AND table_name = 'channels' ORDER BY ordinal_position")
    assert out.returncode == 0 and "| name " in out.stdout and "| is_private " in out.stdout, out.stdout


def test_ctrl_c_on_the_sql_command_stops_its_query_upstream(dev):
    endpoint = dev.uri.replace("grpc://", "http://")
    with SlowGithub(dev) as github:
        proc = subprocess.Popen([omnisql_binary(), "sql", "--endpoint", endpoint, "--token", dev.token,
                                 "SET omnisql.max_staleness = '0'; SELECT login, email FROM github.users"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        github.wait_until_asked()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode != 0 and "cancelled (Ctrl-C)" in err, err
        github.assert_stopped()


def test_sql_command_reports_errors_with_a_nonzero_exit(dev):
    out = sql(dev, "SELECT * FROM github.nope")
    assert out.returncode != 0
    assert "InvalidArgument" in out.stderr and "github.nope" in out.stderr


def test_sql_prompt_runs_statements_ended_by_semicolons(dev):
    out = sql(dev, stdin="SELECT count(*) AS n\nFROM slack.channels;\nSELECT 'second' AS s;\n\\q\n")
    assert out.returncode == 0, out.stderr
    assert "| 6 |" in out.stdout and "| second |" in out.stdout


def test_data_plane_serves_tenants_from_a_config_file(tmp_path):
    sandbox, apps = start_sandbox()
    plane = None
    try:
        config = tmp_path / "dataplane.toml"
        config.write_text(github_only_config(apps["github"], "acme", "analyst", "config-file-key-0123456789", connection="gh"))
        plane, uri = start_data_plane(config)
        conn = flight_sql.connect(uri, db_kwargs={"adbc.flight.sql.authorization_header": "Bearer config-file-key-0123456789"})
        with conn.cursor() as cur:
            cur.execute("SELECT full_name FROM gh.repos ORDER BY full_name")
            assert cur.fetch_arrow_table().column("full_name").to_pylist() == ["acme/api", "acme/cli", "acme/sdk", "acme/web"]
        conn.close()
    finally:
        for p in (plane, sandbox):
            if p:
                p.terminate()
                p.wait(timeout=10)


def test_data_plane_rejects_an_invalid_config_with_a_clear_message(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[[tenants]]\nid = "t"\n[[tenants.connections]]\nname = "Bad-Name"\nconnector = "github"\n')
    out = subprocess.run([omnisql_binary(), "data-plane", "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "connection name `Bad-Name` must be a lower-case SQL identifier" in out.stderr


def test_ctrl_c_stops_dev_cleanly(tmp_path):
    d = Dev(tmp_path)
    d.proc.send_signal(signal.SIGINT)
    assert d.proc.wait(timeout=15) == 0


def admin(dev, *args, key=None):
    env = {"OMNISQL_ADMIN_URL": dev.endpoints["admin_api"], "OMNISQL_ADMIN_KEY": key or dev.endpoints["operator_key"],
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([omnisql_binary(), "admin", *args], capture_output=True, text=True, timeout=30, env=env)
    return out.returncode, (json.loads(out.stdout) if out.stdout.strip() else None), out.stderr


def test_admin_command_manages_a_tenant_whose_key_then_queries_the_data_plane(dev):
    code, created, err = admin(dev, "create-tenant", "--id", "cli-co", "--name", "CLI Co", "--region", "local",
                               "--admin", "carla")
    assert code == 0, err
    carla = created["admin"]["key"]
    gh = dev.endpoints["github"]
    code, conn, err = admin(dev, "create-connection", "--tenant", "cli-co", "--name", "gh", "--connector", "github",
                            "--option", f"base_url={gh['base_url']}", "--option", f"token={gh['credentials']['token']}",
                            "--option", "orgs=acme", key=carla)
    assert code == 0, err
    assert conn["secret_options"] == ["token"] and gh["credentials"]["token"] not in json.dumps(conn)

    # The tenant admin's key reaches the data plane through the control plane's watch.
    endpoint = dev.uri.replace("grpc://", "http://")
    query = [omnisql_binary(), "sql", "--endpoint", endpoint, "--token", carla, "SELECT count(*) AS n FROM gh.repos"]
    for _ in range(100):
        out = subprocess.run(query, capture_output=True, text=True, timeout=30)
        if out.returncode == 0:
            break
    assert out.returncode == 0 and "| 4 |" in out.stdout, out.stderr

    # A validation error names the field and exits non-zero; another tenant is invisible to carla.
    code, _, err = admin(dev, "create-connection", "--tenant", "cli-co", "--name", "Bad Name", "--connector", "github",
                         key=carla)
    assert code != 0 and "name:" in err and "options.token" in err
    code, _, err = admin(dev, "list-connections", "--tenant", "demo", key=carla)
    assert code != 0 and "404" in err

    # Revoke carla's key: the data plane refuses it, and her queries are in the audit trail.
    code, keys, _ = admin(dev, "list-keys", "--tenant", "cli-co")
    assert code == 0
    code, _, err = admin(dev, "revoke-key", "--tenant", "cli-co", "--id", keys["items"][0]["id"])
    assert code == 0, err
    for _ in range(100):
        out = subprocess.run(query, capture_output=True, text=True, timeout=30)
        if "unknown or revoked" in out.stderr:
            break
    assert "unknown or revoked" in out.stderr
    for _ in range(50):
        code, events, _ = admin(dev, "audit", "--tenant", "cli-co", "--principal", "carla", "--outcome", "ok")
        if events and events["items"]:
            break
        subprocess.run(["sleep", "0.1"])
    assert events["items"][0]["tables"] == ["gh.repos"]
    code, verify, _ = admin(dev, "verify-audit", "--tenant", "cli-co")
    assert code == 0 and verify["valid"]


def test_connector_draft_writes_a_spec_from_an_openapi_document_and_compares_it(tmp_path):
    import tomllib

    root = pathlib.Path(__file__).parent.parent
    out = tmp_path / "slack-draft.toml"
    run = subprocess.run([omnisql_binary(), "connector", "draft", "--openapi", str(root / "sandbox/specs/slack-web-openapi-v2.json"),
                          "--name", "slack", "--operation", "GET /conversations.history", "--operation", "GET /users.list",
                          "--compare", str(root / "data-plane/connectors/slack/slack.toml"), "--out", str(out)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    spec = tomllib.loads(out.read_text())
    history = next(t for t in spec["table"] if t["path"] == "/api/conversations.history")
    assert history["records"] == "/messages" and history["pagination"]["param"] == "cursor"
    assert "messages (/api/conversations.history): columns" in run.stderr and "differences from the curated spec:" in run.stderr
    bad = subprocess.run([omnisql_binary(), "connector", "draft", "--openapi", str(root / "sandbox/specs/slack-web-openapi-v2.json"),
                          "--operation", "GET /no.such.method"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "no operation `GET /no.such.method`" in bad.stderr, bad.stderr
