//! Join keys as API filters. A hash join publishes, once its build side is complete, a dynamic filter for
//! its probe-side scan: the build side's keys as an `IN` list (up to 150 distinct keys), their min/max
//! bounds, or a hash-table lookup for more keys; per partition inside a `CASE` when the join is
//! partitioned. [`filter_of`] turns what an API can take of that into a logical filter over the scan's
//! columns — an `IN` list the connector sends as its own key filter (SOQL `IN`, GitHub user by login, …)
//! and the bounds as comparisons. Every row it removes could not have joined, so the join's result is
//! the same with or without it; what cannot be translated is left out (a weaker filter is still correct).

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, Operator, col, lit};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, CaseExpr, Column, InListExpr, Literal};

/// The part of a (dynamic filter's current) physical expression an API can take, as a logical filter.
pub fn filter_of(e: &Arc<dyn PhysicalExpr>) -> Option<Expr> {
    if let Some(b) = e.downcast_ref::<BinaryExpr>() {
        return match b.op() {
            Operator::And => match (filter_of(b.left()), filter_of(b.right())) {
                (Some(l), Some(r)) => Some(l.and(r)),
                (one, other) => one.or(other),
            },
            op @ (Operator::GtEq | Operator::LtEq | Operator::Gt | Operator::Lt | Operator::Eq) => {
                let (column, value) = (column_of(b.left())?, literal_of(b.right())?);
                Some(Expr::BinaryExpr(datafusion::logical_expr::BinaryExpr::new(
                    Box::new(col(column)),
                    *op,
                    Box::new(lit(value)),
                )))
            }
            _ => None,
        };
    }
    let (column, keys) = keys_of(e)?;
    // A key on several build rows is one key to the API; sorted, so the same keys make the same request
    // (and hit the response cache) whatever order the build side produced them in.
    let mut keys: Vec<ScalarValue> = keys;
    keys.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    keys.dedup();
    Some(col(column).in_list(keys.into_iter().map(lit).collect(), false))
}

/// The keys of `col IN (…)`, or of a `CASE` whose every branch is one on the same column (a partitioned
/// join: each partition's keys; all of them together are the keys of the join).
fn keys_of(e: &Arc<dyn PhysicalExpr>) -> Option<(String, Vec<ScalarValue>)> {
    if let Some(l) = e.downcast_ref::<InListExpr>() {
        if l.negated() {
            return None;
        }
        let column = column_of(l.expr())?;
        let keys = l.list().iter().map(literal_of).collect::<Option<Vec<_>>>()?;
        return Some((column, keys.into_iter().filter(|k| !k.is_null()).collect()));
    }
    if let Some(c) = e.downcast_ref::<CaseExpr>() {
        let mut found: Option<(String, Vec<ScalarValue>)> = None;
        let branches = c.when_then_expr().iter().map(|(_, then)| then).chain(c.else_expr());
        for branch in branches {
            // A branch that is `false` (an empty partition) adds no keys.
            if literal_of(branch).is_some_and(|v| v == ScalarValue::Boolean(Some(false))) {
                continue;
            }
            let (column, keys) = keys_of(branch).or_else(|| {
                // `col IN (…) AND bounds` inside a branch: its keys are enough.
                let b = branch.downcast_ref::<BinaryExpr>().filter(|b| *b.op() == Operator::And)?;
                keys_of(b.left()).or_else(|| keys_of(b.right()))
            })?;
            match &mut found {
                Some((c, all)) if *c == column => all.extend(keys),
                Some(_) => return None,
                None => found = Some((column, keys)),
            }
        }
        return found;
    }
    None
}

fn column_of(e: &Arc<dyn PhysicalExpr>) -> Option<String> {
    e.downcast_ref::<Column>().map(|c| c.name().to_string())
}

fn literal_of(e: &Arc<dyn PhysicalExpr>) -> Option<ScalarValue> {
    e.downcast_ref::<Literal>().map(|l| l.value().clone())
}

/// How many keys a filter from [`filter_of`] holds (for `EXPLAIN ANALYZE`).
pub fn key_count(e: &Expr) -> usize {
    match e {
        Expr::InList(l) => l.list.len(),
        Expr::BinaryExpr(b) if b.op == Operator::And => key_count(&b.left) + key_count(&b.right),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_expr::expressions::{col as pcol, lit as plit};

    fn schema() -> Schema {
        Schema::new(vec![Field::new("email", DataType::Utf8, true), Field::new("n", DataType::Int64, true)])
    }

    fn in_list(column: &str, keys: &[&str]) -> Arc<dyn PhysicalExpr> {
        let list = keys.iter().map(|k| plit(*k)).collect();
        Arc::new(InListExpr::try_new(pcol(column, &schema()).unwrap(), list, false, &schema()).unwrap())
    }

    fn bounds(column: &str, min: &str, max: &str) -> Arc<dyn PhysicalExpr> {
        let c = pcol(column, &schema()).unwrap();
        let ge = Arc::new(BinaryExpr::new(c.clone(), Operator::GtEq, plit(min)));
        let le = Arc::new(BinaryExpr::new(c, Operator::LtEq, plit(max)));
        Arc::new(BinaryExpr::new(ge, Operator::And, le))
    }

    #[test]
    fn keys_and_bounds_become_an_in_list_and_comparisons() {
        let e: Arc<dyn PhysicalExpr> =
            Arc::new(BinaryExpr::new(bounds("email", "a@x", "c@x"), Operator::And, in_list("email", &["a@x", "c@x"])));
        let f = filter_of(&e).unwrap();
        assert_eq!(
            f.to_string(),
            "email >= Utf8(\"a@x\") AND email <= Utf8(\"c@x\") AND email IN ([Utf8(\"a@x\"), Utf8(\"c@x\")])"
        );
        assert_eq!(key_count(&f), 2);
    }

    #[test]
    fn a_partitioned_join_gives_the_keys_of_every_partition() {
        let hash = pcol("n", &schema()).unwrap();
        let case: Arc<dyn PhysicalExpr> = Arc::new(
            CaseExpr::try_new(
                Some(hash),
                vec![
                    (plit(0i64), in_list("email", &["a@x"])),
                    (plit(1i64), plit(false)),
                    (plit(2i64), in_list("email", &["b@x"])),
                ],
                Some(plit(false)),
            )
            .unwrap(),
        );
        let f = filter_of(&case).unwrap();
        assert_eq!(f.to_string(), "email IN ([Utf8(\"a@x\"), Utf8(\"b@x\")])");
    }

    #[test]
    fn what_cannot_be_translated_is_left_out() {
        let negated: Arc<dyn PhysicalExpr> =
            Arc::new(InListExpr::try_new(pcol("email", &schema()).unwrap(), vec![plit("a")], true, &schema()).unwrap());
        assert!(filter_of(&negated).is_none());
        let mixed: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(negated, Operator::And, bounds("email", "a", "b")));
        assert_eq!(filter_of(&mixed).unwrap().to_string(), "email >= Utf8(\"a\") AND email <= Utf8(\"b\")");
        assert!(filter_of(&plit(true)).is_none());
    }
}
