//! `twopc submit`, `twopc status` and `twopc demo`: argument handling,
//! output formatting and exit statuses. Exit statuses of submit: 0 committed,
//! 3 aborted, 1 no decision obtained, 2 usage error.

use crate::cluster::{ClusterOptions, LocalCluster};
use clap::Args;
use serde_json::{json, Value};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use twopc::config::VotePreference;
use twopc::protocol::{Decision, Outcome, ParticipantId, SubmitRequest, TxnId, Vote};
use twopc::security::SecurityArgs;
use twopc::Client;

pub const EXIT_COMMITTED: u8 = 0;
pub const EXIT_NO_DECISION: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_ABORTED: u8 = 3;

/// `twopc submit`
#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// Coordinator address HOST:PORT, or the members of a replicated coordinator group as HOST:PORT,HOST:PORT (the leader is found and followed).
    #[arg(long, env = "TWOPC_COORDINATOR", default_value = "127.0.0.1:8080", value_parser = crate::coordinator_members)]
    pub coordinator: String,
    /// Transaction data (JSON) handed to every participant in PREPARE.
    #[arg(long, env = "TWOPC_PAYLOAD")]
    pub payload: Option<String>,
    /// Participants to involve (comma-separated ids); all when omitted.
    #[arg(long, env = "TWOPC_PARTICIPANTS", value_delimiter = ',')]
    pub participants: Option<Vec<String>>,
    /// Your own id for the transaction (1-100 characters from
    /// [A-Za-z0-9_.:-]). The coordinator runs an id at most once: submit it
    /// again after a lost connection to get its outcome, never a second run.
    /// Without it the coordinator assigns an id, printed to stderr as soon
    /// as the transaction starts.
    #[arg(long, env = "TWOPC_TXN_ID")]
    pub txn_id: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for the outcome.
    #[arg(long, env = "TWOPC_CLIENT_TIMEOUT_SECONDS", default_value_t = 60.0)]
    pub timeout_seconds: f64,
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// `twopc status`
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Coordinator address HOST:PORT, or the members of a replicated coordinator group as HOST:PORT,HOST:PORT (the leader is found and followed).
    #[arg(long, env = "TWOPC_COORDINATOR", default_value = "127.0.0.1:8080", value_parser = crate::coordinator_members)]
    pub coordinator: String,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// `twopc demo`
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Participant processes to start.
    #[arg(long, default_value_t = 3)]
    pub participants: usize,
    /// Transactions to run.
    #[arg(long, default_value_t = 10)]
    pub transactions: usize,
    /// commit, abort or random.
    #[arg(long, value_enum, default_value = "random")]
    pub vote_preference: VotePreference,
    /// Commit probability of random votes.
    #[arg(long, default_value_t = 0.9)]
    pub commit_probability: f64,
    /// Coordinator processes: 1, or 3 or 5 for a replicated group whose
    /// leader is killed halfway through (the takeover is shown).
    #[arg(long, default_value_t = 1)]
    pub coordinators: usize,
}

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("twopc: {msg}");
    ExitCode::from(EXIT_USAGE)
}

fn timeout_of(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs))
}

/// Build a submit request from the command-line payload and participants.
pub fn build_request(
    payload: Option<&str>,
    participants: Option<&[String]>,
) -> Result<SubmitRequest, String> {
    let data = match payload {
        Some(p) => serde_json::from_str::<Value>(p).map_err(|e| {
            format!("--payload is not valid JSON ({e}); example: --payload '{{\"order\": 42}}'")
        })?,
        None => Value::Null,
    };
    let participants = participants.map(|ps| {
        ps.iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(ParticipantId::from)
            .collect::<Vec<_>>()
    });
    if participants.as_ref().is_some_and(|p| p.is_empty()) {
        return Err(
            "--participants is empty; name at least one participant id, or omit it to use all"
                .into(),
        );
    }
    Ok(SubmitRequest {
        data,
        participants,
        request_id: None,
        ..Default::default()
    })
}

