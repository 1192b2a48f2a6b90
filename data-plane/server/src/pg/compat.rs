//! The session statements Postgres clients send besides queries: transactions (psycopg and SQLAlchemy
//! open one before the first query), `SET`/`SHOW` of Postgres parameters (pgJDBC sets
//! `extra_float_digits` and `application_name` on connect; SQLAlchemy asks `standard_conforming_strings`
//! and the isolation level), savepoints, `RESET`, `DISCARD`, `DEALLOCATE`. OmniSQL is read-only, so a transaction
//! has nothing to commit or roll back: it is acknowledged. `statement_timeout` is the one Postgres
//! parameter with an effect: it sets `omnisql.statement_timeout`.

use std::collections::BTreeMap;
use std::time::Duration;

use omnisql_engine::QuerySettings;

/// A session statement and what it asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compat {
    /// `BEGIN`, `START TRANSACTION …`.
    Begin,
    /// `COMMIT`, `END`, `ROLLBACK`, `ABORT`, with the tag to answer.
    End(&'static str),
    /// `SET name = value` of a Postgres parameter (`SET omnisql.…` is the engine's).
    Set { name: String, value: String },
    /// `SHOW name`.
    Show(String),
    /// Acknowledged with this tag and nothing else (`SET TRANSACTION …`, `RESET`, `DISCARD ALL`, …).
    Ignore(&'static str),
}

/// `sql` as a session statement, or `None` when it is for the engine (queries and `SET omnisql.…`).
pub fn classify(sql: &str) -> Option<Compat> {
    let text = sql.trim().trim_end_matches(';').trim();
    let lower = text.to_ascii_lowercase();
    let words: Vec<&str> = lower.split_whitespace().collect();
    let first = *words.first()?;
    let compat = match first {
        "begin" => Compat::Begin,
        "start" if words.get(1) == Some(&"transaction") => Compat::Begin,
        "commit" | "end" => Compat::End("COMMIT"),
        "rollback" if words.get(1) == Some(&"to") => Compat::Ignore("ROLLBACK"),
        "rollback" | "abort" => Compat::End("ROLLBACK"),
        "savepoint" => Compat::Ignore("SAVEPOINT"),
        "release" => Compat::Ignore("RELEASE"),
        "reset" => Compat::Ignore("RESET"),
        "discard" => Compat::Ignore("DISCARD ALL"),
        "deallocate" => Compat::Ignore("DEALLOCATE"),
        "show" if words.len() >= 2 => {
            let name = text[4..].trim().trim_matches('"').to_ascii_lowercase();
            if name.starts_with("omnisql.") || name.contains(char::is_whitespace) && !name.starts_with("transaction") {
                return None;
            }
            Compat::Show(match name.as_str() {
                "transaction isolation level" => "transaction_isolation".into(),
                _ => name,
            })
        }
        "set" => {
            let rest = text[3..].trim_start();
            let rest = strip_word(rest, "session").or_else(|| strip_word(rest, "local")).unwrap_or(rest);
            let rest_lower = rest.to_ascii_lowercase();
            if rest_lower.starts_with("transaction") || rest_lower.starts_with("characteristics") {
                return Some(Compat::Ignore("SET"));
            }
            if let Some(zone) = strip_word(rest, "time").and_then(|r| strip_word(r, "zone")) {
                return Some(Compat::Set { name: "timezone".into(), value: unquote(zone) });
            }
            let split = rest.find(|c: char| c == '=' || c.is_whitespace())?;
            let name = rest[..split].trim_matches('"').to_ascii_lowercase();
            if name.starts_with("omnisql.") {
                return None;
            }
            let value = rest[split..].trim_start();
            let value = value.strip_prefix('=').or_else(|| strip_word(value, "to"))?.trim();
            Compat::Set { name, value: unquote(value) }
        }
        _ => return None,
    };
    Some(compat)
}

fn strip_word<'a>(text: &'a str, word: &str) -> Option<&'a str> {
    let head = text.get(..word.len())?;
    let tail = &text[word.len()..];
    (head.eq_ignore_ascii_case(word) && tail.starts_with(char::is_whitespace)).then(|| tail.trim_start())
}

fn unquote(value: &str) -> String {
    value.trim().trim_matches('\'').to_string()
}

