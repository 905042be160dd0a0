//! Operator commands: `twopc txn list|show|resolve`, `twopc participants
//! list|remove` and `twopc wal inspect`.

use crate::commands::{EXIT_NO_DECISION, EXIT_USAGE};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use twopc::protocol::coordinator::TXN_STATES;
use twopc::protocol::{Body, Decision, ErrorCode, ParticipantId, Record, TxnId};
use twopc::security::SecurityArgs;
use twopc::wal;
use twopc::Client;

/// Which process to ask.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Coordinator address HOST:PORT, or the members of a replicated coordinator group as HOST:PORT,HOST:PORT (the leader is found and followed).
    #[arg(long, env = "TWOPC_COORDINATOR", default_value = "127.0.0.1:8080", value_parser = crate::coordinator_members)]
    pub coordinator: String,
    /// A participant's admin address (its --admin-port) instead of the coordinator.
    #[arg(long, value_parser = crate::host_port)]
    pub participant: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub security: SecurityArgs,
}

impl Target {
    fn addr(&self) -> &str {
        self.participant.as_deref().unwrap_or(&self.coordinator)
    }
}

#[derive(Subcommand, Debug)]
pub enum TxnCommand {
    /// List transactions (newest first), one page at a time.
    List {
        #[command(flatten)]
        target: Target,
        /// in-flight, in-doubt, committed, aborted or heuristic.
        #[arg(long)]
        state: Option<String>,
        /// Transactions per page (1 to the server's query_page_max, which is the default).
        #[arg(long)]
        limit: Option<u64>,
        /// Continue after the page that printed this cursor (its `next`).
        #[arg(long)]
        cursor: Option<String>,
        /// Follow the cursors to the end of the list and print every page.
        #[arg(long)]
        all: bool,
    },
    /// Show one transaction: participants, votes, decision, acks, age, retries, errors, timeline.
    Show {
        id: String,
        #[command(flatten)]
        target: Target,
        /// Print the coordinator's timeline of the transaction as a Mermaid sequenceDiagram.
        #[arg(long, conflicts_with = "json")]
        diagram: bool,
    },
    /// Decide an in-doubt transaction on a participant by hand (heuristic decision).
    #[command(group(clap::ArgGroup::new("decision").required(true).args(["commit", "abort"])))]
    Resolve {
        id: String,
        /// The participant's admin address (its --admin-port).
        #[arg(long, value_parser = crate::host_port)]
        participant: String,
        #[arg(long)]
        commit: bool,
        #[arg(long)]
        abort: bool,
        /// Why; kept in the participant's log.
        #[arg(long)]
        reason: String,
        /// Who resolves (kept in the participant's log with the address it came from); default $USER.
        #[arg(long, env = "USER")]
        operator: Option<String>,
        /// Check the decision against this coordinator first (its admin key or the
        /// master secret in --secret-file); a contradiction is refused unless --force.
        #[arg(long, value_name = "HOST:PORT", value_parser = crate::host_port)]
        check_coordinator: Option<String>,
        /// Resolve even when the coordinator logged the other decision (splits the transaction).
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        security: SecurityArgs,
    },
}

/// The coordinator to ask, for membership commands.
#[derive(Args, Debug, Clone)]
pub struct CoordinatorTarget {
    /// Coordinator address HOST:PORT, or the members of a replicated coordinator group as HOST:PORT,HOST:PORT (the leader is found and followed).
    #[arg(long, env = "TWOPC_COORDINATOR", default_value = "127.0.0.1:8080", value_parser = crate::coordinator_members)]
    pub coordinator: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub security: SecurityArgs,
}

#[derive(Subcommand, Debug)]
pub enum ParticipantsCommand {
    /// Registered participants: connected, alive, age of the last heartbeat.
    List {
        #[command(flatten)]
        target: CoordinatorTarget,
    },
    /// Forget a participant. Refused, with the transactions, while any
    /// transaction still needs it, and while it is connected unless
    /// --force. The removal is logged: the cluster expects one participant
    /// fewer, and the removed id may not register again unless
    /// enable_dynamic_joining is on.
    Remove {
        id: String,
        /// Remove it even while it is connected: the participant is told,
        /// stops retrying and exits with status 3.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        target: CoordinatorTarget,
    },
}

