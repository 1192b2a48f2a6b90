//! API rows (JSON) to Arrow: a table declares its columns as JSON pointers with a kind, and every page
//! of rows becomes one record batch of the projected columns.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, ListBuilder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use serde_json::Value;

use crate::error::Result;

/// How a JSON value becomes an Arrow value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Int,
    Float,
    Bool,
    /// ISO-8601 / RFC 3339 or Salesforce's `2024-01-01T00:00:00.000+0000`, as UTC microseconds.
    Timestamp,
    Date,
    /// Epoch seconds (a number, or a string such as Slack's `1712345678.000200`) as a UTC timestamp.
    EpochSeconds,
    /// `true` when the pointer leads to a non-null value (e.g. GitHub's `pull_request` key).
    Present,
    /// An array of strings, or of objects whose `field` is a string (`""` for plain strings).
    StrList(&'static str),
}

impl Kind {
    pub fn data_type(self) -> DataType {
        match self {
            Kind::Str => DataType::Utf8,
            Kind::Int => DataType::Int64,
            Kind::Float => DataType::Float64,
            Kind::Bool | Kind::Present => DataType::Boolean,
            Kind::Timestamp | Kind::EpochSeconds => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Kind::Date => DataType::Date32,
            Kind::StrList(_) => DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        }
    }
}

/// One column of an API table.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub kind: Kind,
    /// JSON pointer into one row, e.g. `/user/login`.
    pub pointer: String,
}

impl Column {
    pub fn new(name: &str, kind: Kind, pointer: &str) -> Self {
        Column { name: name.into(), kind, pointer: pointer.into() }
    }
}

pub fn schema_of(columns: &[Column]) -> SchemaRef {
    Arc::new(Schema::new(columns.iter().map(|c| Field::new(&c.name, c.kind.data_type(), true)).collect::<Vec<_>>()))
}

pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn as_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// `1712345678.000200` → microseconds, exactly (no float rounding).
fn as_epoch_micros(v: &Value) -> Option<i64> {
    let text = as_str(v)?;
    let (secs, frac) = text.split_once('.').unwrap_or((&text, ""));
    let micros: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
    Some(secs.parse::<i64>().ok()? * 1_000_000 + micros.parse::<i64>().ok()?)
}

fn column_array(column: &Column, rows: &[Value]) -> ArrayRef {
    let values = rows.iter().map(|r| r.pointer(&column.pointer).filter(|v| !v.is_null()));
    match column.kind {
        Kind::Str => {
            let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 16);
            values.for_each(|v| b.append_option(v.and_then(as_str)));
            Arc::new(b.finish())
        }
        Kind::Int => {
            let mut b = Int64Builder::with_capacity(rows.len());
            values.for_each(|v| b.append_option(v.and_then(as_i64)));
            Arc::new(b.finish())
        }
        Kind::Float => {
            let mut b = Float64Builder::with_capacity(rows.len());
            values.for_each(|v| b.append_option(v.and_then(as_f64)));
            Arc::new(b.finish())
        }
        Kind::Bool => {
            let mut b = BooleanBuilder::with_capacity(rows.len());
            values.for_each(|v| b.append_option(v.and_then(Value::as_bool)));
            Arc::new(b.finish())
        }
        Kind::Present => {
            let mut b = BooleanBuilder::with_capacity(rows.len());
            values.for_each(|v| b.append_value(v.is_some()));
            Arc::new(b.finish())
        }
        Kind::Timestamp => {
            let mut b = TimestampMicrosecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
            values
                .for_each(|v| b.append_option(v.and_then(Value::as_str).and_then(parse_timestamp).map(|t| t.timestamp_micros())));
            Arc::new(b.finish())
        }
        Kind::EpochSeconds => {
            let mut b = TimestampMicrosecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
            values.for_each(|v| b.append_option(v.and_then(as_epoch_micros)));
            Arc::new(b.finish())
        }
        Kind::Date => {
            let mut b = Date32Builder::with_capacity(rows.len());
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
            values.for_each(|v| {
                let d =
                    v.and_then(Value::as_str).and_then(|s| NaiveDate::parse_from_str(s.get(..10).unwrap_or(s), "%Y-%m-%d").ok());
                b.append_option(d.map(|d| (d - epoch).num_days() as i32));
            });
            Arc::new(b.finish())
        }
        Kind::StrList(field) => {
            let mut b = ListBuilder::new(StringBuilder::new());
            for v in values {
                match v.and_then(Value::as_array) {
                    Some(items) => {
                        for item in items {
                            let s = if field.is_empty() { as_str(item) } else { item.get(field).and_then(as_str) };
                            b.values().append_option(s);
                        }
                        b.append(true);
                    }
                    None => b.append(false),
                }
            }
            Arc::new(b.finish())
        }
    }
}

/// One batch of `columns` (already projected, matching `schema`) from `rows`.
pub fn to_batch(schema: SchemaRef, columns: &[&Column], rows: &[Value]) -> Result<RecordBatch> {
    let arrays: Vec<ArrayRef> = columns.iter().map(|c| column_array(c, rows)).collect();
    let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
    Ok(RecordBatch::try_new_with_options(schema, arrays, &options)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use serde_json::json;

    #[test]
    fn converts_nested_pointers_lists_presence_and_both_timestamp_styles() {
        let cols = [
            Column::new("login", Kind::Str, "/user/login"),
            Column::new("labels", Kind::StrList("name"), "/labels"),
            Column::new("is_pr", Kind::Present, "/pull_request"),
            Column::new("at", Kind::Timestamp, "/at"),
            Column::new("n", Kind::Int, "/n"),
        ];
        let rows = vec![
            json!({"user": {"login": "ada"}, "labels": [{"name": "bug"}, {"name": "p1"}], "pull_request": {}, "at": "2024-01-02T03:04:05Z", "n": 3}),
            json!({"user": null, "labels": [], "at": "2013-05-20T20:49:32.000+0000", "n": "7"}),
        ];
        let refs: Vec<&Column> = cols.iter().collect();
        let batch = to_batch(schema_of(&cols), &refs, &rows).unwrap();
        let text = pretty_format_batches(&[batch]).unwrap().to_string();
        assert!(text.contains("| ada   | [bug, p1] | true  | 2024-01-02T03:04:05Z | 3 |"), "{text}");
        assert!(text.contains("|       | []        | false | 2013-05-20T20:49:32Z | 7 |"), "{text}");
    }
}