/// The `--json` object of one outcome.
pub fn outcome_json(txn: &TxnId, o: &Outcome) -> Value {
    o.report(txn)
}

pub async fn submit(args: SubmitArgs) -> ExitCode {
    let Some(timeout) = timeout_of(args.timeout_seconds) else {
        return usage("--timeout-seconds must be a positive number of seconds");
    };
    let mut req = match build_request(args.payload.as_deref(), args.participants.as_deref()) {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    if let Some(id) = &args.txn_id {
        if !twopc::protocol::coordinator::valid_txn_id(id) {
            return usage(format!(
                "--txn-id {id:?} is not a valid transaction id: use 1-100 characters from [A-Za-z0-9_.:-]"
            ));
        }
        req.transaction_id = Some(TxnId::from(id.as_str()));
    }
    let named = args.txn_id.is_some();
    let security = match args.security.load() {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    let result = async {
        let mut c = Client::connect_with(&args.coordinator, &security, timeout).await?;
        // The assigned id goes to stderr at once, so that a connection lost
        // before the outcome still leaves the operator something to look up.
        c.submit_reporting(req, |txn| {
            if !named {
                eprintln!("twopc: transaction {txn} started; if no outcome follows, look it up with: twopc txn show {txn}");
            }
        })
        .await
    }
    .await;
    match result {
        Ok((txn, o)) => {
            if args.json {
                println!("{}", outcome_json(&txn, &o));
            } else {
                print_outcome(&txn, &o);
            }
            ExitCode::from(match o.decision {
                Decision::Commit => EXIT_COMMITTED,
                Decision::Abort => EXIT_ABORTED,
            })
        }
        Err(e) => {
            if args.json {
                println!(
                    "{}",
                    json!({"error": e.code().unwrap_or("no_decision"), "message": e.to_string()})
                );
            }
            eprintln!("twopc: no decision obtained: {e}");
            ExitCode::from(EXIT_NO_DECISION)
        }
    }
}

/// Milliseconds for people, to about three significant digits: `0.412`,
/// `4.12`, `41.2`, whole from 100 on. A fixed number of decimals would
/// print a 40 µs transaction as `0.0`.
pub fn fmt_ms(ms: f64) -> String {
    match ms {
        m if m >= 100.0 => format!("{m:.0}"),
        m if m >= 10.0 => format!("{m:.1}"),
        m if m >= 1.0 => format!("{m:.2}"),
        m => format!("{m:.3}"),
    }
}

fn print_outcome(txn: &TxnId, o: &Outcome) {
    let word = match o.decision {
        Decision::Commit => "COMMITTED",
        Decision::Abort => "ABORTED",
    };
    println!("transaction {txn}: {word} in {} ms", fmt_ms(o.duration_ms));
    if o.repeated {
        println!(
            "  (already run under this id: this is its recorded outcome; nothing was run again)"
        );
    }
    for (p, v) in &o.votes {
        println!("  {p}: voted {}", v.as_str());
    }
    if let Some(r) = &o.reason {
        println!("  reason: {r}");
    }
    for (p, r) in &o.results {
        println!("  {p} read: {r}");
    }
}

pub async fn status(args: StatusArgs) -> ExitCode {
    let security = match args.security.load() {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    let result = async {
        let mut c =
            Client::connect_with(&args.coordinator, &security, Duration::from_secs(10)).await?;
        c.status().await
    }
    .await;
    match result {
        Ok(s) => {
            if args.json {
                println!("{s}");
            } else {
                print_status(&s);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("twopc: {e}");
            ExitCode::from(EXIT_NO_DECISION)
        }
    }
}

/// `yes`/`no` for a JSON boolean, as every table of the tool prints it.
pub fn yes_no(v: &Value) -> &'static str {
    if v.as_bool() == Some(true) {
        "yes"
    } else {
        "no"
    }
}

fn print_status(s: &Value) {
    let parts = s["participants"].as_array().cloned().unwrap_or_default();
    println!(
        "coordinator: {} ({} registered, {} expected)",
        s["state"].as_str().unwrap_or("?"),
        s["participants_registered"]
            .as_u64()
            .unwrap_or(parts.len() as u64),
        s["expected_participants"]
    );
    let g = &s["group"];
    if g.is_object() {
        println!(
            "group: member {} at {} leads in term {}, {} members (twopc cluster status for each)",
            g["leader"],
            g["leader_addr"].as_str().unwrap_or("?"),
            g["term"],
            g["members"].as_array().map_or(0, |m| m.len())
        );
    }
    if !parts.is_empty() {
        println!(
            "  {:<16} {:<10} {:<6} LAST HEARTBEAT",
            "PARTICIPANT", "CONNECTED", "ALIVE"
        );
        for p in &parts {
            let age = p["last_heartbeat_age_ms"].as_f64().unwrap_or(0.0) / 1000.0;
            println!(
                "  {:<16} {:<10} {:<6} {age:.1} s ago",
                p["id"].as_str().unwrap_or("?"),
                yes_no(&p["connected"]),
                yes_no(&p["alive"])
            );
        }
    }
    let t = &s["transactions"];
    println!(
        "transactions: {} committed, {} aborted, {} in flight, {} awaiting acks",
        t["committed"], t["aborted"], t["in_flight"], t["awaiting_acks"]
    );
    let w = &s["wal"];
    if w.is_object() {
        println!(
            "log: {} syncs, {} records, {} bytes",
            w["syncs"], w["records"], w["bytes"]
        );
    }
}

/// The demo's failover: kill the group's leader, show the takeover, bring
/// the killed member back as a follower, and connect again.
async fn take_over(cluster: &mut LocalCluster) -> Result<Client, String> {
    let old = cluster
        .leader()
        .await
        .ok_or("no coordinator leads the group")?;
    println!(
        "\n--- killing the leader, {} (SIGKILL) ---",
        cluster.name(old)
    );
    cluster.kill9(old).await;
    let n = cluster.participant_ids.len();
    let took = cluster
        .await_takeover(old, n, Duration::from_secs(30))
        .await
        .ok_or("no member took over within 30 s")?;
    let new = cluster
        .leader()
        .await
        .ok_or("no coordinator leads the group")?;
    println!(
        "--- {} took over in {} ms: elected, every durable decision re-driven, {n} participants re-registered ---",
        cluster.name(new),
        fmt_ms(took.as_secs_f64() * 1000.0)
    );
    cluster.restart(old).await?;
    println!(
        "--- {} restarted on its data; it rejoins as a follower ---\n",
        cluster.name(old)
    );
    Client::connect_with(&cluster.addr, &cluster.security, Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())
}

/// Safety of one outcome as the client can see it: commit only with every
/// vote commit; abort only with an abort vote or a stated reason.
pub fn outcome_is_safe(o: &Outcome, participants: usize) -> bool {
    match o.decision {
        Decision::Commit => {
            o.votes.len() == participants && o.votes.values().all(|v| *v == Vote::Commit)
        }
        Decision::Abort => o.votes.values().any(|v| *v == Vote::Abort) || o.reason.is_some(),
    }
}

pub async fn demo(args: DemoArgs) -> ExitCode {
    if args.participants == 0 || args.participants > 64 {
        return usage("--participants must be between 1 and 64");
    }
    if !(0.0..=1.0).contains(&args.commit_probability) {
        return usage("--commit-probability must be between 0.0 and 1.0");
    }
    if !matches!(args.coordinators, 1 | 3 | 5) {
        return usage("--coordinators must be 1, 3 or 5");
    }
    let opts = ClusterOptions {
        participants: args.participants,
        vote_preference: args.vote_preference,
        commit_probability: args.commit_probability,
        coordinators: args.coordinators,
        ..ClusterOptions::default()
    };
    println!(
        "Starting {} and {} participants (votes: {}{}) on loopback...",
        if args.coordinators == 1 {
            "a coordinator".to_string()
        } else {
            format!("a group of {} coordinators", args.coordinators)
        },
        args.participants,
        args.vote_preference,
        if args.vote_preference == VotePreference::Random {
            format!(", commit probability {}", args.commit_probability)
        } else {
            String::new()
        }
    );
    let mut cluster = match LocalCluster::spawn(&opts).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("twopc demo: {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "Coordinator listening on {}; data in {}\n",
        cluster.addr,
        cluster.dir().display()
    );
    let code = run_demo(&mut cluster, &args).await;
    println!("\nShutting down...");
    cluster.shutdown().await;
    println!("Done.");
    code
}

async fn run_demo(cluster: &mut LocalCluster, args: &DemoArgs) -> ExitCode {
    let ids = &cluster.participant_ids.clone();
    let mut client =
        match Client::connect_with(&cluster.addr, &cluster.security, Duration::from_secs(30)).await
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("twopc demo: {e}");
                return ExitCode::from(1);
            }
        };
    let mut header = format!("{:>3}  {:<18}", "#", "TRANSACTION");
    for id in ids {
        header.push_str(&format!(" {id:<7}"));
    }
    header.push_str(&format!(" {:<9} {:>10}  REASON", "DECISION", "LATENCY"));
    println!("{header}");
    let (mut commits, mut aborts, mut unsafe_outcomes) = (0usize, 0usize, 0usize);
    let mut latencies = Vec::new();
    for i in 1..=args.transactions {
        if cluster.coordinators > 1 && i == args.transactions / 2 + 1 {
            match take_over(cluster).await {
                Ok(c) => client = c,
                Err(e) => {
                    eprintln!("twopc demo: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        let req = SubmitRequest {
            data: json!({"demo_transaction": i}),
            participants: None,
            request_id: None,
            ..Default::default()
        };
        let start = Instant::now();
        match client.submit(req).await {
            Ok((txn, o)) => {
                let ms = start.elapsed().as_secs_f64() * 1000.0;
                latencies.push(ms);
                let mut row = format!("{i:>3}  {:<18}", txn.0);
                for id in ids {
                    let v = o
                        .votes
                        .get(&ParticipantId::from(id.as_str()))
                        .map(|v| v.as_str())
                        .unwrap_or("-");
                    row.push_str(&format!(" {v:<7}"));
                }
                row.push_str(&format!(
                    " {:<9} {:>7} ms  {}",
                    o.decision.as_str().to_uppercase(),
                    fmt_ms(ms),
                    o.reason.clone().unwrap_or_default()
                ));
                println!("{row}");
                match o.decision {
                    Decision::Commit => commits += 1,
                    Decision::Abort => aborts += 1,
                }
                if !outcome_is_safe(&o, ids.len()) {
                    unsafe_outcomes += 1;
                }
            }
            Err(e) => {
                println!("{i:>3}  no decision: {e}");
                return ExitCode::from(1);
            }
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let mean = latencies.iter().sum::<f64>() / latencies.len().max(1) as f64;
    println!(
        "\nSummary: {} transactions, {commits} committed, {aborts} aborted; latency mean {} ms, max {} ms",
        args.transactions,
        fmt_ms(mean),
        fmt_ms(latencies.last().copied().unwrap_or(0.0))
    );
    // Give the last acknowledgements a moment so the counts are final.
    let mut status = client.status().await;
    for _ in 0..40 {
        match &status {
            Ok(s)
                if s["transactions"]["in_flight"] == 0
                    && s["transactions"]["awaiting_acks"] == 0 =>
            {
                break
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        status = client.status().await;
    }
    if let Ok(s) = status {
        let t = &s["transactions"];
        println!(
            "Coordinator counts: {} committed, {} aborted, {} in flight; log syncs {}",
            t["committed"], t["aborted"], t["in_flight"], s["wal"]["syncs"]
        );
    }
    if unsafe_outcomes > 0 {
        println!("SAFETY VIOLATION: {unsafe_outcomes} outcomes broke the voting rules");
        return ExitCode::from(1);
    }
    println!("Safety check: every COMMIT had a commit vote from every participant; every ABORT had an abort vote or a stated reason.");
    ExitCode::SUCCESS
}
