//! How a service embeds a twopc participant with its own resource.
//!
//! The resource here is a tiny inventory: an order reserves items while the
//! transaction is prepared (votes abort when stock is short) and takes them
//! for good on commit. The example starts a coordinator and two participants
//! (the inventory and a plain voter) in this process, submits a few orders,
//! prints the outcomes and shuts down:
//!
//! ```sh
//! cargo run --example embedded_participant
//! ```

use futures::future::ready;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use twopc::{
    BoxFuture, CancellationToken, Client, CoordinatorConfig, CoordinatorServer, Decision,
    FinishResult, NullResource, ParticipantConfig, ParticipantNode, PrepareResult, Prepared,
    Record, RecoverError, Resource, ResourceError, SubmitRequest, TxnId,
};

/// Stock per item, and the reservations of prepared transactions.
struct Inventory {
    stock: HashMap<String, i64>,
    reserved: HashMap<TxnId, Vec<(String, i64)>>,
}

impl Inventory {
    fn available(&self, item: &str) -> i64 {
        let held: i64 = self
            .reserved
            .values()
            .flatten()
            .filter(|(i, _)| i == item)
            .map(|(_, n)| n)
            .sum();
        self.stock.get(item).copied().unwrap_or(0) - held
    }
}

impl Inventory {
    /// Take (commit) or release (abort) a transaction's reservation.
    fn apply(&mut self, txn: &TxnId, decision: Decision) {
        if let Some(lines) = self.reserved.remove(txn) {
            if decision == Decision::Commit {
                for (item, n) in lines {
                    *self.stock.entry(item).or_default() -= n;
                }
            }
        }
    }
}

impl Resource for Inventory {
    /// `data` is `{"order": {"item": count, ...}}`.
    fn prepare(&mut self, txn: &TxnId, data: &Value) -> BoxFuture<'static, PrepareResult> {
        let mut lines = Vec::new();
        for (item, n) in data["order"].as_object().into_iter().flatten() {
            let n = n.as_i64().unwrap_or(0);
            if n <= 0 || self.available(item) < n {
                let reason = format!(
                    "out of stock: {item} (want {n}, have {})",
                    self.available(item)
                );
                return Box::pin(ready(Err(ResourceError::Conflict(reason))));
            }
            lines.push((item.clone(), n));
        }
        self.reserved.insert(txn.clone(), lines.clone());
        // The reservation is the state the participant logs with PREPARED.
        Box::pin(ready(Ok(Prepared::state(json!(lines)))))
    }

    fn finish(&mut self, txn: &TxnId, decision: Decision) -> BoxFuture<'static, FinishResult> {
        self.apply(txn, decision);
        Box::pin(ready(Ok(())))
    }

    fn recover(&mut self, log: &[Record]) -> BoxFuture<'static, Result<(), RecoverError>> {
        // Re-reserve what was prepared and apply what was decided.
        for r in log {
            match r {
                Record::Prepared { txn, state, .. } => {
                    let lines: Vec<(String, i64)> =
                        serde_json::from_value(state.clone()).unwrap_or_default();
                    self.reserved.insert(txn.clone(), lines);
                }
                Record::Decided { txn, decision, .. } => self.apply(txn, *decision),
                _ => {}
            }
        }
        Box::pin(ready(Ok(())))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();

    let coordinator = CoordinatorServer::start(CoordinatorConfig {
        port: 0,
        expected_participants: 2,
        data_dir: dir.path().join("coordinator"),
        ..CoordinatorConfig::default()
    })
    .await?;
    let addr = coordinator.local_addr()?;
    let mut servers = vec![tokio::spawn(coordinator.run(shutdown.clone()))];

    let participant = |id: &str| ParticipantConfig {
        id: id.into(),
        coordinator_port: addr.port(),
        data_dir: Some(dir.path().join(id)),
        ..ParticipantConfig::default()
    };
    let inventory = Inventory {
        stock: HashMap::from([("widget".to_string(), 5)]),
        reserved: HashMap::new(),
    };
    let shop = ParticipantNode::start(participant("inventory"), Box::new(inventory)).await?;
    let billing = ParticipantNode::start(participant("billing"), Box::new(NullResource)).await?;
    let mut joined = vec![shop.registered(), billing.registered()];
    servers.push(tokio::spawn(shop.run(shutdown.clone())));
    servers.push(tokio::spawn(billing.run(shutdown.clone())));
    // Submit once both participants have registered with the coordinator.
    for registered in &mut joined {
        registered.wait_for(|r| *r).await?;
    }

    let mut client = Client::connect(&addr.to_string(), Duration::from_secs(10)).await?;
    for want in [2, 2, 2] {
        let req = SubmitRequest {
            data: json!({"order": {"widget": want}}),
            ..SubmitRequest::default()
        };
        let (txn, outcome) = client.submit(req).await?;
        println!(
            "order of {want} widgets ({txn}): {}{}",
            outcome.decision,
            outcome
                .reason
                .map(|r| format!(" — {r}"))
                .unwrap_or_default()
        );
    }

    shutdown.cancel();
    for server in servers {
        // A log failure stops a node: the application stops using it and
        // starts it again, which recovers from what the log holds.
        server.await??;
    }
    Ok(())
}
