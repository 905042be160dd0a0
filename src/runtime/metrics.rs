//! The coordinator's figures in the Prometheus text exposition format
//! (version 0.0.4): a snapshot taken by the event loop, rendered here by a
//! pure function so that scraping costs the loop one copy of a few numbers.

use super::timing::{Histogram, PhaseHistograms};
use crate::net::ErrorCounts;
use crate::protocol::coordinator::OpenTxns;
use crate::protocol::heuristic::HeuristicKind;
use crate::protocol::stats::{AbortCause, CoordinatorStats};
use crate::wal::{WalStats, SYNC_BOUNDS_MICROS};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Log counters at one moment.
#[derive(Clone, Debug, Default)]
pub struct WalSnapshot {
    pub syncs: u64,
    pub records: u64,
    pub bytes: u64,
    pub checkpoints: u64,
    pub sync_micros: u64,
    pub sync_buckets: Vec<u64>,
}

impl WalSnapshot {
    pub fn of(s: &WalStats) -> WalSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WalSnapshot {
            syncs: l(&s.syncs),
            records: l(&s.records),
            bytes: l(&s.bytes),
            checkpoints: l(&s.checkpoints),
            sync_micros: l(&s.sync_micros),
            sync_buckets: s.sync_buckets.iter().map(l).collect(),
        }
    }
}

