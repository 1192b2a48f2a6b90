//! Tables as data: one declarative spec per table (request, records, pagination, columns, filter rules,
//! limit, fan-out over a parent table, rate-limit bucket) from which everything about the table derives —
//! the pushdown answer for each filter, the parameters sent, `EXPLAIN`'s requests, the catalog's schema
//! and the fetch itself. A filter is declared pushed down only by the rule that also sends it, so the two
//! cannot drift apart (ADR 0013).
//!
//! Specs are TOML files compiled into the binary (`include_str!`) and parsed once; [`ConnectorSpec::parse`]
//! checks them (unknown keys, columns a rule names, a fan-out's parent), and each connector's tests parse
//! its own. What a spec cannot say stays code behind [`crate::Dialect`] (errors, auth) or as a hand-written
//! [`ApiTable`] for one table.

use std::collections::BTreeMap;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, Operator};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{ConnectorError, Result};
use crate::filter;
use crate::governor::BucketSpec;
use crate::json::{Column, Kind};
use crate::table::ScanRequest;

pub use crate::spec_table::SpecTable;

/// A connector's tables, as its spec file declares them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorSpec {
    /// The connector's name, also its default SQL schema (e.g. `slack`).
    pub name: String,
    pub version: String,
    /// The app's name in errors, metrics and traces (e.g. `Slack`).
    pub app: String,
    /// The app's public API URL: the default of a spec connector's `base_url` parameter (none: the
    /// connection must name its own, e.g. a Jira site).
    pub base_url: Option<String>,
    /// JSON pointers to an error answer's message, tried in order (e.g. Stripe's `/error/message`).
    #[serde(default)]
    pub error_message: Vec<String>,
    /// Response headers that report the rate-limit bucket's state.
    pub rate_limit_headers: Option<RateLimitHeaders>,
    #[serde(rename = "table")]
    pub tables: Vec<TableSpec>,
}

/// Headers an API reports its rate-limit state in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitHeaders {
    pub limit: Option<String>,
    pub remaining: String,
    /// The window's length in milliseconds (a rolling window refills within it).
    pub window_ms: Option<String>,
}

/// One table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    pub name: String,
    /// Path under the connection's base URL, e.g. `/api/users.list`.
    pub path: String,
    /// Query parameters every request of the table sends.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// JSON pointer to the array of rows in an answer (`""`: the answer is the array).
    pub records: String,
    #[serde(default)]
    pub pagination: Pagination,
    /// Rows per page: the parameter and the most the API gives; a query's limit asks for fewer when every
    /// filter was exact.
    pub page_size: Option<PageSize>,
    /// The rate-limit bucket its requests take from.
    pub bucket: Option<Bucket>,
    #[serde(rename = "column")]
    pub columns: Vec<ColumnSpec>,
    #[serde(default, rename = "filter")]
    pub filters: Vec<FilterRule>,
    /// One request (chain of pages) per row of another table of the connector.
    pub fan_out: Option<FanOut>,
    /// Where the rows are read when no filter pins the fan-out's keys: one list holding every parent's
    /// rows (GitHub's organisation-wide issue list) instead of the parent's list and a request per row.
    pub unpinned: Option<Unpinned>,
    /// Where one row is read when a `lookup` rule pins its key to one value (`{key}` in the path); the
    /// answer is the row itself.
    pub lookup_path: Option<String>,
    /// API error codes that mean "no such parent": that request's rows are none, not an error.
    #[serde(default)]
    pub missing_is_empty: Vec<String>,
    /// HTTP statuses that mean the same (GitHub's 404 for a repository that is not there).
    #[serde(default)]
    pub missing_status: Vec<u16>,
}

/// The fan-out's alternative when its keys are not pinned.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unpinned {
    pub path: String,
    /// Parameters sent along (e.g. `filter = "all"`).
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Parameters this list does not take: not sent (the rules that send them must be inexact).
    #[serde(default)]
    pub drop: Vec<String>,
}

