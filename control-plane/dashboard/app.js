// OmniSQL admin dashboard: a client of the public /v1 API only. Every value is put on the page with
// textContent (never parsed as HTML), and the API key (or the ID token of a sign-in through the tenant's
// identity provider) lives in this tab's sessionStorage only.

const KEY = "omnisql.api_key";
const TENANT = "omnisql.tenant";
// The tenant whose identity provider signed this tab in: named on every call, since one issuer may serve
// several tenants.
const SIGNED_IN_TENANT = "omnisql.sign_in_tenant";
const session = { key: sessionStorage.getItem(KEY), signedInTenant: sessionStorage.getItem(SIGNED_IN_TENANT), me: null, tenant: null, tenants: [] };

// ---- the API ----

class ApiError extends Error {
  constructor(status, body) {
    const detail = (body && body.error) || {};
    super(detail.message || `the control plane answered ${status}`);
    this.status = status;
    this.fields = detail.fields || [];
  }
}

async function api(method, path, body) {
  const headers = {};
  if (session.key) headers.authorization = `Bearer ${session.key}`;
  if (session.signedInTenant) headers["x-omnisql-tenant"] = session.signedInTenant;
  if (body !== undefined) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, { error: { message: `cannot reach the control plane (${e.message}); check that it runs and try again` } });
  }
  const text = await response.text();
  const json = text ? JSON.parse(text) : null;
  if (!response.ok) {
    if (response.status === 401 && session.key && path !== "/v1/me") {
      signOut((session.signedInTenant ? "Your sign-in ended or was refused: " : "Your key was refused: ") + new ApiError(401, json).message);
    }
    throw new ApiError(response.status, json);
  }
  return json;
}

/** Every item of a paged list. */
async function all(path, max = 5000) {
  const items = [];
  let after = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api("GET", `${path}${sep}limit=500${after ? `&after=${encodeURIComponent(after)}` : ""}`);
    items.push(...page.items);
    after = page.next;
  } while (after && items.length < max);
  return items;
}

const t = () => encodeURIComponent(session.tenant);

// ---- building the page ----

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

let fieldId = 0;
/** A labelled control (the label names it alone: not wrapping it, so its value is not part of the name); `spec` may carry required, type, placeholder, value, options (for a select). */
function field(label, name, spec = {}) {
  const id = `f${++fieldId}`;
  const control = spec.options
    ? h("select", { id, name, required: spec.required }, spec.options.map(([v, text]) => h("option", { value: v, selected: v === spec.value }, text)))
    : spec.multiline
      ? h("textarea", { id, name, required: spec.required, spellcheck: "false" }, spec.value || "")
      : h("input", { id, name, type: spec.type || "text", required: spec.required, placeholder: spec.placeholder, value: spec.value, autocomplete: spec.type === "password" ? "off" : undefined });
  return h("div", { class: "field" }, h("label", { for: id }, label, spec.required ? h("span", { class: "req", "aria-hidden": "true" }, " *") : null),
    control, h("span", { class: "field-error", "data-for": name }));
}

function values(form) {
  const out = {};
  for (const el of form.elements) if (el.name) out[el.name] = el.value.trim();
  return out;
}

/** Shows an API error on the form: the message, and each field's own next to it. */
function showError(form, e) {
  for (const span of form.querySelectorAll(".field-error")) span.textContent = "";
  const alert = form.querySelector("[role=alert]") || form.appendChild(h("p", { role: "alert" }));
  alert.textContent = e.message;
  for (const f of e.fields || []) {
    const span = form.querySelector(`.field-error[data-for="${CSS.escape(f.field.replace(/^options\./, "option:"))}"]`);
    if (span) span.textContent = f.message;
  }
}

function submitting(form, action) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    for (const el of form.querySelectorAll(".field-error, [role=alert]")) el.textContent = "";
    try {
      await action(values(form));
    } catch (e) {
      showError(form, e);
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

function table(columns, rows, empty = "Nothing yet.") {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, columns.map(([title]) => h("th", { scope: "col" }, title)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, columns.map(([, cell, cls]) => h("td", { class: cls }, cell(row))))))));
}

