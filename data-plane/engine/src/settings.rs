//! Settings a client changes with SQL: `SET omnisql.max_staleness = '5 minutes'` (how old cached API
//! answers may be; `0` forces fresh data), `SET omnisql.request_budget = 200` (most upstream requests
//! one query may make) and `SET omnisql.statement_timeout = '30s'` (longest a statement may run, up to
//! the tenant's limit). Leading `SET` statements apply to the statement after them in the same text
//! and, over Flight SQL, to the rest of the client's connection.

use std::time::Duration;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuerySettings {
    pub max_staleness: Option<Duration>,
    pub request_budget: Option<u64>,
    /// Asked for by the session; the tenant's limit still applies.
    pub statement_timeout: Option<Duration>,
    /// The client speaks the Postgres protocol: statements are parsed as Postgres and see `pg_catalog`
    /// ([`crate::postgres`]). Set by the server, not by SQL.
    pub postgres: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("unknown setting `{0}`; OmniSQL has omnisql.max_staleness, omnisql.request_budget and omnisql.statement_timeout")]
    Unknown(String),
    #[error("invalid value {value:?} for {name}: {reason}")]
    Invalid { name: String, value: String, reason: &'static str },
}

impl QuerySettings {
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), SettingsError> {
        let invalid = |reason| SettingsError::Invalid { name: name.into(), value: value.into(), reason };
        match name.to_ascii_lowercase().as_str() {
            "omnisql.max_staleness" => {
                self.max_staleness =
                    Some(parse_duration(value).ok_or_else(|| invalid("expected e.g. '0', '30 seconds', '5 minutes', '1 hour'"))?)
            }
            "omnisql.request_budget" => {
                self.request_budget = Some(value.trim().parse().map_err(|_| invalid("expected a whole number of requests"))?)
            }
            "omnisql.statement_timeout" => {
                let timeout = parse_duration(value)
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| invalid("expected a positive duration, e.g. '500 ms', '30 seconds', '2 minutes'"))?;
                self.statement_timeout = Some(timeout);
            }
            other => return Err(SettingsError::Unknown(other.into())),
        }
        Ok(())
    }
}

/// `'5 minutes'`, `30s`, `0`, `1 hour`, `250 ms`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim().trim_matches('\'').trim().to_ascii_lowercase();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "" if n == 0.0 => 0.0,
        "ms" | "millisecond" | "milliseconds" => n / 1000.0,
        "s" | "sec" | "secs" | "second" | "seconds" => n,
        "m" | "min" | "mins" | "minute" | "minutes" => n * 60.0,
        "h" | "hour" | "hours" => n * 3600.0,
        "d" | "day" | "days" => n * 86400.0,
        _ => return None,
    };
    (seconds >= 0.0 && seconds.is_finite()).then(|| Duration::from_secs_f64(seconds))
}

/// A duration as a setting would be written: `250 ms`, `30 s`, `2 min`.
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{} min", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{ms} ms")
    }
}

/// Splits leading `SET omnisql.… = …;` statements off `sql`: the `(name, value)` pairs and the rest.
pub fn split_sets(sql: &str) -> (Vec<(String, String)>, &str) {
    let mut sets = Vec::new();
    let mut rest = sql.trim_start();
    loop {
        let lower = rest.get(..4).map(str::to_ascii_lowercase);
        if lower.as_deref() != Some("set ") {
            break;
        }
        let body = &rest[4..];
        // The statement ends at the first `;` outside quotes, or at the end of the text.
        let mut in_quote = false;
        let end = body.char_indices().find(|(_, c)| {
            if *c == '\'' {
                in_quote = !in_quote;
            }
            *c == ';' && !in_quote
        });
        let (stmt, after) = match end {
            Some((i, _)) => (&body[..i], &body[i + 1..]),
            None => (body, ""),
        };
        let Some((name, value)) = stmt.split_once('=').or_else(|| stmt.trim().split_once(char::is_whitespace)) else { break };
        let name = name.trim();
        if !name.to_ascii_lowercase().starts_with("omnisql.") {
            break;
        }
        let value = value.trim().trim_start_matches("TO ").trim_start_matches("to ").trim();
        sets.push((name.to_string(), value.trim_matches('\'').to_string()));
        rest = after.trim_start();
    }
    (sets, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_the_usual_spellings() {
        assert_eq!(parse_duration("'5 minutes'"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("1 hour"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250 ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("5 fortnights"), None);
    }

    #[test]
    fn leading_sets_are_split_from_the_query() {
        let (sets, rest) = split_sets("SET omnisql.max_staleness = '5 minutes'; set omnisql.request_budget = 10;  SELECT 'a;b'");
        assert_eq!(
            sets,
            vec![("omnisql.max_staleness".into(), "5 minutes".into()), ("omnisql.request_budget".into(), "10".into())]
        );
        assert_eq!(rest, "SELECT 'a;b'");
        let (sets, rest) = split_sets("SET omnisql.max_staleness TO 0");
        assert_eq!((sets.len(), rest), (1, ""));
        let (sets, rest) = split_sets("SET datafusion.execution.batch_size = 10; SELECT 1");
        assert!(sets.is_empty() && rest.starts_with("SET datafusion"));
    }

    #[test]
    fn unknown_settings_and_bad_values_are_named() {
        let mut s = QuerySettings::default();
        assert_eq!(s.set("omnisql.nope", "1"), Err(SettingsError::Unknown("omnisql.nope".into())));
        assert!(s.set("omnisql.max_staleness", "later").unwrap_err().to_string().contains("omnisql.max_staleness"));
        s.set("omnisql.request_budget", "25").unwrap();
        assert_eq!(s.request_budget, Some(25));
    }
}
