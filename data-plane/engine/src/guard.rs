//! What a tenant's statement may be: a query over the tenant's own tables, of bounded size.
//!
//! A data plane serves many tenants in one process, so a statement must not reach the host (files,
//! URLs, the session's settings) nor be so large that parsing or planning it exhausts a thread's stack.
//! [`admit`] enforces both by construction, before anything is planned:
//! 1. the text is tokenized (iteratively) and its size checked: bytes, tokens, set-operation arms,
//!    joins, operators and nesting depth, so no later recursive pass meets a tree deeper than the limits;
//! 2. it is parsed with a recursion limit, and must be exactly one statement of an allowed kind
//!    (`SELECT`/`WITH`/`VALUES`, `EXPLAIN` of one, `SHOW TABLES`/`SHOW COLUMNS`): everything else —
//!    `CREATE EXTERNAL TABLE`, `COPY … TO`, DDL, DML, `SET`/`RESET` of engine settings, `PREPARE` — is
//!    refused by name;
//! 3. the tables it names and the IN lists it holds are counted.
//!
//! After planning, [`verify_plan`] checks the logical plan again with DataFusion's own verifier (no DDL,
//! DML or statements anywhere, subqueries included), and the session has no object store to read files
//! or URLs from (see [`crate::Engine::session`]).

use std::ops::ControlFlow;

use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::{DFParserBuilder, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{Expr, Statement, Value, ValueWithSpan, visit_expressions, visit_expressions_mut};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// How large a statement may be. Every limit is checked before the step it protects runs, and the
/// error names the limit and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementLimits {
    /// Bytes of SQL text.
    pub max_sql_bytes: usize,
    /// Tokens (keywords, names, literals, punctuation).
    pub max_tokens: usize,
    /// Arms of `UNION`/`INTERSECT`/`EXCEPT` chains, over the whole statement.
    pub max_set_operation_arms: usize,
    /// Tables, table functions and CTE references named in `FROM` clauses (each join adds one).
    pub max_tables: usize,
    /// Binary operators (`+`, `=`, `AND`, `||`, …): bounds how deep an expression can be.
    pub max_operators: usize,
    /// Nesting of parentheses and brackets (subqueries, function calls, expressions). The parser's own
    /// recursion limit is four times this, as a second line.
    pub max_nesting: usize,
    /// Values in one `IN (…)` list.
    pub max_in_list: usize,
}

impl Default for StatementLimits {
    fn default() -> Self {
        // Generous for anything a person or a BI tool writes; each was run at its value through planning
        // and execution on the engine's thread stacks (see tests/isolation.rs).
        StatementLimits {
            max_sql_bytes: 1 << 20,
            max_tokens: 200_000,
            max_set_operation_arms: 256,
            max_tables: 64,
            max_operators: 1_000,
            max_nesting: 64,
            max_in_list: 10_000,
        }
    }
}

/// Why a statement was not admitted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GuardError {
    #[error(
        "{what} is not allowed: OmniSQL runs read-only queries (SELECT, WITH, VALUES, EXPLAIN, SHOW TABLES) over your \
         connections' tables; it never reads or writes files or URLs, creates or changes tables, or changes engine \
         settings (OmniSQL's own are SET omnisql.max_staleness, omnisql.request_budget, omnisql.statement_timeout)"
    )]
    NotAllowed { what: String },
    #[error("the statement has {found} {what}; the limit is {limit}: split it into smaller queries")]
    TooLarge { what: &'static str, found: usize, limit: usize },
    #[error("send one statement at a time (this text holds {0})")]
    Several(usize),
    #[error("the text holds no statement")]
    Empty,
    #[error("{0}")]
    Syntax(String),
}

impl From<GuardError> for DataFusionError {
    fn from(e: GuardError) -> Self {
        DataFusionError::Plan(e.to_string())
    }
}

/// The one allowed statement in `sql`, parsed, or why it is refused.
pub fn admit(sql: &str, limits: &StatementLimits) -> Result<DFStatement, GuardError> {
    check_tokens(sql, limits)?;
    numbered_placeholders(one_allowed(parse(sql, limits)?, limits)?)
}

fn parse(sql: &str, limits: &StatementLimits) -> Result<Vec<DFStatement>, GuardError> {
    let statements = DFParserBuilder::new(sql)
        .with_recursion_limit(4 * limits.max_nesting)
        .build()
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| GuardError::Syntax(syntax_message(e, limits)))?;
    Ok(statements.into())
}

