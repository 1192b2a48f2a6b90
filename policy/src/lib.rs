//! What a principal may see of a table, decided by the tenant's Rego policies (package `omnisql`).
//!
//! The input and output follow Trino's OPA access control, so a Trino policy ports by renaming its
//! package: `input.context.identity {user, groups}` (plus `tenant` and `principal {id, kind, role,
//! attributes}`), `input.action.operation` and `input.action.resource`. Three rules are read:
//! - `allow` for `FilterTables` (may the table be read at all) and `FilterColumns` (one column at a
//!   time: a column not allowed is hidden);
//! - `rowFilters` for `GetRowFilters`: `[{"expression": "<SQL boolean over the table's columns>"}]`,
//!   all of which a row must pass;
//! - `columnMask` for `GetColumnMask`: `{"expression": "<SQL replacing the column's value>"}`.
//!
//! Decisions come from the tenant's Rego modules evaluated in-process (regorus), or, when the tenant
//! names an OPA server ([`OpaConfig`]), from that server: one batched request per query for all its
//! tables and columns, cached for a while, refused when the server fails (fail closed).
//!
//! A tenant without policies reads every table. With policies, what `allow` does not allow is denied
//! (undefined is no), and a policy that cannot be compiled or evaluated denies everything with an error
//! that says so (fail closed). Decisions are made once per (principal, table) and policy revision: the
//! cache belongs to one configuration and goes with it.

mod opa;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use opa::OpaConfig;

use serde_json::{Value as Json, json};

use serde::{Deserialize, Serialize};

/// The SQL catalog every table is in (`input.action.resource.table.catalogName`).
pub const CATALOG: &str = "omnisql";

/// Longest one rule evaluation may run; past it the decision is a denial naming the limit.
pub const EVALUATION_LIMIT: std::time::Duration = std::time::Duration::from_millis(50);

/// The Rego package whose rules are evaluated.
pub const PACKAGE: &str = "omnisql";

#[derive(Debug, Clone, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "access denied: the tenant's policies (revision {revision}) do not allow `{principal}` to read {table}; a tenant admin can see why with `omnisql admin explain-access`"
    )]
    Denied { principal: String, table: String, revision: String },
    #[error(
        "access denied to {table}: the tenant's policies (revision {revision}) could not be evaluated ({message}); every table is refused until a tenant admin fixes them"
    )]
    Broken { table: String, revision: String, message: String },
    #[error(
        "access denied to {table}: the policy's {what} is not usable ({message}); a tenant admin must fix the policy (revision {revision})"
    )]
    Unusable { table: String, revision: String, what: String, message: String },
}

impl PolicyError {
    /// The table the error is about (`connection.table`).
    pub fn table(&self) -> &str {
        match self {
            PolicyError::Denied { table, .. } | PolicyError::Broken { table, .. } | PolicyError::Unusable { table, .. } => table,
        }
    }
}

/// Who asks, as policies see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub tenant: String,
    pub principal: PrincipalConfig,
}

impl Identity {
    fn context(&self) -> Json {
        let p = &self.principal;
        json!({
            "identity": {"user": p.id, "groups": p.groups},
            "tenant": self.tenant,
            "principal": {"id": p.id, "kind": p.kind, "role": p.role, "groups": p.groups, "attributes": p.attributes},
            "softwareStack": {"omnisqlVersion": env!("CARGO_PKG_VERSION")},
        })
    }
}

/// What one principal sees of one table.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TableDecision {
    /// SQL boolean expressions a row must all pass.
    pub row_filters: Vec<String>,
    /// Column → SQL expression whose value replaces the column's.
    pub masks: BTreeMap<String, String>,
    /// Columns the principal does not see at all.
    pub hidden: BTreeSet<String>,
    /// The policy revision that decided.
    pub revision: String,
}

impl TableDecision {
    /// Nothing to apply: the table is read as it is.
    pub fn is_open(&self) -> bool {
        self.row_filters.is_empty() && self.masks.is_empty() && self.hidden.is_empty()
    }
}

