#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A Flight SQL query is planned once: the plan GetFlightInfo makes serves its DoGet; a repeated one
//! runs the plan kept from the first ([`omnisql_engine::plans`]), or is answered from its kept result,
//! planned not at all.

use std::sync::Arc;

use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::datatypes::Schema;
use futures::TryStreamExt;
use omnisql_engine::{Engine, EngineOptions, testing};
use omnisql_sandbox::{Sandbox, SandboxConfig};
use tonic::transport::Channel;

const TOKEN: &str = "plan-once-token-0123456789";

#[tokio::test]
async fn get_flight_info_and_do_get_plan_a_statement_once() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let connections = sb.connections().into_iter().map(|c| (c.name.to_string(), c.connector.to_string(), c.options)).collect();
    let config = testing::config(vec![testing::single_tenant("acme", "ada", TOKEN, connections)]);
    let engine = Arc::new(
        Engine::new(&config, EngineOptions { connectors: omnisql_connectors::all(), ..EngineOptions::default() }).unwrap(),
    );
    let listener = omnisql_data_plane::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("grpc://{}", listener.local_addr().unwrap());
    let serving = engine.clone();
    let server = tokio::spawn(async move {
        let _ = omnisql_data_plane::serve(serving, None, listener, None, std::future::pending()).await;
    });
    let mut client = omnisql_data_plane::client::connect(&uri, TOKEN).await.unwrap();
    let before = engine.statements_planned();
    let ran_before = engine.statements_run();
    // Fresh data asked for: every query runs, on the plan the first one made.
    let fresh = "SET omnisql.max_staleness = '0'; SELECT count(*) FROM github.repos";
    for n in 1..=3u64 {
        let batches = omnisql_data_plane::client::query(&mut client, fresh).await.unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
        assert_eq!(engine.statements_run() - ran_before, n, "every fresh query runs");
        assert_eq!(
            engine.statements_planned() - before,
            1,
            "one plan for the first query, not one per Flight call, kept for the rest"
        );
    }
    // The session now accepts cached data again; the last fresh run's result answers.
    let batches =
        omnisql_data_plane::client::query(&mut client, "SET omnisql.max_staleness = '60s'; SELECT count(*) FROM github.repos")
            .await
            .unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    assert_eq!(engine.statements_planned() - before, 1, "a kept result plans nothing");
    assert_eq!(engine.statements_run() - ran_before, 3, "and runs nothing");

    // A prepared statement (what ADBC sends for every query) over a kept result plans nothing either.
    async fn prepared(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> (Schema, usize) {
        let mut statement = client.prepare(sql.to_string(), None).await.unwrap();
        let schema = statement.dataset_schema().unwrap().clone();
        assert!(statement.parameter_schema().unwrap().fields().is_empty());
        let info = statement.execute().await.unwrap();
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let batches: Vec<_> = client.do_get(ticket).await.unwrap().try_collect().await.unwrap();
        statement.close().await.unwrap();
        (schema, batches.iter().map(|b| b.num_rows()).sum())
    }
    let (schema, rows) = prepared(&mut client, "SELECT count(*) FROM github.repos").await;
    assert_eq!((schema.fields().len(), rows), (1, 1));
    assert_eq!(engine.statements_planned() - before, 1, "prepared over a kept result: nothing planned");
    // Nothing kept yet: planned when prepared, and again (optimised) for GetFlightInfo.
    let (fresh_schema, _) = prepared(&mut client, "SELECT count(*) FROM github.issues").await;
    assert_eq!(engine.statements_planned() - before, 3);
    // Now kept: the same columns as when it was planned, and no plan.
    let (kept_schema, _) = prepared(&mut client, "SELECT count(*) FROM github.issues").await;
    assert_eq!(kept_schema, fresh_schema);
    assert_eq!(engine.statements_planned() - before, 3);
    server.abort();
}
