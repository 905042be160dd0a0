//! One transaction's timeline as a sequence diagram: the actors (client,
//! coordinator, participants) and, in order, the messages between them and
//! the notes over them. Pure: built from the coordinator's `txn_show`
//! detail (the JSON of `GET /transactions/{id}`), no IO.
//!
//! One model, two pictures: `twopc txn show --diagram` prints it as a
//! Mermaid `sequenceDiagram` ([`Diagram::mermaid`]); the console draws the
//! same lines as SVG from its JSON (`GET /transactions/{id}/diagram`).

use crate::protocol::timeline::{Step, TimelineEvent};
use crate::protocol::{Decision, Vote};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Longest reason shown on an arrow; the full text is in `txn show`.
const REASON_MAX_CHARS: usize = 80;

/// The alias of the client actor.
const CLIENT: &str = "Client";
/// The alias of the coordinator actor.
const COORDINATOR: &str = "C";

/// A sequence diagram of one transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagram {
    /// Left to right: the client (when it submitted), the coordinator, the
    /// participants.
    pub actors: Vec<Actor>,
    /// Top to bottom.
    pub lines: Vec<Line>,
}

/// One lifeline. Participant ids may hold characters Mermaid does not take
/// in a name, so each actor has a short alias and its real name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Actor {
    pub alias: String,
    pub name: String,
}

/// One row of the diagram; actors are named by alias.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Line {
    /// An arrow; `reply` draws it dashed (the outcome to the client).
    Message {
        from: String,
        to: String,
        text: String,
        reply: bool,
    },
    /// A note over one actor.
    Note { over: String, text: String },
}

impl Diagram {
    /// The diagram of the transaction whose `txn_show` detail is `detail`,
    /// or why it cannot be drawn.
    pub fn of_detail(detail: &Value) -> Result<Diagram, String> {
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
        let alias: BTreeMap<&str, String> = participants
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_str(), format!("P{}", i + 1)))
            .collect();
        let who = |p: &str| {
            alias
                .get(p)
                .cloned()
                .unwrap_or_else(|| COORDINATOR.to_string())
        };
        let mut actors = Vec::new();
        if events.iter().any(|e| e.step == Step::Submitted) {
            actors.push(actor(CLIENT, "client"));
        }
        actors.push(actor(COORDINATOR, "coordinator"));
        for p in &participants {
            actors.push(actor(&who(p), &clean(p)));
        }
        let state = detail["state"].as_str().unwrap_or("?");
        let mut lines = vec![note(
            COORDINATOR,
            format!("transaction {} ({state})", clean(id)),
        )];
        for e in &events {
            let t = format!("t={} ms", e.at_ms);
            lines.push(match &e.step {
                Step::Submitted => message(CLIENT, COORDINATOR, format!("submit, {t}")),
                Step::Recovered => note(
                    COORDINATOR,
                    format!("recovered from the log after a restart, {t}"),
                ),
                Step::Prepare { to } => message(COORDINATOR, &who(&to.0), format!("PREPARE, {t}")),
                Step::Vote { from, vote, reason } => {
                    let text = match reason {
                        Some(r) => format!("{} ({}), {t}", vote_name(*vote), short(r)),
                        None => format!("{}, {t}", vote_name(*vote)),
                    };
                    message(&who(&from.0), COORDINATOR, text)
                }
                Step::LateVote { from, vote } => message(
                    &who(&from.0),
                    COORDINATOR,
                    format!("{} (late or repeated, refused), {t}", vote_name(*vote)),
                ),
                Step::Decided { decision, reason } => note(
                    COORDINATOR,
                    match reason {
                        Some(r) => format!("decided {} ({}), {t}", upper(*decision), short(r)),
                        None => format!("decided {}, {t}", upper(*decision)),
                    },
                ),
                Step::LogWrite => note(
                    COORDINATOR,
                    format!("decision record appended to the log, sync requested, {t}"),
                ),
                Step::LogDurable => {
                    note(COORDINATOR, format!("log sync done, decision durable, {t}"))
                }
                Step::Decision {
                    to,
                    decision,
                    resend,
                } => {
                    let again = if *resend { " (resend)" } else { "" };
                    message(
                        COORDINATOR,
                        &who(&to.0),
                        format!("{}{again}, {t}", upper(*decision)),
                    )
                }
                Step::Outcome { decision } => Line::Message {
                    from: COORDINATOR.into(),
                    to: CLIENT.into(),
                    text: format!("outcome {}, {t}", upper(*decision)),
                    reply: true,
                },
                Step::Ack { from } => message(&who(&from.0), COORDINATOR, format!("ACK, {t}")),
                Step::Heuristic { from, kind } => note(
                    &who(&from.0),
                    format!("HEURISTIC OUTCOME ({kind}) reported in the ACK, {t}"),
                ),
                Step::Query { from } => {
                    message(&who(&from.0), COORDINATOR, format!("QUERY (in doubt), {t}"))
                }
                Step::Disconnected { participant } => {
                    note(&who(&participant.0), format!("disconnected, {t}"))
                }
                Step::Ended => note(
                    COORDINATOR,
                    format!("every participant acknowledged, ended, {t}"),
                ),
            });
        }
        if let Some(n) = detail["timeline_dropped"].as_u64().filter(|n| *n > 0) {
            lines.push(note(
                COORDINATOR,
                format!("{n} later events not recorded (timeline_max_events)"),
            ));
        }
        Ok(Diagram { actors, lines })
    }

    /// The diagram as a Mermaid `sequenceDiagram` (paste it into any
    /// Mermaid renderer, or a Markdown file between ```mermaid fences).
    pub fn mermaid(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "sequenceDiagram");
        for a in &self.actors {
            let _ = writeln!(o, "    participant {} as {}", a.alias, a.name);
        }
        for l in &self.lines {
            let _ = match l {
                Line::Message {
                    from,
                    to,
                    text,
                    reply,
                } => {
                    let arrow = if *reply { "-->>" } else { "->>" };
                    writeln!(o, "    {from}{arrow}{to}: {text}")
                }
                Line::Note { over, text } => writeln!(o, "    Note over {over}: {text}"),
            };
        }
        o
    }
}