/// A principal as policies see it (`input.context.identity` and `input.context.principal`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    pub id: String,
    /// `user` or `service_account`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// One version of a named Rego module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub name: String,
    #[serde(default = "first_version")]
    pub version: u32,
    pub rego: String,
}

fn first_version() -> u32 {
    1
}

/// A table's columns as (name, SQL type).
type Columns = Vec<(String, String)>;
type Decided = Result<Arc<TableDecision>, PolicyError>;

type DecisionKey = (PrincipalConfig, String, String);

/// A cached decision, and until when it holds (`None`: as long as the policies do). An OPA decision past
/// that time is fetched again by the next statement that reads the table ([`Policies::prefetch`]), which
/// replaces it before the statement is planned; until then it is the latest there is.
#[derive(Debug, Clone)]
struct Remembered<V> {
    value: V,
    until: Option<Instant>,
}

impl<V> Remembered<V> {
    fn fresh(&self) -> bool {
        self.until.is_none_or(|t| Instant::now() < t)
    }
}

/// An OPA server that failed is asked again after this long (meanwhile its tables are refused).
const RETRY_FAILED_OPA: Duration = Duration::from_secs(1);

/// A tenant's policies at one revision, compiled, with the decisions made so far.
#[derive(Debug)]
pub struct Policies {
    revision: String,
    compiled: Compiled,
    allowed: Mutex<HashMap<DecisionKey, Remembered<Result<bool, PolicyError>>>>,
    /// With the columns each decision was made for: a table that gains a column (a new Salesforce
    /// field) is decided again, so the new column is never shown unmasked from a stale decision.
    decisions: Mutex<HashMap<DecisionKey, Remembered<(Columns, Decided)>>>,
}

#[derive(Debug)]
enum Compiled {
    /// No policies: every table is open.
    None,
    Rego(Box<regorus::Engine>),
    /// A policy did not compile: everything is denied with this message.
    Broken(String),
    /// The tenant's OPA server decides.
    Opa(Box<opa::Opa>),
}

