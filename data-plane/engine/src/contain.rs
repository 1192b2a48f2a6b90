//! A query, contained: it stops at its statement timeout, and a panic inside it becomes its error.
//!
//! The data plane runs every tenant's queries in one process, so nothing one query does may end the
//! others. [`catch`] runs planning so that a panic is that query's error; [`Contained`] wraps the result
//! stream the same way and ends it when the deadline passes, dropping every operator and in-flight API
//! request under it, and gives back the tenant's query slot.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use futures::{FutureExt, Stream, StreamExt};

/// Why a contained query stopped.
#[derive(Debug, thiserror::Error)]
pub enum Stopped {
    #[error(
        "the statement ran past its timeout of {}: narrow it with filters, or raise the timeout with SET \
         omnisql.statement_timeout (up to your tenant's limit)",
        crate::settings::show_duration(*.0)
    )]
    Timeout(Duration),
    #[error(
        "the statement waited its whole timeout of {} for a query slot: your tenant is running as many queries as \
         its limit allows on this data plane; retry when they finish",
        crate::settings::show_duration(*.0)
    )]
    Queued(Duration),
    #[error("the query failed inside the engine ({0}); this is a bug in OmniSQL and was logged")]
    Panicked(String),
}

impl From<Stopped> for DataFusionError {
    fn from(s: Stopped) -> Self {
        DataFusionError::External(Box::new(s))
    }
}

/// The reason a query stopped, if a [`Stopped`] is inside `e`.
pub fn stopped(e: &DataFusionError) -> Option<&Stopped> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(s) = err.downcast_ref::<Stopped>() {
            return Some(s);
        }
        if let Some(DataFusionError::External(inner)) = err.downcast_ref::<DataFusionError>()
            && let Some(s) = inner.downcast_ref::<Stopped>()
        {
            return Some(s);
        }
        current = err.source();
    }
    None
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// Runs `fut`, turning a panic into the query's error and stopping it at `deadline`.
pub async fn catch<T>(
    deadline: Instant,
    timeout: Duration,
    fut: impl Future<Output = Result<T, DataFusionError>>,
) -> Result<T, DataFusionError> {
    let caught = AssertUnwindSafe(fut).catch_unwind();
    match tokio::time::timeout_at(deadline.into(), caught).await {
        Err(_) => Err(Stopped::Timeout(timeout).into()),
        Ok(Ok(result)) => result,
        Ok(Err(payload)) => {
            let message = panic_message(payload.as_ref());
            tracing::error!(panic = %message, "a query panicked while planning; it failed alone");
            Err(Stopped::Panicked(message).into())
        }
    }
}

/// Connectors see the same deadline and stop their requests at it with an error that names the API
/// they waited for; the stream's own stop comes this much later, so that error wins when it applies.
const API_GRACE: Duration = Duration::from_millis(100);

/// A result stream that ends with [`Stopped`] at its deadline or at a panic.
pub struct Contained {
    inner: Option<SendableRecordBatchStream>,
    schema: SchemaRef,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    /// The tenant's query slot, held while the query runs.
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Contained {
    pub fn new(
        inner: SendableRecordBatchStream,
        deadline: Instant,
        timeout: Duration,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) -> Self {
        let deadline = Box::pin(tokio::time::sleep_until((deadline + API_GRACE).into()));
        Contained { schema: inner.schema(), inner: Some(inner), deadline, timeout, slot: Some(slot) }
    }

    /// Ends the query: its operators and requests are dropped and its slot given back.
    fn end(&mut self) {
        self.inner = None;
        self.slot = None;
    }
}

impl Stream for Contained {
    type Item = Result<RecordBatch, DataFusionError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll_next_unpin(cx)));
        match polled {
            Ok(Poll::Pending) => {}
            Ok(Poll::Ready(item)) => {
                if !matches!(item, Some(Ok(_))) {
                    self.end();
                }
                return Poll::Ready(item);
            }
            Err(payload) => {
                self.end();
                let message = panic_message(payload.as_ref());
                tracing::error!(panic = %message, "a query panicked while running; it failed alone");
                return Poll::Ready(Some(Err(Stopped::Panicked(message).into())));
            }
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            // Dropping the plan cancels its operators and the API requests they wait on.
            self.end();
            let timeout = self.timeout;
            return Poll::Ready(Some(Err(Stopped::Timeout(timeout).into())));
        }
        Poll::Pending
    }
}

impl RecordBatchStream for Contained {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Schema;
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use std::sync::Arc;

    fn stream_of(items: Vec<Result<RecordBatch, DataFusionError>>, then_panic: bool) -> SendableRecordBatchStream {
        let schema = Arc::new(Schema::empty());
        let s = futures::stream::iter(items).chain(futures::stream::poll_fn(move |_| {
            if then_panic {
                panic!("operator bug");
            }
            Poll::Ready(None)
        }));
        Box::pin(RecordBatchStreamAdapter::new(schema, s))
    }

    fn slot() -> tokio::sync::OwnedSemaphorePermit {
        Arc::new(tokio::sync::Semaphore::new(1)).try_acquire_owned().unwrap()
    }

    #[tokio::test]
    async fn a_panic_while_running_is_the_querys_error_and_frees_its_slot() {
        let slots = Arc::new(tokio::sync::Semaphore::new(1));
        let permit = slots.clone().try_acquire_owned().unwrap();
        let batch = RecordBatch::new_empty(Arc::new(Schema::empty()));
        let far = Instant::now() + Duration::from_secs(60);
        let mut s = Contained::new(stream_of(vec![Ok(batch)], true), far, Duration::from_secs(60), permit);
        assert!(s.next().await.unwrap().is_ok());
        let e = s.next().await.unwrap().unwrap_err();
        assert!(matches!(stopped(&e), Some(Stopped::Panicked(m)) if m == "operator bug"), "{e}");
        assert!(s.next().await.is_none());
        assert_eq!(slots.available_permits(), 1, "the slot was given back");
    }

    #[tokio::test]
    async fn a_panic_while_planning_is_the_querys_error() {
        let far = Instant::now() + Duration::from_secs(60);
        let e = catch(far, Duration::from_secs(60), async { panic!("planner bug") as Result<(), DataFusionError> })
            .await
            .unwrap_err();
        assert!(matches!(stopped(&e), Some(Stopped::Panicked(m)) if m == "planner bug"), "{e}");
    }

    #[tokio::test]
    async fn a_stream_that_never_answers_ends_at_its_deadline() {
        let pending: SendableRecordBatchStream =
            Box::pin(RecordBatchStreamAdapter::new(Arc::new(Schema::empty()), futures::stream::pending()));
        let t = Instant::now();
        let mut s = Contained::new(pending, t + Duration::from_millis(200), Duration::from_millis(200), slot());
        let e = s.next().await.unwrap().unwrap_err();
        assert!(matches!(stopped(&e), Some(Stopped::Timeout(_))), "{e}");
        assert!(t.elapsed() >= Duration::from_millis(200) + API_GRACE && t.elapsed() < Duration::from_millis(500));
    }
}
