//! From a published OpenAPI document to a draft table spec ([`crate::spec`]): for each list operation,
//! the rows' array becomes `records`, the item schema's properties become columns (one level of nested
//! objects flattened, `profile.email` → `profile_email`), a `cursor` parameter with a `next_cursor` in the
//! answer becomes cursor pagination, a `page` parameter link-header pages, `limit` / `per_page` the page size, and each other query parameter a
//! filter rule when a column of the same name exists (inexact until someone checks the API's semantics) or
//! a comment when none does. Swagger 2.0 and OpenAPI 3 documents, with local `$ref`s.
//!
//! A draft is where a curator starts, not a spec to ship: [`compare`] says how far it is from a curated one.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::Value;

use crate::snake_case;
use crate::spec::{ConnectorSpec, Pagination};

/// Parameters that are the protocol's, not filters.
const NOT_FILTERS: &[&str] = &["token", "cursor", "page", "per_page", "limit", "page_size", "pretty"];

/// One table of the draft.
struct Table {
    name: String,
    path: String,
    records: String,
    cursor: Option<(String, String)>,
    /// Numbered pages, followed through the `link` header.
    link: bool,
    page_size: Option<(String, u64)>,
    columns: Vec<(String, &'static str, String)>,
    filters: Vec<String>,
    notes: Vec<String>,
}

/// A draft spec (TOML, it parses) for `operations` (`GET /path`) of `document`.
pub fn draft(document: &Value, connector: &str, operations: &[String]) -> Result<String, String> {
    let mut out = String::new();
    let _ =
        writeln!(out, "# Draft from an OpenAPI document: check every filter's semantics (rules start inexact) and each column.");
    let _ = writeln!(out, "name = {}\nversion = \"0.1.0\"\napp = {}", quote(connector), quote(connector));
    for op in operations {
        let t = table(document, op)?;
        let _ =
            writeln!(out, "\n[[table]]\nname = {}\npath = {}\nrecords = {}", quote(&t.name), quote(&t.path), quote(&t.records));
        for note in &t.notes {
            let _ = writeln!(out, "# {note}");
        }
        if let Some((next, param)) = &t.cursor {
            let _ = writeln!(out, "pagination = {{ style = \"cursor\", next = {}, param = {} }}", quote(next), quote(param));
        } else if t.link {
            let _ = writeln!(out, "pagination = {{ style = \"link\" }}  # numbered pages: check that the API links the next one");
        }
        if let Some((param, max)) = &t.page_size {
            let _ = writeln!(out, "page_size = {{ param = {}, max = {max} }}", quote(param));
        }
        let _ = writeln!(out, "column = [");
        for (name, kind, pointer) in &t.columns {
            let _ = writeln!(out, "  {{ name = {}, type = \"{kind}\", pointer = {} }},", quote(name), quote(pointer));
        }
        let _ = writeln!(out, "]");
        for f in &t.filters {
            out.push_str(f);
        }
    }
    ConnectorSpec::parse(&out).map_err(|e| format!("the draft does not parse (a defect of the generator): {e}"))?;
    Ok(out)
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn table(doc: &Value, operation: &str) -> Result<Table, String> {
    let (method, path) = operation.split_once(' ').ok_or_else(|| format!("`{operation}`: write operations as `GET /path`"))?;
    let op = doc
        .pointer(&format!("/paths/{}/{}", escape(path), method.to_lowercase()))
        .ok_or_else(|| format!("the document has no operation `{operation}`"))?;
    let base = doc.get("basePath").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| {
        // OpenAPI 3: the path part of the first server URL.
        let url = doc.pointer("/servers/0/url").and_then(Value::as_str).unwrap_or_default();
        url.split_once("://").map_or(url, |(_, rest)| rest.find('/').map_or("", |i| &rest[i..])).to_string()
    });
    let name = snake_case(path.trim_end_matches('/').rsplit('/').next().unwrap_or("table")).replace(['.', '-'], "_");
    let mut t = Table {
        name,
        path: format!("{}{path}", base.trim_end_matches('/')),
        records: String::new(),
        cursor: None,
        link: false,
        page_size: None,
        columns: Vec::new(),
        filters: Vec::new(),
        notes: Vec::new(),
    };
    if path.contains('{') {
        t.notes.push(format!(
            "the path has parameters ({path}): specs take fixed paths; a fan-out over a parent table supplies one"
        ));
    }

    let answer = op
        .pointer("/responses/200/schema")
        .or_else(|| op.pointer("/responses/200/content/application~1json/schema"))
        .map(|s| resolve(doc, s))
        .ok_or_else(|| format!("`{operation}` declares no JSON answer for 200"))?;
    let items = if schema_type(doc, answer) == Some("array") {
        answer.get("items").map(|i| resolve(doc, i))
    } else {
        let properties = properties(doc, answer);
        let found = properties.iter().find(|(_, s)| {
            schema_type(doc, s) == Some("array")
                && s.get("items").is_some_and(|i| schema_type(doc, resolve(doc, i)) == Some("object"))
        });
        found.map(|(name, s)| {
            t.records = format!("/{name}");
            resolve(doc, &s["items"])
        })
    };
    let items = items.ok_or_else(|| format!("`{operation}` answers no array of objects: not a list operation"))?;
    for (name, schema) in properties(doc, items) {
        match column_type(doc, schema) {
            Some(kind) => t.columns.push((snake_case(&name), kind, format!("/{name}"))),
            None if schema_type(doc, schema) == Some("object") => {
                for (inner, s) in properties(doc, schema) {
                    if let Some(kind) = column_type(doc, s) {
                        t.columns.push((
                            format!("{}_{}", snake_case(&name), snake_case(&inner)),
                            kind,
                            format!("/{name}/{inner}"),
                        ));
                    }
                }
            }
            None => {}
        }
    }

    for p in op.get("parameters").and_then(Value::as_array).into_iter().flatten() {
        let p = resolve(doc, p);
        if p.get("in").and_then(Value::as_str) != Some("query") {
            continue;
        }
        let Some(name) = p.get("name").and_then(Value::as_str) else { continue };
        let schema = p.get("schema").map(|s| resolve(doc, s)).unwrap_or(p);
        let kind = schema.get("type").and_then(Value::as_str).unwrap_or("string");
        match name {
            "cursor" => {
                // Where the answer says the next cursor is: its schema, else its example.
                let example = op.pointer("/responses/200/examples/application~1json");
                let next = find_next_cursor(doc, answer, "").or_else(|| example.and_then(|e| cursor_in_example(e, "")));
                if next.is_none() {
                    t.notes.push("the answer names no next cursor: check `pagination.next`".into());
                }
                t.cursor = Some((next.unwrap_or_else(|| "/next_cursor".into()), name.into()));
            }
            "limit" | "per_page" | "page_size" if kind == "integer" => {
                let described = p.get("description").and_then(Value::as_str).and_then(max_in_text);
                let max = schema.get("maximum").and_then(Value::as_u64).or(described).unwrap_or(100);
                t.page_size = Some((name.into(), max));
            }
            // Numbered pages: APIs that number them (GitHub) link the next one in the `link` header.
            "page" => t.link = true,
            _ if NOT_FILTERS.contains(&name) => {}
            _ => {
                let column = snake_case(name);
                let description =
                    p.get("description").and_then(Value::as_str).unwrap_or_default().lines().next().unwrap_or_default();
                if t.columns.iter().any(|(c, _, _)| c == &column) {
                    t.filters.push(format!(
                        "[[table.filter]]  # {description}\ncolumns = [{}]\nops = [\"=\"]\nparam = {}\nexact = false\n",
                        quote(&column),
                        quote(name)
                    ));
                } else {
                    t.notes.push(format!("query parameter `{name}` ({kind}) has no column of its name: {description}"));
                }
            }
        }
    }
    Ok(t)
}

/// A JSON pointer token for a path (`/` → `~1`).
fn escape(path: &str) -> String {
    path.replace('~', "~0").replace('/', "~1")
}

/// Follows local `$ref`s.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    let mut s = schema;
    for _ in 0..16 {
        match s.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#')).and_then(|r| doc.pointer(r)) {
            Some(target) => s = target,
            None => break,
        }
    }
    s
}