/// `twopc participants list|remove`.
pub async fn participants(cmd: ParticipantsCommand) -> ExitCode {
    let (target, body) = match cmd {
        ParticipantsCommand::List { target } => (target, Body::Status),
        ParticipantsCommand::Remove { id, force, target } => {
            let body = Body::ParticipantRemove {
                id: ParticipantId(id),
                force,
            };
            (target, body)
        }
    };
    let removing = matches!(body, Body::ParticipantRemove { .. });
    match ask(&target.coordinator, &target.security, body).await {
        Ok(v) if target.json => println!("{v}"),
        Ok(v) => {
            if let Some(id) = v["removed"].as_str() {
                println!("removed {id}");
            }
            print_participants(&v);
        }
        Err(code) => {
            if removing {
                eprintln!("twopc: nothing was removed");
            }
            return code;
        }
    }
    ExitCode::SUCCESS
}

fn print_participants(status: &Value) {
    let empty = Vec::new();
    let list = status["participants"].as_array().unwrap_or(&empty);
    if list.is_empty() {
        println!("no participants registered");
        return;
    }
    println!(
        "{:<20} {:<10} {:<6} LAST HEARTBEAT",
        "PARTICIPANT", "CONNECTED", "ALIVE"
    );
    for p in list {
        let age = match p["last_heartbeat_age_ms"].as_u64() {
            Some(ms) => format!("{:.1} s ago", ms as f64 / 1000.0),
            None => "-".into(),
        };
        println!(
            "{:<20} {:<10} {:<6} {age}",
            p["id"].as_str().unwrap_or("?"),
            crate::commands::yes_no(&p["connected"]),
            crate::commands::yes_no(&p["alive"]),
        );
    }
}

