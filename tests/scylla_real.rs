//! Against a real ScyllaDB cluster, when `SCYLLA_NODES` is set (e.g.
//! `SCYLLA_NODES=127.0.0.1:9042 scripts/test.sh`); skipped with a message otherwise.
//!
//! Writes through tidegate into a fresh keyspace and reads every accepted event back by
//! its primary key. Routing cannot be observed from outside a real cluster; the CQL test
//! node's tests cover that.

mod support;

use scylla::client::session_builder::SessionBuilder;

#[tokio::test]
async fn every_accepted_event_reaches_a_real_cluster() {
    let Ok(nodes) = std::env::var("SCYLLA_NODES") else {
        eprintln!(
            "skipped: set SCYLLA_NODES=host:port[,host:port...] to run against a real ScyllaDB \
             cluster (see README, 'Testing against a real cluster')"
        );
        return;
    };
    let keyspace = format!("tidegate_it_{}", std::process::id());
    let env = [
        ("TIDEGATE_SCYLLA_CONTACT_POINTS", nodes.as_str()),
        ("TIDEGATE_SCHEMA_KEYSPACE", keyspace.as_str()),
        ("TIDEGATE_SCHEMA_REPLICATION_FACTOR", "1"),
    ];
    let applied = std::process::Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["schema", "apply"])
        .envs(env)
        .output()
        .unwrap();
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );

    let mut server = support::Server::start_with_env(&["--shards", "2", "--sink", "scylla"], &env);
    let mut accepted = Vec::new();
    for r in 0..50u64 {
        let ids: Vec<String> = (0..20).map(|k| support::uuid(99, r * 20 + k)).collect();
        let body = support::json_array(
            ids.iter()
                .enumerate()
                .map(|(k, id)| support::event(&format!("real-{r}-{}", k % 4), id)),
        );
        assert_eq!(server.post_json(&body).status, 202);
        accepted.extend(
            ids.into_iter()
                .enumerate()
                .map(|(k, id)| (format!("real-{r}-{}", k % 4), id)),
        );
    }
    assert!(server.terminate().success());

    let first = nodes.split(',').next().unwrap().trim().to_owned();
    let session = SessionBuilder::new()
        .known_node(first)
        .build()
        .await
        .unwrap();
    let mut missing = Vec::new();
    for (user, id) in &accepted {
        let rows = session
            .query_unpaged(
                format!("SELECT event_id FROM {keyspace}.events WHERE user_id = ? AND event_time = ? AND event_id = ?"),
                (user, scylla::value::CqlTimestamp(1_700_000_000_000), uuid::Uuid::parse_str(id).unwrap()),
            )
            .await
            .unwrap()
            .into_rows_result()
            .unwrap();
        if rows.rows_num() != 1 {
            missing.push(id.clone());
        }
    }
    let _ = session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), &[])
        .await;
    assert!(
        missing.is_empty(),
        "accepted but not stored: {:?}",
        &missing[..missing.len().min(5)]
    );
}
