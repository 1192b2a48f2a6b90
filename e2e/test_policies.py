"""Row- and column-level security end to end: principals with groups and a Rego policy created through the
admin API, enforced by the data plane for Flight SQL clients, checked against an oracle that applies the
same rules in Python to the sandbox's raw API data; then an attack suite of generated attempts by a
restricted principal to see a filtered row or a masked value."""

import json
import pathlib
from collections import Counter
import urllib.parse
import urllib.request

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import pytest

from conftest import Dev
from services import Admin, get_json, raw_salesforce

# The example of docs/policies.md: sales sees GitHub and Salesforce but not Slack, US accounts only and
# not their revenue, contacts' emails masked; admins everything; others nothing.
POLICY = (pathlib.Path(__file__).resolve().parent.parent / "docs/policies/sales-access.rego").read_text()


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


class Setup:
    def __init__(self, dev: Dev):
        self.dev = dev
        self.admin = Admin(dev.endpoints["admin_api"], dev.endpoints["operator_key"])
        self.keys = {}
        for pid, groups, attributes in (("sam", ["sales"], {}), ("ada", ["admins"], {}), ("nick", [], {}),
                                        ("ula", ["partners"], {"country": "UK"})):
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

    def connect(self, pid: str):
        return flight_sql.connect(self.dev.uri, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {self.keys[pid]}"})

    def query(self, pid: str, sql: str, params=None) -> list[tuple]:
        with self.connect(pid) as c, c.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    dev = Dev(tmp_path_factory.mktemp("policies"))
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


def mask(email: str) -> str:
    return "***" + email[-4:]


def test_each_principal_sees_what_the_oracle_says(setup):
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
    print(f"conformance: {len(cases)} row checks, {len(refused)} refusals")


def test_a_refusal_is_audited_as_denied_with_the_table_and_the_policy_revision(setup):
    s = setup
    with pytest.raises(adbc_driver_manager.Error):
        s.query("sam", "SELECT real_name FROM slack.users")
    import time
    deadline = time.monotonic() + 15
    while True:
        events = s.admin.ok("GET", "/v1/tenants/demo/audit?outcome=denied&principal=sam")["items"]
        hit = [e for e in events if "slack.users" in e["tables"] and "real_name" in e["sql"]]
        if hit:
            break
        assert time.monotonic() < deadline, events
        time.sleep(0.2)
    assert hit[0]["policy_revision"] == "access@1,partners@1", hit[0]
    ok = s.admin.ok("GET", "/v1/tenants/demo/audit?outcome=ok&principal=sam")["items"]
    assert ok and all(e.get("policy_revision") == "access@1,partners@1" for e in ok)
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


def test_attack_suite_finds_no_leak(setup):
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
    print(f"attack suite: {count} attempts, {refused} refused with an error, {len(leaks)} leaks")
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
                          "explain-access", "--tenant", "demo", "--principal", "nick", "--table", "github.repos"],
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
