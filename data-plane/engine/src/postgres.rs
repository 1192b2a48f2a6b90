//! What a Postgres client's session has besides the tenant's tables: `pg_catalog` (built from the
//! session's own catalog, so it lists the tenant's tables and nothing else) and the functions psql and BI
//! tools call while connecting and browsing (`current_schema()`, `pg_table_is_visible`, `format_type`, …),
//! from `datafusion-pg-catalog`, and its parser, which rewrites what those tools send and DataFusion
//! would not plan (`::regclass` casts, `COLLATE`, `OPERATOR(pg_catalog.~)`, …).

use std::ops::ControlFlow;
use std::sync::{Arc, LazyLock};

use datafusion::catalog::SchemaProvider;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, CaseWhen, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments, Ident,
    ObjectName, Query, Select, SelectItem, SetExpr, Statement, TableAliasColumnDef, TableFactor, Value, ValueWithSpan, VisitMut,
    VisitorMut, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_pg_catalog::pg_catalog::PgCatalogStaticTables;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

/// Postgres' built-in catalog rows (types, operators, functions, …), decoded once per process.
static STATIC_TABLES: LazyLock<Result<Arc<PgCatalogStaticTables>, String>> =
    LazyLock::new(|| PgCatalogStaticTables::try_new().map(Arc::new).map_err(|e| e.to_string()));

static PARSER: LazyLock<PostgresCompatibilityParser> = LazyLock::new(PostgresCompatibilityParser::new);

/// Postgres parameters a client may ask about (`SHOW`, `current_setting`), as a Postgres 16 server
/// answers before the session sets them.
const PARAMETERS: &[(&str, &str)] = &[
    ("application_name", ""),
    ("client_encoding", "UTF8"),
    ("datestyle", "ISO, MDY"),
    ("default_transaction_isolation", "read committed"),
    ("default_transaction_read_only", "on"),
    ("extra_float_digits", "1"),
    ("integer_datetimes", "on"),
    ("intervalstyle", "postgres"),
    ("lc_collate", "C"),
    ("lc_ctype", "C"),
    ("max_identifier_length", "63"),
    ("search_path", "public"),
    ("server_encoding", "UTF8"),
    ("server_version_num", "160006"),
    ("standard_conforming_strings", "on"),
    ("timezone", "UTC"),
    ("transaction_isolation", "read committed"),
    ("transaction_read_only", "on"),
];

/// The default of the Postgres parameter `name` (lower case), if Postgres has it.
pub fn parameter(name: &str) -> Option<&'static str> {
    PARAMETERS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// `current_setting(name)`: a parameter's default ([`parameter`]; what the session `SET` is answered by
/// `SHOW`), an error for one Postgres does not have.
fn current_setting() -> ScalarUDF {
    use datafusion::arrow::array::{Array, AsArray, StringArray};
    use datafusion::arrow::datatypes::DataType;
    datafusion::logical_expr::create_udf(
        "current_setting",
        vec![DataType::Utf8],
        DataType::Utf8,
        datafusion::logical_expr::Volatility::Stable,
        Arc::new(|args| {
            let names = datafusion::logical_expr::ColumnarValue::values_to_arrays(args)?;
            let names = names[0].as_string::<i32>();
            let values = (0..names.len())
                .map(|i| match names.is_null(i) {
                    true => Ok(None),
                    false => {
                        let name = names.value(i).to_ascii_lowercase();
                        let value = match name.as_str() {
                            "server_version" => Some(format!("16.6 (OmniSQL {})", env!("CARGO_PKG_VERSION"))),
                            _ => parameter(&name).map(str::to_string),
                        };
                        value.map(Some).ok_or_else(|| {
                            DataFusionError::Plan(format!("unrecognized configuration parameter \"{}\"", names.value(i)))
                        })
                    }
                })
                .collect::<Result<StringArray, _>>()?;
            Ok(datafusion::logical_expr::ColumnarValue::Array(Arc::new(values)))
        }),
    )
}