const when = (ms) => (ms ? new Date(ms).toLocaleString() : "—");
const ago = (ms) => {
  if (!ms) return "never";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 120 ? `${s} s ago` : s < 7200 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
};

// ---- pages ----

const isOperator = () => session.me.role === "platform_operator";
const isAdmin = () => isOperator() || session.me.role === "tenant_admin";
const PAGES = [
  ["tenants", "Tenants", () => isOperator(), tenantsPage],
  ["connections", "Connections", () => isAdmin(), connectionsPage],
  ["keys", "Principals & keys", () => isAdmin(), keysPage],
  ["policies", "Policies", () => isAdmin(), policiesPage],
  ["audit", "Audit", () => session.me.role !== "data_plane_operator", auditPage],
  ["usage", "Usage", () => session.me.role === "platform_operator" || session.me.role === "tenant_admin", usagePage],
  ["data-planes", "Data planes", () => isOperator() || session.me.role === "data_plane_operator", dataPlanesPage],
];

async function tenantsPage(main) {
  const list = h("div");
  const refresh = async () => list.replaceChildren(table([
    ["Id", (r) => r.id], ["Name", (r) => r.name], ["Region", (r) => r.region], ["Weight", (r) => r.weight],
    ["Created", (r) => when(r.created_at)],
  ], session.tenants = await all("/v1/tenants")));
  const created = h("div");
  const form = submitting(h("form", { class: "card", "aria-labelledby": "new-tenant" }, h("h2", { id: "new-tenant" }, "New tenant"),
    h("div", { class: "fields" }, field("Id", "id", { required: true, placeholder: "acme" }), field("Name", "name", { required: true }),
      field("Region", "region", { required: true, placeholder: "eu-west-1" }), field("First admin (optional)", "admin")),
    h("button", { type: "submit" }, "Create tenant")), async (v) => {
    const body = { id: v.id, name: v.name, region: v.region };
    if (v.admin) body.admin = v.admin;
    const r = await api("POST", "/v1/tenants", body);
    form.reset();
    created.replaceChildren(r.admin && r.admin.key ? secretOnce(`API key of ${v.admin}`, r.admin.key) : "");
    await refresh();
    renderHeader();
  });
  main.append(h("h1", {}, "Tenants"), list, created, form);
  await refresh();
}

function secretOnce(what, key) {
  return h("div", { class: "secret-once", role: "status" }, h("strong", {}, `${what} — shown once, copy it now: `),
    h("code", { "data-testid": "new-key" }, key), " ",
    h("button", { type: "button", class: "secondary", onclick: () => navigator.clipboard && navigator.clipboard.writeText(key) }, "Copy"));
}