/// How the pages of an answer chain.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, tag = "style", rename_all = "snake_case")]
pub enum Pagination {
    /// One answer.
    #[default]
    None,
    /// The answer names the next page's cursor at `next` (JSON pointer; absent or `""` at the end), sent
    /// back as `param`.
    Cursor { next: String, param: String },
    /// The `link` header's `rel="next"` URL (RFC 8288, as GitHub pages), followed while it stays under
    /// the connection's base URL. With `page` (the page-number parameter), the pages after the first are
    /// asked for all at once, up to the `rel="last"` page, unless a limit may stop early.
    Link {
        #[serde(default)]
        page: Option<String>,
    },
    /// Rows are numbered: the next page starts at `param` = the rows read so far (Jira's `startAt`). It
    /// ends at an empty page, a page shorter than asked for, where the boolean at `last` is true, or once
    /// the rows read reach the number at `total`.
    Offset { param: String, last: Option<String>, total: Option<String> },
    /// The next page starts after the last row's `key`, sent as `param`, while the boolean at `more` is
    /// true (Stripe's `starting_after` and `has_more`).
    AfterLast { more: String, key: String, param: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageSize {
    pub param: String,
    pub max: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    pub name: String,
    /// Requests per window.
    pub capacity: f64,
    pub window_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    pub name: String,
    /// `text`, `int`, `float`, `bool`, `timestamp` (ISO 8601), `date`, `epoch_seconds`, `present`,
    /// `text_list` (an array of strings), `name_list` (an array of objects: their `name`s).
    #[serde(rename = "type")]
    pub kind: String,
    /// JSON pointer into one row, e.g. `/profile/email`.
    pub pointer: String,
    /// Read only the part of the text after this (e.g. `/repos/` of an API URL)…
    pub after: Option<String>,
    /// …and of that, this many `/`-separated segments (`acme/api` of `acme/api/issues/7`).
    pub segments: Option<usize>,
}

impl ColumnSpec {
    fn derived(&self) -> bool {
        self.after.is_some() || self.segments.is_some()
    }

    /// The part of `text` the column reads: after the last `after`, the first `segments` segments.
    fn pick(&self, text: &str) -> String {
        let rest = match &self.after {
            Some(a) => text.rsplit_once(a.as_str()).map_or(text, |(_, r)| r),
            None => text,
        };
        match self.segments {
            Some(n) => rest.split('/').take(n).collect::<Vec<_>>().join("/"),
            None => rest.to_string(),
        }
    }
}

/// What the API does with filters on some columns.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterRule {
    /// The columns (one, or several that mean the same thing, like Slack's `ts` and `posted_at`).
    pub columns: Vec<String>,
    /// `=` (sent as `param`, as the fan-out's key, or as both bounds), `in` (the fan-out's keys, or
    /// `clause_in`), `<`, `<=`, `>`, `>=` (sent as `lower` / `upper`).
    pub ops: Vec<String>,
    pub param: Option<String>,
    /// The filter as a clause of a query language sent in `param`, `{}` standing for the written value
    /// (e.g. Jira's `project = {}`); every clause sent in one parameter is joined with ` AND `, and
    /// replaces that parameter's default in `query`.
    pub clause: Option<String>,
    /// The clause for `in`, `{}` standing for the values written and joined with `, `.
    pub clause_in: Option<String>,
    pub lower: Option<String>,
    pub upper: Option<String>,
    /// How values are written in parameters: `text` (default), `seconds_6` (epoch seconds with six
    /// decimals, from a number, a numeric text or a timestamp), `epoch_seconds` (whole seconds, rounded
    /// down) or `quoted` (a double-quoted string literal, `"` and `\` escaped: a clause's value can never
    /// end its string).
    #[serde(default)]
    pub value: ValueFormat,
    /// Whether the API's answer is exactly the filter's rows (else the engine checks them again). Even
    /// when true, a value the format writes with less precision, a strict bound sent as `inclusive`, and
    /// several values sent as `several` short of all of `one_of` are checked again.
    pub exact: bool,
    /// The values the API knows (e.g. `open`, `closed`); another value is not pushed down.
    #[serde(default)]
    pub one_of: Vec<String>,
    /// What `in` with several values is sent as (GitHub's `state=all`).
    pub several: Option<String>,
    /// What `IS NULL` / `IS NOT NULL` are sent as (GitHub's `assignee=none` / `assignee=*`).
    pub null_value: Option<String>,
    pub not_null_value: Option<String>,
    /// The API's bounds include their value: `<` and `>` are sent as `<=` and `>=`.
    #[serde(default)]
    pub inclusive: bool,
    /// `=` reads the one row at the table's `lookup_path`.
    #[serde(default)]
    pub lookup: bool,
    /// `=` / `in` values are the fan-out's keys: one request per value instead of listing the parent.
    #[serde(default)]
    pub fan_out: bool,
    /// Parameters sent along whenever the rule sends one (e.g. Slack's `inclusive=true`).
    #[serde(default)]
    pub with: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueFormat {
    #[default]
    Text,
    #[serde(rename = "seconds_6")]
    Seconds6,
    EpochSeconds,
    Quoted,
    /// ISO 8601 in whole seconds, UTC (`2024-06-01T00:00:00Z`).
    IsoSeconds,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FanOut {
    /// The parent table (of this connector) whose rows are listed.
    pub parent: String,
    /// JSON pointer to the key in a parent row.
    pub key: String,
    /// The parameter the key is sent as; without one, the key is the path's `{key}`.
    pub param: Option<String>,
    /// Field added to each row with the key it was fetched for (columns may point at it: `/<field>`).
    pub field: Option<String>,
}

impl ConnectorSpec {
    /// Parses and checks a spec file.
    pub fn parse(text: &str) -> std::result::Result<ConnectorSpec, String> {
        let spec: ConnectorSpec = toml::from_str(text).map_err(|e| format!("connector spec: {e}"))?;
        for t in &spec.tables {
            let problem = |what: String| format!("connector spec `{}`, table `{}`: {what}", spec.name, t.name);
            for c in &t.columns {
                kind(&c.kind).ok_or_else(|| problem(format!("column `{}` has unknown type `{}`", c.name, c.kind)))?;
            }
            for r in &t.filters {
                for c in &r.columns {
                    if !t.columns.iter().any(|col| &col.name == c) {
                        return Err(problem(format!("a filter rule names unknown column `{c}`")));
                    }
                }
                for op in &r.ops {
                    let sent = match op.as_str() {
                        "=" => r.param.is_some() || r.fan_out || r.lookup || (r.lower.is_some() && r.upper.is_some()),
                        "in" => r.fan_out || (r.param.is_some() && (r.clause_in.is_some() || r.several.is_some())),
                        "<" | "<=" => r.upper.is_some(),
                        ">" | ">=" => r.lower.is_some(),
                        "is_null" => r.param.is_some() && r.null_value.is_some(),
                        "is_not_null" => r.param.is_some() && r.not_null_value.is_some(),
                        "has" => r.param.is_some(),
                        other => return Err(problem(format!("unknown operator `{other}`"))),
                    };
                    if !sent {
                        return Err(problem(format!("operator `{op}` on {:?} names no parameter to send it as", r.columns)));
                    }
                }
                if (r.clause.is_some() || r.clause_in.is_some()) && r.param.is_none() {
                    return Err(problem(format!("the clause on {:?} names no parameter to send it in", r.columns)));
                }
                if r.fan_out && t.fan_out.is_none() {
                    return Err(problem("a rule feeds the fan-out, but the table has none".into()));
                }
                if r.lookup && t.lookup_path.is_none() {
                    return Err(problem("a rule looks rows up, but the table has no `lookup_path`".into()));
                }
                // A list that drops the rule's parameter answers more rows than the filter's.
                let dropped = t.unpinned.as_ref().is_some_and(|u| r.param.as_ref().is_some_and(|p| u.drop.contains(p)));
                if dropped && r.exact {
                    return Err(problem(format!(
                        "the rule on {:?} cannot be exact: the unpinned list drops its parameter",
                        r.columns
                    )));
                }
            }
            if t.unpinned.is_some() && t.fan_out.is_none() {
                return Err(problem("`unpinned` is the fan-out's alternative, but the table has no fan-out".into()));
            }
            if let Some(f) = &t.fan_out
                && f.param.is_none()
                && !t.path.contains("{key}")
            {
                return Err(problem("the fan-out sends its key in no parameter and the path has no `{key}`".into()));
            }
            if let Some(f) = &t.fan_out
                && !spec.tables.iter().any(|p| p.name == f.parent && p.fan_out.is_none())
            {
                return Err(problem(format!("fan-out parent `{}` is not a table of the connector without a fan-out", f.parent)));
            }
        }
        Ok(spec)
    }

    /// A connector's built-in spec (`include_str!` of its file), parsed once: its first use reports a
    /// defect as [`ConnectorError::InvalidSpec`] (each connector's tests parse its file, so none ships).
    pub fn built_in(
        cell: &'static std::sync::OnceLock<std::result::Result<ConnectorSpec, String>>,
        connector: &str,
        text: &str,
    ) -> Result<&'static ConnectorSpec> {
        cell.get_or_init(|| ConnectorSpec::parse(text))
            .as_ref()
            .map_err(|message| ConnectorError::InvalidSpec { connector: connector.into(), message: message.clone() })
    }

    pub fn table(&self, name: &str) -> Option<&TableSpec> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// The bucket of the table one of whose paths (its own, unpinned or lookup, variables filled in)
    /// `url` ends with.
    pub fn bucket(&self, url: &str) -> Option<BucketSpec> {
        let path = url.split('?').next().unwrap_or_default();
        let t = self.tables.iter().find(|t| {
            [Some(&t.path), t.unpinned.as_ref().map(|u| &u.path), t.lookup_path.as_ref()]
                .into_iter()
                .flatten()
                .any(|template| path_matches(path, template))
        })?;
        let b = t.bucket.as_ref()?;
        Some(BucketSpec {
            name: b.name.clone(),
            capacity: b.capacity,
            window: std::time::Duration::from_secs(b.window_seconds),
            trusted: true,
        })
    }

    /// Every table's columns, for the catalog (no connection needed).
    pub fn schemas(&self) -> Vec<(String, Vec<Column>)> {
        self.tables.iter().map(|t| (t.name.clone(), t.column_list())).collect()
    }
}

/// Whether `path` ends with `template`, each `{name}` of it standing for one or more characters.
fn path_matches(path: &str, template: &str) -> bool {
    let pieces: Vec<&str> = template
        .split('{')
        .enumerate()
        .map(|(i, p)| if i == 0 { p } else { p.split_once('}').map_or("", |(_, rest)| rest) })
        .collect();
    if pieces.len() == 1 {
        return path.ends_with(template);
    }
    let Some(last) = pieces.last().filter(|l| path.ends_with(**l)) else { return false };
    // The literal pieces in order, each after the one before, the last at the end.
    let mut rest = &path[..path.len() - last.len()];
    for piece in pieces[..pieces.len() - 1].iter().rev() {
        match rest.rfind(piece) {
            Some(at) if at + piece.len() < rest.len() || piece.is_empty() => rest = &rest[..at],
            _ => return false,
        }
    }
    true
}

fn kind(name: &str) -> Option<Kind> {
    Some(match name {
        "text" => Kind::Str,
        "int" => Kind::Int,
        "float" => Kind::Float,
        "bool" => Kind::Bool,
        "timestamp" => Kind::Timestamp,
        "date" => Kind::Date,
        "epoch_seconds" => Kind::EpochSeconds,
        "present" => Kind::Present,
        "text_list" => Kind::StrList(""),
        "name_list" => Kind::StrList("name"),
        _ => return None,
    })
}

impl TableSpec {
    pub fn column_list(&self) -> Vec<Column> {
        self.columns
            .iter()
            .filter_map(|c| {
                // A derived column reads the field `derive` adds to each row.
                let pointer = if c.derived() { format!("/_{}", c.name) } else { c.pointer.clone() };
                Some(Column::new(&c.name, kind(&c.kind)?, &pointer))
            })
            .collect()
    }

    /// Adds each derived column's value (the part of a text `after` / `segments` pick) to the rows.
    pub(crate) fn derive(&self, rows: &mut [Value]) {
        for c in self.columns.iter().filter(|c| c.derived()) {
            for row in rows.iter_mut() {
                let picked = row.pointer(&c.pointer).and_then(Value::as_str).map(|text| c.pick(text));
                if let (Some(o), Some(v)) = (row.as_object_mut(), picked) {
                    o.insert(format!("_{}", c.name), Value::String(v));
                }
            }
        }
    }

    /// The rule that sends `f`, and how `f` uses its column.
    fn rule_for(&self, f: &Expr) -> Option<(&FilterRule, Use)> {
        let (column, used) = Use::of(f)?;
        let rule = self.filters.iter().find(|r| r.columns.iter().any(|c| c == column) && r.sends(&used))?;
        Some((rule, used))
    }

    /// Whether `f` is pushed down, and exactly.
    pub fn pushdown(&self, f: &Expr) -> Option<bool> {
        self.rule_for(f).map(|(rule, used)| rule.exact_for(&used))
    }

    /// The keys the fan-out is pinned to by the scan's filters, if any.
    pub(crate) fn pinned_keys(&self, scan: &ScanRequest) -> Option<Vec<String>> {
        let rule = self.filters.iter().find(|r| r.fan_out)?;
        rule.columns.iter().find_map(|c| filter::pinned_texts(&scan.filters, c))
    }

    /// The one key a lookup rule pins, if any.
    pub(crate) fn lookup_key(&self, scan: &ScanRequest) -> Option<String> {
        let rule = self.filters.iter().find(|r| r.lookup)?;
        let keys = rule.columns.iter().find_map(|c| filter::pinned_texts(&scan.filters, c))?;
        match keys.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        }
    }

    /// The parameters of the scan's requests (before the fan-out's key and the page cursor). A rule's
    /// parameter replaces the table's default of that name.
    pub(crate) fn params(&self, scan: &ScanRequest) -> Vec<(String, String)> {
        let mut params: Vec<(String, String)> = self.query.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if let Some(size) = &self.page_size {
            params.push((size.param.clone(), scan.limit.map_or(size.max, |l| l.clamp(1, size.max)).to_string()));
        }
        let mut with = BTreeMap::new();
        let mut sent: Vec<(String, String)> = Vec::new();
        let mut clauses: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for rule in self.filters.iter().filter(|r| !r.fan_out && !r.lookup) {
            let mut lower: Option<Bound> = None;
            let mut upper: Option<Bound> = None;
            let mut equal: Option<String> = None;
            for f in &scan.filters {
                let Some((_, used)) = self.rule_for(f).filter(|(r, _)| std::ptr::eq(*r, rule)) else { continue };
                let write = |v: &ScalarValue| format_value(rule.value, v);
                match used {
                    Use::Values(values) if rule.clause.is_some() || rule.clause_in.is_some() => {
                        let written: Option<Vec<String>> = values.iter().map(write).collect();
                        let template = if values.len() == 1 { rule.clause.as_ref() } else { rule.clause_in.as_ref() };
                        if let (Some(param), Some(written), Some(template)) = (&rule.param, written, template) {
                            clauses.entry(param.clone()).or_default().push(template.replace("{}", &written.join(", ")));
                            with.extend(rule.with.clone());
                        }
                    }
                    Use::Values(values) if values.len() > 1 => equal = rule.several.clone(),
                    Use::Values(values) => {
                        if let Some(v) = values.first().and_then(write) {
                            if rule.param.is_some() {
                                equal = Some(v);
                            } else {
                                // `=` on a range-only rule: both bounds.
                                lower = Some(Bound::of(&values[0], v.clone()));
                                upper = Some(Bound::of(&values[0], v));
                            }
                        }
                    }
                    Use::Null => equal = rule.null_value.clone(),
                    Use::NotNull => equal = rule.not_null_value.clone(),
                    Use::Has(v) => equal = write(&v),
                    Use::Compare(op, v) => {
                        // A bound written with less precision must not cut rows off: upper ones round up.
                        let v = match op {
                            Operator::Lt | Operator::LtEq if !lossless(rule.value, &v) => ceil_second(&v).unwrap_or(v),
                            _ => v,
                        };
                        let Some(written) = write(&v) else { continue };
                        let bound = Bound::of(&v, written);
                        match op {
                            Operator::Gt | Operator::GtEq if lower.as_ref().is_none_or(|l| bound.above(l)) => lower = Some(bound),
                            Operator::Lt | Operator::LtEq if upper.as_ref().is_none_or(|u| u.above(&bound)) => {
                                upper = Some(bound)
                            }
                            _ => {}
                        }
                    }
                }
            }
            let before = sent.len();
            if let (Some(p), Some(v)) = (&rule.param, equal) {
                sent.push((p.clone(), v));
            }
            for (p, bound) in [(&rule.lower, lower), (&rule.upper, upper)] {
                if let (Some(p), Some(b)) = (p, bound) {
                    sent.push((p.clone(), b.written));
                }
            }
            if sent.len() > before {
                with.extend(rule.with.clone());
            }
        }
        sent.extend(clauses.into_iter().map(|(param, c)| (param, c.join(" AND "))));
        params.retain(|(k, _)| !sent.iter().any(|(s, _)| s == k));
        params.extend(sent);
        params.extend(with);
        params
    }
}

/// How a filter uses its column, as the rules read it.
#[derive(Debug, Clone)]
enum Use {
    /// `=` one value, or `IN` / `OR` of several (each once).
    Values(Vec<ScalarValue>),
    /// `<`, `<=`, `>`, `>=`.
    Compare(Operator, ScalarValue),
    Null,
    NotNull,
    /// `array_has(column, value)`.
    Has(ScalarValue),
}

impl Use {
    fn of(f: &Expr) -> Option<(&str, Use)> {
        if let Some((c, values)) = filter::pinned_values(f) {
            return Some((c, Use::Values(values)));
        }
        match f {
            Expr::IsNull(e) => return filter::column(e).map(|c| (c, Use::Null)),
            Expr::IsNotNull(e) => return filter::column(e).map(|c| (c, Use::NotNull)),
            Expr::ScalarFunction(func) if func.name() == "array_has" && func.args.len() == 2 => {
                return Some((filter::column(&func.args[0])?, Use::Has(filter::literal(&func.args[1])?)));
            }
            _ => {}
        }
        let (c, op, v) = filter::comparison(f)?;
        matches!(op, Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq).then_some((c, Use::Compare(op, v)))
    }