/// The functions psql and BI tools call, made once per process.
static FUNCTIONS: LazyLock<Vec<ScalarUDF>> = LazyLock::new(|| {
    use datafusion_pg_catalog::pg_catalog::*;
    let mut functions = vec![
        create_current_schema_udf(),
        create_current_schemas_udf(),
        create_pg_get_userbyid_udf(),
        create_pg_table_is_visible(),
        format_type::create_format_type_udf(),
        create_session_user_udf(),
        pg_get_expr_udf::create_pg_get_expr_udf(),
        create_pg_get_partkeydef_udf(),
        create_pg_relation_is_publishable_udf(),
        create_pg_get_statisticsobjdef_columns_udf(),
        create_pg_encoding_to_char_udf(),
        create_pg_backend_pid_udf(),
        create_pg_relation_size_udf(),
        create_pg_total_relation_size_udf(),
        create_pg_stat_get_numscans(),
        create_pg_get_constraintdef(),
        create_pg_get_partition_ancestors_udf(),
        quote_ident_udf::create_quote_ident_udf(),
        quote_ident_udf::create_parse_ident_udf(),
        array_bounds_udf::create_array_upper_udf(),
        array_bounds_udf::create_array_lower_udf(),
    ];
    functions.push(version());
    functions.push(current_setting());
    functions.push(to_regtype());
    functions.push(like_escape());
    functions.push(constant("pg_get_serial_sequence", 2, ScalarValue::Utf8(None)));
    functions.push(constant("pg_collation_is_visible", 1, ScalarValue::Boolean(Some(true))));
    functions.push(ScalarUDF::new_from_impl(JsonBuildObject::default()));
    for privilege in ["has_table_privilege", "has_schema_privilege", "has_database_privilege", "has_any_column_privilege"] {
        functions.push(has_privilege_udf::create_has_privilege_udf(privilege));
    }
    functions
});

/// `version()` as Postgres words it (tools parse the number after "PostgreSQL"), naming OmniSQL too.
fn version() -> ScalarUDF {
    let text = format!("PostgreSQL 16.6 on x86_64-pc-linux-gnu (OmniSQL {})", env!("CARGO_PKG_VERSION"));
    datafusion::logical_expr::create_udf(
        "version",
        vec![],
        datafusion::arrow::datatypes::DataType::Utf8,
        datafusion::logical_expr::Volatility::Immutable,
        Arc::new(move |_| Ok(datafusion::logical_expr::ColumnarValue::Scalar(text.clone().into()))),
    )
}

/// A function of `arity` arguments of any type that answers `value`: OmniSQL's tables have no serial
/// sequences, and every collation is visible.
fn constant(name: &str, arity: usize, value: ScalarValue) -> ScalarUDF {
    use datafusion::logical_expr::{ColumnarValue, Signature, TypeSignature, Volatility};
    let signature = Signature::new(TypeSignature::Any(arity), Volatility::Immutable);
    let data_type = value.data_type();
    ScalarUDF::from(datafusion::logical_expr::SimpleScalarUDF::new_with_signature(
        name,
        signature,
        data_type,
        Arc::new(move |_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(value.clone()))),
    ))
}

/// `json_build_object(key, value, …)` as JSON text (SQLAlchemy's column reflection asks it for identity
/// columns and collations).
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject(datafusion::logical_expr::Signature);

impl Default for JsonBuildObject {
    fn default() -> Self {
        JsonBuildObject(datafusion::logical_expr::Signature::variadic_any(datafusion::logical_expr::Volatility::Immutable))
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }
    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.0
    }
    fn return_type(
        &self,
        _: &[datafusion::arrow::datatypes::DataType],
    ) -> datafusion::error::Result<datafusion::arrow::datatypes::DataType> {
        Ok(datafusion::arrow::datatypes::DataType::Utf8)
    }
    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<datafusion::logical_expr::ColumnarValue> {
        use datafusion::arrow::array::{Array, StringArray};
        let arrays = datafusion::logical_expr::ColumnarValue::values_to_arrays(&args.args)?;
        let objects: StringArray = (0..args.number_rows)
            .map(|row| {
                let mut object = serde_json::Map::new();
                for pair in arrays.chunks(2) {
                    let key = ScalarValue::try_from_array(&pair[0], row).map(|k| k.to_string()).unwrap_or_default();
                    let value = match pair.get(1).map(|a| (a, ScalarValue::try_from_array(a, row))) {
                        Some((a, Ok(v))) if !a.is_null(row) => match v {
                            ScalarValue::Boolean(Some(b)) => serde_json::Value::Bool(b),
                            v if v.data_type().is_numeric() => {
                                serde_json::from_str(&v.to_string()).unwrap_or(serde_json::Value::String(v.to_string()))
                            }
                            v => serde_json::Value::String(v.to_string()),
                        },
                        _ => serde_json::Value::Null,
                    };
                    object.insert(key, value);
                }
                Some(serde_json::Value::Object(object).to_string())
            })
            .collect();
        Ok(datafusion::logical_expr::ColumnarValue::Array(Arc::new(objects)))
    }
}