/// A schema's type: `type` (the first non-null of a list), else `object` when it has properties.
fn schema_type<'a>(doc: &'a Value, schema: &'a Value) -> Option<&'a str> {
    let s = resolve(doc, schema);
    match s.get("type") {
        Some(Value::String(t)) => Some(t.as_str()),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null"),
        _ if s.get("properties").is_some() || !alternatives(s).is_empty() => Some("object"),
        _ => None,
    }
}

/// The parts of a schema made of others: `allOf`, `anyOf`, `oneOf`, and Slack's `items: [a, b]` on an
/// object (its documents' way of saying "one of these shapes").
fn alternatives(schema: &Value) -> Vec<&Value> {
    let mut parts: Vec<&Value> =
        ["allOf", "anyOf", "oneOf"].iter().filter_map(|k| schema.get(*k).and_then(Value::as_array)).flatten().collect();
    if schema.get("type").is_none()
        && let Some(items) = schema.get("items").and_then(Value::as_array)
    {
        parts.extend(items);
    }
    parts
}

/// An object schema's properties, those of its parts included (see [`alternatives`]), in the document's
/// order.
fn properties<'a>(doc: &'a Value, schema: &'a Value) -> Vec<(String, &'a Value)> {
    let s = resolve(doc, schema);
    let mut out: Vec<(String, &Value)> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut add = |props: Option<&'a serde_json::Map<String, Value>>| {
        for (k, v) in props.into_iter().flatten() {
            if seen.insert(k.clone()) {
                out.push((k.clone(), resolve(doc, v)));
            }
        }
    };
    add(s.get("properties").and_then(Value::as_object));
    for part in alternatives(s) {
        add(resolve(doc, part).get("properties").and_then(Value::as_object));
    }
    out
}