async function connectionsPage(main) {
  const [connectors, connections] = await Promise.all([api("GET", "/v1/connectors"), all(`/v1/tenants/${t()}/connections`)]);
  const latest = new Map();
  for (const c of connectors) latest.set(c.name, c); // the catalog lists versions oldest first
  const list = h("div");
  // What the last "Test" found, read out by screen readers as it arrives.
  const tested = h("p", { role: "status", class: "test-result" });
  const test = async (button, name) => {
    button.disabled = true;
    tested.className = "test-result";
    tested.textContent = `Testing ${name}: a data plane of the tenant's region reads one row…`;
    try {
      const r = (await api("POST", `/v1/tenants/${t()}/connections/${encodeURIComponent(name)}/test`)).result;
      tested.className = `test-result ${r.ok ? "ok" : "failed"}`;
      tested.textContent = r.ok
        ? `${name} works: ${r.table ? `read ${r.rows} row${r.rows === 1 ? "" : "s"} of ${r.table}` : "no table could be read without a filter"} (${r.tables} tables) in ${Math.round(r.duration_ms)} ms, ${r.api_requests} API request${r.api_requests === 1 ? "" : "s"}.`
        : `${name} failed: ${r.error}`;
    } catch (e) {
      tested.className = "test-result failed";
      tested.textContent = `${name} could not be tested: ${e.message}`;
    } finally {
      button.disabled = false;
    }
  };
  const render = (rows) => list.replaceChildren(table([
    ["Name", (r) => r.name], ["Connector", (r) => `${r.connector} ${r.version}`],
    ["Options", (r) => Object.entries(r.options).map(([k, v]) => `${k}=${v}`).join(", ")],
    ["Secrets", (r) => r.secret_options.map((k) => `${k} (sealed)`).join(", ") || "—"],
    ["Cache TTL", (r) => (r.cache_ttl_seconds == null ? "default" : `${r.cache_ttl_seconds} s`)],
    ["", (r) => h("button", { type: "button", "aria-label": `Test connection ${r.name}`,
      onclick: (e) => test(e.currentTarget, r.name) }, "Test")],
    ["", (r) => h("button", { class: "danger", type: "button", "aria-label": `Delete connection ${r.name}`, onclick: async () => {
      if (!confirm(`Delete connection ${r.name}? Queries on its tables stop working within seconds.`)) return;
      await api("DELETE", `/v1/tenants/${t()}/connections/${encodeURIComponent(r.name)}`);
      render(await all(`/v1/tenants/${t()}/connections`));
    } }, "Delete")],
  ], rows, "No connections yet: create one below."));
  render(connections);

  const params = h("div", { class: "fields" });
  const connector = field("Connector", "connector", { required: true, options: [...latest.keys()].map((n) => [n, `${n} ${latest.get(n).version}`]) });
  const showParams = () => {
    const spec = latest.get(connector.querySelector("select").value);
    params.replaceChildren(...(spec ? spec.parameters : []).map((p) =>
      h("div", {}, field(p.secret ? `${p.name} (secret, write-only)` : p.name, `option:${p.name}`, { required: p.required, type: p.secret ? "password" : "text" }),
        h("span", { class: "hint" }, p.description))));
  };
  connector.querySelector("select").addEventListener("change", showParams);
  showParams();
  const form = submitting(h("form", { class: "card", "aria-labelledby": "new-connection" }, h("h2", { id: "new-connection" }, "New connection"),
    h("div", { class: "fields" }, connector, field("Name (its SQL schema)", "name", { required: true, placeholder: "github" }),
      field("Cache TTL in seconds (optional)", "cache_ttl_seconds", { type: "number" })),
    params, h("button", { type: "submit" }, "Create connection")), async (v) => {
    const body = { connector: v.connector, name: v.name, options: {} };
    for (const [k, val] of Object.entries(v)) if (k.startsWith("option:") && val) body.options[k.slice(7)] = val;
    if (v.cache_ttl_seconds) body.cache_ttl_seconds = Number(v.cache_ttl_seconds);
    await api("POST", `/v1/tenants/${t()}/connections`, body);
    form.reset();
    showParams();
    render(await all(`/v1/tenants/${t()}/connections`));
  });
  main.append(h("h1", {}, "Connections"), list, tested, form);
}