    fn op(&self) -> &'static str {
        match self {
            Use::Values(v) if v.len() == 1 => "=",
            Use::Values(_) => "in",
            Use::Compare(Operator::Lt, _) => "<",
            Use::Compare(Operator::LtEq, _) => "<=",
            Use::Compare(Operator::Gt, _) => ">",
            Use::Compare(_, _) => ">=",
            Use::Null => "is_null",
            Use::NotNull => "is_not_null",
            Use::Has(_) => "has",
        }
    }
}

impl FilterRule {
    /// Whether the rule can send this use of its column.
    fn sends(&self, used: &Use) -> bool {
        if !self.ops.iter().any(|o| o == used.op()) {
            return false;
        }
        let known = |v: &ScalarValue| self.one_of.is_empty() || filter::text(v).is_some_and(|t| self.one_of.contains(&t));
        match used {
            Use::Values(values) => {
                values.iter().all(|v| format_value(self.value, v).is_some() && known(v))
                    // Several values go as the fan-out's keys, an `in` clause or `several`; a plain
                    // parameter takes one.
                    && (values.len() == 1 || self.fan_out || self.clause_in.is_some() || self.several.is_some())
            }
            Use::Compare(_, v) | Use::Has(v) => format_value(self.value, v).is_some(),
            Use::Null | Use::NotNull => true,
        }
    }