/// `to_regtype(name)`: the type's oid, or null where there is no such type (psycopg asks it for `hstore`
/// when SQLAlchemy connects).
fn to_regtype() -> ScalarUDF {
    use datafusion::arrow::array::{Array, AsArray, Int32Array};
    use datafusion::arrow::datatypes::{DataType, Int32Type};
    let mut oids = std::collections::HashMap::new();
    for batch in STATIC_TABLES.as_ref().map(|t| t.pg_type.data()).unwrap_or_default() {
        let (Some(names), Some(ids)) = (batch.column_by_name("typname"), batch.column_by_name("oid")) else { continue };
        let (Ok(names), Ok(ids)) =
            (datafusion::arrow::compute::cast(names, &DataType::Utf8), datafusion::arrow::compute::cast(ids, &DataType::Int32))
        else {
            continue;
        };
        let (names, ids) = (names.as_string::<i32>(), ids.as_primitive::<Int32Type>());
        for i in 0..names.len() {
            if names.is_valid(i) && ids.is_valid(i) {
                oids.insert(names.value(i).to_string(), ids.value(i));
            }
        }
    }
    datafusion::logical_expr::create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        datafusion::logical_expr::Volatility::Stable,
        Arc::new(move |args| {
            let names = datafusion::logical_expr::ColumnarValue::values_to_arrays(args)?;
            let names = datafusion::arrow::compute::cast(&names[0], &DataType::Utf8)?;
            let found: Int32Array = names
                .as_string::<i32>()
                .iter()
                .map(|n| n.and_then(|n| oids.get(n.trim_start_matches("pg_catalog.")).copied()))
                .collect();
            Ok(datafusion::logical_expr::ColumnarValue::Array(Arc::new(found)))
        }),
    )
}

/// `pg_catalog` for a session whose catalog `catalog` holds `schemas` (the tenant's, as its caller sees
/// them). Object ids are handed out as objects are first met, so one is kept per caller and
/// configuration ([`crate::Engine`] does): psql looks a table up by name, then its columns by that id, in
/// two statements. It reads its own copy of the catalog, so that it does not hold itself.
pub fn catalog_schema(
    catalog: &str,
    schemas: Vec<(String, Arc<dyn SchemaProvider>)>,
) -> Result<Arc<dyn SchemaProvider>, DataFusionError> {
    use datafusion::catalog::{CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList};
    let tables = STATIC_TABLES.as_ref().map_err(|e| DataFusionError::Internal(format!("pg_catalog: {e}")))?;
    let copy = MemoryCatalogProvider::new();
    for (name, schema) in schemas {
        copy.register_schema(&name, schema)?;
    }
    let list = MemoryCatalogProviderList::new();
    list.register_catalog(catalog.to_string(), Arc::new(copy));
    let list: Arc<dyn CatalogProviderList> = Arc::new(list);
    let schema = datafusion_pg_catalog::pg_catalog::PgCatalogSchemaProvider::try_new(list, tables.clone(), EmptyContextProvider)?;
    Ok(Arc::new(schema))
}

