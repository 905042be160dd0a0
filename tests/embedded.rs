//! The library embedded in one process: a coordinator and a participant
//! with a resource of the application's own, as `examples/embedded_participant.rs`
//! does. A resource's `finish` that does not complete at its first poll is
//! awaited, and called exactly once per decision.

use futures::future::{ready, BoxFuture};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use twopc::client::Client;
use twopc::config::{CoordinatorConfig, ParticipantConfig};
use twopc::protocol::participant::Prepared;
use twopc::protocol::{Decision, Record, SubmitRequest, TxnId};
use twopc::resource::{FinishResult, PrepareResult, RecoverError, Resource};
use twopc::runtime::coordinator::CoordinatorServer;
use twopc::runtime::participant::ParticipantNode;

/// Counts `finish` calls; each one completes only after yielding once to
/// the scheduler (as a resource that talks to a database would).
struct SlowFinish {
    finishes: Arc<AtomicUsize>,
    applied: Arc<AtomicUsize>,
}

impl Resource for SlowFinish {
    fn prepare(&mut self, _txn: &TxnId, _data: &Value) -> BoxFuture<'static, PrepareResult> {
        Box::pin(ready(Ok(Prepared::state(json!(null)))))
    }

    fn finish(&mut self, _txn: &TxnId, _decision: Decision) -> BoxFuture<'static, FinishResult> {
        self.finishes.fetch_add(1, Ordering::SeqCst);
        let applied = self.applied.clone();
        Box::pin(async move {
            tokio::task::yield_now().await;
            applied.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }

    fn recover(&mut self, _log: &[Record]) -> BoxFuture<'static, Result<(), RecoverError>> {
        Box::pin(ready(Ok(())))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finish_that_is_not_done_at_once_is_called_once_per_decision() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let coordinator = CoordinatorServer::start(CoordinatorConfig {
        port: 0,
        expected_participants: 1,
        data_dir: dir.path().join("coordinator"),
        ..CoordinatorConfig::default()
    })
    .await
    .expect("coordinator starts");
    let addr = coordinator.local_addr().unwrap();
    tokio::spawn(coordinator.run(shutdown.clone()));

    let (finishes, applied) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let resource = SlowFinish {
        finishes: finishes.clone(),
        applied: applied.clone(),
    };
    let node = ParticipantNode::start(
        ParticipantConfig {
            id: "p1".into(),
            coordinator_port: addr.port(),
            data_dir: Some(dir.path().join("p1")),
            ..ParticipantConfig::default()
        },
        Box::new(resource),
    )
    .await
    .expect("participant starts");
    tokio::spawn(node.run(shutdown.clone()));

    let mut client = Client::connect(&addr.to_string(), Duration::from_secs(60))
        .await
        .expect("client connects");
    let decisions = 5;
    for n in 0..decisions {
        let req = SubmitRequest {
            data: json!({ "n": n }),
            ..SubmitRequest::default()
        };
        let (_, outcome) = client.submit(req).await.expect("an outcome");
        assert_eq!(outcome.decision, Decision::Commit);
    }
    // Every ACK waits for its finish, and the coordinator reports a
    // transaction ended only after its ACK: once all are ended, every
    // finish has completed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = client.status().await.expect("status");
        if s["transactions"]["awaiting_acks"] == 0 && applied.load(Ordering::SeqCst) == decisions {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the finishes never completed: {s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        finishes.load(Ordering::SeqCst),
        decisions,
        "finish called once per decision"
    );
    assert_eq!(applied.load(Ordering::SeqCst), decisions);
    shutdown.cancel();
}