/// Everything `GET /metrics` shows, copied out of the event loop.
#[derive(Clone, Debug, Default)]
pub struct MetricsSnapshot {
    pub ready: bool,
    pub expected_participants: usize,
    pub participants_registered: usize,
    pub participants_connected: usize,
    pub stats: CoordinatorStats,
    /// Phase latencies, measured by the runtime in microseconds.
    pub phases: PhaseHistograms,
    pub open: OpenTxns,
    pub wal: WalSnapshot,
    /// Open framed-TCP connections (participants and clients), including
    /// HTTP submits waiting for their outcome.
    pub connections: usize,
    pub errors: Vec<(&'static str, u64)>,
    /// Refused authentications and connections, by (port, reason).
    pub auth_failures: Vec<((&'static str, &'static str), u64)>,
    /// For a member of a coordinator group: its part in it.
    pub group: Option<GroupMetrics>,
}

/// A coordinator group member's figures.
#[derive(Clone, Debug, Default)]
pub struct GroupMetrics {
    pub leader: bool,
    pub has_leader: bool,
    pub term: u64,
    pub commit_index: u64,
    /// On the leader: entries each other member is behind, by member id.
    pub lag: Vec<(u64, u64)>,
}

impl GroupMetrics {
    pub fn of(v: &crate::replica::GroupView) -> GroupMetrics {
        GroupMetrics {
            leader: v.role == "leader",
            has_leader: v.leader.is_some(),
            term: v.term,
            commit_index: v.commit_index.unwrap_or(0),
            lag: v
                .members
                .iter()
                .filter(|m| m.id != v.me)
                .filter_map(|m| Some((m.id, m.lag?)))
                .collect(),
        }
    }
}

impl MetricsSnapshot {
    pub fn errors_of(e: &ErrorCounts) -> Vec<(&'static str, u64)> {
        e.snapshot()
    }
}

/// Text exposition of `m`; `http_connections` is the admin server's own
/// open connection count.
pub fn render(m: &MetricsSnapshot, http_connections: usize) -> String {
    let mut o = String::with_capacity(8 * 1024);
    let s = &m.stats;
    if let Some(g) = &m.group {
        header(
            &mut o,
            "twopc_group_leader",
            "gauge",
            "1 on the member that leads the coordinator group, 0 on the others.",
        );
        line(&mut o, "twopc_group_leader", "", g.leader as u64);
        header(&mut o, "twopc_group_has_leader", "gauge", "1 when this member knows a leader of the group; 0 while there is none it can reach (no quorum, or an election).");
        line(&mut o, "twopc_group_has_leader", "", g.has_leader as u64);
        header(
            &mut o,
            "twopc_group_term",
            "gauge",
            "The Raft term this member is in.",
        );
        line(&mut o, "twopc_group_term", "", g.term);
        header(
            &mut o,
            "twopc_group_commit_index",
            "gauge",
            "The highest Raft log index this member knows committed and has applied.",
        );
        line(&mut o, "twopc_group_commit_index", "", g.commit_index);
        if !g.lag.is_empty() {
            header(
                &mut o,
                "twopc_group_member_lag_entries",
                "gauge",
                "On the leader: Raft entries each other member is behind.",
            );
            for (id, lag) in &g.lag {
                line(
                    &mut o,
                    "twopc_group_member_lag_entries",
                    &format!("member=\"{id}\""),
                    *lag,
                );
            }
        }
    }
    header(&mut o, "twopc_up", "gauge", "1 when the coordinator is READY (every expected participant registered), 0 while waiting for participants.");
    line(&mut o, "twopc_up", "", m.ready as u64);
    header(
        &mut o,
        "twopc_participants_expected",
        "gauge",
        "Participants that must register before transactions run (expected_participants).",
    );
    line(
        &mut o,
        "twopc_participants_expected",
        "",
        m.expected_participants as u64,
    );
    header(
        &mut o,
        "twopc_participants_registered",
        "gauge",
        "Participants that have registered since the start.",
    );
    line(
        &mut o,
        "twopc_participants_registered",
        "",
        m.participants_registered as u64,
    );
    header(
        &mut o,
        "twopc_participants_connected",
        "gauge",
        "Registered participants with an open connection.",
    );
    line(
        &mut o,
        "twopc_participants_connected",
        "",
        m.participants_connected as u64,
    );

    header(
        &mut o,
        "twopc_transactions_committed_total",
        "counter",
        "Transactions decided commit (counted when decided).",
    );
    line(
        &mut o,
        "twopc_transactions_committed_total",
        "",
        s.committed,
    );
    header(
        &mut o,
        "twopc_transactions_aborted_total",
        "counter",
        "Transactions decided abort (counted when decided), by cause.",
    );
    for cause in AbortCause::ALL {
        let labels = format!("reason=\"{}\"", cause.as_str());
        line(
            &mut o,
            "twopc_transactions_aborted_total",
            &labels,
            s.aborted(cause),
        );
    }

    let p = &m.phases;
    histogram_us(
        &mut o,
        "twopc_prepare_duration_seconds",
        "From the submit to the decision (the voting phase), microsecond resolution.",
        &p.prepare_us,
    );
    histogram_us(
        &mut o,
        "twopc_decision_durable_duration_seconds",
        "From a commit decision to its log record being durable, microsecond resolution.",
        &p.decision_durable_us,
    );
    histogram_us(&mut o, "twopc_completion_duration_seconds", "From the decision to the last acknowledgement (the transaction ended), microsecond resolution.", &p.completion_us);

    header(
        &mut o,
        "twopc_transactions_in_flight",
        "gauge",
        "Transactions in the prepare phase (voting).",
    );
    line(
        &mut o,
        "twopc_transactions_in_flight",
        "",
        m.open.in_flight as u64,
    );
    header(
        &mut o,
        "twopc_transactions_in_flight_oldest_age_seconds",
        "gauge",
        "Age of the oldest transaction still voting, 0 when none.",
    );
    line_f(
        &mut o,
        "twopc_transactions_in_flight_oldest_age_seconds",
        "",
        m.open.in_flight_oldest_ms as f64 / 1000.0,
    );
    header(
        &mut o,
        "twopc_transactions_in_doubt",
        "gauge",
        "Decided transactions not yet acknowledged by every participant.",
    );
    line(
        &mut o,
        "twopc_transactions_in_doubt",
        "",
        m.open.in_doubt as u64,
    );
    header(&mut o, "twopc_transactions_in_doubt_oldest_age_seconds", "gauge", "Time since the decision of the oldest transaction still waiting for acknowledgements, 0 when none.");
    line_f(
        &mut o,
        "twopc_transactions_in_doubt_oldest_age_seconds",
        "",
        m.open.in_doubt_oldest_ms as f64 / 1000.0,
    );

    header(
        &mut o,
        "twopc_heuristic_outcomes_total",
        "counter",
        "Heuristic outcomes participants reported in their ACKs (a decision not carried out as decided: mixed, the participant's part ended the other way; hazard, it cannot tell), by kind; once per transaction and participant.",
    );
    for kind in HeuristicKind::ALL {
        let labels = format!("kind=\"{}\"", kind.as_str());
        line(
            &mut o,
            "twopc_heuristic_outcomes_total",
            &labels,
            s.heuristic(kind),
        );
    }

    header(
        &mut o,
        "twopc_decision_resends_total",
        "counter",
        "Decisions re-sent to participants that had not acknowledged them.",
    );
    line(&mut o, "twopc_decision_resends_total", "", s.resends);

    let w = &m.wal;
    header(
        &mut o,
        "twopc_wal_syncs_total",
        "counter",
        "fdatasync calls on the write-ahead log.",
    );
    line(&mut o, "twopc_wal_syncs_total", "", w.syncs);
    header(
        &mut o,
        "twopc_wal_records_total",
        "counter",
        "Records appended to the write-ahead log.",
    );
    line(&mut o, "twopc_wal_records_total", "", w.records);
    header(
        &mut o,
        "twopc_wal_bytes_total",
        "counter",
        "Bytes appended to the write-ahead log.",
    );
    line(&mut o, "twopc_wal_bytes_total", "", w.bytes);
    header(
        &mut o,
        "twopc_wal_checkpoints_total",
        "counter",
        "Log checkpoints (a new segment with the live records).",
    );
    line(&mut o, "twopc_wal_checkpoints_total", "", w.checkpoints);
    header(
        &mut o,
        "twopc_wal_sync_duration_seconds",
        "histogram",
        "Duration of one log sync (fdatasync), microsecond resolution.",
    );
    let mut cum = 0;
    for (i, b) in SYNC_BOUNDS_MICROS.iter().enumerate() {
        cum += w.sync_buckets.get(i).copied().unwrap_or(0);
        let labels = format!("le=\"{}\"", *b as f64 / 1e6);
        line(
            &mut o,
            "twopc_wal_sync_duration_seconds_bucket",
            &labels,
            cum,
        );
    }
    line(
        &mut o,
        "twopc_wal_sync_duration_seconds_bucket",
        "le=\"+Inf\"",
        w.syncs,
    );
    line_f(
        &mut o,
        "twopc_wal_sync_duration_seconds_sum",
        "",
        w.sync_micros as f64 / 1e6,
    );
    line(&mut o, "twopc_wal_sync_duration_seconds_count", "", w.syncs);

    header(&mut o, "twopc_connections", "gauge", "Open protocol connections (participants and clients, including HTTP submits awaiting their outcome).");
    line(&mut o, "twopc_connections", "", m.connections as u64);
    header(
        &mut o,
        "twopc_http_connections",
        "gauge",
        "Open connections to the HTTP admin API.",
    );
    line(
        &mut o,
        "twopc_http_connections",
        "",
        http_connections as u64,
    );
    header(
        &mut o,
        "twopc_protocol_errors_total",
        "counter",
        "Error frames sent to peers, by stable error code (docs/PROTOCOL.md section 8); code=\"unauthorized\" also counts HTTP admin requests refused with 401.",
    );
    for (code, n) in &m.errors {
        line(
            &mut o,
            "twopc_protocol_errors_total",
            &format!("code=\"{code}\""),
            *n,
        );
    }
    header(
        &mut o,
        "twopc_auth_failures_total",
        "counter",
        "Refused authentications and connections, by port (protocol, http) and reason (wrong_mac, timeout, no_hello, no_auth, bad_identity, invalid_frame, tls, no_slot, missing, malformed, unknown_nonce, expired_nonce, reused_nonce, body_digest, challenge_rate).",
    );
    for ((port, reason), n) in &m.auth_failures {
        line(
            &mut o,
            "twopc_auth_failures_total",
            &format!("port=\"{port}\",reason=\"{reason}\""),
            *n,
        );
    }
    o
}

fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

fn line(o: &mut String, name: &str, labels: &str, v: u64) {
    if labels.is_empty() {
        let _ = writeln!(o, "{name} {v}");
    } else {
        let _ = writeln!(o, "{name}{{{labels}}} {v}");
    }
}

fn line_f(o: &mut String, name: &str, labels: &str, v: f64) {
    if labels.is_empty() {
        let _ = writeln!(o, "{name} {v}");
    } else {
        let _ = writeln!(o, "{name}{{{labels}}} {v}");
    }
}

/// A histogram observed in microseconds, exposed in seconds.
fn histogram_us(o: &mut String, name: &str, help: &str, h: &Histogram) {
    header(o, name, "histogram", help);
    let bucket = format!("{name}_bucket");
    let mut cum = 0;
    for (b, n) in h.bounds().iter().zip(h.counts()) {
        cum += n;
        line(o, &bucket, &format!("le=\"{}\"", *b as f64 / 1e6), cum);
    }
    line(o, &bucket, "le=\"+Inf\"", h.count());
    line_f(o, &format!("{name}_sum"), "", h.sum() as f64 / 1e6);
    line(o, &format!("{name}_count"), "", h.count());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ErrorCode, WireCode};

