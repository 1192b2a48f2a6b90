#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What JDBC and ODBC drivers ask of a Flight SQL server besides queries: the SQL types it uses, primary and
//! foreign keys (none: SaaS tables declare none, answered in the specification's schemas), and writes,
//! which are refused with the reason and audited.

use std::sync::Arc;

use arrow_flight::FlightInfo;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    CommandGetCrossReference, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetXdbcTypeInfo,
};
use datafusion::arrow::array::{Array, Int32Array, StringArray};
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use omnisql_engine::audit::Outbox;
use omnisql_engine::{Engine, EngineOptions, testing};
use omnisql_sandbox::{Sandbox, SandboxConfig};
use tonic::transport::Channel;

const TOKEN: &str = "metadata-token-0123456789";

async fn serve(sb: &Sandbox, outbox: Arc<Outbox>) -> FlightSqlServiceClient<Channel> {
    let connections = sb.connections().into_iter().map(|c| (c.name.to_string(), c.connector.to_string(), c.options)).collect();
    let config = testing::config(vec![testing::single_tenant("acme", "ada", TOKEN, connections)]);
    let engine = Arc::new(
        Engine::new(&config, EngineOptions { connectors: omnisql_connectors::all(), ..EngineOptions::default() }).unwrap(),
    );
    let listener = omnisql_data_plane::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("grpc://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = omnisql_data_plane::serve(engine, Some(outbox), listener, None, std::future::pending()).await;
    });
    omnisql_data_plane::client::connect(&uri, TOKEN).await.unwrap()
}

async fn fetch(client: &mut FlightSqlServiceClient<Channel>, info: FlightInfo) -> (Schema, Vec<RecordBatch>) {
    let announced = info.clone().try_decode_schema().unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let batches: Vec<RecordBatch> = client.do_get(ticket).await.unwrap().try_collect().await.unwrap();
    for b in &batches {
        assert_eq!(b.schema().as_ref(), &announced, "every batch has the announced schema");
    }
    (announced, batches)
}

#[tokio::test]
async fn drivers_get_type_info_empty_keys_and_a_clear_refusal_of_writes() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let dir = std::env::temp_dir().join(format!("omnisql-metadata-test-{}", std::process::id()));
    let outbox = Outbox::open(&dir).unwrap();
    let mut client = serve(&sb, outbox.clone()).await;

    // The SQL types results use, with their XDBC codes.
    let info = client.get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None }).await.unwrap();
    let (_, batches) = fetch(&mut client, info).await;
    let batch = &batches[0];
    let names = batch.column_by_name("type_name").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
    let codes = batch.column_by_name("data_type").unwrap().as_any().downcast_ref::<Int32Array>().unwrap();
    let types: Vec<(String, i32)> = (0..batch.num_rows()).map(|i| (names.value(i).to_string(), codes.value(i))).collect();
    for expected in [("VARCHAR", 12), ("BIGINT", -5), ("DOUBLE", 8), ("BOOLEAN", -7), ("DATE", 91)] {
        assert!(types.iter().any(|(n, c)| (n.as_str(), *c) == expected), "{expected:?} in {types:?}");
    }
    // Asked for one type: that type only.
    let info = client.get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: Some(12) }).await.unwrap();
    let (_, batches) = fetch(&mut client, info).await;
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);

    // Keys: none, in the specification's columns.
    let table = |t: &str| (Some("omnisql".to_string()), Some("github".to_string()), t.to_string());
    let (catalog, db_schema, name) = table("issues");
    let info = client.get_primary_keys(CommandGetPrimaryKeys { catalog, db_schema, table: name }).await.unwrap();
    let (schema, batches) = fetch(&mut client, info).await;
    assert_eq!(schema.field(5).name(), "key_sequence");
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    let (catalog, db_schema, name) = table("users");
    let infos = vec![
        client
            .get_imported_keys(CommandGetImportedKeys {
                catalog: catalog.clone(),
                db_schema: db_schema.clone(),
                table: name.clone(),
            })
            .await
            .unwrap(),
        client
            .get_exported_keys(CommandGetExportedKeys {
                catalog: catalog.clone(),
                db_schema: db_schema.clone(),
                table: name.clone(),
            })
            .await
            .unwrap(),
        client
            .get_cross_reference(CommandGetCrossReference {
                pk_catalog: catalog.clone(),
                pk_db_schema: db_schema.clone(),
                pk_table: name.clone(),
                fk_catalog: catalog,
                fk_db_schema: db_schema,
                fk_table: "issues".into(),
            })
            .await
            .unwrap(),
    ];
    for info in infos {
        let (schema, batches) = fetch(&mut client, info).await;
        assert_eq!(schema.fields().len(), 13);
        assert_eq!(schema.field(12).name(), "delete_rule");
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    }

    // Writes: refused with the reason, and the attempt is audited.
    let update = "UPDATE github.issues SET state = 'closed'";
    let e = client.execute_update(update.into(), None).await.unwrap_err().to_string();
    assert!(e.contains("OmniSQL is read-only") && e.contains("never writes"), "{e}");
    outbox.written().await;
    let (events, _) = outbox.pending(100).unwrap();
    let event = events.iter().find(|e| e.sql == update).unwrap_or_else(|| panic!("no audit event for the update: {events:?}"));
    assert_eq!((event.outcome.as_str(), event.tenant.as_str()), ("error", "acme"));
    assert!(event.error.as_deref().unwrap_or_default().contains("read-only"), "{event:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