async function keysPage(main) {
  const principalsBox = h("div"), keysBox = h("div"), created = h("div");
  let principals = [];
  const principalSelect = h("div");
  const refresh = async () => {
    principals = await all(`/v1/tenants/${t()}/principals`);
    principalsBox.replaceChildren(table([
      ["Principal", (r) => r.id], ["Kind", (r) => r.kind], ["Role", (r) => r.role], ["Groups", (r) => (r.groups || []).join(", ") || "—"],
    ], principals));
    principalSelect.replaceChildren(field("Principal", "principal", { required: true, options: principals.map((p) => [p.id, `${p.id} (${p.role})`]) }));
    const keys = await all(`/v1/tenants/${t()}/api-keys`);
    keysBox.replaceChildren(table([
      ["Key", (r) => (r.prefix ? `${r.prefix}…` : h("span", { class: "muted" }, "registered by its hash"))], ["Principal", (r) => r.principal_id], ["Created", (r) => when(r.created_at)],
      ["Last used", (r) => ago(r.last_used_at)], ["Expires", (r) => (r.expires_at ? when(r.expires_at) : "never")],
      ["Status", (r) => (r.revoked_at ? h("span", { class: "bad" }, `revoked ${ago(r.revoked_at)}`) : h("span", { class: "ok" }, "active"))],
      ["", (r) => r.revoked_at ? "" : h("button", { class: "danger", type: "button", "aria-label": `Revoke key ${r.prefix}`, onclick: async () => {
        if (!confirm(`Revoke key ${r.prefix}…? Every data plane refuses it within seconds.`)) return;
        await api("DELETE", `/v1/tenants/${t()}/api-keys/${encodeURIComponent(r.id)}`);
        await refresh();
      } }, "Revoke")],
    ], keys));
  };
  const principalForm = submitting(h("form", { class: "card", "aria-labelledby": "new-principal" }, h("h2", { id: "new-principal" }, "New principal"),
    h("div", { class: "fields" }, field("Id", "id", { required: true, placeholder: "analyst@acme.com" }),
      field("Kind", "kind", { options: [["user", "user"], ["service_account", "service account"]] }),
      field("Role", "role", { options: [["tenant_member", "member (queries)"], ["tenant_admin", "admin"]] }),
      field("Groups (comma-separated)", "groups")),
    h("button", { type: "submit" }, "Create principal")), async (v) => {
    const groups = v.groups ? v.groups.split(",").map((g) => g.trim()).filter(Boolean) : [];
    await api("POST", `/v1/tenants/${t()}/principals`, { id: v.id, kind: v.kind, role: v.role, groups });
    principalForm.reset();
    await refresh();
  });
  const keyForm = submitting(h("form", { class: "card", "aria-labelledby": "new-key-title" }, h("h2", { id: "new-key-title" }, "New API key"),
    h("div", { class: "fields" }, principalSelect, field("Expires in days (optional)", "days", { type: "number" })),
    h("button", { type: "submit" }, "Create key")), async (v) => {
    const body = { principal: v.principal };
    if (v.days) body.expires_in_seconds = Math.round(Number(v.days) * 86400);
    const r = await api("POST", `/v1/tenants/${t()}/api-keys`, body);
    created.replaceChildren(secretOnce(`API key of ${v.principal}`, r.key));
    await refresh();
  });
  main.append(h("h1", {}, "Principals & API keys"), h("h2", {}, "Principals"), principalsBox, principalForm,
    h("h2", {}, "API keys"), created, keysBox, keyForm);
  await refresh();
}

