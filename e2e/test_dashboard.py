"""The admin dashboard in headless Chromium against `omnisql dev`: an operator signs in, creates a connection,
a principal and its API key; the key runs a query over ADBC; the query shows on the audit page and in the usage
chart; the key is revoked on the page and the next query is refused. Each page is also checked for labelled
fields, keyboard use, and a phone-width layout without sideways scrolling; screenshots go to
`$OMNISQL_SCREENSHOTS` when set (the ones in `docs/dashboard/` came from this test)."""

import os
import pathlib
import re
import shutil
import time

import pytest

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
POLICY = """package omnisql
import rego.v1

allow if true

rowFilters contains {"expression": "name = 'api'"} if input.action.resource.table.schemaName == "gh_dash"
"""
PAGES = {"connections": "Connections", "keys": "Principals & API keys", "policies": "Policies", "audit": "Audit trail",
         "data-planes": "Data planes", "tenants": "Tenants", "usage": "Usage, last hour"}


def run(uri: str, key: str, sql: str):
    import adbc_driver_flightsql.dbapi as flight_sql

    with flight_sql.connect(uri, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {key}"}) as c:
        with c.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()


def until(what: str, attempt, seconds: float = 20.0):
    """`attempt()` until it returns a truthy value; the last error if it never does."""
    deadline, last = time.monotonic() + seconds, None
    while time.monotonic() < deadline:
        try:
            got = attempt()
            if got:
                return got
        except Exception as e:  # noqa: BLE001 - retried, and reported if it never succeeds
            last = e
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {seconds} s (last error: {last})")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.fail("Chromium is not installed: scripts/test installs it (apt-get install chromium)")
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def shots_dir(tmp_path) -> pathlib.Path:
    d = pathlib.Path(os.environ.get("OMNISQL_SCREENSHOTS") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


def assert_accessible(page, name: str):
    """Every form control has a label; nothing scrolls sideways."""
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
               .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
               .map(el => el.name || el.outerHTML)"""
    )
    assert unlabelled == [], f"{name}: form controls without a label: {unlabelled}"
    width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1] + 1, f"{name}: the page scrolls sideways at {width[1]} px ({width[0]} px wide)"


def test_dashboard_end_to_end(dev, browser, tmp_path):
    admin = dev.endpoints["admin_api"]
    operator = dev.endpoints["operator_key"]
    github = dev.app("github")
    shots = shots_dir(tmp_path)
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.on("pageerror", lambda e: errors.append(str(e)))
    # The browser logs every refused request (401, 422: this test makes some on purpose); script errors count.
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text else None)

    # Sign in with the keyboard alone: the key field has focus, Enter submits.
    page.goto(admin + "/")
    page.get_by_label("API key or sign-in token").wait_for()
    page.screenshot(path=str(shots / "sign-in.png"))
    page.keyboard.type("omk_not-a-key")
    page.keyboard.press("Enter")
    page.get_by_role("alert").filter(has_text="unknown, revoked or expired API key").wait_for()
    page.get_by_label("API key or sign-in token").fill(operator)
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Tenants").wait_for()
    assert page.get_by_role("cell", name="demo", exact=True).count() == 1
    page.get_by_label("Tenant", exact=True).select_option("demo")
    page.screenshot(path=str(shots / "tenants.png"), full_page=True)

    # A connection from the catalog's parameter specs; the secret field is write-only.
    page.get_by_role("link", name="Connections").click()
    page.get_by_role("heading", name="New connection").wait_for()
    page.get_by_label("Connector").select_option("github")
    token_field = page.get_by_label(re.compile(r"^token \(secret, write-only\)"))
    assert token_field.get_attribute("type") == "password"
    page.get_by_label("Name (its SQL schema)").fill("BAD NAME")
    page.get_by_label(re.compile(r"^base_url")).fill(github["base_url"])
    token_field.fill(github["credentials"]["token"])
    page.get_by_label(re.compile(r"^orgs")).fill("acme")
    page.get_by_role("button", name="Create connection").click()
    page.locator(".field-error", has_text=re.compile("lower-case|letters")).wait_for()
    page.get_by_label("Name (its SQL schema)").fill("gh_dash")
    page.get_by_role("button", name="Create connection").click()
    page.get_by_role("cell", name="gh_dash", exact=True).wait_for()
    assert page.get_by_role("cell", name="token (sealed)").count() >= 1
    assert github["credentials"]["token"] not in page.content(), "a secret option is shown back"
    # "Test" has a data plane of the tenant's region read one row through it (once it has the connection).
    def tested():
        page.get_by_role("button", name="Test connection gh_dash").click()
        status = page.get_by_role("status").filter(has_text=re.compile(r"^gh_dash (works|failed|could not)"))
        status.wait_for()
        return status.inner_text() if "works" in status.inner_text() else None

    works = until("a working connection test", tested)
    assert re.search(r"read 1 row of \w+ \(\d+ tables\) in \d+ ms, \d+ API requests?", works), works
    page.screenshot(path=str(shots / "connections.png"), full_page=True)

    # A principal and its key: the key is shown once.
    page.get_by_role("link", name="Principals & keys").click()
    page.get_by_role("heading", name="New principal").wait_for()
    page.get_by_role("textbox", name="Id", exact=True).fill("dash-analyst")
    page.get_by_role("button", name="Create principal").click()
    page.get_by_role("cell", name="dash-analyst", exact=True).first.wait_for()
    page.get_by_role("combobox", name="Principal", exact=True).select_option("dash-analyst")
    page.get_by_role("button", name="Create key").click()
    key = page.get_by_test_id("new-key").inner_text().strip()
    assert key.startswith("omk_"), key
    page.screenshot(path=str(shots / "keys.png"), full_page=True)

    # The key runs a query on the new connection once the data plane has the change.
    rows = until("a query with the new key on the new connection",
                 lambda: run(dev.uri, key, "SELECT count(*) FROM gh_dash.repos"))
    assert rows[0][0] > 0

    # The audit page finds it; the usage chart counts it.
    page.get_by_role("link", name="Audit").click()
    page.get_by_label("Principal").fill("dash-analyst")

    def audited():
        page.get_by_role("button", name="Search").click()
        return page.get_by_role("cell", name="SELECT count(*) FROM gh_dash.repos").count() > 0

    until("the query on the audit page", audited)
    page.get_by_role("button", name="Verify chain").click()
    page.get_by_role("status").filter(has_text="Chain intact").wait_for()
    page.screenshot(path=str(shots / "audit.png"), full_page=True)

    page.get_by_role("link", name="Usage").click()
    summary = page.get_by_test_id("usage-summary")
    summary.wait_for()
    assert int(summary.inner_text().split()[0]) >= 1
    label = page.get_by_test_id("queries-per-minute").locator("svg").get_attribute("aria-label")
    assert int(re.search(r"total (\d+)", label).group(1)) >= 1, label
    # The new connection's first query went to GitHub: the per-app chart names it and counts its requests.
    upstream = page.get_by_test_id("upstream")
    assert "GitHub: blue" in upstream.locator("figcaption").inner_text()
    label = upstream.locator("svg").get_attribute("aria-label")
    assert int(re.search(r"total (\d+)", label).group(1)) >= 1, label
    assert page.get_by_test_id("cache-hit-rate").count() == 1
    # The data plane's last heartbeat reported the new connection's buckets (every 5 s).
    def headroom():
        page.get_by_role("link", name="Usage").click()
        return page.get_by_role("meter", name=re.compile(r"^gh_dash ")).count() > 0

    until("gh_dash's rate-limit buckets on the usage page", headroom)
    page.screenshot(path=str(shots / "usage.png"), full_page=True)

    # Revoked on the page: the next query is refused.
    page.get_by_role("link", name="Principals & keys").click()
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name=f"Revoke key {key[:10]}").click()
    page.get_by_text(re.compile("^revoked")).first.wait_for()

    def refused():
        try:
            run(dev.uri, key, "SELECT 1")
        except Exception as e:  # noqa: BLE001 - the refusal is what we wait for
            return "revoked" in str(e) or "Unauthenticated" in str(e) or "unauthenticated" in str(e).lower()
        return False

    until("the revoked key refused", refused)

    # A policy version, side by side, and the dry run.
    page.get_by_role("link", name="Policies").click()
    page.get_by_role("textbox", name="Name", exact=True).fill("dash_rows")
    page.get_by_label("Rego").fill("package omnisql.broken\n\nthis is not rego")
    page.get_by_role("button", name="Save version").click()
    page.get_by_role("alert").wait_for()
    # Open to all (the demo tenant is shared with other tests), one row filter on this test's connection.
    page.get_by_label("Rego").fill(POLICY)
    page.get_by_role("button", name="Save version").click()
    page.get_by_role("heading", name="dash_rows: 1 version, side by side").wait_for()
    page.get_by_label("Rego").fill(POLICY.replace("'api'", "'web'"))
    page.get_by_role("button", name="Save version").click()
    page.get_by_role("heading", name="dash_rows: 2 versions, side by side").wait_for()
    assert "'api'" in page.get_by_label("left version").inner_text()
    assert "'web'" in page.get_by_label("right version").inner_text()
    page.get_by_role("combobox", name="Principal", exact=True).select_option("dash-analyst")
    page.get_by_role("textbox", name="Table", exact=True).fill("gh_dash.repos")
    page.get_by_role("button", name="Explain").click()
    page.get_by_text("name = 'web'").wait_for()
    page.screenshot(path=str(shots / "policies.png"), full_page=True)
    until("the row filter applied", lambda: run(dev.uri, dev.token, "SELECT DISTINCT name FROM gh_dash.repos") == [("web",)])
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete policy").click()
    page.get_by_role("heading", name="New policy").wait_for()

    page.get_by_role("link", name="Data planes").click()
    page.get_by_role("heading", name="Data planes").wait_for()

    def current():
        page.reload()
        page.get_by_role("heading", name="Data planes").wait_for()
        return page.get_by_role("cell", name=re.compile(r"^current \(revision \d+\)$")).count() == 1

    until("the data plane reports the latest configuration applied", current)
    assert page.get_by_role("cell", name=re.compile(r"^\d+ events$")).count() == 1
    page.screenshot(path=str(shots / "data-planes.png"), full_page=True)

    # Every page: labelled fields, and usable at a phone's width.
    for name, heading in PAGES.items():
        page.set_viewport_size({"width": 1280, "height": 800})
        page.goto(f"{admin}/#/{name}")
        page.get_by_role("heading", name=heading, exact=True).wait_for()
        assert_accessible(page, name)
        page.set_viewport_size({"width": 390, "height": 844})
        assert_accessible(page, f"{name} at 390 px")
    page.screenshot(path=str(shots / "phone-usage.png"), full_page=True)

    # Leave the shared demo tenant as it was.
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(f"{admin}/#/connections")
    page.get_by_role("heading", name="Connections", exact=True).wait_for()
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete connection gh_dash").click()
    page.get_by_text("gh_dash").first.wait_for(state="detached")
    assert errors == [], errors


@pytest.fixture(scope="module")
def dev_with_issuer(tmp_path_factory):
    """`omnisql dev` whose demo tenant trusts a real (local, plain http) OIDC issuer for browser sign-in."""
    from conftest import Dev
    from services import Admin, OidcIssuer

    issuer = OidcIssuer()
    issuer.new_key("k1")
    dev = Dev(tmp_path_factory.mktemp("dashboard-oidc"), "--oidc-allow-http")
    admin = Admin(dev.endpoints["admin_api"], dev.endpoints["operator_key"])
    admin.ok("PUT", "/v1/tenants/demo/oidc", {"issuer": issuer.url, "audience": "omnisql-dashboard", "principal_claim": "preferred_username"})
    admin.ok("POST", "/v1/tenants/demo/principals", {"id": "ada", "kind": "user", "role": "tenant_admin"})
    yield dev, issuer
    dev.stop()
    issuer.stop()


def test_sign_in_through_the_tenants_identity_provider(dev_with_issuer, browser, tmp_path):
    """The browser leaves for the issuer and comes back signed in (authorization code + PKCE, the control
    plane redeeming the code); a declined sign-in and a person who is not a principal of the tenant each come
    back to the sign-in page with the reason; signing out forgets the token."""
    dev, issuer = dev_with_issuer
    admin = dev.endpoints["admin_api"]
    shots = shots_dir(tmp_path)
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.on("pageerror", lambda e: errors.append(str(e)))

    def sign_in(tenant: str):
        page.goto(admin + "/")
        page.get_by_role("textbox", name="Tenant").fill(tenant)
        page.get_by_role("button", name="Continue to your identity provider").click()

    issuer.login = {"sub": "u-1", "preferred_username": "ada"}
    page.goto(admin + "/")
    page.get_by_role("heading", name="Sign in with your identity provider").wait_for()
    assert_accessible(page, "sign-in")
    page.screenshot(path=str(shots / "sign-in.png"))
    sign_in("demo")
    page.get_by_text("ada · tenant admin · demo").wait_for()
    page.get_by_role("heading", name="Connections", exact=True).wait_for()
    assert page.url == admin + "/#/connections", page.url
    stored = page.evaluate("() => Object.keys(sessionStorage)")
    assert "omnisql.sign_in_tenant" in stored, stored
    assert "code=" not in page.url and "token" not in page.url
    # As a tenant admin it may change the tenant: a principal made through the page.
    page.get_by_role("link", name="Principals & keys").click()
    page.get_by_role("textbox", name="Id", exact=True).fill("made-by-ada")
    page.get_by_role("button", name="Create principal").click()
    page.get_by_role("cell", name="made-by-ada", exact=True).first.wait_for()
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("alert").filter(has_text="Signed out.").wait_for()
    assert page.evaluate("() => sessionStorage.getItem('omnisql.api_key')") is None

    # The issuer knows this person; the tenant does not.
    issuer.login = {"sub": "u-2", "preferred_username": "mallory"}
    sign_in("demo")
    page.get_by_role("alert").filter(has_text="`mallory` signed in through the identity provider but is not a principal of tenant `demo`").wait_for()
    # The person declines at the issuer.
    issuer.login = None
    sign_in("demo")
    page.get_by_role("alert").filter(has_text="did not sign you in: access_denied").wait_for()
    # A tenant that trusts no issuer (the same answer as one that does not exist).
    sign_in("nobody")
    page.get_by_role("alert").filter(has_text="tenant `nobody` does not sign in through an identity provider").wait_for()
    assert errors == [], errors