/// [`admit`] for a Postgres client's `sql` (`?` is not a placeholder there). A statement that reads only
/// `pg_catalog` and `information_schema` — what psql and BI tools send to list schemas, tables and
/// columns — is parsed as Postgres with the rewrites those queries need ([`crate::postgres::parse`]);
/// any other is parsed exactly as over Flight SQL, since those rewrites may change an answer.
pub fn admit_postgres(sql: &str, limits: &StatementLimits) -> Result<DFStatement, GuardError> {
    check_tokens(sql, limits)?;
    let catalog_only = |s: &[DFStatement]| !s.is_empty() && s.iter().all(crate::postgres::reads_only_catalog);
    let statements = match parse(sql, limits) {
        Ok(s) if !catalog_only(&s) => s,
        plain => match crate::postgres::parse(sql) {
            Ok(rewritten) if catalog_only(&rewritten) => rewritten,
            _ => plain?,
        },
    };
    one_allowed(statements, limits)
}

fn one_allowed(mut statements: Vec<DFStatement>, limits: &StatementLimits) -> Result<DFStatement, GuardError> {
    let statement = match statements.len() {
        0 => return Err(GuardError::Empty),
        1 => statements.pop().ok_or(GuardError::Empty)?,
        n => return Err(GuardError::Several(n)),
    };
    allowed(&statement)?;
    check_tree(&statement, limits)?;
    Ok(statement)
}

/// `?` placeholders (what JDBC, ODBC and BI tools send) numbered `$1`, `$2`, … in the order they appear
/// in the text, so they bind like `$n` ones; a statement may use one style or the other, not both.
fn numbered_placeholders(mut statement: DFStatement) -> Result<DFStatement, GuardError> {
    let DFStatement::Statement(inner) = &mut statement else {
        return Ok(statement);
    };
    // Where each `?` is in the text; the visit's order need not be the text's.
    let (mut positional, mut numbered) = (Vec::new(), false);
    let _ = visit_expressions(inner.as_ref(), |e| {
        if let Expr::Value(ValueWithSpan { value: Value::Placeholder(p), span }) = e {
            match p.as_str() {
                "?" => positional.push((span.start.line, span.start.column)),
                _ => numbered = true,
            }
        }
        ControlFlow::<()>::Continue(())
    });
    if positional.is_empty() {
        return Ok(statement);
    }
    if numbered {
        return Err(GuardError::Syntax(
            "the statement mixes `?` and `$1`-style placeholders: use one style (`?` are numbered in the order they appear)"
                .into(),
        ));
    }
    positional.sort_unstable();
    let _ = visit_expressions_mut(inner.as_mut(), |e| {
        if let Expr::Value(ValueWithSpan { value: Value::Placeholder(p), span }) = e
            && let Ok(n) = positional.binary_search(&(span.start.line, span.start.column))
        {
            *p = format!("${}", n + 1);
        }
        ControlFlow::<()>::Continue(())
    });
    Ok(statement)
}

/// Refuses any plan with DDL, DML or statement nodes, subqueries included: the second line behind
/// [`admit`]'s allow-list.
pub fn verify_plan(plan: &LogicalPlan) -> Result<(), DataFusionError> {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false).verify_plan(plan).map_err(|e| {
        DataFusionError::Plan(GuardError::NotAllowed { what: format!("this plan ({})", e.strip_backtrace().trim()) }.to_string())
    })
}

fn syntax_message(e: DataFusionError, limits: &StatementLimits) -> String {
    let text = e.strip_backtrace();
    if text.contains("RecursionLimitExceeded") || text.contains("recursion limit") {
        return format!(
            "the statement nests too deeply for the parser (its recursion limit is {}): split it into smaller queries",
            4 * limits.max_nesting
        );
    }
    text
}

/// Size checks on the token stream: cheap, iterative, and done before any tree is built.
fn check_tokens(sql: &str, limits: &StatementLimits) -> Result<(), GuardError> {
    let too_large = |what, found, limit| if found > limit { Err(GuardError::TooLarge { what, found, limit }) } else { Ok(()) };
    too_large("bytes of SQL text", sql.len(), limits.max_sql_bytes)?;
    let tokens = Tokenizer::new(&GenericDialect {}, sql).tokenize().map_err(|e| GuardError::Syntax(e.to_string()))?;
    let (mut words, mut arms, mut joins, mut operators, mut depth, mut max_depth) = (0, 1, 0, 0, 0usize, 0);
    for token in &tokens {
        match token {
            Token::Whitespace(_) => continue,
            Token::Word(w) if w.quote_style.is_none() => match w.keyword {
                Keyword::UNION | Keyword::INTERSECT | Keyword::EXCEPT => arms += 1,
                Keyword::JOIN => joins += 1,
                Keyword::AND | Keyword::OR => operators += 1,
                _ => {}
            },
            Token::LParen | Token::LBracket => {
                depth += 1;
                max_depth = max_depth.max(depth);
            }
            Token::RParen | Token::RBracket => depth = depth.saturating_sub(1),
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::StringConcat
            | Token::Eq
            | Token::DoubleEq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Spaceship
            | Token::Ampersand
            | Token::Pipe
            | Token::Caret
            | Token::ShiftLeft
            | Token::ShiftRight
            | Token::Arrow
            | Token::LongArrow
            | Token::DoubleColon => operators += 1,
            _ => {}
        }
        words += 1;
    }
    too_large("tokens", words, limits.max_tokens)?;
    too_large("UNION/INTERSECT/EXCEPT arms", arms, limits.max_set_operation_arms)?;
    too_large("joined tables", joins + 1, limits.max_tables)?;
    too_large("operators", operators, limits.max_operators)?;
    too_large("levels of nesting", max_depth, limits.max_nesting)?;
    Ok(())
}

