//! Functions whose output size is set by an argument, bounded before they allocate.
//!
//! `repeat('x', 2000000000)` builds its 2 GB answer in one allocation that no memory pool sees. Each
//! such function is wrapped once per engine in [`Bounded`] ([`functions`]) and registered in every
//! session over the original; the wrapper estimates the bytes the
//! call would build for the whole batch from its arguments and refuses the call, naming the function and
//! the limit, when that is more than one function call may build. Everything else is delegated, so
//! types, coercion, simplification and documentation are the original function's.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type, IntervalMonthDayNanoType, TimeUnit};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

use crate::resources::human_bytes;

/// The functions bounded, by name.
const BOUNDED: &[&str] = &["repeat", "lpad", "rpad", "array_repeat", "array_resize", "range", "generate_series"];

/// Each bounded function of DataFusion's defaults, wrapped to refuse calls building more than
/// `max_bytes` per batch.
pub fn functions(max_bytes: usize) -> Vec<Arc<ScalarUDF>> {
    let defaults = SessionStateBuilder::new().with_default_features().build();
    BOUNDED
        .iter()
        .filter_map(|name| defaults.scalar_functions().get(*name).cloned())
        .map(|inner| Arc::new(ScalarUDF::new_from_impl(Bounded { inner, max_bytes })))
        .collect()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    max_bytes: usize,
}

impl Bounded {
    /// Bytes the call would build over the batch (an estimate from above for the common types; 0 for
    /// argument types it cannot read, which the function then handles as usual).
    fn estimate(&self, args: &ScalarFunctionArgs) -> Result<u128> {
        let rows = args.number_rows.max(1);
        let arrays: Vec<ArrayRef> = args.args.iter().map(|a| a.to_array(rows)).collect::<Result<_>>()?;
        let count = |i: usize| ints(arrays.get(i));
        let total = match self.inner.name() {
            "repeat" => {
                let (lengths, n) = (byte_lengths(arrays.first()), count(1));
                (0..rows).map(|r| lengths[r] * n[r]).sum()
            }
            "lpad" | "rpad" => count(1).iter().sum::<u128>() * 4,
            "array_repeat" => {
                let (element, n) = (element_bytes(arrays.first()), count(1));
                (0..rows).map(|r| element[r] * n[r]).sum()
            }
            "array_resize" => count(1).iter().map(|n| n * 16).sum(),
            "range" | "generate_series" => series_lengths(&arrays, rows).iter().map(|n| n * 16).sum(),
            _ => 0,
        };
        Ok(total)
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bytes = self.estimate(&args)?;
        if bytes > self.max_bytes as u128 {
            let shown = usize::try_from(bytes).map(human_bytes).unwrap_or_else(|_| format!("{bytes} B"));
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{}() would build {shown} at once, more than one function call may build ({}): use smaller arguments",
                self.inner.name(),
                human_bytes(self.max_bytes),
            )));
        }
        self.inner.invoke_with_args(args)
    }
}

/// Whole numbers per row (negative and null count as 0).
fn ints(array: Option<&ArrayRef>) -> Vec<u128> {
    let Some(array) = array else { return Vec::new() };
    match cast(array, &DataType::Int64) {
        Ok(a) => a.as_primitive::<Int64Type>().iter().map(|v| v.unwrap_or(0).max(0) as u128).collect(),
        Err(_) => vec![0; array.len()],
    }
}

/// Bytes of each row's string (0 for null or non-strings).
fn byte_lengths(array: Option<&ArrayRef>) -> Vec<u128> {
    let Some(array) = array else { return Vec::new() };
    match cast(array, &DataType::LargeUtf8) {
        Ok(a) => a.as_string::<i64>().iter().map(|v| v.map_or(0, |s| s.len() as u128)).collect(),
        Err(_) => vec![0; array.len()],
    }
}

/// Bytes one copy of each row's element takes: its string length, its list's memory, or 16.
fn element_bytes(array: Option<&ArrayRef>) -> Vec<u128> {
    let Some(array) = array else { return Vec::new() };
    match array.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            byte_lengths(Some(array)).into_iter().map(|n| n + 16).collect()
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => {
            let per_row = (array.get_array_memory_size() / array.len().max(1)) as u128;
            vec![per_row.max(16); array.len()]
        }
        _ => vec![16; array.len()],
    }
}

/// Elements each row's `range`/`generate_series` would produce: integers, or dates and timestamps
/// stepped by an interval (months counted as 28 days, so the estimate is from above).
fn series_lengths(arrays: &[ArrayRef], rows: usize) -> Vec<u128> {
    let span = |start: i64, stop: i64, step: i64| -> u128 {
        if step == 0 {
            return 0;
        }
        let (low, high, step) = if step > 0 { (start, stop, step) } else { (stop, start, -step) };
        if high < low { 0 } else { ((high as i128 - low as i128) / step as i128 + 1) as u128 }
    };
    let column = |i: usize, to: &DataType| -> Option<Vec<Option<i64>>> {
        let a = cast(arrays.get(i)?, to).ok()?;
        let a = cast(&a, &DataType::Int64).ok()?;
        Some(a.as_primitive::<Int64Type>().iter().collect())
    };
    match arrays.first().map(|a| a.data_type()) {
        Some(DataType::Date32 | DataType::Date64 | DataType::Timestamp(..)) => {
            let nanos = DataType::Timestamp(TimeUnit::Nanosecond, None);
            let (Some(start), Some(stop)) = (column(0, &nanos), column(1, &nanos)) else { return vec![0; rows] };
            let Some(steps) = arrays
                .get(2)
                .and_then(|a| cast(a, &DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano)).ok())
            else {
                return vec![0; rows];
            };
            let steps = steps.as_primitive::<IntervalMonthDayNanoType>();
            (0..rows)
                .map(|r| {
                    let step = steps.is_valid(r).then(|| steps.value(r)).map_or(0, |s| {
                        (s.months as i64 * 28 * 86_400_000_000_000)
                            .saturating_add(s.days as i64 * 86_400_000_000_000)
                            .saturating_add(s.nanoseconds)
                    });
                    match (start[r], stop[r]) {
                        (Some(a), Some(b)) => span(a, b, step),
                        _ => 0,
                    }
                })
                .collect()
        }
        _ => {
            let int = DataType::Int64;
            let columns: Vec<Vec<Option<i64>>> = (0..arrays.len()).filter_map(|i| column(i, &int)).collect();
            (0..rows)
                .map(|r| match columns.as_slice() {
                    [stop] => stop[r].map_or(0, |s| span(0, s, 1)),
                    [start, stop] => match (start[r], stop[r]) {
                        (Some(a), Some(b)) => span(a, b, 1),
                        _ => 0,
                    },
                    [start, stop, step] => match (start[r], stop[r], step[r]) {
                        (Some(a), Some(b), Some(s)) => span(a, b, s),
                        _ => 0,
                    },
                    _ => 0,
                })
                .collect()
        }
    }
}