async function policiesPage(main) {
  const list = h("div"), detail = h("div"), explain = h("div");
  const refresh = async () => {
    const policies = await api("GET", `/v1/tenants/${t()}/policies`);
    list.replaceChildren(table([
      ["Policy", (r) => h("a", { href: `#/policies/${encodeURIComponent(r.name)}` }, r.name)], ["Version", (r) => r.version],
      ["Changed", (r) => when(r.created_at)],
    ], policies, "No policies: every table is open to every principal of the tenant."));
  };
  const name = decodeURIComponent(location.hash.split("/")[2] || "");
  const editor = submitting(h("form", { class: "card", "aria-labelledby": "edit-policy" },
    h("h2", { id: "edit-policy" }, name ? `New version of ${name}` : "New policy"),
    name ? h("input", { type: "hidden", name: "name", value: name }) : h("div", { class: "fields" }, field("Name", "name", { required: true, placeholder: "row_filters" })),
    field("Rego", "rego", { required: true, multiline: true, value: "package omnisql\n\n" }),
    h("button", { type: "submit" }, "Save version")), async (v) => {
    const saved = await api("PUT", `/v1/tenants/${t()}/policies/${encodeURIComponent(v.name)}`, { rego: v.rego });
    const target = `#/policies/${encodeURIComponent(saved.name)}`;
    if (location.hash === target) route();
    else location.hash = target;
  });
  if (name) {
    const versions = await api("GET", `/v1/tenants/${t()}/policies/${encodeURIComponent(name)}`);
    const latest = versions[versions.length - 1];
    editor.querySelector("textarea").value = latest ? latest.rego : "";
    const pick = (label, n, v) => field(label, n, { options: versions.map((x) => [String(x.version), `version ${x.version} (${when(x.created_at)})`]), value: String(v) });
    const left = pick("Left", "left", Math.max(1, versions.length - 1)), right = pick("Right", "right", versions.length);
    const panes = h("div", { class: "side-by-side" });
    const show = () => {
      const get = (f) => versions.find((x) => String(x.version) === f.querySelector("select").value);
      panes.replaceChildren(h("pre", { "aria-label": "left version" }, get(left).rego), h("pre", { "aria-label": "right version" }, get(right).rego));
    };
    left.addEventListener("change", show); right.addEventListener("change", show);
    show();
    detail.append(h("section", { class: "card", "aria-labelledby": "versions" }, h("h2", { id: "versions" }, `${name}: ${versions.length} version${versions.length === 1 ? "" : "s"}, side by side`),
      h("div", { class: "fields" }, left, right), panes,
      h("button", { type: "button", class: "danger", onclick: async () => {
        if (!confirm(`Delete policy ${name} and every version of it?`)) return;
        await api("DELETE", `/v1/tenants/${t()}/policies/${encodeURIComponent(name)}`);
        location.hash = "#/policies";
      } }, "Delete policy")));
  }
  const principals = await all(`/v1/tenants/${t()}/principals`);
  const dry = submitting(h("form", { class: "card", "aria-labelledby": "dry-run" }, h("h2", { id: "dry-run" }, "What does a principal see of a table?"),
    h("div", { class: "fields" }, field("Principal", "principal", { options: principals.map((p) => [p.id, p.id]) }),
      field("Table", "table", { required: true, placeholder: "salesforce.account" })),
    h("button", { type: "submit" }, "Explain"), explain), async (v) => {
    const r = await api("GET", `/v1/tenants/${t()}/principals/${encodeURIComponent(v.principal)}/access?table=${encodeURIComponent(v.table)}`);
    explain.replaceChildren(h("dl", {},
      h("dt", {}, "Decision"), h("dd", { class: r.decision === "allowed" ? "ok" : "bad" }, r.decision),
      h("dt", {}, "Why"), h("dd", {}, r.reason),
      h("dt", {}, "Row filters"), h("dd", {}, r.row_filters.join(" AND ") || "none"),
      h("dt", {}, "Masked columns"), h("dd", {}, Object.entries(r.masks).map(([c, e]) => `${c} → ${e}`).join(", ") || "none"),
      h("dt", {}, "Hidden columns"), h("dd", {}, r.hidden_columns.join(", ") || "none"),
      h("dt", {}, "Policies"), h("dd", {}, r.policy_revision || "none")));
  });
  main.append(h("h1", {}, "Policies"), list, detail, editor, dry);
  await refresh();
}

async function auditPage(main) {
  const results = h("div"), chain = h("p", { role: "status" });
  const search = async (v) => {
    const q = new URLSearchParams();
    for (const k of ["principal", "table", "outcome"]) if (v[k]) q.set(k, v[k]);
    if (v.since) q.set("from", String(Date.now() - Number(v.since) * 60000));
    const events = (await all(`/v1/tenants/${t()}/audit?${q}`, 2000)).reverse();
    results.replaceChildren(h("p", { class: "muted" }, `${events.length} events, newest first`), table([
      ["#", (r) => r.seq], ["Started", (r) => when(r.started_at)], ["Principal", (r) => r.principal],
      ["Outcome", (r) => h("span", { class: r.outcome === "ok" ? "ok" : "bad" }, r.outcome)], ["SQL", (r) => r.sql, "sql"],
      ["Rows", (r) => r.rows], ["ms", (r) => r.duration_ms.toFixed(1)], ["API calls", (r) => r.api_requests],
      ["Error", (r) => r.error || ""],
    ], events.slice(0, 500), "No events match."));
  };
  const form = submitting(h("form", { class: "card", role: "search", "aria-label": "Search the audit trail" },
    h("div", { class: "fields" }, field("Principal", "principal"), field("Table", "table", { placeholder: "github.issues" }),
      field("Outcome", "outcome", { options: [["", "any"], ...["ok", "error", "denied", "cancelled", "unauthenticated", "interrupted"].map((o) => [o, o])] }),
      field("In the last", "since", { options: [["60", "hour"], ["1440", "day"], ["10080", "week"], ["", "all time"]] })),
    h("button", { type: "submit" }, "Search")), search);
  const verify = h("button", { type: "button", class: "secondary", onclick: async () => {
    chain.textContent = "Verifying…";
    const r = await api("GET", `/v1/tenants/${t()}/audit/verify`);
    chain.className = r.valid ? "ok" : "bad";
    chain.textContent = r.valid ? `Chain intact: ${r.events} events, head ${r.head_hash.slice(0, 16)}…`
      : `Chain BROKEN at event ${r.first_broken_seq} of ${r.events}: stored events were changed or removed.`;
  } }, "Verify chain");
  main.append(h("h1", {}, "Audit trail"), form, verify, chain, results);
  await search(values(form));
}

