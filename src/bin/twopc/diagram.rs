//! `twopc txn show ID --diagram`: one transaction's timeline as a Mermaid
//! `sequenceDiagram` (paste it into any Mermaid renderer, or a Markdown
//! file between ```mermaid fences). Pure text from the coordinator's
//! `txn_show` reply; no IO here.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;
use twopc::protocol::timeline::{Step, TimelineEvent};
use twopc::protocol::{Decision, Vote};

/// Longest reason shown on an arrow; the full text is in `txn show`.
const REASON_MAX_CHARS: usize = 80;

/// The diagram of the transaction whose `txn_show` detail is `detail`, or
/// why it cannot be drawn.
pub fn mermaid(detail: &Value) -> Result<String, String> {
    let events: Vec<TimelineEvent> = serde_json::from_value(detail["timeline"].clone())
        .map_err(|e| {
            format!("the reply has no readable timeline ({e}); is the coordinator older than this client?")
        })?;
    let id = detail["transaction_id"].as_str().unwrap_or("?");
    let participants: Vec<String> = detail["participants"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    // Mermaid actor names are restricted; participant ids may hold `.` or
    // `-`, so each gets an alias shown with its real id.
    let alias: BTreeMap<&str, String> = participants
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_str(), format!("P{}", i + 1)))
        .collect();
    let who = |p: &str| alias.get(p).cloned().unwrap_or_else(|| "C".to_string());
    let mut o = String::new();
    let _ = writeln!(o, "sequenceDiagram");
    let has_client = events.iter().any(|e| e.step == Step::Submitted);
    if has_client {
        let _ = writeln!(o, "    participant Client as client");
    }
    let _ = writeln!(o, "    participant C as coordinator");
    for p in &participants {
        let _ = writeln!(o, "    participant {} as {}", who(p), clean(p));
    }
    let state = detail["state"].as_str().unwrap_or("?");
    let _ = writeln!(o, "    Note over C: transaction {} ({state})", clean(id));
    for e in &events {
        let t = format!("t={} ms", e.at_ms);
        let line = match &e.step {
            Step::Submitted => format!("Client->>C: submit, {t}"),
            Step::Recovered => format!("Note over C: recovered from the log after a restart, {t}"),
            Step::Prepare { to } => format!("C->>{}: PREPARE, {t}", who(&to.0)),
            Step::Vote { from, vote, reason } => {
                let name = match vote {
                    Vote::Commit => "VOTE_COMMIT",
                    Vote::Abort => "VOTE_ABORT",
                };
                match reason {
                    Some(r) => format!("{}->>C: {name} ({}), {t}", who(&from.0), short(r)),
                    None => format!("{}->>C: {name}, {t}", who(&from.0)),
                }
            }
            Step::LateVote { from, vote } => format!(
                "{}->>C: {} (late or repeated, refused), {t}",
                who(&from.0),
                match vote {
                    Vote::Commit => "VOTE_COMMIT",
                    Vote::Abort => "VOTE_ABORT",
                }
            ),
            Step::Decided { decision, reason } => match reason {
                Some(r) => format!(
                    "Note over C: decided {} ({}), {t}",
                    upper(*decision),
                    short(r)
                ),
                None => format!("Note over C: decided {}, {t}", upper(*decision)),
            },
            Step::LogWrite => {
                format!("Note over C: decision record appended to the log, sync requested, {t}")
            }
            Step::LogDurable => format!("Note over C: log sync done, decision durable, {t}"),
            Step::Decision {
                to,
                decision,
                resend,
            } => {
                let again = if *resend { " (resend)" } else { "" };
                format!("C->>{}: {}{again}, {t}", who(&to.0), upper(*decision))
            }
            Step::Outcome { decision } => format!("C-->>Client: outcome {}, {t}", upper(*decision)),
            Step::Ack { from } => format!("{}->>C: ACK, {t}", who(&from.0)),
            Step::Heuristic { from, kind } => format!(
                "Note over {}: HEURISTIC OUTCOME ({kind}) reported in the ACK, {t}",
                who(&from.0)
            ),
            Step::Query { from } => format!("{}->>C: QUERY (in doubt), {t}", who(&from.0)),
            Step::Disconnected { participant } => {
                format!("Note over {}: disconnected, {t}", who(&participant.0))
            }
            Step::Ended => format!("Note over C: every participant acknowledged, ended, {t}"),
        };
        let _ = writeln!(o, "    {line}");
    }
    if let Some(n) = detail["timeline_dropped"].as_u64().filter(|n| *n > 0) {
        let _ = writeln!(
            o,
            "    Note over C: {n} later events not recorded (timeline_max_events)"
        );
    }
    Ok(o)
}