fn column_type(doc: &Value, schema: &Value) -> Option<&'static str> {
    let s = resolve(doc, schema);
    Some(match (schema_type(doc, s)?, s.get("format").and_then(Value::as_str)) {
        ("string", Some("date-time")) => "timestamp",
        ("string", Some("date")) => "date",
        ("string", _) => "text",
        ("integer", _) => "int",
        ("number", _) => "float",
        ("boolean", _) => "bool",
        ("array", _) if s.get("items").is_some_and(|i| schema_type(doc, i) == Some("string")) => "text_list",
        _ => return None,
    })
}

/// The pointer of a `next_cursor`-like text in the answer, up to two levels down.
fn find_next_cursor(doc: &Value, schema: &Value, prefix: &str) -> Option<String> {
    for (name, s) in properties(doc, schema) {
        let here = format!("{prefix}/{name}");
        if matches!(name.as_str(), "next_cursor" | "nextCursor" | "next") && schema_type(doc, s) == Some("string") {
            return Some(here);
        }
        if prefix.matches('/').count() < 2
            && schema_type(doc, s) == Some("object")
            && let Some(found) = find_next_cursor(doc, s, &here)
        {
            return Some(found);
        }
    }
    None
}

/// The pointer of a `next_cursor` key in an example answer, up to three levels down.
fn cursor_in_example(example: &Value, prefix: &str) -> Option<String> {
    let object = example.as_object()?;
    for (k, v) in object {
        let here = format!("{prefix}/{k}");
        if matches!(k.as_str(), "next_cursor" | "nextCursor") && v.is_string() {
            return Some(here);
        }
        if prefix.matches('/').count() < 3
            && let Some(found) = cursor_in_example(v, &here)
        {
            return Some(found);
        }
    }
    None
}

/// `(max 100)` or `maximum of 1000` in a parameter's description.
fn max_in_text(text: &str) -> Option<u64> {
    let lower = text.to_lowercase();
    let at = lower.find("max")?;
    lower[at..].split(|c: char| !c.is_ascii_digit()).find(|s| !s.is_empty())?.parse().ok()
}

/// How far a draft is from a curated spec, table by table (matched by path): the columns both have by
/// pointer, those only one has, and whether records, pagination and filter parameters agree.
pub fn compare(draft: &ConnectorSpec, curated: &ConnectorSpec) -> String {
    let mut out = String::new();
    let mut differences = 0usize;
    for d in &draft.tables {
        let Some(c) = curated.tables.iter().find(|c| path_shape(&c.path) == path_shape(&d.path)) else {
            let _ = writeln!(out, "{}: no curated table has path {}", d.name, d.path);
            continue;
        };
        let pointers = |t: &crate::spec::TableSpec| t.columns.iter().map(|c| c.pointer.clone()).collect::<BTreeSet<_>>();
        let (dp, cp) = (pointers(d), pointers(c));
        let only_curated: Vec<_> = cp.difference(&dp).cloned().collect();
        let only_draft = dp.difference(&cp).count();
        let records = d.records == c.records;
        let pagination = matches!(
            (&d.pagination, &c.pagination),
            (Pagination::None, Pagination::None) | (Pagination::Link { .. }, Pagination::Link { .. })
        ) || matches!((&d.pagination, &c.pagination), (Pagination::Cursor { next: a, param: p }, Pagination::Cursor { next: b, param: q }) if a == b && p == q);
        let params = |t: &crate::spec::TableSpec| {
            t.filters.iter().flat_map(|f| [&f.param, &f.lower, &f.upper]).flatten().cloned().collect::<BTreeSet<_>>()
        };
        let (df, cf) = (params(d), params(c));
        differences += only_curated.len() + usize::from(!records) + usize::from(!pagination) + cf.difference(&df).count();
        let _ = writeln!(
            out,
            "{} ({}): columns {} of the curated {} found by pointer (missing: {}), {} more in the draft; records {}; pagination {}; filter parameters {} of {} (curated: {})",
            c.name,
            c.path,
            cp.intersection(&dp).count(),
            cp.len(),
            if only_curated.is_empty() { "none".into() } else { only_curated.join(", ") },
            only_draft,
            if records { "same" } else { "differ" },
            if pagination { "same" } else { "differs" },
            cf.intersection(&df).count(),
            cf.len(),
            cf.iter().cloned().collect::<Vec<_>>().join(", "),
        );
    }
    let _ = writeln!(
        out,
        "differences from the curated spec: {differences} (curated columns missing, records, pagination, filter parameters)"
    );
    out
}

