//! A SOQL subset, parsed and evaluated the way Salesforce does for the queries connectors send:
//! `SELECT f, … FROM Obj [WHERE …] [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], …] [LIMIT n] [OFFSET n]`
//! with `= != <> < <= > >= LIKE IN NOT IN AND OR NOT` and parentheses. String comparisons ignore case.

use std::cmp::Ordering;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub fields: Vec<String>,
    pub object: String,
    pub filter: Option<Cond>,
    pub order: Vec<(String, bool, Option<bool>)>, // field, descending, nulls_first
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
    Cmp(String, String, Lit),
    In(String, Vec<Lit>, bool),
    Like(String, String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
    /// A date or datetime literal, unquoted in SOQL.
    Time(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Num(f64),
    Sym(String),
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            let mut v = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("unterminated string literal".into()),
                    Some('\\') => {
                        if let Some(n) = chars.get(i + 1) {
                            v.push(*n);
                        }
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        v.push(*ch);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(v));
        } else if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '.' | '-' | ':' | '+')) {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            match text.parse::<f64>() {
                Ok(n) => out.push(Tok::Num(n)),
                Err(_) => out.push(Tok::Word(text)),
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.')) {
                i += 1;
            }
            out.push(Tok::Word(chars[start..i].iter().collect()));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            if matches!(two.as_str(), "!=" | "<>" | "<=" | ">=") {
                out.push(Tok::Sym(two));
                i += 2;
            } else if matches!(c, '=' | '<' | '>' | '(' | ')' | ',') {
                out.push(Tok::Sym(c.to_string()));
                i += 1;
            } else {
                return Err(format!("unexpected character '{c}'"));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn keyword(&mut self, kw: &str) -> bool {
        if let Some(Tok::Word(w)) = self.peek() {
            if w.eq_ignore_ascii_case(kw) {
                self.pos += 1;
                return true;
            }
        }
        false
    }
    fn expect_kw(&mut self, kw: &str) -> Result<(), String> {
        if self.keyword(kw) { Ok(()) } else { Err(format!("expecting '{kw}', found {:?}", self.peek())) }
    }
    fn sym(&mut self, s: &str) -> bool {
        if let Some(Tok::Sym(x)) = self.peek() {
            if x == s {
                self.pos += 1;
                return true;
            }
        }
        false
    }
    fn ident(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Word(w)) => Ok(w),
            other => Err(format!("expecting a field name, found {other:?}")),
        }
    }
    fn literal(&mut self) -> Result<Lit, String> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Lit::Str(s)),
            Some(Tok::Num(n)) => Ok(Lit::Num(n)),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("null") => Ok(Lit::Null),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("true") => Ok(Lit::Bool(true)),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("false") => Ok(Lit::Bool(false)),
            Some(Tok::Word(w)) if parse_time(&w).is_some() => Ok(Lit::Time(w)),
            other => Err(format!("expecting a value, found {other:?}")),
        }
    }
    fn or(&mut self) -> Result<Cond, String> {
        let mut left = self.and()?;
        while self.keyword("OR") {
            left = Cond::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }
    fn and(&mut self) -> Result<Cond, String> {
        let mut left = self.not()?;
        while self.keyword("AND") {
            left = Cond::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }
    fn not(&mut self) -> Result<Cond, String> {
        if self.keyword("NOT") {
            return Ok(Cond::Not(Box::new(self.not()?)));
        }
        if self.sym("(") {
            let c = self.or()?;
            if !self.sym(")") {
                return Err("expecting ')'".into());
            }
            return Ok(c);
        }
        let field = self.ident()?;
        if self.keyword("LIKE") {
            return match self.literal()? {
                Lit::Str(p) => Ok(Cond::Like(field, p)),
                _ => Err("LIKE needs a string".into()),
            };
        }
        let negated = self.keyword("NOT");
        if self.keyword("IN") {
            if !self.sym("(") {
                return Err("expecting '(' after IN".into());
            }
            let mut values = vec![self.literal()?];
            while self.sym(",") {
                values.push(self.literal()?);
            }
            if !self.sym(")") {
                return Err("expecting ')' after IN list".into());
            }
            return Ok(Cond::In(field, values, negated));
        }
        if negated {
            return Err("expecting IN after NOT".into());
        }
        let op = match self.next() {
            Some(Tok::Sym(s)) if matches!(s.as_str(), "=" | "!=" | "<>" | "<" | "<=" | ">" | ">=") => {
                if s == "<>" {
                    "!=".to_string()
                } else {
                    s
                }
            }
            other => return Err(format!("expecting an operator, found {other:?}")),
        };
        Ok(Cond::Cmp(field, op, self.literal()?))
    }
}

pub fn parse(soql: &str) -> Result<Query, String> {
    let mut p = Parser { toks: tokenize(soql)?, pos: 0 };
    p.expect_kw("SELECT")?;
    let mut fields = vec![p.ident()?];
    while p.sym(",") {
        fields.push(p.ident()?);
    }
    p.expect_kw("FROM")?;
    let object = p.ident()?;
    let filter = if p.keyword("WHERE") { Some(p.or()?) } else { None };
    let mut order = Vec::new();
    if p.keyword("ORDER") {
        p.expect_kw("BY")?;
        loop {
            let f = p.ident()?;
            let desc = if p.keyword("DESC") {
                true
            } else {
                p.keyword("ASC");
                false
            };
            let nulls_first = if p.keyword("NULLS") {
                if p.keyword("FIRST") {
                    Some(true)
                } else {
                    p.expect_kw("LAST")?;
                    Some(false)
                }
            } else {
                None
            };
            order.push((f, desc, nulls_first));
            if !p.sym(",") {
                break;
            }
        }
    }
    let mut limit = None;
    let mut offset = None;
    if p.keyword("LIMIT") {
        match p.next() {
            Some(Tok::Num(n)) if n >= 0.0 => limit = Some(n as usize),
            other => return Err(format!("expecting a number after LIMIT, found {other:?}")),
        }
    }
    if p.keyword("OFFSET") {
        match p.next() {
            Some(Tok::Num(n)) if (0.0..=2000.0).contains(&n) => offset = Some(n as usize),
            other => {
                return Err(format!("OFFSET must be a number up to 2000, found {other:?}"));
            }
        }
    }
    if let Some(t) = p.peek() {
        return Err(format!("unexpected token {t:?}"));
    }
    Ok(Query { fields, object, filter, order, limit, offset })
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc())
}