/** Per-minute series of the last hour, from the usage the control plane rolls up from the audit trail. */
async function usagePage(main) {
  const now = Date.now(), since = Math.floor(now / 60000) * 60000 - 59 * 60000;
  const [rows, limits] = await Promise.all([api("GET", `/v1/tenants/${t()}/usage?from=${since}&to=${now}`), api("GET", `/v1/tenants/${t()}/rate-limits`)]);
  const minutes = Array.from({ length: 60 }, () => null);
  for (const r of rows) {
    const i = Math.round((r.minute - since) / 60000);
    if (i >= 0 && i < 60) minutes[i] = r;
  }
  const per = (f) => minutes.map((m) => (m ? f(m) : 0));
  const count = per((m) => m.queries);
  const p50 = minutes.map((m) => (m ? m.p50_ms : null));
  const p95 = minutes.map((m) => (m ? m.p95_ms : null));
  const apps = [...new Set(rows.flatMap((r) => Object.keys(r.api_requests_by_app)))].sort();
  const byApp = apps.map((app, i) => [`s${i % 6}`, per((m) => m.api_requests_by_app[app] || 0)]);
  // Of the answers queries needed from APIs, the share the response cache gave without a request.
  const hitRate = minutes.map((m) => (m && m.cache_hits + m.api_requests ? Math.round((100 * m.cache_hits) / (m.cache_hits + m.api_requests)) : null));
  const errors = per((m) => m.not_ok);
  const sum = (xs) => xs.reduce((a, b) => a + b, 0);
  const total = sum(count);
  main.append(h("h1", {}, "Usage, last hour"),
    h("p", { "data-testid": "usage-summary" }, `${total} ${total === 1 ? "query" : "queries"}, ${sum(errors)} not ok, ${sum(per((m) => m.api_requests))} upstream API requests.`),
    h("div", { class: "charts" },
      chart("Queries per minute", [["bar", count]], "queries-per-minute"),
      chart("Latency per minute, ms (p50 blue, p95 red)", [["p50", p50], ["p95", p95]], "latency"),
      chart(`Upstream API requests per minute, by app (${apps.map((a, i) => `${a}: ${COLORS[i % 6]}`).join(", ") || "none yet"})`,
        byApp.length ? byApp : [["bar", minutes.map(() => 0)]], "upstream"),
      chart("Cache hit rate per minute, % of answers served without an API request", [["p50", hitRate]], "cache-hit-rate", 100),
      chart("Queries not ok per minute", [["bar", errors]], "errors")),
    h("p", { class: "muted" }, "From the audit trail: every query attempt of the tenant, as data planes shipped it, rolled up per minute (latency percentiles from a histogram with buckets about 1.5× apart)."),
    h("h2", { id: "headroom" }, "Rate-limit headroom"),
    table([
      ["Connection", (r) => r.connection], ["Bucket", (r) => r.bucket], ["Data plane", (r) => r.data_plane],
      ["Available now", (r) => h("span", {}, h("meter", { min: 0, max: r.capacity, value: r.available, "aria-label": `${r.connection} ${r.bucket} headroom` }),
        ` ${Math.floor(r.available)} of ${r.capacity} per ${r.window_seconds} s`)],
      ["Waiting", (r) => String(r.waiting)],
      ["Paused", (r) => (r.paused_for_seconds == null ? "—" : `${Math.ceil(r.paused_for_seconds)} s (the API asked)`)],
      ["Reported", (r) => ago(r.reported_at)],
    ], limits, "No data plane has reported rate limits yet (each reports every few seconds, once a connection was used)."));
}