fn actor(alias: &str, name: &str) -> Actor {
    Actor {
        alias: alias.into(),
        name: name.into(),
    }
}

fn message(from: &str, to: &str, text: String) -> Line {
    Line::Message {
        from: from.into(),
        to: to.into(),
        text,
        reply: false,
    }
}

fn note(over: &str, text: String) -> Line {
    Line::Note {
        over: over.into(),
        text,
    }
}

fn vote_name(v: Vote) -> &'static str {
    match v {
        Vote::Commit => "VOTE_COMMIT",
        Vote::Abort => "VOTE_ABORT",
    }
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

    fn mermaid(detail: &Value) -> Result<String, String> {
        Diagram::of_detail(detail).map(|d| d.mermaid())
    }

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
    fn the_json_model_names_actors_by_alias_and_keeps_the_order() {
        let detail = json!({
            "transaction_id": "t-3", "state": "IN_DOUBT", "participants": ["db.2"],
            "timeline": [
                {"at_ms": 0, "event": "prepare", "to": "db.2"},
                {"at_ms": 1, "event": "disconnected", "participant": "db.2"},
            ]
        });
        let d = Diagram::of_detail(&detail).unwrap();
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            json!({
                "actors": [
                    {"alias": "C", "name": "coordinator"},
                    {"alias": "P1", "name": "db.2"},
                ],
                "lines": [
                    {"kind": "note", "over": "C", "text": "transaction t-3 (IN_DOUBT)"},
                    {"kind": "message", "from": "C", "to": "P1", "text": "PREPARE, t=0 ms", "reply": false},
                    {"kind": "note", "over": "P1", "text": "disconnected, t=1 ms"},
                ]
            })
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