/// Adds `pg_catalog` (from [`catalog_schema`]) and the Postgres functions to `ctx`, whose catalog
/// `catalog` holds the tenant's schemas (what `setup_pg_catalog` does, with the built-in rows and
/// functions shared). Roles are not listed: a tenant's principals are not Postgres roles.
pub fn install(ctx: &SessionContext, catalog: &str, pg_catalog: Arc<dyn SchemaProvider>) -> Result<(), DataFusionError> {
    use datafusion_pg_catalog::pg_catalog::*;
    let tables = STATIC_TABLES.as_ref().map_err(|e| DataFusionError::Internal(format!("pg_catalog: {e}")))?;
    ctx.catalog(catalog)
        .ok_or_else(|| DataFusionError::Internal(format!("no catalog {catalog} for pg_catalog")))?
        .register_schema("pg_catalog", pg_catalog)?;
    ctx.register_udf(create_current_database_udf(catalog));
    for f in FUNCTIONS.iter() {
        ctx.register_udf(f.clone());
    }
    ctx.register_udtf("pg_get_keywords", tables.pg_get_keywords.clone());
    // `regclass`, `regtype`, … as type names (the parser already turned `'name'::regclass` into lookups).
    let state = ctx.state_ref();
    let with_types = datafusion::execution::SessionStateBuilder::new_from_existing(state.read().clone())
        .with_type_planner(Arc::new(oid_type_planner::PgOidTypePlanner))
        .build();
    *state.write() = with_types;
    generate_series_arg_coercion::CoerceIntArgsToBigInt::widen(ctx);
    Ok(())
}

/// Whether `statement` reads `pg_catalog` and `information_schema` and nothing else (no table at all
/// counts too: `SELECT current_schema()`, and so do table functions).
pub fn reads_only_catalog(statement: &DFStatement) -> bool {
    let DFStatement::Statement(statement) = statement else { return false };
    datafusion::sql::sqlparser::ast::visit_relations(statement.as_ref(), |name| {
        let parts: Vec<String> = name.0.iter().map(|p| p.to_string().to_ascii_lowercase()).collect();
        let catalog = match parts.as_slice() {
            // An unqualified name is a catalog table, a table function or a CTE (whose own reads are
            // checked too): the tenant's tables are all in their connections' schemas, `public` is empty.
            [_] => true,
            [.., schema, _] => schema == "pg_catalog" || schema == "information_schema",
            [] => false,
        };
        if catalog { ControlFlow::Continue(()) } else { ControlFlow::Break(()) }
    })
    .is_continue()
}

/// `sql` parsed as Postgres, with the rewrites that let DataFusion plan what Postgres clients send to
/// browse the catalog (only for statements that read nothing else: see [`crate::guard::admit_postgres`]).
pub fn parse(sql: &str) -> Result<Vec<DFStatement>, String> {
    let statements = PARSER.parse(sql).map_err(|e| format!("SQL error: {e}"))?;
    Ok(statements
        .into_iter()
        .map(|mut s| {
            backslash_escapes(&mut s);
            aggregate_catalog_subqueries(&mut s);
            let _ = s.visit(&mut ScalarFunctionsInFrom);
            in_subqueries_as_arrays(&mut s);
            DFStatement::Statement(Box::new(s))
        })
        .collect())
}

/// `LIKE … ESCAPE '/'` (SQLAlchemy's way to match `pg_` literally) with another escape character than
/// DataFusion's `\`: the pattern becomes `like_escape(pattern, '/')`, the same pattern written with `\`.
fn backslash_escapes(statement: &mut Statement) {
    let _ = visit_expressions_mut(statement, |e| {
        if let Expr::Like { pattern, escape_char, .. } | Expr::ILike { pattern, escape_char, .. } = e
            && let Some(ValueWithSpan { value: Value::SingleQuotedString(c), .. }) = escape_char
            && c != "\\"
        {
            let c = Expr::value(Value::SingleQuotedString(c.clone()));
            let written = std::mem::replace(pattern.as_mut(), Expr::value(Value::Null));
            **pattern = call("like_escape", vec![written, c]);
            *escape_char = None;
        }
        ControlFlow::<()>::Continue(())
    });
}

/// A scalar function in `FROM` (`FROM …, string_to_array(current_setting('search_path'), ',') s`, as
/// Grafana lists the tables on the search path) as Postgres reads it: a one-row table whose one column is
/// named by the alias. DataFusion looks such a name up among table functions only.
struct ScalarFunctionsInFrom;

/// The table functions DataFusion and `pg_catalog` have; any other call in `FROM` is a scalar function.
const TABLE_FUNCTIONS: &[&str] = &["generate_series", "range", "unnest", "pg_get_keywords"];