#[derive(Subcommand, Debug)]
pub enum WalCommand {
    /// Read a data directory's log offline (safe while the node runs).
    Inspect {
        data_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

async fn ask(addr: &str, security: &SecurityArgs, body: Body) -> Result<Value, ExitCode> {
    let security = security.load().map_err(|e| {
        eprintln!("twopc: {e}");
        ExitCode::from(EXIT_USAGE)
    })?;
    let result = async {
        let mut c = Client::connect_with(addr, &security, Duration::from_secs(30)).await?;
        c.request(body).await
    }
    .await;
    match result {
        Ok(Body::TxnInfo(v)) | Ok(Body::StatusReport(v)) => Ok(v),
        Ok(other) => {
            eprintln!("twopc: unexpected reply `{}`", other.message_type());
            Err(ExitCode::from(EXIT_NO_DECISION))
        }
        Err(e) => {
            eprintln!("twopc: {e}");
            Err(ExitCode::from(EXIT_NO_DECISION))
        }
    }
}

pub async fn txn(cmd: TxnCommand) -> ExitCode {
    match cmd {
        TxnCommand::List {
            target,
            state,
            limit,
            cursor,
            all,
        } => {
            if let Some(s) = &state {
                if !TXN_STATES.contains(&s.as_str()) {
                    eprintln!("twopc: --state {s} is not one of {}", TXN_STATES.join(", "));
                    return ExitCode::from(EXIT_USAGE);
                }
            }
            if limit == Some(0) {
                eprintln!("twopc: --limit must be at least 1 (transactions per page)");
                return ExitCode::from(EXIT_USAGE);
            }
            let list = ListArgs {
                state,
                limit,
                cursor,
            };
            return match all {
                true => list_all(&target, list).await,
                false => list_page(&target, list).await,
            };
        }
        TxnCommand::Show {
            id,
            target,
            diagram,
        } => {
            if diagram && target.participant.is_some() {
                eprintln!("twopc: --diagram draws the coordinator's timeline; drop --participant and pass --coordinator HOST:PORT");
                return ExitCode::from(EXIT_USAGE);
            }
            match ask(
                target.addr(),
                &target.security,
                Body::TxnShow { txn: TxnId(id) },
            )
            .await
            {
                Ok(v) if diagram => {
                    match twopc::runtime::console::diagram::Diagram::of_detail(&v) {
                        Ok(d) => print!("{}", d.mermaid()),
                        Err(e) => {
                            eprintln!("twopc: cannot draw the diagram: {e}");
                            return ExitCode::from(EXIT_NO_DECISION);
                        }
                    }
                }
                Ok(v) if target.json => println!("{v}"),
                Ok(v) => print_txn(&v),
                Err(code) => return code,
            }
        }
        TxnCommand::Resolve {
            id,
            participant,
            commit,
            abort: _,
            reason,
            operator,
            check_coordinator,
            force,
            json,
            security,
        } => {
            if reason.trim().is_empty() {
                eprintln!("twopc: --reason must say why (it is kept in the log)");
                return ExitCode::from(EXIT_USAGE);
            }
            let decision = if commit {
                Decision::Commit
            } else {
                Decision::Abort
            };
            if let Some(coordinator) = &check_coordinator {
                if let Err(code) =
                    check_against_coordinator(coordinator, &security, &id, decision, force).await
                {
                    return code;
                }
            }
            let body = Body::Resolve {
                txn: TxnId(id),
                decision,
                reason,
                operator,
            };
            match ask(&participant, &security, body).await {
                Ok(v) if json => println!("{v}"),
                Ok(v) => {
                    println!("resolved by hand (heuristic {decision}); recorded in the participant's log:");
                    print_txn(&v);
                }
                Err(code) => return code,
            }
        }
    }
    ExitCode::SUCCESS
}

/// What the coordinator decided for `id`, if it can be asked: its logged
/// decision, or abort when it does not know the transaction (presumed
/// abort: a participant in doubt about a transaction the coordinator never
/// decided to commit may only abort it). `None` when it cannot be reached.
async fn coordinator_decision(
    coordinator: &str,
    security: &SecurityArgs,
    id: &str,
) -> Result<Option<Decision>, String> {
    let security = security.load().map_err(|e| e.to_string())?;
    let reply = async {
        let mut c = Client::connect_with(coordinator, &security, Duration::from_secs(10)).await?;
        c.request(Body::TxnShow {
            txn: TxnId(id.to_string()),
        })
        .await
    }
    .await;
    match reply {
        Ok(Body::TxnInfo(v)) => Ok(match v["decision"].as_str() {
            Some("commit") => Some(Decision::Commit),
            Some("abort") => Some(Decision::Abort),
            // Undecided: voting is still going on; the coordinator will
            // decide, so a heuristic decision now may well contradict it.
            _ => None,
        }),
        Err(twopc::ClientError::Refused { code, .. }) if code == ErrorCode::UnknownTransaction => {
            Ok(Some(Decision::Abort))
        }
        Err(twopc::ClientError::Refused { code, message }) => Err(format!(
            "the coordinator at {coordinator} refused `txn show` ({code}): {message}"
        )),
        Ok(other) => Err(format!("unexpected reply `{}`", other.message_type())),
        Err(e) => {
            eprintln!("twopc: could not ask the coordinator at {coordinator} ({e}); resolving without that check");
            Ok(None)
        }
    }
}

/// Refuse (unless `force`) a heuristic decision that contradicts what the
/// coordinator decided.
async fn check_against_coordinator(
    coordinator: &str,
    security: &SecurityArgs,
    id: &str,
    decision: Decision,
    force: bool,
) -> Result<(), ExitCode> {
    match coordinator_decision(coordinator, security, id).await {
        Err(e) => {
            eprintln!("twopc: {e}");
            Err(ExitCode::from(EXIT_NO_DECISION))
        }
        Ok(Some(logged)) if logged != decision && !force => {
            eprintln!(
                "twopc: refused: the coordinator at {coordinator} has {logged} for {id}; a heuristic {decision} would leave the transaction committed on some participants and aborted on others. Resolve with --{logged} instead, or pass --force if you know better"
            );
            Err(ExitCode::from(EXIT_USAGE))
        }
        Ok(Some(logged)) if logged != decision => {
            eprintln!("twopc: --force: resolving {id} as {decision} although the coordinator has {logged}");
            Ok(())
        }
        Ok(_) => Ok(()),
    }
}

/// What one `txn list` asks for.
struct ListArgs {
    state: Option<String>,
    limit: Option<u64>,
    cursor: Option<String>,
}

impl ListArgs {
    fn body(&self) -> Body {
        Body::TxnList {
            state: self.state.clone(),
            limit: self.limit,
            cursor: self.cursor.clone(),
        }
    }
}

/// `txn list` without `--all`: one page, and how to get the next.
async fn list_page(target: &Target, list: ListArgs) -> ExitCode {
    let v = match ask(target.addr(), &target.security, list.body()).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    if target.json {
        println!("{v}");
        return ExitCode::SUCCESS;
    }
    print_header();
    let shown = print_rows(&v);
    println!("{shown} shown of {}", v["total"]);
    if let Some(next) = v["next"].as_str() {
        println!("more: --cursor {next} for the next page, or --all for every page");
    }
    ExitCode::SUCCESS
}

/// Most pages `--all` follows: far more than any server keeps
/// (`history_limit` of at most ten million, one or more per page), so only
/// a server that answers the same cursor forever reaches it.
const PAGES_MAX: usize = 10_000_000;

/// `txn list --all`: every page from `--cursor` (or the start) to the end.
/// The table is printed page by page; `--json` prints one object with every
/// transaction and the `total` of the last reply.
async fn list_all(target: &Target, mut list: ListArgs) -> ExitCode {
    let mut all = Vec::new();
    let mut shown = 0usize;
    if !target.json {
        print_header();
    }
    for _ in 0..PAGES_MAX {
        let mut v = match ask(target.addr(), &target.security, list.body()).await {
            Ok(v) => v,
            Err(code) => return code,
        };
        let total = v["total"].take();
        if target.json {
            if let Some(page) = v["transactions"].as_array_mut() {
                all.append(page);
            }
        } else {
            shown += print_rows(&v);
        }
        let next = v["next"].as_str().map(str::to_string);
        match next {
            None => {
                if target.json {
                    println!("{}", json!({ "total": total, "transactions": all }));
                } else {
                    println!("{shown} shown of {total}");
                }
                return ExitCode::SUCCESS;
            }
            Some(n) if list.cursor.as_deref() == Some(n.as_str()) => {
                eprintln!("twopc: the server answered cursor {n} with the same cursor; stopped (is it a twopc server of this version?)");
                return ExitCode::from(EXIT_NO_DECISION);
            }
            Some(n) => list.cursor = Some(n),
        }
    }
    eprintln!("twopc: stopped after {PAGES_MAX} pages without reaching the end");
    ExitCode::from(EXIT_NO_DECISION)
}

fn print_header() {
    println!(
        "{:<22} {:<15} {:<9} {:>9} {:>7}  PARTICIPANTS",
        "TRANSACTION", "STATE", "DECISION", "AGE", "RETRIES"
    );
}

/// The rows of one page; returns how many.
fn print_rows(v: &Value) -> usize {
    let empty = Vec::new();
    let list = v["transactions"].as_array().unwrap_or(&empty);
    for t in list {
        println!(
            "{:<22} {:<15} {:<9} {:>7.1} s {:>7}  {}",
            t["transaction_id"].as_str().unwrap_or("?"),
            t["state"].as_str().unwrap_or("?"),
            t["decision"]
                .as_str()
                .unwrap_or(t["vote"].as_str().map(|_| "-").unwrap_or("-")),
            t["age_ms"].as_f64().unwrap_or(0.0) / 1000.0,
            t["retries"].as_u64().or(t["queries"].as_u64()).unwrap_or(0),
            join(&t["participants"])
        );
    }
    list.len()
}

fn join(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn print_txn(t: &Value) {
    if let Some(m) = t.as_object() {
        for (k, v) in m.iter().filter(|(k, _)| *k != "timeline") {
            let shown = match v {
                Value::String(s) => s.clone(),
                Value::Null => "-".into(),
                other => other.to_string(),
            };
            println!("  {k:<20} {shown}");
        }
    }
    // One event a line: milliseconds since the start, then what happened.
    if let Some(events) = t["timeline"].as_array() {
        println!("  timeline");
        for e in events {
            let mut rest = e.clone();
            let at = rest["at_ms"].take();
            if let Some(o) = rest.as_object_mut() {
                o.remove("at_ms");
            }
            println!("  {:>10} ms  {rest}", at);
        }
    }
}

/// What one log says about one transaction.
#[derive(Default)]
struct Durable {
    records: Vec<&'static str>,
    state: String,
    heuristic: Option<String>,
    /// Heuristic outcomes recorded (`Heuristic` records), in log order.
    outcomes: Vec<Value>,
    role: &'static str,
}

/// Durable state of each transaction found in a log, in first-seen order.
pub fn summarize(records: &[wal::Located]) -> Vec<Value> {
    let mut order: Vec<TxnId> = Vec::new();
    let mut by: BTreeMap<TxnId, Durable> = BTreeMap::new();
    for l in records {
        // Snapshots belong to no transaction; `wal inspect` counts them.
        let Some(id) = l.record.txn().cloned() else {
            continue;
        };
        let e = by.entry(id.clone()).or_insert_with(|| {
            order.push(id.clone());
            Durable::default()
        });
        match &l.record {
            Record::Decision { decision, .. } => {
                e.records.push("decision");
                e.state = format!("{decision} decided, not ended (re-driven on restart)");
                e.role = "coordinator";
            }
            Record::End { .. } => {
                e.records.push("end");
                e.state = "commit decided and acknowledged by all (ended)".into();
                e.role = "coordinator";
            }
            Record::Prepared { .. } => {
                e.records.push("prepared");
                e.state = "prepared, no decision (in doubt)".into();
                e.role = "participant";
            }
            Record::Decided {
                decision,
                heuristic,
                ..
            } => {
                e.records.push("decided");
                e.state = match heuristic {
                    Some(_) => format!("{decision} (heuristic, decided by an operator)"),
                    None => format!("{decision}"),
                };
                e.heuristic = heuristic.clone();
                e.role = "participant";
            }
            Record::Outcome { decision, .. } => {
                e.records.push("outcome");
                e.state =
                    format!("{decision} (client-named id; outcome kept for repeated submits)");
                e.role = "coordinator";
            }
            Record::Heuristic {
                decision,
                participant,
                heuristic,
                ..
            } => {
                e.records.push("heuristic");
                // A participant's log holds its `Decided` record first; a
                // coordinator's may hold nothing else for an abort.
                if e.role.is_empty() {
                    e.role = "coordinator";
                    e.state = format!("{decision} decided");
                }
                e.outcomes.push(json!({
                    "participant": participant,
                    "decision": decision,
                    "kind": heuristic.kind,
                    "detail": heuristic.detail,
                }));
            }
            Record::Snapshot { .. }
            | Record::Term { .. }
            | Record::Joined { .. }
            | Record::Removed { .. } => {}
        }
    }
    order
        .into_iter()
        .filter_map(|id| {
            let d = by.remove(&id)?;
            // A heuristic outcome is part of the state, never left to a
            // field a reader may not look at.
            let mut state = d.state;
            for o in &d.outcomes {
                state.push_str(&format!(
                    "; HEURISTIC {} at {}",
                    o["kind"].as_str().unwrap_or("?").to_uppercase(),
                    o["participant"].as_str().unwrap_or("?")
                ));
            }
            let mut v = json!({
                "transaction_id": id,
                "role": d.role,
                "state": state,
                "heuristic_reason": d.heuristic,
                "records": d.records,
            });
            if !d.outcomes.is_empty() {
                v["heuristic_outcomes"] = Value::Array(d.outcomes);
            }
            Some(v)
        })
        .collect()
}

/// A coordinator log's membership changes, in order.
fn membership(records: &[wal::Located]) -> Vec<Value> {
    records
        .iter()
        .filter_map(|l| match &l.record {
            Record::Joined { participant } => {
                Some(json!({"participant": participant, "change": "joined"}))
            }
            Record::Removed {
                participant,
                expected,
            } => {
                Some(json!({"participant": participant, "change": "removed", "expected": expected}))
            }
            _ => None,
        })
        .collect()
}

pub fn wal_cmd(cmd: WalCommand) -> ExitCode {
    let WalCommand::Inspect { data_dir, json } = cmd;
    if !data_dir.is_dir() {
        eprintln!(
            "twopc: {} is not a directory; pass a node's data_dir",
            data_dir.display()
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let report = match wal::scan(&data_dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("twopc: {e}");
            return ExitCode::from(1);
        }
    };
    let txns = summarize(&report.records);
    let place = |p: &Option<wal::Damage>| {
        p.as_ref()
            .map(
                |d| json!({"file": d.file.display().to_string(), "offset": d.offset, "why": d.why}),
            )
            .unwrap_or(Value::Null)
    };
    let out = json!({
        "data_dir": data_dir.display().to_string(),
        "segments": report.segments.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "records": report.records.len(),
        "snapshots": report.records.iter().filter(|l| matches!(l.record, Record::Snapshot { .. })).count(),
        "membership": membership(&report.records),
        // A participant's: the highest coordinator-group leader term it
        // took messages from (older ones are refused).
        "leader_term_seen": report.records.iter().filter_map(|l| match l.record {
            Record::Term { term } => Some(term),
            _ => None,
        }).max(),
        "torn_tail": place(&report.torn_tail),
        "corruption": place(&report.corruption),
        "transactions": txns,
    });
    if json {
        println!("{out}");
    } else {
        println!(
            "log in {}: {} segment(s), {} records",
            data_dir.display(),
            report.segments.len(),
            report.records.len()
        );
        if let Some(d) = &report.torn_tail {
            println!(
                "torn tail: {} at offset {} ({}); cut off when the node starts",
                d.file.display(),
                d.offset,
                d.why
            );
        }
        if let Some(t) = out["leader_term_seen"].as_u64() {
            println!("highest coordinator leader term seen: {t} (older terms are refused)");
        }
        if let Some(d) = &report.corruption {
            println!(
                "CORRUPTION: {} at offset {}: {}; the node will refuse to start",
                d.file.display(),
                d.offset,
                d.why
            );
        }
        println!("{:<24} {:<12} STATE", "TRANSACTION", "ROLE");
        for t in out["transactions"].as_array().into_iter().flatten() {
            let mut line = format!(
                "{:<24} {:<12} {}",
                t["transaction_id"].as_str().unwrap_or("?"),
                t["role"].as_str().unwrap_or("?"),
                t["state"].as_str().unwrap_or("?")
            );
            if let Some(r) = t["heuristic_reason"].as_str() {
                line.push_str(&format!(" — reason: {r}"));
            }
            println!("{line}");
            for o in t["heuristic_outcomes"].as_array().into_iter().flatten() {
                println!(
                    "{:<37} heuristic {} at {}: {}",
                    "",
                    o["kind"].as_str().unwrap_or("?"),
                    o["participant"].as_str().unwrap_or("?"),
                    o["detail"].as_str().unwrap_or("?")
                );
            }
        }
    }
    if report.corruption.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