impl Policies {
    /// Compiles the tenant's policies (a module that does not compile makes every decision a denial).
    pub fn compile(policies: &[PolicyConfig]) -> Policies {
        let mut sorted: Vec<&PolicyConfig> = policies.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let revision = sorted.iter().map(|p| format!("{}@{}", p.name, p.version)).collect::<Vec<_>>().join(",");
        let compiled = if sorted.is_empty() {
            Compiled::None
        } else {
            let mut engine = regorus::Engine::new();
            // Policies are the tenant's code running in a shared process: each evaluation gets a budget.
            engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
                limit: EVALUATION_LIMIT,
                check_interval: std::num::NonZeroU32::MIN.saturating_add(63),
            });
            let mut broken = None;
            for p in &sorted {
                if let Err(e) = engine.add_policy(format!("{}.rego", p.name), p.rego.clone()) {
                    broken = Some(format!("policy `{}` does not compile: {}", p.name, first_line(&e.to_string())));
                    break;
                }
            }
            match broken {
                Some(message) => Compiled::Broken(message),
                None => Compiled::Rego(Box::new(engine)),
            }
        };
        Policies { revision, compiled, allowed: Mutex::default(), decisions: Mutex::default() }
    }

    /// Decisions from the tenant's OPA server, asked over `http`.
    pub fn external(config: &OpaConfig, http: reqwest::Client) -> Policies {
        Policies {
            revision: config.revision(),
            compiled: Compiled::Opa(Box::new(opa::Opa::new(config.clone(), http))),
            allowed: Mutex::default(),
            decisions: Mutex::default(),
        }
    }

    /// Policies that refuse everything, saying `message` (e.g. an OPA server the data plane may not ask).
    pub fn refused(revision: String, message: String) -> Policies {
        Policies { revision, compiled: Compiled::Broken(message), allowed: Mutex::default(), decisions: Mutex::default() }
    }

    /// Whether an OPA server decides (decisions must be fetched with [`Policies::prefetch`]).
    pub fn is_external(&self) -> bool {
        matches!(self.compiled, Compiled::Opa(_))
    }

    /// Requests made to the OPA server so far.
    pub fn external_requests(&self) -> u64 {
        match &self.compiled {
            Compiled::Opa(o) => o.requests(),
            _ => 0,
        }
    }

    /// Fetches from the OPA server, in one request, every decision on `tables` (schema, table, columns)
    /// that is not cached; a no-op for in-process policies. A failure is remembered briefly as a refusal
    /// of those tables that says what went wrong.
    pub async fn prefetch(&self, who: &Identity, tables: &[(String, String, Columns)]) {
        self.fetch(who, tables, true).await
    }

    /// Like [`Policies::prefetch`], for tables with no decision at all (one past its cache time is kept:
    /// the statement fetched it already).
    pub async fn prefetch_undecided(&self, who: &Identity, tables: &[(String, String, Columns)]) {
        self.fetch(who, tables, false).await
    }

    async fn fetch(&self, who: &Identity, tables: &[(String, String, Columns)], refresh: bool) {
        let Compiled::Opa(opa) = &self.compiled else { return };
        let missing: Vec<&(String, String, Columns)> = {
            let cache = lock(&self.decisions);
            let mut seen = BTreeSet::new();
            tables
                .iter()
                .filter(|(schema, table, columns)| {
                    let key = (who.principal.clone(), schema.clone(), table.clone());
                    let cached = cache.get(&key).is_some_and(|r| (r.fresh() || !refresh) && r.value.0 == *columns);
                    !cached && seen.insert((schema, table))
                })
                .collect()
        };
        if missing.is_empty() {
            return;
        }
        let resources = missing
            .iter()
            .map(|(schema, table, columns)| {
                let columns: Vec<Json> = columns.iter().map(|(name, t)| json!({"name": name, "type": t})).collect();
                json!({"table": table_resource(schema, table), "columns": columns})
            })
            .collect();
        let answer = opa.batch(who.context(), resources).await;
        let now = Instant::now();
        for (i, (schema, table, columns)) in missing.into_iter().enumerate() {
            let name = format!("{schema}.{table}");
            let (decided, until) = match &answer {
                Ok(decisions) => (
                    self.read_opa_answer(who, &name, columns, &decisions[i]),
                    now + Duration::from_secs(opa.config.cache_seconds.max(1)),
                ),
                Err(message) => (
                    Err(PolicyError::Broken {
                        table: name,
                        revision: self.revision.clone(),
                        message: format!("the tenant's OPA server at {} failed: {message}", opa.config.url),
                    }),
                    now + RETRY_FAILED_OPA,
                ),
            };
            let key = (who.principal.clone(), schema.clone(), table.clone());
            let allowed = match &decided {
                Ok(_) => Ok(true),
                Err(PolicyError::Denied { .. }) => Ok(false),
                Err(e) => Err(e.clone()),
            };
            remember(&self.allowed, key.clone(), allowed, Some(until));
            remember(&self.decisions, key, (columns.clone(), decided.map(Arc::new)), Some(until));
        }
    }

    /// One table's decision from the OPA server's answer (`{allow, rowFilters, columns: [{name, allow,
    /// mask}]}`); a column the answer leaves out is hidden.
    fn read_opa_answer(
        &self,
        who: &Identity,
        table: &str,
        columns: &Columns,
        answer: &Json,
    ) -> Result<TableDecision, PolicyError> {
        let revision = self.revision.clone();
        let unusable = |what: &str, message: String| PolicyError::Unusable {
            table: table.into(),
            revision: revision.clone(),
            what: what.into(),
            message,
        };
        if !is_true(answer.get("allow").unwrap_or(&Json::Null)) {
            return Err(PolicyError::Denied { principal: who.principal.id.clone(), table: table.into(), revision });
        }
        let mut decision = TableDecision { revision: self.revision.clone(), ..Default::default() };
        decision.row_filters =
            expressions(answer.get("rowFilters").unwrap_or(&Json::Null)).map_err(|m| unusable("rowFilters", m))?;
        let answered: HashMap<&str, &Json> = answer
            .get("columns")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| Some((c.get("name")?.as_str()?, c)))
            .collect();
        for (column, _) in columns {
            let Some(c) = answered.get(column.as_str()).filter(|c| is_true(c.get("allow").unwrap_or(&Json::Null))) else {
                decision.hidden.insert(column.clone());
                continue;
            };
            let mut masks = expressions(c.get("mask").unwrap_or(&Json::Null))
                .map_err(|m| unusable(&format!("columnMask for `{column}`"), m))?;
            match masks.len() {
                0 => {}
                1 => {
                    decision.masks.insert(column.clone(), masks.remove(0));
                }
                n => return Err(unusable(&format!("columnMask for `{column}`"), format!("{n} masks apply; at most one may"))),
            }
        }
        if decision.hidden.len() == columns.len() && !columns.is_empty() {
            return Err(unusable("FilterColumns decision", "it hides every column".into()));
        }
        Ok(decision)
    }

    /// `name@version` of each policy, joined by `,`; empty without policies.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// Whether any policy applies (without, tables are read as they are).
    pub fn active(&self) -> bool {
        !matches!(self.compiled, Compiled::None)
    }

    /// May `who` read `schema.table` at all (`FilterTables`)?
    pub fn table_allowed(&self, who: &Identity, schema: &str, table: &str) -> Result<bool, PolicyError> {
        if !self.active() {
            return Ok(true);
        }
        let key = (who.principal.clone(), schema.to_string(), table.to_string());
        // An OPA decision past its cache time is still the latest: every statement fetches again first.
        if let Some(known) = lock(&self.allowed).get(&key) {
            return known.value.clone();
        }
        let decided = self.with_engine(schema, table, |engine| {
            let input = input(who, "FilterTables", json!({"table": table_resource(schema, table)}));
            Ok(is_true(&query(engine, input, "allow")?))
        });
        remember(&self.allowed, key, decided.clone(), None);
        decided
    }

    /// Everything `who` sees of `schema.table` with `columns` (name, SQL type): refused, or the row
    /// filters, masks and hidden columns to apply.
    pub fn decide(
        &self,
        who: &Identity,
        schema: &str,
        table: &str,
        columns: &[(String, String)],
    ) -> Result<Arc<TableDecision>, PolicyError> {
        if !self.active() {
            return Ok(Arc::new(TableDecision::default()));
        }
        let key = (who.principal.clone(), schema.to_string(), table.to_string());
        if let Some(known) = lock(&self.decisions).get(&key)
            && known.value.0.as_slice() == columns
        {
            return known.value.1.clone();
        }
        let decided = self.evaluate(who, schema, table, columns).map(Arc::new);
        remember(&self.decisions, key, (columns.to_vec(), decided.clone()), None);
        decided
    }

    fn evaluate(
        &self,
        who: &Identity,
        schema: &str,
        table: &str,
        columns: &[(String, String)],
    ) -> Result<TableDecision, PolicyError> {
        let name = format!("{schema}.{table}");
        let revision = self.revision.clone();
        if !self.table_allowed(who, schema, table)? {
            return Err(PolicyError::Denied { principal: who.principal.id.clone(), table: name, revision });
        }
        let unusable = |what: &str, message: String| PolicyError::Unusable {
            table: name.clone(),
            revision: revision.clone(),
            what: what.into(),
            message,
        };
        let mut decision = TableDecision { revision: self.revision.clone(), ..Default::default() };
        self.with_engine(schema, table, |engine| {
            let filters =
                query(engine, input(who, "GetRowFilters", json!({"table": table_resource(schema, table)})), "rowFilters")?;
            decision.row_filters = expressions(&filters).map_err(|m| unusable("rowFilters", m))?;
            for (column, column_type) in columns {
                let mut resource = table_resource(schema, table);
                resource["columns"] = json!([column]);
                let visible = query(engine, input(who, "FilterColumns", json!({"table": resource})), "allow")?;
                if !is_true(&visible) {
                    decision.hidden.insert(column.clone());
                    continue;
                }
                let mut resource = table_resource(schema, table);
                resource["columnName"] = json!(column);
                resource["columnType"] = json!(column_type);
                let mask = query(engine, input(who, "GetColumnMask", json!({"column": resource})), "columnMask")?;
                let mut masks = expressions(&mask).map_err(|m| unusable(&format!("columnMask for `{column}`"), m))?;
                match masks.len() {
                    0 => {}
                    1 => {
                        decision.masks.insert(column.clone(), masks.remove(0));
                    }
                    n => {
                        return Err(unusable(&format!("columnMask for `{column}`"), format!("{n} masks apply; at most one may")));
                    }
                }
            }
            Ok(())
        })?;
        if decision.hidden.len() == columns.len() && !columns.is_empty() {
            return Err(unusable(
                "FilterColumns decision",
                "it hides every column; does `allow` cover operation FilterColumns?".into(),
            ));
        }
        Ok(decision)
    }

    /// Runs `f` with a fresh copy of the compiled policies; maps Rego errors to a fail-closed denial.
    fn with_engine<T>(
        &self,
        schema: &str,
        table: &str,
        f: impl FnOnce(&mut regorus::Engine) -> Result<T, PolicyError>,
    ) -> Result<T, PolicyError> {
        let table = format!("{schema}.{table}");
        match &self.compiled {
            // Callers answer for a tenant without policies before asking.
            Compiled::None => {
                Err(PolicyError::Broken { table, revision: self.revision.clone(), message: "no policies to evaluate".into() })
            }
            Compiled::Broken(message) => {
                Err(PolicyError::Broken { table, revision: self.revision.clone(), message: message.clone() })
            }
            // Decisions of an OPA server are fetched ahead ([`Policies::prefetch`]); one that was not is
            // refused rather than guessed.
            Compiled::Opa(_) => Err(PolicyError::Broken {
                table,
                revision: self.revision.clone(),
                message: "no decision was fetched from the tenant's OPA server for this table".into(),
            }),
            Compiled::Rego(engine) => {
                let mut engine = engine.as_ref().clone();
                f(&mut engine).map_err(|e| match e {
                    PolicyError::Broken { message, .. } => {
                        PolicyError::Broken { table, revision: self.revision.clone(), message }
                    }
                    other => other,
                })
            }
        }
    }
}