/// The allow-list: queries, `EXPLAIN` of a query, and catalog listings.
fn allowed(statement: &DFStatement) -> Result<(), GuardError> {
    let refuse = |what: &str| Err(GuardError::NotAllowed { what: what.to_string() });
    match statement {
        DFStatement::Statement(s) => match s.as_ref() {
            Statement::Query(_) | Statement::ShowTables { .. } | Statement::ShowColumns { .. } => Ok(()),
            Statement::Explain { statement, .. } => allowed(&DFStatement::Statement(statement.clone())),
            other => refuse(&leading_words(&other.to_string())),
        },
        DFStatement::Explain(e) => allowed(&e.statement),
        DFStatement::CreateExternalTable(_) => refuse("CREATE EXTERNAL TABLE"),
        DFStatement::CopyTo(_) => refuse("COPY … TO"),
        DFStatement::Reset(_) => refuse("RESET"),
    }
}

/// How a refused statement is named in the error: its first keywords (and a setting's name), never
/// values the tenant wrote.
fn leading_words(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().take(3).collect();
    let named = match words.as_slice() {
        ["SET", name, ..] => format!("SET {name}"),
        [a, b, ..] if b.chars().all(|c| c.is_ascii_uppercase() || c == '_') => format!("{a} {b}"),
        [a, ..] => a.to_string(),
        [] => "this statement".into(),
    };
    named.chars().take(80).collect()
}

/// Counts on the parsed tree: tables named and IN-list lengths. Its depth is already bounded by
/// [`check_tokens`] and the parser's recursion limit.
fn check_tree(statement: &DFStatement, limits: &StatementLimits) -> Result<(), GuardError> {
    let DFStatement::Statement(s) = innermost(statement) else { return Ok(()) };
    let mut tables = 0;
    let _ = datafusion::sql::sqlparser::ast::visit_relations(s.as_ref(), |_| {
        tables += 1;
        ControlFlow::<()>::Continue(())
    });
    if tables > limits.max_tables {
        return Err(GuardError::TooLarge { what: "table references", found: tables, limit: limits.max_tables });
    }
    let longest = datafusion::sql::sqlparser::ast::visit_expressions(s.as_ref(), |e| match e {
        Expr::InList { list, .. } if list.len() > limits.max_in_list => ControlFlow::Break(list.len()),
        _ => ControlFlow::Continue(()),
    });
    if let ControlFlow::Break(found) = longest {
        return Err(GuardError::TooLarge { what: "values in one IN list", found, limit: limits.max_in_list });
    }
    Ok(())
}