impl VisitorMut for ScalarFunctionsInFrom {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        // `generate_series(…) AS i`: Postgres names the one column after the alias, DataFusion `value`.
        if let TableFactor::Table { name, alias: Some(alias), args: Some(_), .. } = factor
            && ["generate_series", "range"].contains(&name.to_string().to_ascii_lowercase().as_str())
            && alias.columns.is_empty()
        {
            alias.columns.push(TableAliasColumnDef { name: alias.name.clone(), data_type: None });
            return ControlFlow::Continue(());
        }
        let TableFactor::Table { name, alias: Some(alias), args: Some(args), .. } = &*factor else {
            return ControlFlow::Continue(());
        };
        let function = name.to_string();
        if TABLE_FUNCTIONS.contains(&function.to_ascii_lowercase().as_str()) {
            return ControlFlow::Continue(());
        }
        let column = alias.columns.first().map_or(alias.name.clone(), |c| c.name.clone());
        let arguments: Vec<String> = args.args.iter().map(ToString::to_string).collect();
        let sql = format!("SELECT * FROM (SELECT {function}({}) AS {column}) AS {}", arguments.join(", "), alias.name);
        let derived =
            Parser::new(&PostgreSqlDialect {}).try_with_sql(&sql).and_then(|mut p| p.parse_query()).ok().and_then(|q| {
                match *q.body {
                    SetExpr::Select(select) => select.from.into_iter().next().map(|t| t.relation),
                    _ => None,
                }
            });
        if let Some(derived) = derived {
            *factor = derived;
        }
        ControlFlow::Continue(())
    }
}

/// `x IN (SELECT c FROM …)` outside a filter (Grafana's table list has it in `CASE` and `ORDER BY`), which
/// DataFusion plans only in filters: `array_has((SELECT array_agg(c) FROM …), x)`, a scalar subquery it
/// plans anywhere. (Where the list holds a null and `x` is not in it, Postgres answers null, this false:
/// the same branch of a `CASE`, the same filter; `NOT IN`, where they differ, is left as written.)
fn in_subqueries_as_arrays(statement: &mut Statement) {
    let _ = visit_expressions_mut(statement, |e| {
        if let Expr::InSubquery { expr, subquery, negated: false } = e
            && let SetExpr::Select(select) = subquery.body.as_mut()
            && select.projection.len() == 1
            && let SelectItem::UnnamedExpr(column) | SelectItem::ExprWithAlias { expr: column, .. } = &mut select.projection[0]
        {
            let one = std::mem::replace(column, Expr::value(Value::Null));
            *column = call("array_agg", vec![one]);
            let list = Expr::Subquery(subquery.clone());
            *e = call("array_has", vec![list, std::mem::replace(expr.as_mut(), Expr::value(Value::Null))]);
        }
        ControlFlow::<()>::Continue(())
    });
}