    /// Whether the API answers exactly the rows of this use.
    fn exact_for(&self, used: &Use) -> bool {
        self.exact
            && match used {
                Use::Values(values) => {
                    values.iter().all(|v| lossless(self.value, v))
                        && (values.len() == 1 || self.several.is_none() || values.len() == self.one_of.len())
                }
                Use::Compare(op, v) => lossless(self.value, v) && !(self.inclusive && matches!(op, Operator::Lt | Operator::Gt)),
                Use::Has(v) => lossless(self.value, v),
                Use::Null | Use::NotNull => true,
            }
    }
}

/// A range bound as written, with what orders it.
struct Bound {
    number: Option<f64>,
    micros: Option<i64>,
    written: String,
}

impl Bound {
    fn of(v: &ScalarValue, written: String) -> Bound {
        Bound { number: written.parse::<f64>().ok(), micros: filter::timestamp_micros(v), written }
    }

    /// Whether this bound lies above `other`.
    fn above(&self, other: &Bound) -> bool {
        match (self.micros, other.micros, self.number, other.number) {
            (Some(a), Some(b), _, _) => a > b,
            (_, _, Some(a), Some(b)) => a > b,
            _ => self.written > other.written,
        }
    }
}

/// A timestamp rounded up to a whole second.
fn ceil_second(v: &ScalarValue) -> Option<ScalarValue> {
    let micros = filter::timestamp_micros(v)?;
    let up = micros.div_euclid(1_000_000) * 1_000_000 + if micros % 1_000_000 == 0 { 0 } else { 1_000_000 };
    Some(ScalarValue::TimestampMicrosecond(Some(up), Some("UTC".into())))
}

