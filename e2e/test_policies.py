"""Row- and column-level security end to end: principals with groups and a Rego policy created through the
admin API, enforced by the data plane for Flight SQL clients, checked against an oracle that applies the
same rules in Python to the sandbox's raw API data; then an attack suite of generated attempts by a
restricted principal to see a filtered row or a masked value."""

import json
import os
import pathlib
from collections import Counter
import urllib.parse
import urllib.request

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import pytest

from conftest import Dev
from services import Admin, OidcIssuer, get_json, raw_salesforce

# The example of docs/policies.md: sales sees GitHub and Salesforce but not Slack, US accounts only and
# not their revenue, contacts' emails masked; admins everything; others nothing.
ROOT = pathlib.Path(__file__).resolve().parent.parent
POLICY = (ROOT / "docs/policies/sales-access.rego").read_text()


# A second module of the same package: partners read Salesforce, each only the accounts of the country
# its principal's `country` attribute names. Modules combine (`allow` is true if any rule says so).
PARTNERS = r"""
package omnisql
import rego.v1

partner if "partners" in input.context.identity.groups

allow if {
    partner
    input.action.operation in {"FilterTables", "FilterColumns"}
    input.action.resource.table.schemaName == "salesforce"
}

rowFilters contains {"expression": sprintf("billing_country = '%s'", [input.context.principal.attributes.country])} if {
    partner
    input.action.resource.table.tableName == "account"
}
"""


class Opa:
    """A real OPA server (built by scripts/tools) holding the tenant's policies and docs/policies/opa-batch.rego."""

    def __init__(self, tmp: pathlib.Path, *modules: str):
        import subprocess
        from services import free_port, wait_for_port

        binary = pathlib.Path(os.environ.get("OMNISQL_TOOLS_DIR", "/var/tmp/omnisql-tools")) / "bin" / "opa"
        if not binary.exists():
            pytest.fail("OPA is not built: run scripts/tools (scripts/test does)")
        files = []
        for i, text in enumerate([*modules, (ROOT / "docs/policies/opa-batch.rego").read_text()]):
            f = tmp / f"module{i}.rego"
            f.write_text(text)
            files.append(str(f))
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([str(binary), "run", "--server", "--addr", f"127.0.0.1:{port}", *files],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(port)

    def batch_requests(self) -> int:
        """Decision requests OPA itself counted (its Prometheus metrics), not the data plane's own count."""
        text = urllib.request.urlopen(self.url + "/metrics", timeout=10).read().decode()
        return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
                   if line.startswith("http_request_duration_seconds_count{") and 'handler="v1/data"' in line)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


PRINCIPALS = (("sam", ["sales"], {}), ("ada", ["admins"], {}), ("nick", [], {}), ("ula", ["partners"], {"country": "UK"}))