/// Correlated scalar subqueries over `pg_catalog` alone (SQLAlchemy's column reflection has three) take
/// `max(…)` of their one column: DataFusion plans a correlated scalar subquery only when it is
/// aggregated, and each of these has at most one row by the catalog's keys. Subqueries that read the
/// tenant's tables are left as written.
fn aggregate_catalog_subqueries(statement: &mut Statement) {
    const AGGREGATES: &[&str] = &["count", "max", "min", "sum", "avg", "array_agg", "string_agg", "bool_and", "bool_or"];
    let _ = visit_expressions_mut(statement, |e| {
        let Expr::Subquery(query) = e else { return ControlFlow::Continue(()) };
        let Some(select) = catalog_select(query) else { return ControlFlow::Continue(()) };
        if let SelectItem::UnnamedExpr(column) | SelectItem::ExprWithAlias { expr: column, .. } = &mut select.projection[0]
            && !matches!(column, Expr::Function(f) if AGGREGATES.contains(&f.name.to_string().to_ascii_lowercase().as_str()))
        {
            let one = std::mem::replace(column, Expr::value(Value::Null));
            *column = call("max", vec![one]);
        }
        // Conditions on the outer row alone (`WHERE pg_attribute.atthasdef AND …`), which DataFusion cannot
        // decorrelate under outer joins, move out: `CASE WHEN outer THEN (SELECT … WHERE rest) END`.
        let inner: Vec<String> = select
            .from
            .iter()
            .flat_map(|t| std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)))
            .filter_map(|f| match f {
                TableFactor::Table { name, alias, .. } => Some(
                    alias
                        .as_ref()
                        .map(|a| a.name.value.clone())
                        .unwrap_or_else(|| name.0.last().map(|p| p.to_string()).unwrap_or_default())
                        .to_ascii_lowercase(),
                ),
                _ => None,
            })
            .collect();
        // `pg_get_serial_sequence` is null here (no table has a serial column), so a condition that compares
        // with it is never true; said plainly, since DataFusion cannot plan the lookups nested in it.
        let written = select
            .selection
            .take()
            .map(conjuncts)
            .unwrap_or_default()
            .into_iter()
            .map(|c| if calls(&c, "pg_get_serial_sequence") { Expr::value(Value::Boolean(false)) } else { c });
        let (outer, rest): (Vec<Expr>, Vec<Expr>) = written.partition(|c| outer_only(c, &inner));
        if rest.iter().any(|c| matches!(c, Expr::Value(ValueWithSpan { value: Value::Boolean(false), .. }))) {
            // No row: the subquery is null.
            *e = Expr::value(Value::Null);
            return ControlFlow::Continue(());
        }
        select.selection =
            rest.into_iter().reduce(|a, b| Expr::BinaryOp { left: Box::new(a), op: BinaryOperator::And, right: Box::new(b) });
        if let Some(condition) =
            outer.into_iter().reduce(|a, b| Expr::BinaryOp { left: Box::new(a), op: BinaryOperator::And, right: Box::new(b) })
        {
            let subquery = std::mem::replace(e, Expr::value(Value::Null));
            *e = Expr::Case {
                case_token: AttachedToken::empty(),
                end_token: AttachedToken::empty(),
                operand: None,
                conditions: vec![CaseWhen { condition, result: subquery }],
                else_result: None,
            };
        }
        ControlFlow::<()>::Continue(())
    });
}

/// `a AND b AND c` as `[a, b, c]`.
fn conjuncts(e: Expr) -> Vec<Expr> {
    match e {
        Expr::BinaryOp { left, op: BinaryOperator::And, right } => {
            let mut all = conjuncts(*left);
            all.extend(conjuncts(*right));
            all
        }
        Expr::Nested(inner) => match *inner {
            and @ Expr::BinaryOp { op: BinaryOperator::And, .. } => conjuncts(and),
            other => vec![Expr::Nested(Box::new(other))],
        },
        other => vec![other],
    }
}