fn upper(d: Decision) -> &'static str {
    match d {
        Decision::Commit => "COMMIT",
        Decision::Abort => "ABORT",
    }
}

/// Text safe inside a Mermaid message: no statement separators, comments
/// or entity markers, one line.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            ';' | '#' | '%' | '\n' | '\r' => ' ',
            c => c,
        })
        .collect()
}

fn short(s: &str) -> String {
    let c = clean(s);
    if c.chars().count() <= REASON_MAX_CHARS {
        return c;
    }
    let mut t: String = c.chars().take(REASON_MAX_CHARS).collect();
    t.push('…');
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_committed_transaction_draws_every_message_in_order() {
        let detail = json!({
            "transaction_id": "t-1",
            "state": "COMPLETED",
            "participants": ["p1", "db.2"],
            "timeline_dropped": 0,
            "timeline": [
                {"at_ms": 0, "event": "submitted"},
                {"at_ms": 0, "event": "prepare", "to": "p1"},
                {"at_ms": 0, "event": "prepare", "to": "db.2"},
                {"at_ms": 2, "event": "vote", "from": "p1", "vote": "commit"},
                {"at_ms": 3, "event": "vote", "from": "db.2", "vote": "commit"},
                {"at_ms": 3, "event": "decided", "decision": "commit"},
                {"at_ms": 3, "event": "log_write"},
                {"at_ms": 4, "event": "log_durable"},
                {"at_ms": 4, "event": "decision", "to": "p1", "decision": "commit", "resend": false},
                {"at_ms": 4, "event": "outcome", "decision": "commit"},
                {"at_ms": 250, "event": "decision", "to": "db.2", "decision": "commit", "resend": true},
                {"at_ms": 251, "event": "ack", "from": "db.2"},
                {"at_ms": 251, "event": "ended"}
            ]
        });
        let text = mermaid(&detail).unwrap();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        assert_eq!(
            lines,
            vec![
                "sequenceDiagram",
                "participant Client as client",
                "participant C as coordinator",
                "participant P1 as p1",
                "participant P2 as db.2",
                "Note over C: transaction t-1 (COMPLETED)",
                "Client->>C: submit, t=0 ms",
                "C->>P1: PREPARE, t=0 ms",
                "C->>P2: PREPARE, t=0 ms",
                "P1->>C: VOTE_COMMIT, t=2 ms",
                "P2->>C: VOTE_COMMIT, t=3 ms",
                "Note over C: decided COMMIT, t=3 ms",
                "Note over C: decision record appended to the log, sync requested, t=3 ms",
                "Note over C: log sync done, decision durable, t=4 ms",
                "C->>P1: COMMIT, t=4 ms",
                "C-->>Client: outcome COMMIT, t=4 ms",
                "C->>P2: COMMIT (resend), t=250 ms",
                "P2->>C: ACK, t=251 ms",
                "Note over C: every participant acknowledged, ended, t=251 ms",
            ]
        );
    }

    #[test]
    fn reasons_are_made_safe_and_short() {
        let long = "x".repeat(200);
        let detail = json!({
            "transaction_id": "t-2", "state": "ABORTED", "participants": ["p1"],
            "timeline_dropped": 3,
            "timeline": [
                {"at_ms": 1, "event": "vote", "from": "p1", "vote": "abort", "reason": "a;b#c"},
                {"at_ms": 1, "event": "decided", "decision": "abort", "reason": long},
            ]
        });
        let text = mermaid(&detail).unwrap();
        assert!(
            text.contains("P1->>C: VOTE_ABORT (a b c), t=1 ms"),
            "{text}"
        );
        assert!(
            text.contains(&format!("decided ABORT ({}…)", "x".repeat(80))),
            "{text}"
        );
        assert!(text.contains("3 later events not recorded"), "{text}");
        assert!(!text.contains("participant Client"), "{text}");
    }

    #[test]
    fn a_reply_without_a_timeline_is_refused_with_a_reason() {
        let err = mermaid(&json!({"transaction_id": "t"})).unwrap_err();
        assert!(err.contains("timeline"), "{err}");
    }
}
