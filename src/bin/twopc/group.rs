//! `twopc cluster status|add|remove`: the replicated coordinator group as
//! its leader sees it, and membership changes through Raft.

use crate::commands::{EXIT_NO_DECISION, EXIT_USAGE};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::process::ExitCode;
use std::time::Duration;
use twopc::protocol::Body;
use twopc::security::SecurityArgs;
use twopc::Client;

#[derive(Args, Debug)]
pub struct GroupTarget {
    /// The group's members as HOST:PORT,HOST:PORT (their coordinator ports); the leader is found and followed.
    #[arg(long, env = "TWOPC_COORDINATOR", default_value = "127.0.0.1:8080", value_parser = crate::coordinator_members)]
    pub coordinator: String,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub security: SecurityArgs,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Every member: role, term, leader, commit index and how far each is behind the leader.
    Status(GroupTarget),
    /// Add a member started with `--join` (ID=HOST:PORT:RAFT_PORT); returns once it has caught up and votes.
    Add {
        /// The new member: ID=HOST:PORT:RAFT_PORT.
        member: String,
        #[command(flatten)]
        target: GroupTarget,
    },
    /// Remove the member numbered ID from the group (it stops taking part; stop its process afterwards).
    Remove {
        id: u64,
        #[command(flatten)]
        target: GroupTarget,
    },
}

pub async fn cluster(cmd: ClusterCommand) -> ExitCode {
    let (target, body) = match cmd {
        ClusterCommand::Status(t) => (t, Body::Status),
        ClusterCommand::Add { member, target } => {
            if let Err(e) = twopc::replica::parse_peer(&member) {
                eprintln!("twopc cluster add: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
            (
                target,
                Body::GroupChange {
                    add: Some(member),
                    remove: None,
                },
            )
        }
        ClusterCommand::Remove { id, target } => (
            target,
            Body::GroupChange {
                add: None,
                remove: Some(id),
            },
        ),
    };
    let security = match target.security.load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("twopc: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let result = async {
        let mut c =
            Client::connect_with(&target.coordinator, &security, Duration::from_secs(10)).await?;
        c.set_timeout(Duration::from_secs(90));
        c.request(body).await
    }
    .await;
    let report = match result {
        Ok(Body::StatusReport(s)) => s,
        Ok(other) => {
            eprintln!(
                "twopc: unexpected reply `{}` from the coordinator",
                other.message_type()
            );
            return ExitCode::from(EXIT_NO_DECISION);
        }
        Err(e) => {
            eprintln!("twopc: {e}");
            return ExitCode::from(EXIT_NO_DECISION);
        }
    };
    let Some(group) = report.get("group").filter(|g| g.is_object()) else {
        eprintln!(
            "twopc: the coordinator at {} is a single coordinator, not a member of a group (it has no `peers`)",
            target.coordinator
        );
        return ExitCode::from(EXIT_NO_DECISION);
    };
    if target.json {
        println!("{group}");
    } else {
        print_group(group);
    }
    ExitCode::SUCCESS
}

fn print_group(g: &Value) {
    let opt = |v: &Value| match v {
        Value::Null => "-".to_string(),
        v => v.to_string().trim_matches('"').to_string(),
    };
    println!(
        "leader: member {} at {} (term {}); commit index {}",
        opt(&g["leader"]),
        opt(&g["leader_addr"]),
        opt(&g["term"]),
        opt(&g["commit_index"])
    );
    println!(
        "{:>4}  {:<8} {:<22} {:<22} {:>7} {:>5}",
        "ID", "ROLE", "ADDRESS", "RAFT ADDRESS", "MATCHED", "LAG"
    );
    for m in g["members"].as_array().into_iter().flatten() {
        let role = if m["id"] == g["leader"] {
            "leader"
        } else if m["voter"] == true {
            "follower"
        } else {
            "learner"
        };
        println!(
            "{:>4}  {:<8} {:<22} {:<22} {:>7} {:>5}",
            opt(&m["id"]),
            role,
            opt(&m["addr"]),
            opt(&m["raft_addr"]),
            opt(&m["matched_index"]),
            opt(&m["lag"])
        );
    }
}