/// Orders a record value against a literal; `None` when they cannot be compared (SOQL: no match).
fn compare(v: &Value, lit: &Lit) -> Option<Ordering> {
    match (v, lit) {
        (Value::Number(n), Lit::Num(l)) => n.as_f64()?.partial_cmp(l),
        (Value::Bool(b), Lit::Bool(l)) => Some(b.cmp(l)),
        (Value::String(s), Lit::Time(l)) => Some(parse_time(s)?.cmp(&parse_time(l)?)),
        (Value::String(s), Lit::Str(l)) => Some(s.to_lowercase().cmp(&l.to_lowercase())),
        _ => None,
    }
}

fn like(value: &str, pattern: &str) -> bool {
    fn go(v: &[char], p: &[char]) -> bool {
        match p.split_first() {
            None => v.is_empty(),
            Some(('%', rest)) => (0..=v.len()).any(|i| go(&v[i..], rest)),
            Some(('_', rest)) => !v.is_empty() && go(&v[1..], rest),
            Some((c, rest)) => v.first().is_some_and(|x| x == c) && go(&v[1..], rest),
        }
    }
    let v: Vec<char> = value.to_lowercase().chars().collect();
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    go(&v, &p)
}

/// Evaluates a condition on one record; `get` looks a field up case-insensitively.
pub fn eval(c: &Cond, get: &dyn Fn(&str) -> Value) -> bool {
    match c {
        Cond::And(a, b) => eval(a, get) && eval(b, get),
        Cond::Or(a, b) => eval(a, get) || eval(b, get),
        Cond::Not(a) => !eval(a, get),
        Cond::Like(f, p) => matches!(get(f), Value::String(s) if like(&s, p)),
        Cond::In(f, values, negated) => {
            let v = get(f);
            let found = values.iter().any(|l| compare(&v, l) == Some(Ordering::Equal));
            if *negated { !v.is_null() && !found } else { found }
        }
        Cond::Cmp(f, op, lit) => {
            let v = get(f);
            if *lit == Lit::Null {
                return match op.as_str() {
                    "=" => v.is_null(),
                    "!=" => !v.is_null(),
                    _ => false,
                };
            }
            if op == "!=" {
                return v.is_null() || compare(&v, lit) != Some(Ordering::Equal);
            }
            let Some(ord) = compare(&v, lit) else {
                return false;
            };
            match op.as_str() {
                "=" => ord == Ordering::Equal,
                "<" => ord == Ordering::Less,
                "<=" => ord != Ordering::Greater,
                ">" => ord == Ordering::Greater,
                ">=" => ord != Ordering::Less,
                _ => false,
            }
        }
    }
}