/// Decisions kept per revision; past this many (principals × tables) the cache starts over, so a flood of
/// principals cannot grow it without bound.
pub const CACHED_DECISIONS: usize = 10_000;

fn remember<V>(cache: &Mutex<HashMap<DecisionKey, Remembered<V>>>, key: DecisionKey, value: V, until: Option<Instant>) {
    let mut cache = lock(cache);
    if cache.len() >= CACHED_DECISIONS {
        cache.clear();
    }
    cache.insert(key, Remembered { value, until });
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn first_line(s: &str) -> String {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

fn table_resource(schema: &str, table: &str) -> Json {
    json!({"catalogName": CATALOG, "schemaName": schema, "tableName": table})
}

fn input(who: &Identity, operation: &str, resource: Json) -> Json {
    json!({"context": who.context(), "action": {"operation": operation, "resource": resource}})
}

/// Evaluates `data.omnisql.<rule>` for `input`; undefined is `Json::Null`.
fn query(engine: &mut regorus::Engine, input: Json, rule: &str) -> Result<Json, PolicyError> {
    let broken = |message: String| PolicyError::Broken { table: String::new(), revision: String::new(), message };
    let input = regorus::Value::from_json_str(&input.to_string()).map_err(|e| broken(e.to_string()))?;
    engine.set_input(input);
    let results = engine
        .eval_query(format!("data.{PACKAGE}.{rule}"), false)
        .map_err(|e| broken(format!("rule `{rule}`: {}", first_line(&e.to_string()))))?;
    let Some(value) = results.result.first().and_then(|r| r.expressions.first()).map(|e| e.value.clone()) else {
        return Ok(Json::Null);
    };
    if value == regorus::Value::Undefined {
        return Ok(Json::Null);
    }
    serde_json::to_value(&value).map_err(|e| broken(e.to_string()))
}

fn is_true(v: &Json) -> bool {
    *v == Json::Bool(true)
}

/// `{"expression": "…"}`, or a list/set of them, as expression texts; undefined is none.
fn expressions(v: &Json) -> Result<Vec<String>, String> {
    let one = |item: &Json| match item.get("expression").and_then(Json::as_str) {
        Some(e) if !e.trim().is_empty() => Ok(e.to_string()),
        _ => Err(format!("expected {{\"expression\": \"<SQL>\"}}, got {item}")),
    };
    match v {
        Json::Null => Ok(Vec::new()),
        Json::Array(items) => items.iter().map(one).collect(),
        Json::Object(_) => one(v).map(|e| vec![e]),
        other => Err(format!("expected {{\"expression\": \"<SQL>\"}} or a list of them, got {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(id: &str, groups: &[&str]) -> Identity {
        Identity {
            tenant: "acme".into(),
            principal: PrincipalConfig {
                id: id.into(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
                ..Default::default()
            },
        }
    }

    fn policies(rego: &str) -> Policies {
        Policies::compile(&[PolicyConfig { name: "p".into(), version: 3, rego: rego.into() }])
    }

    const COLUMNS: &[(&str, &str)] = &[("id", "Utf8"), ("email", "Utf8"), ("region", "Utf8")];

    fn columns() -> Vec<(String, String)> {
        COLUMNS.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn without_policies_every_table_is_open() {
        let p = Policies::compile(&[]);
        assert!(!p.active());
        assert!(p.table_allowed(&who("a", &[]), "crm", "contact").unwrap_or(false));
        assert!(p.decide(&who("a", &[]), "crm", "contact", &columns()).map(|d| d.is_open()).unwrap_or(false));
    }

    #[test]
    fn filters_masks_and_hidden_columns_follow_the_rules() {
        let p = policies(
            r#"package omnisql
            import rego.v1
            default allow := false
            allow if "sales" in input.context.identity.groups
            allow if {
                input.action.operation == "FilterColumns"
                input.action.resource.table.columns[0] != "region"
            }
            rowFilters contains {"expression": "region = 'emea'"} if input.context.identity.user != "boss"
            columnMask := {"expression": "'***'"} if {
                input.action.resource.column.columnName == "email"
                not "hr" in input.context.identity.groups
            }"#,
        );
        assert_eq!(p.revision(), "p@3");
        let seller = p.decide(&who("sam", &["sales"]), "crm", "contact", &columns()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(seller.row_filters, ["region = 'emea'"]);
        assert_eq!(seller.masks.get("email").map(String::as_str), Some("'***'"));
        assert!(seller.hidden.is_empty(), "sales may see every column: {seller:?}");
        let outsider = p.decide(&who("olga", &[]), "crm", "contact", &columns());
        assert!(matches!(outsider, Err(PolicyError::Denied { .. })), "{outsider:?}");
        // Cached: the same answer without evaluating again.
        assert_eq!(p.decide(&who("sam", &["sales"]), "crm", "contact", &columns()).ok(), Some(seller));
    }

    #[test]
    fn a_policy_that_does_not_compile_or_fails_denies_with_the_reason() {
        let broken = policies("package omnisql\nallow if {");
        let e = broken.decide(&who("a", &[]), "crm", "contact", &columns()).unwrap_err();
        assert!(matches!(e, PolicyError::Broken { .. }) && e.to_string().contains("does not compile"), "{e}");
        let conflicting = policies(
            "package omnisql\nimport rego.v1\nallow := true\ncolumnMask := {\"expression\": \"1\"}\ncolumnMask := {\"expression\": \"2\"} if true",
        );
        let e = conflicting.decide(&who("a", &[]), "crm", "contact", &columns()).unwrap_err();
        assert!(matches!(e, PolicyError::Broken { .. } | PolicyError::Unusable { .. }), "{e}");
        let shapeless = policies("package omnisql\nimport rego.v1\nallow := true\nrowFilters := \"region = 'x'\"");
        let e = shapeless.decide(&who("a", &[]), "crm", "contact", &columns()).unwrap_err();
        assert!(matches!(e, PolicyError::Unusable { .. }) && e.to_string().contains("rowFilters"), "{e}");
    }

    #[test]
    fn an_endless_policy_is_stopped_and_denies() {
        let p = policies(
            "package omnisql\nimport rego.v1\nallow if {\n some i in numbers.range(1, 100000)\n some j in numbers.range(1, 100000)\n i * j < 0\n}",
        );
        let started = std::time::Instant::now();
        let e = p.decide(&who("a", &[]), "crm", "contact", &columns()).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "took {:?}", started.elapsed());
        assert!(matches!(e, PolicyError::Broken { .. }), "{e}");
        println!("{e}");
    }

    #[test]
    fn a_column_the_table_gains_is_decided_too() {
        let p = policies(
            "package omnisql\nimport rego.v1\nallow := true\ncolumnMask := {\"expression\": \"NULL\"} if input.action.resource.column.columnName == \"ssn\"",
        );
        let before = p.decide(&who("a", &[]), "crm", "contact", &columns()).unwrap_or_else(|e| panic!("{e}"));
        assert!(before.masks.is_empty());
        let mut grown = columns();
        grown.push(("ssn".into(), "Utf8".into()));
        let after = p.decide(&who("a", &[]), "crm", "contact", &grown).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(after.masks.get("ssn").map(String::as_str), Some("NULL"), "the new column is masked");
    }

    #[test]
    fn hiding_every_column_is_explained() {
        let p = policies("package omnisql\nimport rego.v1\nallow if input.action.operation == \"FilterTables\"");
        let e = p.decide(&who("a", &[]), "crm", "contact", &columns()).unwrap_err();
        assert!(e.to_string().contains("FilterColumns"), "{e}");
    }

    #[test]
    fn an_opa_answer_becomes_a_decision_and_what_it_leaves_out_is_hidden() {
        let p = Policies::external(&OpaConfig::new("http://127.0.0.1:9"), reqwest::Client::new());
        let sam = who("sam", &["sales"]);
        let answer = json!({
            "allow": true,
            "rowFilters": [{"expression": "region = 'EU'"}],
            "columns": [{"name": "id", "allow": true, "mask": null}, {"name": "email", "allow": true, "mask": {"expression": "NULL"}}],
        });
        let d = p.read_opa_answer(&sam, "crm.contact", &columns(), &answer).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.row_filters, ["region = 'EU'"]);
        assert_eq!(d.masks.get("email").map(String::as_str), Some("NULL"));
        assert!(d.hidden.contains("region"), "a column the answer leaves out is hidden");
        assert!(matches!(p.read_opa_answer(&sam, "crm.contact", &columns(), &json!({})), Err(PolicyError::Denied { .. })));
        let bad = json!({"allow": true, "columns": [{"name": "id", "allow": true, "mask": "NULL"}]});
        assert!(matches!(p.read_opa_answer(&sam, "crm.contact", &columns(), &bad), Err(PolicyError::Unusable { .. })));
        // Nothing fetched: refused, not guessed.
        let e = p.decide(&sam, "crm", "contact", &columns()).unwrap_err();
        assert!(e.to_string().contains("no decision was fetched"), "{e}");
        assert_eq!(p.revision(), "opa:http://127.0.0.1:9/v1/data/omnisql/batch");
    }

    #[tokio::test]
    async fn an_unreachable_opa_server_refuses_the_tables_it_did_not_decide() {
        let p = Policies::external(&OpaConfig::new("http://127.0.0.1:9"), reqwest::Client::new());
        let sam = who("sam", &["sales"]);
        p.prefetch(&sam, &[("crm".into(), "contact".into(), columns())]).await;
        let e = p.decide(&sam, "crm", "contact", &columns()).unwrap_err();
        assert!(matches!(e, PolicyError::Broken { .. }) && e.to_string().contains("cannot reach it"), "{e}");
        assert!(p.table_allowed(&sam, "crm", "contact").is_err());
        assert_eq!(p.external_requests(), 1);
        // The failure is remembered briefly, not asked again on every table lookup.
        p.prefetch(&sam, &[("crm".into(), "contact".into(), columns())]).await;
        assert_eq!(p.external_requests(), 1);
    }
}
