//! Configuration through the real binaries: defaults < YAML < environment <
//! flags, shown by what the processes do, and invalid settings refused with
//! exit status 2 and a message that names the key and the value.

mod common;

use common::*;
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use twopc::protocol::{Decision, SubmitRequest};

/// Refusing a bad setting is immediate; a process that is still running
/// after this long has accepted the setting.
const REFUSAL_LIMIT: Duration = Duration::from_secs(30);

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).expect("write config file");
    path.to_str().expect("utf-8 path").to_string()
}

fn expected_participants(c: &Cluster) -> u64 {
    c.status()["expected_participants"]
        .as_u64()
        .expect("expected_participants")
}

#[test]
fn coordinator_settings_yaml_then_env_then_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = write(
        &dir.path().join("twopc.yaml"),
        "coordinator:\n  expected_participants: 5\n",
    );

    let mut from_yaml = Cluster::new();
    from_yaml.start_coordinator(&["--config", &yaml], &[]);
    assert_eq!(
        expected_participants(&from_yaml),
        5,
        "YAML overrides the default (3)"
    );

    let mut from_env = Cluster::new();
    from_env.start_coordinator(
        &["--config", &yaml],
        &[("TWOPC_EXPECTED_PARTICIPANTS", "4")],
    );
    assert_eq!(expected_participants(&from_env), 4, "env overrides YAML");

    let mut from_flag = Cluster::new();
    from_flag.start_coordinator(
        &["--config", &yaml, "--expected-participants", "2"],
        &[("TWOPC_EXPECTED_PARTICIPANTS", "4")],
    );
    assert_eq!(expected_participants(&from_flag), 2, "a flag overrides env");
    // And the coordinator acts on it: two participants make it READY.
    from_flag.start_participants(2, &[]);
    from_flag.wait_ready(2);
    let (_, o) = from_flag.submit(req(json!({}))).expect("submit");
    assert_eq!(o.decision, Decision::Commit, "{o:?}");
}

#[test]
fn the_config_file_can_come_from_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = write(
        &dir.path().join("twopc.yaml"),
        "coordinator:\n  expected_participants: 1\n  timeout_seconds: 0.5\n",
    );
    let mut c = Cluster::new();
    c.start_coordinator(&[], &[("TWOPC_CONFIG", &yaml)]);
    assert_eq!(expected_participants(&c), 1);
    // timeout_seconds from the file: a silent participant aborts quickly.
    c.start_participant("p1", &["--vote-delay-ms", "600000"], &[]);
    c.wait_ready(1);
    let (_, o) = c.submit(req(json!({}))).expect("submit");
    assert_eq!(o.decision, Decision::Abort, "{o:?}");
    assert!(
        o.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("vote_timeout")),
        "{o:?}"
    );
}

#[test]
fn participant_vote_preference_yaml_then_env_then_flag() {
    let mut c = Cluster::new();
    let yaml = write(
        &c.path("participant.yaml"),
        "participant:\n  vote_preference: abort\n",
    );
    c.start_coordinator(&["--expected-participants", "4"], &[]);
    // Default is commit; the file says abort.
    c.start_participant("p1", &["--config", &yaml], &[]);
    // The environment says commit.
    c.start_participant(
        "p2",
        &["--config", &yaml],
        &[("TWOPC_VOTE_PREFERENCE", "commit")],
    );
    // The flag beats the environment, in both directions.
    c.start_participant(
        "p3",
        &["--config", &yaml, "--vote-preference", "abort"],
        &[("TWOPC_VOTE_PREFERENCE", "commit")],
    );
    c.start_participant(
        "p4",
        &["--config", &yaml, "--vote-preference", "commit"],
        &[("TWOPC_VOTE_PREFERENCE", "abort")],
    );
    c.wait_ready(4);
    for (id, expected) in [
        ("p1", Decision::Abort),
        ("p2", Decision::Commit),
        ("p3", Decision::Abort),
        ("p4", Decision::Commit),
    ] {
        let only = SubmitRequest {
            data: json!({}),
            participants: Some(vec![id.into()]),
            request_id: None,
            ..Default::default()
        };
        let (_, o) = c.submit(only).expect("submit");
        assert_eq!(o.decision, expected, "{id} voted {:?}: {o:?}", o.votes);
    }
}