/// A path with each run of `{name}` segments as one `{}`: the document's `/repos/{owner}/{repo}/issues`
/// is the spec's `/repos/{key}/issues`.
fn path_shape(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        let variable = segment.starts_with('{') && segment.ends_with('}');
        if !(variable && out.last() == Some(&"{}")) {
            out.push(if variable { "{}" } else { segment });
        }
    }
    out.join("/")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn document(name: &str) -> Value {
        let text = std::fs::read_to_string(format!("{}/../../sandbox/specs/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn slacks_list_methods_draft_close_to_the_curated_spec() {
        let ops = ["GET /conversations.list", "GET /users.list", "GET /conversations.history"].map(String::from);
        let text = draft(&document("slack-web-openapi-v2.json"), "slack", &ops).unwrap();
        let drafted = ConnectorSpec::parse(&text).unwrap();
        let curated = ConnectorSpec::parse(include_str!("../../connectors/slack/slack.toml")).unwrap();
        let history = drafted.tables.iter().find(|t| t.path == "/api/conversations.history").unwrap();
        assert_eq!(history.records, "/messages");
        assert!(
            matches!(&history.pagination, Pagination::Cursor { next, param } if next == "/response_metadata/next_cursor" && param == "cursor")
        );
        assert_eq!(history.page_size.as_ref().map(|p| p.param.as_str()), Some("limit"));
        let report = compare(&drafted, &curated);
        // Every table is found, with its records and pagination; the report counts the rest.
        assert_eq!(report.matches("records same; pagination same").count(), 3, "{report}");
        assert!(report.contains("differences from the curated spec: "), "{report}");
    }

    #[test]
    fn githubs_issue_list_drafts_columns_filters_and_notes() {
        let text =
            draft(&document("github-rest-openapi-2022-07.json"), "github", &["GET /repos/{owner}/{repo}/issues".into()]).unwrap();
        let spec = ConnectorSpec::parse(&text).unwrap();
        let issues = &spec.tables[0];
        assert_eq!((issues.name.as_str(), issues.records.as_str()), ("issues", ""));
        let columns: Vec<_> = issues.columns.iter().map(|c| c.name.as_str()).collect();
        for c in ["number", "title", "state", "user_login", "created_at"] {
            assert!(columns.contains(&c), "{c} in {columns:?}");
        }
        assert!(issues.columns.iter().any(|c| c.name == "created_at" && c.kind == "timestamp"));
        assert!(issues.filters.iter().any(|f| f.param.as_deref() == Some("state") && !f.exact), "{text}");
        assert!(matches!(issues.pagination, Pagination::Link { .. }), "{text}");
        assert_eq!(issues.page_size.as_ref().map(|p| (p.param.as_str(), p.max)), Some(("per_page", 100)));
        assert!(text.contains("path has parameters"), "{text}");
        let curated = ConnectorSpec::parse(include_str!("../../connectors/github/github.toml")).unwrap();
        let report = compare(&spec, &curated);
        assert!(report.contains("issues (/repos/{key}/issues)") && report.contains("pagination same"), "{report}");
    }

    #[test]
    fn a_missing_or_non_list_operation_is_an_error() {
        let doc = document("slack-web-openapi-v2.json");
        assert!(draft(&doc, "slack", &["GET /nope".into()]).unwrap_err().contains("no operation"));
        assert!(draft(&doc, "slack", &["conversations.list".into()]).unwrap_err().contains("GET /path"));
    }
}