/** The colours of series `s0`…`s5` (app.css), named for chart captions. */
const COLORS = ["blue", "orange", "green", "purple", "brown", "grey"];

function chart(title, series, id, fixedMax) {
  const NS = "http://www.w3.org/2000/svg";
  const W = 600, H = 160, pad = 24;
  const max = fixedMax || Math.max(1, ...series.flatMap(([, xs]) => xs.filter((x) => x != null)));
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  const x = (i) => pad + (i * (W - pad)) / 60, y = (v) => H - pad - (v / max) * (H - 2 * pad);
  const el = (tag, attrs, text) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e);
  };
  for (const [kind, xs] of series) {
    if (kind === "bar") xs.forEach((v, i) => v && el("rect", { class: "bar", x: x(i), y: y(v), width: (W - pad) / 60 - 1, height: H - pad - y(v) }));
    else {
      el("polyline", { class: kind, points: xs.map((v, i) => (v == null ? null : `${x(i) + 4},${y(v)}`)).filter(Boolean).join(" ") });
      xs.forEach((v, i) => v != null && el("circle", { class: `${kind} dot`, cx: x(i) + 4, cy: y(v), r: 3 }));
    }
  }
  el("text", { x: 0, y: 14 }, String(Math.round(max)));
  el("text", { x: pad, y: H - 4 }, "60 min ago");
  el("text", { x: W - 30, y: H - 4 }, "now");
  const last = series[0][1].filter((v) => v != null);
  svg.setAttribute("aria-label", `${title}: highest ${Math.round(max)}, total ${Math.round(last.reduce((a, b) => a + b, 0))}`);
  return h("figure", { "data-testid": id }, h("figcaption", {}, title), svg);
}

async function dataPlanesPage(main) {
  const planes = await api("GET", "/v1/data-planes");
  main.append(h("h1", {}, "Data planes"), table([
    ["Region", (r) => r.region], ["Host", (r) => r.hostname], ["Version", (r) => r.version],
    ["Heartbeat", (r) => h("span", { class: r.last_heartbeat_at && Date.now() - r.last_heartbeat_at < 60000 ? "ok" : "bad" }, ago(r.last_heartbeat_at))],
    ["Configuration", (r) => h("span", { class: r.acked_revision >= r.latest_revision ? "ok" : "bad" },
      r.acked_revision >= r.latest_revision ? `current (revision ${r.acked_revision})` : `revision ${r.acked_revision} of ${r.latest_revision}`)],
    ["Audit backlog", (r) => `${r.audit_pending} events`], ["Enrolled", (r) => when(r.enrolled_at)],
  ], planes, "No data plane has enrolled yet."));
}

// ---- shell ----

function signOut(message) {
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(TENANT);
  sessionStorage.removeItem(SIGNED_IN_TENANT);
  session.key = null;
  session.signedInTenant = null;
  session.me = null;
  render(message);
}

function renderHeader() {
  const top = document.getElementById("top");
  if (!session.me) return top.replaceChildren(h("span", { class: "brand" }, "OmniSQL"));
  const current = location.hash.split("/")[1];
  const nav = h("nav", { "aria-label": "Pages" }, PAGES.filter(([, , shown]) => shown()).map(([id, title]) =>
    h("a", { href: `#/${id}`, "aria-current": id === current ? "page" : undefined }, title)));
  let tenantControl = null;
  if (isOperator() && session.tenants.length) {
    tenantControl = field("Tenant", "tenant", { options: session.tenants.map((x) => [x.id, x.id]), value: session.tenant });
    tenantControl.querySelector("select").addEventListener("change", (e) => {
      session.tenant = e.target.value;
      sessionStorage.setItem(TENANT, session.tenant);
      route();
    });
  }
  top.replaceChildren(h("span", { class: "brand" }, "OmniSQL"), nav, tenantControl,
    h("span", { class: "who" }, `${session.me.id} · ${session.me.role.replace(/_/g, " ")}${isOperator() ? "" : ` · ${session.tenant}`}`),
    h("button", { type: "button", class: "secondary", onclick: () => signOut("Signed out.") }, "Sign out"));
}