/// Run `program` with `args` and `env` (nothing inherited); it must exit 2
/// and name every one of `needles` on stderr.
fn assert_refused(program: &str, args: &[&str], env: &[(&str, &str)], needles: &[&str]) {
    let mut cmd = clean_command(program);
    cmd.args(args).envs(env.iter().copied());
    let (code, out, err) = run_bounded(&mut cmd, REFUSAL_LIMIT);
    assert_eq!(
        code, 2,
        "{args:?} {env:?}: exit {code}\nstdout:\n{out}\nstderr:\n{err}"
    );
    for n in needles {
        assert!(
            err.contains(n),
            "{args:?} {env:?}: stderr does not mention {n:?}:\n{err}"
        );
    }
    assert!(!out.contains("listening"), "refused but started: {out}");
}

/// A participant command line that would run if its settings were valid.
fn participant_args<'a>(dir: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--id", "p1", "--coordinator-port", "1", "--data-dir", dir];
    v.extend_from_slice(extra);
    v
}

#[test]
fn commit_probability_out_of_range_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("p1");
    let data = data.to_str().expect("utf-8");
    let needles = ["commit_probability", "1.5", "between 0.0 and 1.0"];
    assert_refused(
        PARTICIPANT,
        &participant_args(data, &["--commit-probability", "1.5"]),
        &[],
        &needles,
    );
    assert_refused(
        PARTICIPANT,
        &participant_args(data, &[]),
        &[("TWOPC_COMMIT_PROBABILITY", "1.5")],
        &needles,
    );
    let yaml = write(
        &dir.path().join("c.yaml"),
        "participant:\n  commit_probability: 1.5\n",
    );
    assert_refused(
        PARTICIPANT,
        &participant_args(data, &["--config", &yaml]),
        &[],
        &needles,
    );
}

#[test]
fn an_unknown_vote_preference_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("p1");
    let data = data.to_str().expect("utf-8");
    let needles = ["vote_preference", "maybe", "commit, abort, random"];
    assert_refused(
        PARTICIPANT,
        &participant_args(data, &["--vote-preference", "maybe"]),
        &[],
        &needles,
    );
    let yaml = write(
        &dir.path().join("c.yaml"),
        "participant:\n  vote_preference: maybe\n",
    );
    assert_refused(
        PARTICIPANT,
        &participant_args(data, &["--config", &yaml]),
        &[],
        &needles,
    );
}

#[test]
fn a_port_that_is_not_a_number_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("coordinator");
    let data = data.to_str().expect("utf-8");
    assert_refused(
        COORDINATOR,
        &["--data-dir", data],
        &[("TWOPC_PORT", "abc")],
        &["port", "abc"],
    );
    assert_refused(
        COORDINATOR,
        &["--data-dir", data, "--port", "abc"],
        &[],
        &["port", "abc"],
    );
}

#[test]
fn an_unknown_yaml_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("coordinator");
    let data = data.to_str().expect("utf-8");
    let typo = write(
        &dir.path().join("typo.yaml"),
        "coordinator:\n  port: 0\n  expected_participant: 3\n",
    );
    assert_refused(
        COORDINATOR,
        &["--config", &typo, "--data-dir", data],
        &[],
        &["`expected_participant`", "typo.yaml"],
    );
    let section = write(
        &dir.path().join("section.yaml"),
        "coordinater:\n  port: 0\n",
    );
    assert_refused(
        COORDINATOR,
        &["--config", &section, "--data-dir", data],
        &[],
        &["`coordinater`"],
    );
    let nested = write(
        &dir.path().join("nested.yaml"),
        "coordinator:\n  port: 0\n  wal:\n    segment_bytes: 4096\n",
    );
    assert_refused(
        COORDINATOR,
        &["--config", &nested, "--data-dir", data],
        &[],
        &["`segment_bytes`"],
    );
    let p = dir.path().join("p1");
    let p = p.to_str().expect("utf-8");
    let participant = write(
        &dir.path().join("p.yaml"),
        "participant:\n  vote_preferences: commit\n",
    );
    assert_refused(
        PARTICIPANT,
        &participant_args(p, &["--config", &participant]),
        &[],
        &["`vote_preferences`"],
    );
}