    fn snapshot() -> MetricsSnapshot {
        let mut stats = CoordinatorStats::default();
        stats.committed = 2;
        stats.count_abort(AbortCause::VoteTimeout);
        stats.count_heuristic(HeuristicKind::Mixed);
        let mut phases = PhaseHistograms::default();
        phases.prepare_us.observe(80);
        phases.prepare_us.observe(3_000);
        phases.prepare_us.observe(40_000);
        let errors = ErrorCounts::default();
        errors.count(ErrorCode::InvalidJson);
        errors.count_wire(&ErrorCode::Overloaded.into());
        errors.count_wire(&WireCode::parse("no_such_code"));
        MetricsSnapshot {
            ready: true,
            expected_participants: 2,
            participants_registered: 2,
            participants_connected: 1,
            stats,
            phases,
            open: OpenTxns {
                in_flight: 1,
                in_flight_oldest_ms: 1500,
                in_doubt: 0,
                in_doubt_oldest_ms: 0,
            },
            wal: WalSnapshot {
                syncs: 3,
                sync_buckets: vec![1, 2],
                ..Default::default()
            },
            connections: 4,
            errors: MetricsSnapshot::errors_of(&errors),
            auth_failures: vec![(("protocol", "wrong_mac"), 2)],
            group: None,
        }
    }