function signInPage(message) {
  const main = document.getElementById("main");
  const form = submitting(h("form", { class: "card signin", "aria-labelledby": "signin" }, h("h1", { id: "signin" }, "Sign in to OmniSQL"),
    message ? h("p", { role: "alert" }, message) : null,
    field("API key or sign-in token", "key", { required: true, type: "password" }),
    h("button", { type: "submit" }, "Sign in")), async (v) => {
    session.key = v.key;
    try {
      await start();
      sessionStorage.setItem(KEY, v.key);
      route();
    } catch (e) {
      session.key = null;
      throw e;
    }
  });
  // Through the tenant's identity provider: the browser leaves for it and comes back to `#signed-in`.
  const provider = submitting(h("form", { class: "card signin", "aria-labelledby": "signin-idp" },
    h("h2", { id: "signin-idp" }, "Sign in with your identity provider"),
    field("Tenant", "tenant", { required: true, placeholder: "e.g. acme" }),
    h("button", { type: "submit", class: "secondary" }, "Continue to your identity provider")), async (v) => {
    location.assign(`/v1/tenants/${encodeURIComponent(v.tenant)}/sign-in`);
  });
  main.replaceChildren(form, provider);
  form.querySelector("input").focus();
}

/** Back from the identity provider: take the sign-in's token (once), or the reason it failed. */
async function returnFromProvider() {
  const hash = location.hash;
  if (hash !== "#signed-in" && !hash.startsWith("#sign-in-error=")) return null;
  history.replaceState(null, "", location.pathname);
  if (hash !== "#signed-in") return decodeURIComponent(hash.slice("#sign-in-error=".length));
  try {
    const signedIn = await api("POST", "/v1/sign-in/session");
    session.key = signedIn.token;
    session.signedInTenant = signedIn.tenant;
    sessionStorage.setItem(KEY, signedIn.token);
    sessionStorage.setItem(SIGNED_IN_TENANT, signedIn.tenant);
    return null;
  } catch (e) {
    return e.message;
  }
}

async function start() {
  session.me = await api("GET", "/v1/me");
  if (session.me.role === "platform_operator") {
    session.tenants = await all("/v1/tenants");
    // The tenant picked before a reload, while it still exists.
    const picked = session.tenant || sessionStorage.getItem(TENANT);
    session.tenant = session.tenants.some((x) => x.id === picked) ? picked : (session.tenants[0] && session.tenants[0].id) || null;
  } else {
    session.tenant = session.me.tenant_id;
  }
}

let navigation = 0;

async function route() {
  const main = document.getElementById("main");
  if (!session.me) return render();
  // A page still loading when the user moves on must not replace the newer one.
  const current = ++navigation;
  const shown = PAGES.filter(([, , ok]) => ok());
  const page = shown.find(([id]) => id === location.hash.split("/")[1]) || shown[0];
  if (location.hash.split("/")[1] !== page[0]) return void (location.hash = `#/${page[0]}`);
  renderHeader();
  main.replaceChildren(h("p", { class: "muted", role: "status" }, "Loading…"));
  const body = h("div");
  try {
    if (page[0] !== "tenants" && page[0] !== "data-planes" && !session.tenant) throw new Error("There is no tenant yet: create one on the Tenants page.");
    await page[3](body);
    if (current !== navigation) return;
    main.replaceChildren(body);
  } catch (e) {
    if (current !== navigation) return;
    main.replaceChildren(h("p", { role: "alert" }, e.message));
  }
  main.focus();
}

async function render(message) {
  renderHeader();
  message = (await returnFromProvider()) || message;
  if (!session.key) return signInPage(message);
  try {
    await start();
    route();
  } catch (e) {
    signOut(e.message);
  }
}

window.addEventListener("hashchange", route);
render();