/// Orders two record values for ORDER BY (nulls first by default for ASC, last for DESC).
pub fn order_values(a: &Value, b: &Value, desc: bool, nulls_first: Option<bool>) -> Ordering {
    let nulls_first = nulls_first.unwrap_or(!desc);
    let ord = match (a, b) {
        (Value::Null, Value::Null) => return Ordering::Equal,
        (Value::Null, _) => {
            return if nulls_first { Ordering::Less } else { Ordering::Greater };
        }
        (_, Value::Null) => {
            return if nulls_first { Ordering::Greater } else { Ordering::Less };
        }
        (Value::Number(x), Value::Number(y)) => x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(Ordering::Equal),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::String(x), Value::String(y)) => match (parse_time(x), parse_time(y)) {
            (Some(p), Some(q)) if x.len() >= 10 && x.as_bytes().get(4) == Some(&b'-') => p.cmp(&q),
            _ => x.to_lowercase().cmp(&y.to_lowercase()),
        },
        _ => Ordering::Equal,
    };
    if desc { ord.reverse() } else { ord }
}

/// Every field name a condition mentions.
pub fn fields_of(c: &Cond, out: &mut Vec<String>) {
    match c {
        Cond::And(a, b) | Cond::Or(a, b) => {
            fields_of(a, out);
            fields_of(b, out);
        }
        Cond::Not(a) => fields_of(a, out),
        Cond::Cmp(f, _, _) | Cond::In(f, _, _) | Cond::Like(f, _) => out.push(f.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_a_full_query() {
        let q = parse(
            "SELECT Id, Name FROM Account WHERE (AnnualRevenue > 1000000 AND Name LIKE 'Glo%') OR NOT Industry IN ('Energy', 'Retail') ORDER BY Name DESC NULLS LAST LIMIT 10 OFFSET 5",
        )
        .unwrap();
        assert_eq!(q.fields, vec!["Id", "Name"]);
        assert_eq!(q.object, "Account");
        assert_eq!(q.limit, Some(10));
        assert_eq!(q.offset, Some(5));
        assert_eq!(q.order, vec![("Name".to_string(), true, Some(false))]);
    }

    #[test]
    fn evaluates_case_insensitive_strings_nulls_and_dates() {
        let rec = json!({"Name": "Globex Corp", "Amount": null, "CreatedDate": "2024-03-01T10:00:00.000+0000"});
        let get = |f: &str| rec.get(f).cloned().unwrap_or(Value::Null);
        let t = |s: &str| eval(&parse(&format!("SELECT Id FROM X WHERE {s}")).unwrap().filter.unwrap(), &get);
        assert!(t("Name = 'globex corp'"));
        assert!(t("Name LIKE '%corp'"));
        assert!(t("Amount = null"));
        assert!(!t("Amount > 5"));
        assert!(t("Amount != 5"));
        assert!(t("CreatedDate >= 2024-01-01T00:00:00Z"));
        assert!(!t("CreatedDate < 2024-03-01T00:00:00Z"));
        assert!(t("Name NOT IN ('Initech')"));
    }

    #[test]
    fn rejects_malformed_queries() {
        assert!(parse("SELECT FROM Account").is_err());
        assert!(parse("SELECT Id FROM Account WHERE Name = 'x").is_err());
        assert!(parse("SELECT Id FROM Account LIMIT x").is_err());
    }
}