/// Whether `format` writes `v` without losing precision (else the engine checks the rows again).
fn lossless(format: ValueFormat, v: &ScalarValue) -> bool {
    match format {
        ValueFormat::EpochSeconds | ValueFormat::IsoSeconds => match v {
            ScalarValue::Int64(_) => true,
            other => filter::timestamp_micros(other).is_some_and(|m| m % 1_000_000 == 0),
        },
        _ => true,
    }
}

/// A filter value as the API reads it.
fn format_value(format: ValueFormat, v: &ScalarValue) -> Option<String> {
    match format {
        ValueFormat::Text => filter::text(v),
        ValueFormat::Seconds6 => {
            let seconds = match v {
                ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
                    s.parse::<f64>().ok()?
                }
                ScalarValue::Int64(Some(n)) => *n as f64,
                ScalarValue::Float64(Some(n)) => *n,
                other => filter::timestamp_micros(other)? as f64 / 1e6,
            };
            seconds.is_finite().then(|| format!("{seconds:.6}"))
        }
        ValueFormat::EpochSeconds => match v {
            ScalarValue::Int64(Some(n)) => Some(n.to_string()),
            other => Some(filter::timestamp_micros(other)?.div_euclid(1_000_000).to_string()),
        },
        ValueFormat::IsoSeconds => {
            let micros = filter::timestamp_micros(v)?;
            let at = chrono::DateTime::from_timestamp_micros(micros.div_euclid(1_000_000) * 1_000_000)?;
            Some(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        }
        ValueFormat::Quoted => {
            let text = filter::text(v)?;
            Some(format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\"")))
        }
    }
}

