//! Reading DataFusion filter expressions in the shapes APIs can evaluate: `col op literal`,
//! `col IN (…)`, `col LIKE '…'`, `col IS [NOT] NULL`, through casts the planner inserted.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, Operator};

/// The column an expression names, looking through casts.
pub fn column(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        Expr::Cast(c) => column(&c.expr),
        Expr::TryCast(c) => column(&c.expr),
        _ => None,
    }
}

/// The literal an expression is, folding casts of literals.
pub fn literal(e: &Expr) -> Option<ScalarValue> {
    match e {
        Expr::Literal(v, _) => Some(v.clone()),
        Expr::Cast(c) => literal(&c.expr)?.cast_to(c.field.data_type()).ok(),
        Expr::TryCast(c) => literal(&c.expr)?.cast_to(c.field.data_type()).ok(),
        _ => None,
    }
}

/// `col op literal` (or `literal op col`, flipped), with a comparison operator.
pub fn comparison(e: &Expr) -> Option<(&str, Operator, ScalarValue)> {
    let Expr::BinaryExpr(b) = e else { return None };
    if !matches!(b.op, Operator::Eq | Operator::NotEq | Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq) {
        return None;
    }
    if let (Some(c), Some(v)) = (column(&b.left), literal(&b.right)) {
        return Some((c, b.op, v));
    }
    if let (Some(v), Some(c)) = (literal(&b.left), column(&b.right)) {
        return Some((c, b.op.swap()?, v));
    }
    None
}

/// `col [NOT] IN (literals…)`.
pub fn in_list(e: &Expr) -> Option<(&str, Vec<ScalarValue>, bool)> {
    let Expr::InList(l) = e else { return None };
    let c = column(&l.expr)?;
    let values = l.list.iter().map(literal).collect::<Option<Vec<_>>>()?;
    Some((c, values, l.negated))
}

/// `col = v`, `col IN (v, …)` (not negated), or `col = a OR col = b …` (the planner's form of short IN
/// lists): the values a column is pinned to, each once (an API asked twice for one key would return its
/// row twice).
pub fn pinned_values(e: &Expr) -> Option<(&str, Vec<ScalarValue>)> {
    let (column, values) = pinned_with_repeats(e)?;
    let mut seen = std::collections::HashSet::new();
    Some((column, values.into_iter().filter(|v| seen.insert(v.clone())).collect()))
}

fn pinned_with_repeats(e: &Expr) -> Option<(&str, Vec<ScalarValue>)> {
    if let Expr::BinaryExpr(b) = e
        && b.op == Operator::Or
    {
        let (left, mut values) = pinned_with_repeats(&b.left)?;
        let (right, more) = pinned_with_repeats(&b.right)?;
        if left != right {
            return None;
        }
        values.extend(more);
        return Some((left, values));
    }
    if let Some((c, Operator::Eq, v)) = comparison(e) {
        return Some((c, vec![v]));
    }
    match in_list(e) {
        Some((c, values, false)) => Some((c, values)),
        _ => None,
    }
}

/// A scalar's text, for values sent as query parameters.
pub fn text(v: &ScalarValue) -> Option<String> {
    match v {
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => Some(s.clone()),
        v if v.is_null() => None,
        ScalarValue::Boolean(Some(b)) => Some(b.to_string()),
        ScalarValue::Int8(_)
        | ScalarValue::Int16(_)
        | ScalarValue::Int32(_)
        | ScalarValue::Int64(_)
        | ScalarValue::UInt8(_)
        | ScalarValue::UInt16(_)
        | ScalarValue::UInt32(_)
        | ScalarValue::UInt64(_)
        | ScalarValue::Float32(_)
        | ScalarValue::Float64(_) => Some(v.to_string()),
        _ => None,
    }
}

/// The texts of several scalars, if all have one.
pub fn texts(values: &[ScalarValue]) -> Option<Vec<String>> {
    values.iter().map(text).collect()
}

/// The values `column` is pinned to by `filters` (`=` or `IN`; several pins intersect), as text.
pub fn pinned_texts(filters: &[Expr], column: &str) -> Option<Vec<String>> {
    let mut pinned: Option<Vec<String>> = None;
    for f in filters {
        if let Some((c, values)) = pinned_values(f)
            && c == column
        {
            let values = texts(&values)?;
            pinned = Some(match pinned {
                None => values,
                Some(prev) => prev.into_iter().filter(|v| values.contains(v)).collect(),
            });
        }
    }
    pinned
}

/// A timestamp scalar as UTC microseconds.
pub fn timestamp_micros(v: &ScalarValue) -> Option<i64> {
    match v
        .cast_to(&datafusion::arrow::datatypes::DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None))
        .ok()?
    {
        ScalarValue::TimestampMicrosecond(Some(t), _) => Some(t),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    #[test]
    fn reads_flipped_comparisons_and_in_lists() {
        let e = lit(5i64).lt(col("n"));
        let (c, op, v) = comparison(&e).unwrap();
        assert_eq!((c, op, v), ("n", Operator::Gt, ScalarValue::Int64(Some(5))));
        let e = col("state").in_list(vec![lit("open"), lit("closed")], false);
        let (c, values) = pinned_values(&e).unwrap();
        assert_eq!(c, "state");
        assert_eq!(values.len(), 2);
        assert!(pinned_values(&col("state").in_list(vec![lit("open")], true)).is_none());
        let either = col("login").eq(lit("a")).or(col("login").eq(lit("b")));
        assert_eq!(pinned_values(&either).unwrap().1.len(), 2);
        assert!(pinned_values(&col("login").eq(lit("a")).or(col("name").eq(lit("b")))).is_none());
    }

    #[test]
    fn a_value_pinned_twice_is_asked_for_once() {
        let e = col("login").in_list(vec![lit("a"), lit("b"), lit("a")], false);
        let (c, values) = pinned_values(&e).unwrap_or_else(|| panic!("pinned"));
        assert_eq!((c, values), ("login", vec![ScalarValue::from("a"), ScalarValue::from("b")]));
        let or = col("login").eq(lit("a")).or(col("login").eq(lit("a")));
        assert_eq!(pinned_values(&or).map(|(_, v)| v.len()), Some(1));
    }
}