class Setup:
    def __init__(self, dev: Dev):
        self.dev = dev
        self.admin = Admin(dev.endpoints["admin_api"], dev.endpoints["operator_key"])
        self.keys = {}
        for pid, groups, attributes in PRINCIPALS:
            self.admin.ok("POST", "/v1/tenants/demo/principals",
                          {"id": pid, "kind": "user", "role": "tenant_member", "groups": groups, "attributes": attributes})
            self.keys[pid] = self.admin.ok("POST", "/v1/tenants/demo/api-keys", {"principal": pid})["key"]
        self.admin.ok("PUT", "/v1/tenants/demo/policies/access", {"rego": POLICY})
        self.admin.ok("PUT", "/v1/tenants/demo/policies/partners", {"rego": PARTNERS})
        accounts = raw_salesforce(dev, "SELECT Id, Name, BillingCountry FROM Account")
        contacts = raw_salesforce(dev, "SELECT Id, Email, AccountId FROM Contact")
        self.us_accounts = {a["Id"] for a in accounts if a["BillingCountry"] == "USA"}
        self.uk_accounts = {a["Id"] for a in accounts if a["BillingCountry"] == "UK"}
        self.other_accounts = {a["Id"]: a["Name"] for a in accounts if a["BillingCountry"] != "USA"}
        self.emails = {c["Email"] for c in contacts if c["Email"]}
        self.contacts = contacts
        sl = dev.app("slack")
        members = get_json(sl["base_url"] + "/api/users.list?limit=1000", {"authorization": f"Bearer {sl['credentials']['token']}"})
        # The workspace's own bot is called OmniSQL, like the product in every error message: not a secret.
        self.slack_values = [v for m in members["members"] for v in (m["id"], m["profile"]["real_name"]) if v.lower() != "omnisql"]
        assert self.us_accounts and self.other_accounts and self.emails and self.slack_values

    # When set, principals sign in with what this returns (an OIDC token) instead of their API keys.
    token_for = None

    def connect(self, pid: str):
        secret = self.token_for(pid) if self.token_for else self.keys[pid]
        return flight_sql.connect(self.dev.uri, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {secret}"})

    def query(self, pid: str, sql: str, params=None) -> list[tuple]:
        with self.connect(pid) as c, c.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    # The test's OIDC issuer is local and plain http (production issuers must be https); its OPA servers
    # listen on 127.0.0.1, which the data plane's operator allows.
    dev = Dev(tmp_path_factory.mktemp("policies"), "--oidc-allow-http", "--opa-allow-url", "http://127.0.0.1:")
    try:
        s = Setup(dev)
        # The policy reaches the data plane with the tenant's next configuration.
        import time
        deadline = time.monotonic() + 15
        while True:
            try:
                s.query("sam", "SELECT name FROM slack.users LIMIT 1")
            except adbc_driver_manager.Error:
                break
            assert time.monotonic() < deadline, "the policy never reached the data plane"
            time.sleep(0.1)
        yield s
    finally:
        dev.stop()


def admin_cli(s: Setup, *args: str) -> str:
    import subprocess
    from conftest import omnisql_binary
    out = subprocess.run([omnisql_binary(), "admin", "--url", s.dev.endpoints["admin_api"], "--key",
                          s.dev.endpoints["operator_key"], *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def revision_is(s: Setup, expected: str):
    """Waits until the data plane applies the tenant's new configuration: its audit events say so."""
    import time
    since = int(time.time() * 1000)
    deadline = time.monotonic() + 15
    while True:
        try:
            s.query("ada", "SELECT 1 FROM github.repos LIMIT 1")
        except adbc_driver_manager.Error:
            pass
        events = s.admin.ok("GET", f"/v1/tenants/demo/audit?principal=ada&from={since}")["items"]
        if any(e.get("policy_revision") == expected for e in events):
            return
        assert time.monotonic() < deadline, [e.get("policy_revision") for e in events]
        time.sleep(0.2)


@pytest.fixture(scope="module")
def backends(setup, tmp_path_factory):
    """A real OPA server with the tenant's policies, and a real OIDC issuer."""
    opa = Opa(tmp_path_factory.mktemp("opa"), POLICY, PARTNERS)
    issuer = OidcIssuer()
    issuer.new_key("k1")
    yield opa, issuer
    opa.stop()
    issuer.stop()


@pytest.fixture(params=["rego", "opa", "oidc"])
def mode(request, setup, backends):
    """How decisions are made and principals sign in: the stored Rego policies evaluated in-process with API
    keys; the tenant's OPA server deciding; or principals signing in with OIDC tokens (groups in the token)."""
    s, (opa, issuer) = setup, backends
    if request.param == "opa":
        admin_cli(s, "set-opa", "--tenant", "demo", "--url", opa.url)
        revision_is(s, f"opa:{opa.url}/v1/data/omnisql/batch")
    if request.param == "oidc":
        admin_cli(s, "set-oidc", "--tenant", "demo", "--issuer", issuer.url, "--audience", "omnisql",
                  "--principal-claim", "email")
        groups = {pid: g for pid, g, _ in PRINCIPALS}
        s.token_for = lambda pid: issuer.token("k1", email=pid, groups=groups[pid])
        import time
        deadline = time.monotonic() + 15
        while True:
            try:
                s.query("ada", "SELECT 1")
                break
            except adbc_driver_manager.Error as e:
                assert time.monotonic() < deadline, str(e)
                time.sleep(0.2)
    try:
        yield request.param
    finally:
        s.token_for = None
        if request.param == "opa":
            admin_cli(s, "remove-opa", "--tenant", "demo")
            revision_is(s, "access@1,partners@1")
        if request.param == "oidc":
            admin_cli(s, "remove-oidc", "--tenant", "demo")


def mask(email: str) -> str:
    return "***" + email[-4:]


def test_each_principal_sees_what_the_oracle_says(setup, mode):
    s = setup
    # (principal, query) -> the expected rows, computed from the raw API data with the policy's rules.
    cases = [
        ("sam", "SELECT id FROM salesforce.account", [(a,) for a in s.us_accounts]),
        ("sam", "SELECT id FROM salesforce.account WHERE billing_country <> 'USA'", []),
        ("sam", "SELECT email FROM salesforce.contact", [(mask(c["Email"]),) for c in s.contacts]),
        ("sam", "SELECT c.id FROM salesforce.contact c JOIN salesforce.account a ON a.id = c.account_id",
         [(c["Id"],) for c in s.contacts if c["AccountId"] in s.us_accounts]),
        ("ada", "SELECT id FROM salesforce.account", [(a,) for a in s.us_accounts | set(s.other_accounts)]),
        ("ada", "SELECT email FROM salesforce.contact", [(c["Email"],) for c in s.contacts]),
        ("ula", "SELECT id FROM salesforce.account", [(a,) for a in s.uk_accounts]),
        ("ula", "SELECT email FROM salesforce.contact", [(mask(c["Email"]),) for c in s.contacts]),
        ("ula", "SELECT a.id FROM salesforce.account a JOIN salesforce.contact c ON c.account_id = a.id",
         [(c["AccountId"],) for c in s.contacts if c["AccountId"] in s.uk_accounts]),
    ]
    for principal, sql, expected in cases:
        # Rows as a multiset: every row, as often as the oracle has it.
        assert Counter(s.query(principal, sql)) == Counter(expected), f"{principal}: {sql}"
    # Refusals: the table named, PermissionDenied.
    refused = [("sam", "SELECT * FROM slack.users"), ("nick", "SELECT id FROM github.repos"),
               ("nick", "SELECT id FROM salesforce.account"), ("sam", "SELECT annual_revenue FROM salesforce.account"),
               ("ula", "SELECT id FROM github.repos")]
    for principal, sql in refused:
        with pytest.raises(adbc_driver_manager.Error) as e:
            s.query(principal, sql)
        if "annual_revenue" in sql:
            assert "annual_revenue" in str(e.value), e.value  # a hidden column does not exist for them
        else:
            assert "access denied" in str(e.value) and "(PermissionDenied;" in str(e.value), e.value
    print(f"conformance ({mode}): {len(cases)} row checks, {len(refused)} refusals")


def test_a_refusal_is_audited_as_denied_with_the_table_and_the_policy_revision(setup):
    import time
    s = setup
    since = int(time.time() * 1000)
    s.query("sam", "SELECT id FROM github.repos LIMIT 1")
    with pytest.raises(adbc_driver_manager.Error):
        s.query("sam", "SELECT real_name FROM slack.users")
    deadline = time.monotonic() + 15
    while True:
        events = s.admin.ok("GET", f"/v1/tenants/demo/audit?principal=sam&from={since}")["items"]
        hit = [e for e in events if e["outcome"] == "denied" and "slack.users" in e["tables"] and "real_name" in e["sql"]]
        ok = [e for e in events if e["outcome"] == "ok"]
        if hit and ok:
            break
        assert time.monotonic() < deadline, events
        time.sleep(0.2)
    assert hit[0]["policy_revision"] == "access@1,partners@1", hit[0]
    assert [e["policy_revision"] for e in ok] == ["access@1,partners@1"], ok
    assert s.admin.ok("GET", "/v1/tenants/demo/audit/verify")["valid"]


def attempts(s: Setup):
    """Generated attempts by `sam` to see a non-US account or a real email address, in every SQL shape."""
    other_ids = sorted(s.other_accounts)[:20]
    emails = sorted(s.emails)[:24]
    for aid in other_ids:
        name = s.other_accounts[aid].replace("'", "''")
        for sql in [
            f"SELECT id, name FROM salesforce.account WHERE id = '{aid}'",
            f"SELECT * FROM salesforce.account WHERE name = '{name}'",
            f"WITH a AS (SELECT * FROM salesforce.account) SELECT id FROM a WHERE id = '{aid}'",
            f"SELECT id FROM (SELECT id FROM salesforce.account) t WHERE id = '{aid}'",
            f"SELECT id FROM salesforce.account WHERE id = '{aid}' UNION SELECT id FROM salesforce.account WHERE id = '{aid}'",
            f"SELECT c.id, c.account_id FROM salesforce.contact c JOIN salesforce.account a ON a.id = c.account_id WHERE a.id = '{aid}'",
            f"SELECT count(*) FROM salesforce.account WHERE id = '{aid}'",
            f"SELECT id FROM salesforce.account WHERE id IN ('{aid}') OR billing_country IS NULL OR billing_country <> 'USA'",
            f"SELECT id FROM salesforce.account WHERE 1 / (CASE WHEN id = '{aid}' THEN 0 ELSE 1 END) = 1",
            f"SELECT CAST(name AS INT) FROM salesforce.account WHERE id = '{aid}'",
            f"EXPLAIN ANALYZE SELECT * FROM salesforce.account WHERE id = '{aid}'",
            f"SELECT id FROM salesforce.account WHERE id > '{aid}' ORDER BY id LIMIT 1000",
            f"SELECT array_agg(id) FROM salesforce.account WHERE id <= '{aid}'",
            f"SELECT id FROM salesforce.account a WHERE EXISTS (SELECT 1 FROM salesforce.contact c WHERE c.account_id = '{aid}' AND a.id = c.account_id)",
        ]:
            yield sql, None
        yield "SELECT id FROM salesforce.account WHERE id = $1", [aid]
        yield "SELECT name FROM salesforce.account WHERE id = $1 OR name = $2", [aid, s.other_accounts[aid]]
    for email in emails:
        local = email.split("@")[0].replace("'", "''")
        for sql in [
            f"SELECT id FROM salesforce.contact WHERE email = '{email}'",
            f"SELECT email FROM salesforce.contact WHERE email LIKE '{local}%'",
            f"SELECT CAST(email AS INT) FROM salesforce.contact WHERE id IS NOT NULL",
            f"SELECT CAST(email AS DATE) FROM salesforce.contact",
            f"SELECT 1 / (CASE WHEN email = '{email}' THEN 0 ELSE 1 END) FROM salesforce.contact",
            f"SELECT c.email, u.email FROM salesforce.contact c JOIN github.users u ON lower(u.email) = lower(c.email)",
            f"SELECT email FROM salesforce.contact ORDER BY email",
            f"SELECT max(email), min(email), string_agg(email, ',') FROM salesforce.contact",
            f"SELECT substr(email, 1, 100), length(email), md5(email) FROM salesforce.contact",
            f"WITH e AS (SELECT email FROM salesforce.contact) SELECT * FROM e WHERE email LIKE '%{local}%'",
            f"SELECT email FROM salesforce.contact UNION ALL SELECT email FROM github.users WHERE email = '{email}'",
            f"EXPLAIN SELECT email FROM salesforce.contact WHERE email = '{email}'",
            f"SELECT to_timestamp(email) FROM salesforce.contact",
            f"SELECT arrow_cast(email, 'Int64') FROM salesforce.contact",
            f"SELECT regexp_replace(email, '\\*', '') FROM salesforce.contact",
            f"SELECT email::BIGINT + 1 FROM salesforce.contact",
        ]:
            yield sql, None
        yield "SELECT id FROM salesforce.contact WHERE email = $1", [email]
    # Tables and columns the seller may not see, by every name and catalog.
    for sql in [
        "SELECT * FROM slack.users", "SELECT * FROM slack.messages", "SELECT * FROM omnisql.slack.channels",
        "SELECT annual_revenue FROM salesforce.account", "SELECT a.annual_revenue FROM omnisql.salesforce.account a",
        "SELECT * FROM datafusion.slack.users", "SELECT * FROM information_schema.columns WHERE column_name = 'annual_revenue'",
        "SELECT * FROM information_schema.tables WHERE table_schema = 'slack'", "SHOW TABLES",
        "SELECT * FROM omnisql.cache_stats", "SELECT sql, error FROM omnisql.api_requests",
        "SELECT * FROM omnisql.api_requests WHERE principal = 'ada'",
    ]:
        yield sql, None


def leaked(s: Setup, text: str, asked: str) -> list[str]:
    """Protected values in an answer or error that the attacker had not itself sent (EXPLAIN, errors and
    the query log echo the attacker's own literals)."""
    secrets = list(s.other_accounts) + list(s.other_accounts.values()) + list(s.emails) + s.slack_values
    low, asked = text.lower(), asked.lower()
    return [v for v in secrets if v and v.lower() in low and v.lower() not in asked]


def test_attack_suite_finds_no_leak(setup, mode):
    s = setup
    # An admin's queries and their errors hold raw values; the seller must not read them back.
    victim = sorted(s.emails)[-1]
    s.query("ada", f"SELECT id FROM salesforce.contact WHERE email = '{victim}'")
    with pytest.raises(adbc_driver_manager.Error):
        s.query("ada", "SELECT CAST(email AS INT) FROM salesforce.contact")
    count, leaks, refused = 0, [], 0
    asked = ""  # everything the seller has sent: its own queries come back from omnisql.api_requests
    with s.connect("sam") as conn:
        for sql, params in attempts(s):
            count += 1
            asked += sql + json.dumps(params)
            try:
                with conn.cursor() as cur:
                    cur.execute(sql, params)
                    text = json.dumps(cur.fetchall(), default=str)
            except adbc_driver_manager.Error as e:
                refused += 1
                text = str(e)
            for what in leaked(s, text, asked):
                leaks.append((sql, params, what))
    print(f"attack suite ({mode}): {count} attempts, {refused} refused with an error, {len(leaks)} leaks")
    assert leaks == [], leaks[:5]
    assert count >= 500, count


def test_explain_access_says_what_a_principal_sees_and_why(setup):
    s = setup
    account = s.admin.ok("GET", "/v1/tenants/demo/principals/sam/access?table=salesforce.account")
    assert (account["decision"], account["policy_revision"]) == ("allowed", "access@1,partners@1"), account
    assert account["row_filters"] == ["billing_country = 'USA'"], account
    slack = s.admin.ok("GET", "/v1/tenants/demo/principals/sam/access?table=slack.users")
    assert slack["decision"] == "denied" and "slack.users" in slack["reason"], slack
    issues = s.admin.ok("GET", "/v1/tenants/demo/principals/ada/access?table=github.issues")
    assert issues["decision"] == "allowed" and issues["columns_known"] and issues["masks"] == {}, issues
    # The same from the shell.
    import subprocess
    from conftest import omnisql_binary
    out = subprocess.run([omnisql_binary(), "admin", "--url", s.dev.endpoints["admin_api"], "--key", s.dev.endpoints["operator_key"],
                          "explain-policy", "--tenant", "demo", "--principal", "nick", "--table", "github.repos"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and '"decision": "denied"' in out.stdout, out.stdout + out.stderr


def test_flight_sql_catalog_calls_show_only_what_the_policy_allows(setup):
    s = setup
    with s.connect("sam") as conn:
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        schemas = {sc["db_schema_name"]: {t["table_name"] for t in sc["db_schema_tables"] or []}
                   for c in objects for sc in c["catalog_db_schemas"]}
        assert not schemas.get("slack"), schemas.get("slack")
        assert {"account", "contact"} <= schemas["salesforce"] and "issues" in schemas["github"]
        account = conn.adbc_get_table_schema("account", db_schema_filter="salesforce")
        assert "billing_country" in account.names and "annual_revenue" not in account.names, account.names
    with s.connect("ada") as conn:
        assert "annual_revenue" in conn.adbc_get_table_schema("account", db_schema_filter="salesforce").names


def test_oidc_tokens_sign_principals_in_to_flight_sql_and_the_admin_api(setup):
    """A tenant trusts a real local issuer: its tokens sign in over Flight SQL (ADBC) as the principal its
    `email` claim names, with the token's groups driving the policy, plus the attributes the tenant gave that
    principal; expired, foreign-audience and unknown-key tokens are refused; a rotated key is picked up; the
    admin API accepts tokens of existing principals only."""
    import time

    s = setup
    issuer = OidcIssuer()
    try:
        issuer.new_key("k1")
        trust = {"issuer": issuer.url, "audience": "omnisql", "principal_claim": "email"}
        import subprocess
        from conftest import omnisql_binary
        out = subprocess.run([omnisql_binary(), "admin", "--url", s.dev.endpoints["admin_api"], "--key",
                              s.dev.endpoints["operator_key"], "set-oidc", "--tenant", "demo", "--issuer", issuer.url,
                              "--audience", "omnisql", "--principal-claim", "email"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and '"groups_claim": "groups"' in out.stdout, out.stdout + out.stderr
        assert s.admin.ok("GET", "/v1/tenants/demo/oidc")["issuer"] == issuer.url
        status, body = s.admin.call("PUT", "/v1/tenants/demo/oidc", {**trust, "issuer": "file:///etc/passwd"})
        assert status == 422 and "https" in json.dumps(body), body

        def query(token: str, sql: str) -> list[tuple]:
            with flight_sql.connect(s.dev.uri, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {token}"}) as c, \
                    c.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall()

        seller = issuer.token("k1", email="sam.sso@acme.example", groups=["sales"])
        # The trust reaches the data plane with the tenant's next configuration.
        deadline = time.monotonic() + 15
        while True:
            try:
                rows = query(seller, "SELECT id FROM salesforce.account")
                break
            except adbc_driver_manager.Error as e:
                assert time.monotonic() < deadline, str(e)
                time.sleep(0.2)
        first_fetch = time.monotonic()
        # Not a principal the tenant created, yet the token's group makes the sales policy apply: US only.
        assert sorted(rows) == sorted((a,) for a in s.us_accounts)
        # `ula` exists with attribute country=UK; the token adds group `partners`: UK accounts only.
        partner = issuer.token("k1", email="ula", groups=["partners"])
        assert sorted(query(partner, "SELECT id FROM salesforce.account")) == sorted((a,) for a in s.uk_accounts)
        # The same token is a password over the Postgres protocol: the same principal and policy.
        import psycopg
        host, port = s.dev.endpoints["postgres"].rsplit(":", 1)
        with psycopg.connect(f"host={host} port={port} user=sso dbname=omnisql sslmode=disable password={seller}") as pg:
            assert sorted(pg.execute("SELECT id FROM salesforce.account").fetchall()) == sorted((a,) for a in s.us_accounts)
        # No groups: the policy allows nothing.
        with pytest.raises(adbc_driver_manager.Error, match="access denied"):
            query(issuer.token("k1", email="nobody@acme.example"), "SELECT id FROM salesforce.account")

        refusals = {
            "expired": issuer.token("k1", ttl=-120, email="sam.sso@acme.example", groups=["sales"]),
            "audience": issuer.token("k1", audience="another-app", email="sam.sso@acme.example", groups=["sales"]),
            "unknown key": (issuer.new_key("stranger", publish=False),
                            issuer.token("stranger", email="sam.sso@acme.example", groups=["sales"]))[1],
            "no principal claim": issuer.token("k1", groups=["sales"]),
        }
        expected = {"expired": "Expired", "audience": "no tenant", "unknown key": "stranger",
                    "no principal claim": "`email`"}
        for what, token in refusals.items():
            with pytest.raises(adbc_driver_manager.Error) as e:
                query(token, "SELECT 1")
            assert "unauthenticated" in str(e.value).lower() and expected[what] in str(e.value), (what, str(e.value))

        # Audit events name the token's principal.
        deadline = time.monotonic() + 15
        while not s.admin.ok("GET", "/v1/tenants/demo/audit?principal=sam.sso@acme.example&outcome=ok")["items"]:
            assert time.monotonic() < deadline
            time.sleep(0.2)

        # The admin API: `ada` exists (tenant_member) and may read her tenant with a token; the SSO-only
        # seller is not a principal of the tenant and is refused, saying so.
        admin_ada = Admin(s.dev.endpoints["admin_api"], issuer.token("k1", email="ada"))
        assert admin_ada.ok("GET", "/v1/tenants/demo")["id"] == "demo"
        status, body = Admin(s.dev.endpoints["admin_api"], seller).call("GET", "/v1/tenants/demo")
        assert status == 401 and "not a principal" in json.dumps(body), body
        status, body = Admin(s.dev.endpoints["admin_api"], refusals["expired"]).call("GET", "/v1/tenants/demo")
        assert status == 401, body

        # The issuer rotates to k2 and withdraws k1: once the data plane may fetch again (10 s after its last
        # fetch), k2 tokens sign in and k1 tokens are refused.
        issuer.new_key("k2")
        issuer.published.remove("k1")
        time.sleep(max(0.0, 10.5 - (time.monotonic() - first_fetch)))
        rotated = issuer.token("k2", email="sam.sso@acme.example", groups=["sales"])
        assert sorted(query(rotated, "SELECT id FROM salesforce.account")) == sorted((a,) for a in s.us_accounts)
        with pytest.raises(adbc_driver_manager.Error, match="k1"):
            query(issuer.token("k1", email="sam.sso@acme.example", groups=["sales"]), "SELECT 1")
        print(f"\nOIDC: key-set fetches by data plane and control plane: {issuer.jwks_requests}")

        # Trust withdrawn: tokens are refused at once (with the next configuration).
        s.admin.ok("DELETE", "/v1/tenants/demo/oidc")
        deadline = time.monotonic() + 15
        while True:
            try:
                query(rotated, "SELECT 1")
            except adbc_driver_manager.Error as e:
                assert "no tenant" in str(e), str(e)
                break
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        issuer.stop()


def test_an_external_opa_server_decides_in_one_request_per_query_cached_and_fails_closed(setup, tmp_path):
    """The tenant's policies served by a real OPA server instead of in-process: one batched request for all
    tables and columns of a query, none while cached, the revision in the audit trail; an unreachable,
    silent or not-allowed server refuses every table it has not decided."""
    import socket
    import time

    s = setup
    opa = Opa(tmp_path, POLICY, PARTNERS)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)

    try:
        admin_cli(s, "set-opa", "--tenant", "demo", "--url", opa.url)
        revision = f"opa:{opa.url}/v1/data/omnisql/batch"
        revision_is(s, revision)
        explained = s.admin.ok("GET", "/v1/tenants/demo/principals/sam/access?table=salesforce.account")
        assert explained["decision"] == "external" and opa.url in explained["reason"], explained

        # (The conformance and attack tests run in this mode too.)
        assert sorted(s.query("sam", "SELECT id FROM salesforce.account")) == sorted((a,) for a in s.us_accounts)

        # One request for a query over three tables; none when the same principal asks again.
        join = ("SELECT count(*) FROM salesforce.contact c JOIN salesforce.account a ON a.id = c.account_id "
                "JOIN github.users u ON lower(u.email) = lower(c.email)")
        before = opa.batch_requests()
        s.query("ada", join)
        first = opa.batch_requests() - before
        s.query("ada", join)
        again = opa.batch_requests() - before - first
        print(f"\nOPA requests: 3-table query cold {first}, warm {again}")
        assert (first, again) == (1, 0)
        # With the shortest cache (1 s), each query past it asks exactly once (GetFlightInfo and DoGet
        # both plan it). A second server, so that its revision shows when the data plane has switched.
        (tmp_path / "second").mkdir()
        short = Opa(tmp_path / "second", POLICY, PARTNERS)
        try:
            admin_cli(s, "set-opa", "--tenant", "demo", "--url", short.url, "--cache-seconds", "1")
            revision_is(s, f"opa:{short.url}/v1/data/omnisql/batch")
            time.sleep(1.1)
            before = short.batch_requests()
            for _ in range(3):
                s.query("ada", join)
                time.sleep(1.1)
            assert short.batch_requests() - before == 3
        finally:
            short.stop()
        admin_cli(s, "set-opa", "--tenant", "demo", "--url", opa.url)
        revision_is(s, revision)
        s.query("sam", "SELECT id FROM salesforce.account")

        # Fail closed: OPA stops. Decisions it made still hold for their cache time; a table it never
        # decided is refused, saying why.
        opa.stop()
        assert sorted(s.query("sam", "SELECT id FROM salesforce.account")) == sorted((a,) for a in s.us_accounts)
        with pytest.raises(adbc_driver_manager.Error, match="OPA server .* failed: cannot reach it"):
            s.query("sam", "SELECT title FROM github.issues")

        # A server that accepts and never answers: refused after the tenant's timeout.
        admin_cli(s, "set-opa", "--tenant", "demo", "--url", f"http://127.0.0.1:{silent.getsockname()[1]}", "--timeout-ms", "300")
        revision_is(s, f"opa:http://127.0.0.1:{silent.getsockname()[1]}/v1/data/omnisql/batch")
        started = time.monotonic()
        with pytest.raises(adbc_driver_manager.Error, match="did not answer within 300 ms"):
            s.query("sam", "SELECT id FROM salesforce.account")
        assert time.monotonic() - started < 5

        # A server the data plane's operator does not allow is never asked.
        admin_cli(s, "set-opa", "--tenant", "demo", "--url", "http://169.254.169.254")
        revision_is(s, "opa:http://169.254.169.254/v1/data/omnisql/batch")
        with pytest.raises(adbc_driver_manager.Error, match="may not ask OPA server"):
            s.query("sam", "SELECT id FROM salesforce.account")
    finally:
        admin_cli(s, "remove-opa", "--tenant", "demo")
        silent.close()
        if opa.proc.poll() is None:
            opa.stop()