    #[test]
    fn every_metric_has_help_and_type_and_well_formed_samples() {
        let text = render(&snapshot(), 1);
        let mut typed = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                typed.insert(it.next().unwrap().to_string());
                assert!(
                    matches!(it.next(), Some("counter" | "gauge" | "histogram")),
                    "{l}"
                );
                continue;
            }
            if l.starts_with("# HELP ") {
                continue;
            }
            let (name_labels, value) = l.rsplit_once(' ').unwrap();
            value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("value in {l}"));
            let name = name_labels.split('{').next().unwrap();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| typed.contains(*b)))
                .unwrap_or(name);
            assert!(typed.contains(base), "sample before its TYPE: {l}");
        }
    }

    #[test]
    fn samples_carry_the_figures() {
        let text = render(&snapshot(), 1);
        for want in [
            "twopc_transactions_committed_total 2",
            "twopc_transactions_aborted_total{reason=\"vote_timeout\"} 1",
            "twopc_transactions_aborted_total{reason=\"vote_abort\"} 0",
            "twopc_heuristic_outcomes_total{kind=\"mixed\"} 1",
            "twopc_heuristic_outcomes_total{kind=\"hazard\"} 0",
            "twopc_prepare_duration_seconds_bucket{le=\"0.00005\"} 0",
            "twopc_prepare_duration_seconds_bucket{le=\"0.0001\"} 1",
            "twopc_prepare_duration_seconds_bucket{le=\"0.001\"} 1",
            "twopc_prepare_duration_seconds_bucket{le=\"0.005\"} 2",
            "twopc_prepare_duration_seconds_bucket{le=\"0.05\"} 3",
            "twopc_prepare_duration_seconds_bucket{le=\"+Inf\"} 3",
            "twopc_prepare_duration_seconds_sum 0.04308",
            "twopc_transactions_in_flight_oldest_age_seconds 1.5",
            "twopc_wal_sync_duration_seconds_bucket{le=\"0.0001\"} 3",
            "twopc_protocol_errors_total{code=\"invalid_json\"} 1",
            "twopc_protocol_errors_total{code=\"overloaded\"} 1",
            "twopc_http_connections 1",
            "twopc_auth_failures_total{port=\"protocol\",reason=\"wrong_mac\"} 2",
        ] {
            assert!(
                text.lines().any(|l| l == want),
                "missing `{want}` in\n{text}"
            );
        }
    }
}