/// A connection's Postgres parameters: what it set, over the defaults.
#[derive(Debug, Default, Clone)]
pub struct Parameters(BTreeMap<String, String>);

impl Parameters {
    /// Remembers `SET name = value`; `statement_timeout` (milliseconds, or with a unit) also bounds the
    /// connection's statements, `0` meaning the tenant's limit.
    pub fn set(&mut self, name: &str, value: &str, settings: &mut QuerySettings) -> Result<(), String> {
        if name == "statement_timeout" {
            let value = value.trim();
            settings.statement_timeout = match value.parse::<u64>() {
                Ok(0) => None,
                Ok(ms) => Some(Duration::from_millis(ms)),
                Err(_) => Some(
                    omnisql_engine::settings::parse_duration(value)
                        .ok_or_else(|| format!("invalid value for parameter \"statement_timeout\": \"{value}\""))?,
                ),
            };
        }
        self.0.insert(name.to_string(), value.to_string());
        Ok(())
    }

    /// The value `SHOW name` answers, or `None` for a parameter Postgres would not know either.
    pub fn show(&self, name: &str, server_version: &str) -> Option<String> {
        if let Some(v) = self.0.get(name) {
            return Some(v.clone());
        }
        match name {
            "server_version" => Some(server_version.to_string()),
            "statement_timeout" => Some("0".into()),
            _ => omnisql_engine::postgres::parameter(name).map(str::to_string),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_statements_are_told_from_queries() {
        assert_eq!(classify("BEGIN"), Some(Compat::Begin));
        assert_eq!(classify("begin isolation level read committed;"), Some(Compat::Begin));
        assert_eq!(classify("START TRANSACTION READ ONLY"), Some(Compat::Begin));
        assert_eq!(classify("commit"), Some(Compat::End("COMMIT")));
        assert_eq!(classify("ROLLBACK"), Some(Compat::End("ROLLBACK")));
        assert_eq!(classify("ROLLBACK TO SAVEPOINT sa_1"), Some(Compat::Ignore("ROLLBACK")));
        assert_eq!(classify("SAVEPOINT sa_1"), Some(Compat::Ignore("SAVEPOINT")));
        assert_eq!(
            classify("SET extra_float_digits = 3"),
            Some(Compat::Set { name: "extra_float_digits".into(), value: "3".into() })
        );
        assert_eq!(
            classify("SET application_name TO 'PostgreSQL JDBC Driver'"),
            Some(Compat::Set { name: "application_name".into(), value: "PostgreSQL JDBC Driver".into() })
        );
        assert_eq!(
            classify("set session time zone 'Europe/Paris'"),
            Some(Compat::Set { name: "timezone".into(), value: "Europe/Paris".into() })
        );
        assert_eq!(classify("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"), Some(Compat::Ignore("SET")));
        assert_eq!(classify("show transaction isolation level"), Some(Compat::Show("transaction_isolation".into())));
        assert_eq!(classify("SHOW standard_conforming_strings"), Some(Compat::Show("standard_conforming_strings".into())));
        // The engine's own statements and queries are not session statements.
        assert_eq!(classify("SET omnisql.max_staleness = '0'"), None);
        assert_eq!(classify("SELECT 1"), None);
        assert_eq!(classify("select * from startups"), None);
        assert_eq!(classify("SET"), None);
    }

    #[test]
    fn statement_timeout_bounds_the_connections_statements() {
        let (mut p, mut s) = (Parameters::default(), QuerySettings::default());
        p.set("statement_timeout", "1500", &mut s).unwrap();
        assert_eq!(s.statement_timeout, Some(Duration::from_millis(1500)));
        p.set("statement_timeout", "2min", &mut s).unwrap();
        assert_eq!(s.statement_timeout, Some(Duration::from_secs(120)));
        p.set("statement_timeout", "0", &mut s).unwrap();
        assert_eq!(s.statement_timeout, None);
        assert!(p.set("statement_timeout", "soon", &mut s).unwrap_err().contains("statement_timeout"));
        assert_eq!(p.show("statement_timeout", "16.6").as_deref(), Some("0"));
        assert_eq!(p.show("server_version", "16.6").as_deref(), Some("16.6"));
        assert_eq!(p.show("no_such_thing", "16.6"), None);
    }
}