fn innermost(statement: &DFStatement) -> &DFStatement {
    match statement {
        DFStatement::Explain(e) => innermost(&e.statement),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_clients_queries_over_tenant_tables_are_parsed_as_written() {
        let limits = StatementLimits::default();
        // The catalog rewrites would answer this subquery with null: it is a query over tenant tables.
        let sql = "SELECT (SELECT a.name FROM salesforce.account a WHERE a.id = o.account_id) FROM salesforce.opportunity o";
        let text = admit_postgres(sql, &limits).unwrap().to_string();
        assert!(
            text.contains("(SELECT a.name FROM salesforce.account a WHERE a.id = o.account_id)") && !text.contains("LIMIT"),
            "{text}"
        );
        // A catalog query is rewritten (DataFusion plans no `OPERATOR(pg_catalog.~)`); a tenant's is not.
        let sql = "SELECT relname FROM pg_catalog.pg_class WHERE relname OPERATOR(pg_catalog.~) '^(account)$'";
        assert!(admit_postgres(sql, &limits).unwrap().to_string().contains("relname ~ '^(account)$'"));
        let sql = "SELECT name FROM salesforce.account WHERE name OPERATOR(pg_catalog.~) 'a'";
        assert!(admit_postgres(sql, &limits).unwrap().to_string().contains("OPERATOR"));
    }

    fn refused(sql: &str) -> String {
        match admit(sql, &StatementLimits::default()) {
            Ok(_) => panic!("admitted: {sql}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn queries_explain_and_show_are_admitted() {
        for sql in [
            "SELECT 1",
            "WITH t AS (SELECT 1 AS a) SELECT a FROM t UNION ALL SELECT 2",
            "VALUES (1), (2)",
            "EXPLAIN SELECT * FROM github.issues WHERE state = 'open'",
            "EXPLAIN ANALYZE SELECT 1",
            "SHOW TABLES",
            "SHOW COLUMNS FROM github.issues",
            "SELECT * FROM t WHERE a IN (1, 2, 3) AND b = 'x'",
        ] {
            admit(sql, &StatementLimits::default()).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }

    #[test]
    fn question_mark_placeholders_are_numbered_in_the_order_of_the_text() {
        let sql = "WITH t AS (SELECT ? AS a) SELECT a, ? FROM t WHERE b = ? AND c IN (?, ?) ORDER BY a LIMIT 5";
        let text = admit(sql, &StatementLimits::default()).unwrap().to_string();
        assert!(text.contains("SELECT $1 AS a"), "{text}");
        assert!(text.contains("SELECT a, $2 FROM t WHERE b = $3 AND c IN ($4, $5)"), "{text}");
        // `$n` ones are left as they are.
        let text = admit("SELECT $2, $1", &StatementLimits::default()).unwrap().to_string();
        assert!(text.contains("SELECT $2, $1"), "{text}");
        assert!(refused("SELECT ? WHERE $1 = 1").contains("mixes `?` and `$1`-style placeholders"));
    }

    #[test]
    fn anything_but_a_query_is_refused_by_name() {
        for (sql, named) in [
            ("COPY (SELECT 1) TO '/tmp/x.csv'", "COPY … TO"),
            ("CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'", "CREATE EXTERNAL TABLE"),
            ("CREATE TABLE x AS SELECT 1", "CREATE TABLE"),
            ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
            ("INSERT INTO x VALUES (1)", "INSERT INTO"),
            ("DROP TABLE github.issues", "DROP TABLE"),
            ("SET datafusion.execution.batch_size = 0", "SET datafusion.execution.batch_size"),
            ("RESET datafusion.execution.batch_size", "RESET"),
            ("EXPLAIN COPY (SELECT 1) TO '/tmp/x.csv'", "COPY … TO"),
            ("EXPLAIN CREATE TABLE x AS SELECT 1", "CREATE TABLE"),
            ("PREPARE p AS SELECT 1", "PREPARE"),
            ("DELETE FROM github.issues", "DELETE FROM"),
        ] {
            let e = refused(sql);
            assert!(e.starts_with(&format!("{named} is not allowed")), "{sql}: {e}");
            assert!(!e.contains("/etc/passwd") && !e.contains("/tmp"), "the error repeats the tenant's path: {e}");
        }
    }

    #[test]
    fn several_statements_are_refused() {
        assert_eq!(refused("SELECT 1; COPY (SELECT 1) TO '/tmp/x'"), GuardError::Several(2).to_string());
    }

    #[test]
    fn size_limits_name_the_limit_and_its_value() {
        let unions = vec!["SELECT 1"; 3_000].join(" UNION ALL ");
        assert_eq!(
            refused(&unions),
            "the statement has 3000 UNION/INTERSECT/EXCEPT arms; the limit is 256: split it into smaller queries"
        );
        let sum = format!("SELECT {}", vec!["1"; 5_000].join(" + "));
        assert!(refused(&sum).contains("4999 operators; the limit is 1000"));
        let nested = format!("SELECT {}1{}", "(".repeat(100), ")".repeat(100));
        assert!(refused(&nested).contains("100 levels of nesting; the limit is 64"));
        let in_list =
            format!("SELECT * FROM t WHERE a IN ({})", (0..20_000).map(|i| i.to_string()).collect::<Vec<_>>().join(","));
        assert!(refused(&in_list).contains("20000 values in one IN list; the limit is 10000"));
        let joins = format!("SELECT 1 FROM t0 {}", (1..100).map(|i| format!("JOIN t{i} ON true")).collect::<Vec<_>>().join(" "));
        assert!(refused(&joins).contains("100 joined tables; the limit is 64"));
        let commas = format!("SELECT 1 FROM {}", (0..100).map(|i| format!("t{i}")).collect::<Vec<_>>().join(", "));
        assert!(refused(&commas).contains("100 table references; the limit is 64"));
        let long = format!("SELECT '{}'", "x".repeat(2 << 20));
        assert!(refused(&long).contains("bytes of SQL text; the limit is 1048576"));
    }

    #[test]
    fn malformed_sql_says_what_the_parser_saw() {
        assert!(refused("SELEC 1").contains("SELEC"));
        assert_eq!(refused("  ;"), GuardError::Empty.to_string());
    }
}
