//! Two versions of one connector side by side in one data plane: each connection answers with the version
//! it pins (Slack 1.0.0's `messages.user_id`, 2.0.0's `author_id` and `team_id`), a connection that pins
//! none gets the registry's default (the first listed), and a version this data plane does not run is an
//! error naming the versions it does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use omnisql_engine::{Engine, EngineOptions, testing};
use omnisql_sandbox::SandboxConfig;

fn engine_with(sb: &omnisql_sandbox::Sandbox, pins: &[(&str, Option<&str>)]) -> Result<Engine, omnisql_engine::EngineError> {
    let slack = sb.connections().into_iter().find(|c| c.name == "slack").unwrap();
    let connections = pins.iter().map(|(name, _)| (name.to_string(), "slack".to_string(), slack.options.clone())).collect();
    let mut tenant = testing::single_tenant("acme", "tester", TOKEN, connections);
    for (c, (_, version)) in tenant.connections.iter_mut().zip(pins) {
        c.version = version.map(str::to_string);
    }
    let options = EngineOptions { connectors: omnisql_connectors::all(), cache_bytes: None, ..EngineOptions::default() };
    Engine::new(&testing::config(vec![tenant]), options)
}

#[tokio::test]
async fn pinned_connections_keep_their_versions_schema_side_by_side() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = engine_with(&sb, &[("old", Some("1.0.0")), ("new", Some("2.0.0")), ("unpinned", None)]).unwrap();
    let channel = &sb.world.channels[1].id;
    let (old, old_rows, _) =
        run(&engine, &format!("SELECT ts, user_id FROM old.messages WHERE channel_id = '{channel}' ORDER BY ts")).await;
    let (new, _, _) =
        run(&engine, &format!("SELECT ts, author_id AS user_id FROM new.messages WHERE channel_id = '{channel}' ORDER BY ts"))
            .await;
    assert!(old_rows > 0);
    assert_eq!(old, new, "the same rows under the renamed column");
    let (teams, _, _) = run(&engine, &format!("SELECT DISTINCT team_id FROM new.messages WHERE channel_id = '{channel}'")).await;
    assert!(teams.contains('T'), "{teams}");
    // Version 1 has no `author_id`, version 2 no `user_id`: each query sees only its version's columns.
    for (sql, column) in [("SELECT author_id FROM old.messages", "author_id"), ("SELECT user_id FROM new.messages", "user_id")] {
        let e = engine.query(&caller(), sql).await.map(|_| ()).unwrap_err().to_string();
        assert!(e.contains(column), "{sql}: {e}");
    }
    // A connection that pins no version gets the default, 1.0.0.
    let (unpinned, _, _) =
        run(&engine, &format!("SELECT ts, user_id FROM unpinned.messages WHERE channel_id = '{channel}' ORDER BY ts")).await;
    assert_eq!(unpinned, old);
}

#[tokio::test]
async fn a_version_this_data_plane_does_not_run_is_named_with_those_it_does() {
    let sb = sandbox(SandboxConfig::default()).await;
    let e = engine_with(&sb, &[("future", Some("3.0.0"))]).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("version 3.0.0") && e.contains("1.0.0, 2.0.0"), "{e}");
}
