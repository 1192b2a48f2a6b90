//! Threads that run query operators, apart from the threads that answer requests.
//!
//! Some operator steps are long and synchronous (sorting a buffer as large as the query's memory share,
//! building a join's hash table): no gate can preempt them mid-step. They run here, on many threads per
//! core, so the operating system shares the cores between them and one tenant's heavy step never leaves
//! another tenant's query waiting for a thread. The request threads (one per core) only parse, plan,
//! answer kept results, write audit events and encode Flight messages: short steps that, with few
//! threads, rarely wait in the run queue behind each other (with eight request threads per core a
//! request paid 10–20 ms of run-queue delay at every hand-off between threads, `perf sched`, 2 cores).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use futures::{Stream, StreamExt};

use crate::contain::Stopped;

/// Result batches in flight between an operator thread and the request that reads them.
const IN_FLIGHT: usize = 2;

/// A runtime of its own for query operators; dropped, it stops without waiting for them.
#[derive(Debug)]
pub struct QueryPool {
    runtime: Option<tokio::runtime::Runtime>,
}

impl QueryPool {
    /// A pool of `threads` threads, each with a stack of [`crate::THREAD_STACK_BYTES`].
    pub fn new(threads: usize) -> std::io::Result<QueryPool> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("query-operator")
            .thread_stack_size(crate::THREAD_STACK_BYTES)
            .enable_all()
            .build()?;
        Ok(QueryPool { runtime: Some(runtime) })
    }

    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.runtime.as_ref().map(tokio::runtime::Runtime::handle)
    }

    /// Tasks that operators spawn while this guard lives (e.g. a repartition's inputs, started when the
    /// plan is executed) run on the pool.
    pub fn enter(&self) -> Option<tokio::runtime::EnterGuard<'_>> {
        self.handle().map(tokio::runtime::Handle::enter)
    }

    /// `stream`, polled on the pool: its batches come back through a short channel, so operators run at
    /// most [`IN_FLIGHT`] batches ahead of the reader (a query whose operators finished gives back its
    /// slot while its last batches wait to be read). Dropping the result stops the stream where it is
    /// (its operators and their API requests are dropped on the pool).
    pub fn drive(&self, stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
        let Some(handle) = self.handle() else { return stream };
        let schema = stream.schema();
        let (tx, rx) = tokio::sync::mpsc::channel(IN_FLIGHT);
        let task = Some(handle.spawn(async move {
            let mut stream = stream;
            while let Some(item) = stream.next().await {
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        }));
        Box::pin(Driven { schema, rx, task })
    }
}

impl Drop for QueryPool {
    fn drop(&mut self) {
        // Dropping a runtime waits for its threads, which async code may not do.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The request's end of a stream driven on the pool.
struct Driven {
    schema: SchemaRef,
    rx: tokio::sync::mpsc::Receiver<Result<RecordBatch, DataFusionError>>,
    /// The task, until it is seen to have finished.
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Stream for Driven {
    type Item = Result<RecordBatch, DataFusionError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(item) = ready!(self.rx.poll_recv(cx)) {
            return Poll::Ready(Some(item));
        }
        // The channel closed: the stream ended, or its task did not finish (a panic outside the
        // operators' own containment, or the pool shutting down) — never a short answer.
        let Some(task) = self.task.as_mut() else { return Poll::Ready(None) };
        let finished = ready!(Pin::new(task).poll(cx));
        self.task = None;
        match finished {
            Ok(()) => Poll::Ready(None),
            Err(e) => {
                let reason = if e.is_panic() { "a query operator thread panicked" } else { "the query operators stopped" };
                tracing::error!(error = %e, "{reason}");
                Poll::Ready(Some(Err(Stopped::Panicked(reason.into()).into())))
            }
        }
    }
}

impl RecordBatchStream for Driven {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use std::sync::Arc;

    fn batch(v: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![v]))]).unwrap()
    }

    fn stream(items: impl Stream<Item = Result<RecordBatch, DataFusionError>> + Send + 'static) -> SendableRecordBatchStream {
        Box::pin(RecordBatchStreamAdapter::new(batch(0).schema(), items))
    }

    /// Which thread polled the stream.
    fn thread_name() -> String {
        std::thread::current().name().unwrap_or_default().to_string()
    }

    #[tokio::test]
    async fn batches_are_made_on_the_pool_and_arrive_in_order() {
        let pool = QueryPool::new(2).unwrap();
        let items = futures::stream::iter(0..5).map(|v| {
            assert_eq!(thread_name(), "query-operator");
            Ok::<_, DataFusionError>(batch(v))
        });
        let got: Vec<i64> = pool
            .drive(stream(items))
            .map(|b| b.unwrap().column(0).as_any().downcast_ref::<Int64Array>().unwrap().value(0))
            .collect()
            .await;
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_panic_on_the_pool_is_an_error_not_a_short_answer() {
        let pool = QueryPool::new(1).unwrap();
        let items = futures::stream::iter([Ok::<_, DataFusionError>(batch(1))])
            .chain(futures::stream::poll_fn(|_| -> Poll<Option<_>> { panic!("operator bug") }));
        let mut s = pool.drive(stream(items));
        assert!(s.next().await.unwrap().is_ok());
        let e = s.next().await.unwrap().unwrap_err();
        assert!(e.to_string().contains("panicked"), "{e}");
        assert!(s.next().await.is_none());
    }

    #[tokio::test]
    async fn dropping_the_result_stops_the_operators() {
        let pool = QueryPool::new(1).unwrap();
        /// Says when the operators are dropped.
        struct Flag(Option<tokio::sync::oneshot::Sender<()>>);
        impl Drop for Flag {
            fn drop(&mut self) {
                if let Some(tx) = self.0.take() {
                    let _ = tx.send(());
                }
            }
        }
        let (tx, dropped) = tokio::sync::oneshot::channel();
        let flag = Flag(Some(tx));
        // Never yields: like an operator waiting on a slow API.
        let items = futures::stream::poll_fn(move |_| -> Poll<Option<Result<RecordBatch, DataFusionError>>> {
            let _keep = &flag;
            Poll::Pending
        });
        drop(pool.drive(stream(items)));
        let within = tokio::time::timeout(std::time::Duration::from_secs(1), dropped).await;
        assert!(matches!(within, Ok(Ok(()))), "the operators were not dropped within a second");
    }
}