#[test]
fn a_bogus_log_level_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("coordinator");
    let data = data.to_str().expect("utf-8");
    let needles = ["log_level", "bogus", "trace, debug, info, warn, error"];
    assert_refused(
        COORDINATOR,
        &["--port", "0", "--data-dir", data, "--log-level", "bogus"],
        &[],
        &needles,
    );
    assert_refused(
        COORDINATOR,
        &["--port", "0", "--data-dir", data],
        &[("TWOPC_LOG_LEVEL", "bogus")],
        &needles,
    );
    let yaml = write(
        &dir.path().join("c.yaml"),
        "coordinator:\n  log_level: bogus\n",
    );
    assert_refused(
        COORDINATOR,
        &["--port", "0", "--data-dir", data, "--config", &yaml],
        &[],
        &needles,
    );
    let p = dir.path().join("p1");
    let p = p.to_str().expect("utf-8");
    assert_refused(
        PARTICIPANT,
        &participant_args(p, &["--log-level", "bogus"]),
        &[],
        &needles,
    );
    // The all-in-one executable refuses the same way.
    assert_refused(
        TWOPC,
        &[
            "coordinator",
            "--port",
            "0",
            "--data-dir",
            data,
            "--log-level",
            "bogus",
        ],
        &[],
        &needles,
    );
}

#[test]
fn a_valid_flag_repairs_an_invalid_file_value() {
    // Validation runs on the merged result: a flag that overrides a bad
    // file value leaves nothing to refuse.
    let mut c = Cluster::new();
    let yaml = write(
        &c.path("c.yaml"),
        "coordinator:\n  expected_participants: 0\n",
    );
    c.start_coordinator(&["--config", &yaml, "--expected-participants", "1"], &[]);
    assert_eq!(expected_participants(&c), 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("coordinator");
    let data = data.to_str().expect("utf-8");
    assert_refused(
        COORDINATOR,
        &["--port", "0", "--data-dir", data, "--config", &yaml],
        &[],
        &["expected_participants", "0"],
    );
}

#[test]
fn a_yaml_value_of_the_wrong_type_is_refused_naming_its_key_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("coordinator");
    let data = data.to_str().expect("utf-8");
    let yaml = write(&dir.path().join("c.yaml"), "coordinator:\n  port: eighty\n");
    assert_refused(
        COORDINATOR,
        &["--data-dir", data, "--config", &yaml],
        &[],
        &[r#"coordinator.port: invalid type: string "eighty", expected u16"#],
    );
    let yaml = write(
        &dir.path().join("w.yaml"),
        "coordinator:\n  wal:\n    segment_max_bytes: lots\n",
    );
    assert_refused(
        COORDINATOR,
        &["--data-dir", data, "--config", &yaml],
        &[],
        &["coordinator.wal.segment_max_bytes: invalid type"],
    );
}

#[test]
fn a_commit_hold_longer_than_the_heartbeat_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("coordinator");
    let data = data.to_str().expect("utf-8");
    assert_refused(
        COORDINATOR,
        &["--data-dir", data, "--raft-commit-hold-ms", "101"],
        &[],
        &[
            "raft_commit_hold_ms",
            "101",
            "at most raft_heartbeat_ms (100)",
        ],
    );
    let yaml = write(
        &dir.path().join("c.yaml"),
        "coordinator:\n  raft_heartbeat_ms: 40\n  raft_commit_hold_ms: 50\n",
    );
    assert_refused(
        COORDINATOR,
        &["--data-dir", data, "--config", &yaml],
        &[],
        &[
            "raft_commit_hold_ms",
            "50",
            "at most raft_heartbeat_ms (40)",
        ],
    );
}