/// The dialect of an app with nothing special about its answers: HTTP statuses say what happened (401 is
/// the credential, 403 a refusal, 429 and 5xx are retried after `Retry-After`), and buckets come from the
/// spec. With it, a connector is its spec file alone.
#[derive(Debug)]
pub struct SpecDialect(pub &'static ConnectorSpec);

impl crate::http::Dialect for SpecDialect {
    fn app(&self) -> &'static str {
        &self.0.app
    }
    fn bucket(&self, url: &str) -> Option<BucketSpec> {
        self.0.bucket(url)
    }
    /// The bucket's state from the headers the spec names, when the answer carries them.
    fn observe(&self, headers: &reqwest::header::HeaderMap) -> Option<crate::governor::Observed> {
        let names = self.0.rate_limit_headers.as_ref()?;
        let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
        Some(crate::governor::Observed {
            limit: names.limit.as_deref().and_then(number),
            remaining: number(&names.remaining)?,
            reset_in: names
                .window_ms
                .as_deref()
                .and_then(number)
                .map_or(std::time::Duration::from_secs(60), |ms| std::time::Duration::from_millis(ms as u64)),
        })
    }
    fn classify(
        &self,
        connection: &str,
        status: reqwest::StatusCode,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
    ) -> crate::http::Verdict {
        if status.is_success() {
            return crate::http::Verdict::Ok;
        }
        let parsed = serde_json::from_slice::<Value>(body).ok();
        let message = self
            .0
            .error_message
            .iter()
            .find_map(|p| parsed.as_ref()?.pointer(p)?.as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect());
        crate::http::classify_common(self.app(), connection, status, headers, message)
    }
}