/// Whether `condition` names columns of tables other than `inner` only (qualified names, no subquery).
fn outer_only(condition: &Expr, inner: &[String]) -> bool {
    let (mut outer, mut other) = (0, 0);
    let _ = datafusion::sql::sqlparser::ast::visit_expressions(condition, |e| {
        match e {
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                let table = parts[parts.len() - 2].value.to_ascii_lowercase();
                if inner.contains(&table) { other += 1 } else { outer += 1 }
            }
            Expr::Identifier(_) | Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => other += 1,
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    outer > 0 && other == 0
}

/// Whether `e` calls the function `name`, subqueries included.
fn calls(e: &Expr, name: &str) -> bool {
    datafusion::sql::sqlparser::ast::visit_expressions(e, |e| match e {
        Expr::Function(f) if f.name.0.last().is_some_and(|p| p.to_string().eq_ignore_ascii_case(name)) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

/// `query` as a one-column `SELECT` that reads only `pg_catalog`.
fn catalog_select(query: &mut Query) -> Option<&mut Select> {
    let in_catalog = |factor: &TableFactor| match factor {
        TableFactor::Table { name, .. } => {
            let parts: Vec<String> = name.0.iter().map(|p| p.to_string().to_ascii_lowercase()).collect();
            matches!(parts.as_slice(), [schema, _] if schema == "pg_catalog")
                || matches!(parts.as_slice(), [table] if table.starts_with("pg_"))
        }
        _ => false,
    };
    let SetExpr::Select(select) = query.body.as_mut() else { return None };
    let catalog_only = !select.from.is_empty()
        && select.from.iter().all(|t| in_catalog(&t.relation) && t.joins.iter().all(|j| in_catalog(&j.relation)));
    (select.projection.len() == 1 && catalog_only).then_some(select.as_mut())
}

/// `name(args…)`.
fn call(name: &str, args: Vec<Expr>) -> Expr {
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args.into_iter().map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e))).collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

/// `like_escape(pattern, escape)`: `pattern`, whose escape character is `escape`, rewritten to escape
/// with `\`.
fn like_escape() -> ScalarUDF {
    use datafusion::arrow::array::{Array, AsArray, StringArray};
    use datafusion::arrow::datatypes::DataType;
    datafusion::logical_expr::create_udf(
        "like_escape",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        datafusion::logical_expr::Volatility::Immutable,
        Arc::new(|args| {
            let arrays = datafusion::logical_expr::ColumnarValue::values_to_arrays(args)?;
            let (patterns, escapes) = (arrays[0].as_string::<i32>(), arrays[1].as_string::<i32>());
            let rewritten: StringArray = (0..patterns.len())
                .map(|i| {
                    if patterns.is_null(i) || escapes.is_null(i) {
                        return None;
                    }
                    Some(rewrite_escapes(patterns.value(i), escapes.value(i).chars().next()))
                })
                .collect();
            Ok(datafusion::logical_expr::ColumnarValue::Array(Arc::new(rewritten)))
        }),
    )
}

fn rewrite_escapes(pattern: &str, escape: Option<char>) -> String {
    let mut out = String::with_capacity(pattern.len() + 4);
    let mut chars = pattern.chars();
    while let Some(ch) = chars.next() {
        if Some(ch) == escape {
            out.push('\\');
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else if ch == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(ch);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_are_rewritten_to_escape_with_a_backslash() {
        assert_eq!(rewrite_escapes("pg/_%", Some('/')), r"pg\_%");
        assert_eq!(rewrite_escapes("a//b", Some('/')), r"a\/b");
        assert_eq!(rewrite_escapes(r"a\b/%", Some('/')), r"a\\b\%");
        let parsed = parse("SELECT 1 WHERE 'pg_x' NOT LIKE 'pg/_' || '%' ESCAPE '/'").unwrap();
        let text = parsed[0].to_string();
        assert!(text.contains("like_escape") && !text.contains("ESCAPE"), "{text}");
    }

    #[test]
    fn correlated_subqueries_over_the_catalog_are_aggregated() {
        // As SQLAlchemy writes them: tables named in full, no aliases.
        let sql = "SELECT coalesce((SELECT pg_catalog.pg_type.typname FROM pg_catalog.pg_type \
                   WHERE pg_catalog.pg_type.oid = pg_catalog.pg_attribute.atttypid), '') FROM pg_catalog.pg_attribute";
        let text = parse(sql).unwrap()[0].to_string();
        assert!(text.contains("max(pg_catalog.pg_type.typname)"), "{text}");
        let sql = "SELECT coalesce((SELECT pg_catalog.pg_attrdef.adbin FROM pg_catalog.pg_attrdef \
                   WHERE pg_catalog.pg_attribute.atthasdef AND pg_catalog.pg_attrdef.adrelid = pg_catalog.pg_attribute.attrelid), '') \
                   FROM pg_catalog.pg_attribute";
        let text = parse(sql).unwrap()[0].to_string();
        assert!(
            text.contains("CASE WHEN pg_catalog.pg_attribute.atthasdef THEN (SELECT max(pg_catalog.pg_attrdef.adbin)"),
            "{text}"
        );
    }

    #[test]
    fn only_catalog_queries_are_the_catalogs() {
        let only = |sql: &str| crate::postgres::reads_only_catalog(&parse(sql).unwrap()[0]);
        assert!(only("SELECT relname FROM pg_catalog.pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"));
        assert!(only("SELECT table_name FROM information_schema.tables"));
        assert!(only("SELECT current_schema()"));
        assert!(!only("SELECT c.relname FROM pg_catalog.pg_class c JOIN salesforce.account a ON a.name = c.relname"));
        assert!(!only("SELECT (SELECT max(name) FROM salesforce.account) FROM pg_catalog.pg_class"));
        assert!(only("SELECT p[i] FROM generate_series(1, 2) AS i, string_to_array('a,b', ',') p"));
        assert!(!only("WITH x AS (SELECT name FROM salesforce.account) SELECT * FROM x"));
    }
}
