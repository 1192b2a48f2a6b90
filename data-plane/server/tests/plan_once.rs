#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A Flight SQL query is planned once: the plan GetFlightInfo makes serves its DoGet.

use std::sync::Arc;

use omnisql_engine::{Engine, EngineOptions, testing};
use omnisql_sandbox::{Sandbox, SandboxConfig};

const TOKEN: &str = "plan-once-token-0123456789";

#[tokio::test]
async fn get_flight_info_and_do_get_plan_a_statement_once() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let connections = sb.connections().into_iter().map(|c| (c.name.to_string(), c.connector.to_string(), c.options)).collect();
    let config = testing::config(vec![testing::single_tenant("acme", "ada", TOKEN, connections)]);
    let engine = Arc::new(Engine::new(&config, EngineOptions::default()).unwrap());
    let listener = omnisql_data_plane::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("grpc://{}", listener.local_addr().unwrap());
    let serving = engine.clone();
    let server = tokio::spawn(async move {
        let _ = omnisql_data_plane::serve(serving, None, listener, None, std::future::pending()).await;
    });
    let mut client = omnisql_data_plane::client::connect(&uri, TOKEN).await.unwrap();
    let before = engine.statements_planned();
    for n in 1..=3u64 {
        let batches = omnisql_data_plane::client::query(&mut client, "SELECT count(*) FROM github.repos").await.unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
        assert_eq!(engine.statements_planned() - before, n, "one plan per query, not one per Flight call");
    }
    server.abort();
}