/// A JSON key as a scalar (text or number).
pub(crate) fn json_scalar(v: &Value) -> Option<ScalarValue> {
    match v {
        Value::String(s) => Some(ScalarValue::from(s.as_str())),
        Value::Number(n) => n.as_i64().map(ScalarValue::from),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use datafusion::prelude::{col, lit};

    use super::*;

    const SPEC: &str = r#"
name = "chat"
version = "1.0.0"
app = "Chat"

[[table]]
name = "rooms"
path = "/rooms"
records = "/rooms"
column = [{ name = "id", type = "text", pointer = "/id" }]

[[table]]
name = "posts"
path = "/history"
records = "/posts"
page_size = { param = "limit", max = 100 }
fan_out = { parent = "rooms", key = "/id", param = "room", field = "_room" }
column = [
  { name = "room", type = "text", pointer = "/_room" },
  { name = "ts", type = "text", pointer = "/ts" },
  { name = "at", type = "epoch_seconds", pointer = "/ts" },
  { name = "author", type = "text", pointer = "/author" },
  { name = "body", type = "text", pointer = "/body" },
]
[[table.filter]]
columns = ["room"]
ops = ["=", "in"]
fan_out = true
exact = true
[[table.filter]]
columns = ["ts", "at"]
ops = ["<", ">=", "="]
lower = "oldest"
upper = "latest"
value = "seconds_6"
exact = false
with = { inclusive = "true" }
[[table.filter]]
columns = ["author"]
ops = ["="]
param = "user"
exact = true
"#;

    fn posts() -> TableSpec {
        ConnectorSpec::parse(SPEC).unwrap().table("posts").unwrap().clone()
    }

    #[test]
    fn each_filter_is_pushed_down_only_by_the_rule_that_sends_it() {
        let t = posts();
        let answer = |e: Expr| t.pushdown(&e);
        assert_eq!(answer(col("room").in_list(vec![lit("a"), lit("b")], false)), Some(true));
        assert_eq!(answer(col("ts").gt_eq(lit("1700000000.000100"))), Some(false));
        assert_eq!(answer(col("author").eq(lit("ann"))), Some(true));
        // Not declared: another operator, another column, several values for a one-value parameter.
        assert_eq!(answer(col("ts").gt(lit("1"))), None);
        assert_eq!(answer(col("body").eq(lit("hi"))), None);
        assert_eq!(answer(col("author").in_list(vec![lit("ann"), lit("bob")], false)), None);
        // A value the format cannot write is not pushed down.
        assert_eq!(answer(col("ts").gt_eq(lit("not a number"))), None);
    }

    #[test]
    fn the_parameters_sent_are_those_of_the_accepted_filters() {
        let t = posts();
        let scan = |filters: Vec<Expr>, limit| ScanRequest { filters, limit, ..Default::default() };
        let at = lit(ScalarValue::TimestampMicrosecond(Some(1_700_000_000_500_000), Some("UTC".into())));
        let params = t.params(&scan(
            vec![col("ts").gt_eq(lit("5")), col("ts").gt_eq(lit("7")), col("at").lt(at), col("author").eq(lit("ann"))],
            Some(20),
        ));
        let expected: Vec<(String, String)> =
            [("limit", "20"), ("oldest", "7.000000"), ("latest", "1700000000.500000"), ("user", "ann"), ("inclusive", "true")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let sorted = |mut v: Vec<(String, String)>| {
            v.sort();
            v
        };
        assert_eq!(sorted(params), sorted(expected));
        // `=` on a range rule sends both bounds; no range filter, no `inclusive`.
        let eq = t.params(&scan(vec![col("ts").eq(lit("9"))], None));
        assert!(
            eq.contains(&("oldest".into(), "9.000000".into())) && eq.contains(&("latest".into(), "9.000000".into())),
            "{eq:?}"
        );
        assert_eq!(t.params(&scan(vec![], None)), [("limit".to_string(), "100".to_string())]);
        // The fan-out's keys are not parameters of every request.
        let keys = scan(vec![col("room").in_list(vec![lit("a"), lit("b")], false)], None);
        assert_eq!(t.pinned_keys(&keys), Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(t.params(&keys), [("limit".to_string(), "100".to_string())]);
    }

    const TRACKER: &str = r#"
name = "tracker"
version = "1.0.0"
app = "Tracker"

[[table]]
name = "projects"
path = "/orgs/{orgs}/projects"
records = ""
column = [{ name = "slug", type = "text", pointer = "/slug" }]

[[table]]
name = "tickets"
path = "/projects/{key}/tickets"
query = { state = "all" }
records = ""
fan_out = { parent = "projects", key = "/slug" }
unpinned = { path = "/orgs/{orgs}/tickets", drop = ["owner"] }
column = [
  { name = "project", type = "text", pointer = "/url", after = "/projects/", segments = 1 },
  { name = "state", type = "text", pointer = "/state" },
  { name = "owner", type = "text", pointer = "/owner" },
  { name = "tags", type = "text_list", pointer = "/tags" },
  { name = "updated", type = "timestamp", pointer = "/updated" },
]
[[table.filter]]
columns = ["project"]
ops = ["=", "in"]
fan_out = true
exact = false
[[table.filter]]
columns = ["state"]
ops = ["=", "in"]
param = "state"
one_of = ["open", "closed"]
several = "all"
exact = true
[[table.filter]]
columns = ["owner"]
ops = ["=", "is_null", "is_not_null"]
param = "owner"
null_value = "none"
not_null_value = "*"
exact = false
[[table.filter]]
columns = ["tags"]
ops = ["has"]
param = "tag"
exact = false
[[table.filter]]
columns = ["updated"]
ops = [">", ">=", "<="]
lower = "since"
upper = "until"
value = "iso_seconds"
inclusive = true
exact = true
"#;

    #[test]
    fn enumerations_nulls_members_and_whole_second_bounds_are_sent_and_judged() {
        let t = ConnectorSpec::parse(TRACKER).unwrap().table("tickets").unwrap().clone();
        let at = |micros: i64| lit(ScalarValue::TimestampMicrosecond(Some(micros), Some("UTC".into())));
        let has = datafusion::functions_nested::expr_fn::array_has(col("tags"), lit("bug"));
        // Both states are every state: exact as `all`; an unknown state is not pushed down.
        assert_eq!(t.pushdown(&col("state").in_list(vec![lit("open"), lit("closed")], false)), Some(true));
        assert_eq!(t.pushdown(&col("state").eq(lit("merged"))), None);
        assert_eq!(t.pushdown(&col("owner").is_null()), Some(false));
        assert_eq!(t.pushdown(&has), Some(false));
        assert_eq!(t.pushdown(&col("updated").gt_eq(at(1_700_000_000_000_000))), Some(true));
        assert_eq!(t.pushdown(&col("updated").gt_eq(at(1_700_000_000_500_000))), Some(false), "a second's fraction is lost");
        assert_eq!(t.pushdown(&col("updated").gt(at(1_700_000_000_000_000))), Some(false), "`since` includes its second");

        let scan = |filters: Vec<Expr>| ScanRequest { filters, ..Default::default() };
        let params = t.params(&scan(vec![
            col("state").in_list(vec![lit("open"), lit("closed")], false),
            col("owner").is_not_null(),
            has,
            col("updated").lt_eq(at(1_700_000_000_250_000)),
        ]));
        let get = |k: &str| params.iter().filter(|(p, _)| p == k).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
        assert_eq!(get("state"), ["all"], "the filter's value replaces the default: {params:?}");
        assert_eq!(get("owner"), ["*"]);
        assert_eq!(get("tag"), ["bug"]);
        assert_eq!(get("until"), ["2023-11-14T22:13:21Z"], "an upper bound rounds up, cutting no row off");
        assert_eq!(t.params(&scan(vec![col("owner").is_null()])).iter().filter(|(k, _)| k == "owner").count(), 1);

        // Derived columns read their part of a text.
        let mut rows = vec![serde_json::json!({"url": "https://x/api/projects/apollo/tickets/7"})];
        t.derive(&mut rows);
        assert_eq!(rows[0]["_project"], "apollo");
    }

    #[test]
    fn buckets_are_found_by_paths_with_variables() {
        assert!(path_matches("https://x/orgs/acme/tickets", "/orgs/{orgs}/tickets"));
        assert!(path_matches("https://x/projects/acme/api/tickets", "/projects/{key}/tickets"));
        assert!(!path_matches("https://x/orgs/acme/projects", "/orgs/{orgs}/tickets"));
        assert!(!path_matches("https://x/orgs//tickets", "/orgs/{orgs}/tickets"), "a variable stands for something");
        assert!(path_matches("https://x/api/users.list", "/api/users.list"));
    }

    #[test]
    fn an_exact_rule_whose_parameter_the_unpinned_list_drops_is_refused() {
        let e = ConnectorSpec::parse(&TRACKER.replacen(
            "null_value = \"none\"\nnot_null_value = \"*\"\nexact = false",
            "null_value = \"none\"\nnot_null_value = \"*\"\nexact = true",
            1,
        ))
        .unwrap_err();
        assert!(e.contains("cannot be exact"), "{e}");
    }

    #[test]
    fn a_spec_that_would_drift_is_refused() {
        let broken = |from: &str, to: &str| ConnectorSpec::parse(&SPEC.replacen(from, to, 1)).unwrap_err();
        assert!(broken(r#"columns = ["author"]"#, r#"columns = ["writer"]"#).contains("unknown column `writer`"));
        assert!(broken(r#"param = "user""#, "").contains("names no parameter"));
        assert!(broken(r#"parent = "rooms""#, r#"parent = "halls""#).contains("fan-out parent `halls`"));
        assert!(broken(r#"type = "epoch_seconds""#, r#"type = "instant""#).contains("unknown type `instant`"));
        assert!(broken("records = \"/rooms\"", "records = \"/rooms\"\nrecord = \"/x\"").contains("unknown field"));
    }
}
