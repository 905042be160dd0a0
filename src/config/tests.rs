//! The configuration against its reference file and its error messages.

use super::*;
use std::collections::BTreeSet;

#[test]
fn defaults_validate() {
    CoordinatorConfig::default().validate().unwrap();
    ParticipantConfig::default().validate().unwrap();
}

#[test]
fn repository_config_yaml_matches_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml");
    let c: CoordinatorConfig = load_section(Some(&path)).unwrap();
    let p: ParticipantConfig = load_section(Some(&path)).unwrap();
    let json = |v: &dyn erased::Ser| v.to_json();
    assert_eq!(json(&c), json(&CoordinatorConfig::default()));
    assert_eq!(json(&p), json(&ParticipantConfig::default()));
}

mod erased {
    pub trait Ser {
        fn to_json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_json(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap()
        }
    }
}

#[test]
fn unknown_keys_are_rejected_with_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, "coordinator:\n  prot: 9000\n").unwrap();
    let err = load_section::<CoordinatorConfig>(Some(&path)).unwrap_err();
    assert!(err.to_string().contains("prot"), "{err}");
}

#[test]
fn the_http_admin_port_must_differ_from_the_protocol_port() {
    let c = CoordinatorConfig {
        port: 8080,
        admin_port: Some(8080),
        ..Default::default()
    };
    let msg = c.validate().unwrap_err().to_string();
    assert!(
        msg.contains("admin_port") && msg.contains("different"),
        "{msg}"
    );
    let c = CoordinatorConfig {
        port: 0,
        admin_port: Some(0),
        ..Default::default()
    };
    c.validate().unwrap();
    let c = CoordinatorConfig {
        admin_max_body_bytes: 10,
        ..Default::default()
    };
    let msg = c.validate().unwrap_err().to_string();
    assert!(msg.contains("admin_max_body_bytes"), "{msg}");
}

#[test]
fn the_send_buffer_holds_every_query_reply_a_connection_may_have_in_flight() {
    // 16 replies of 512 KiB, plus a frame: 9 MiB, more than 8 MiB.
    let c = CoordinatorConfig {
        query_in_flight_max: 16,
        ..Default::default()
    };
    let msg = c.validate().unwrap_err().to_string();
    assert!(
        msg.contains("send_buffer_max_bytes") && msg.contains("at least 9437184"),
        "{msg}"
    );
    let c = CoordinatorConfig {
        query_in_flight_max: 16,
        send_buffer_max_bytes: 9 * 1024 * 1024,
        ..Default::default()
    };
    c.validate().unwrap();
    let p = ParticipantConfig {
        send_buffer_max_bytes: 1024 * 1024,
        ..Default::default()
    };
    let msg = p.validate().unwrap_err().to_string();
    assert!(msg.contains("send_buffer_max_bytes"), "{msg}");
}

#[test]
fn invalid_values_name_key_and_value() {
    let c = ParticipantConfig {
        commit_probability: 1.5,
        ..Default::default()
    };
    let msg = c.validate().unwrap_err().to_string();
    assert!(
        msg.contains("commit_probability") && msg.contains("1.5") && msg.contains("between"),
        "{msg}"
    );
}

#[test]
fn a_participant_id_is_checked_as_a_key() {
    let c = ParticipantConfig {
        id: "two words".into(),
        ..Default::default()
    };
    let msg = c.validate().unwrap_err().to_string();
    assert!(
        msg.contains("`id` = two words: 1-64 characters from A-Z a-z 0-9 _ . -"),
        "{msg}"
    );
}

#[test]
fn coordinators_replace_host_and_port_and_each_must_be_host_port() {
    let single = ParticipantConfig::default();
    assert_eq!(single.coordinator_addrs(), ["127.0.0.1:8080"]);
    let args =
        participant_flags(&["--coordinators", "10.0.0.1:8080,coord-b:8081,[::1]:9"]).unwrap();
    let group = args.merged().unwrap();
    group.validate().unwrap();
    assert_eq!(
        group.coordinator_addrs(),
        ["10.0.0.1:8080", "coord-b:8081", "[::1]:9"]
    );
    let refused = |list: &[&str]| {
        let c = ParticipantConfig {
            coordinators: list.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        c.validate().unwrap_err().to_string()
    };
    for (list, shown) in [
        (&["a:1", "b"][..], "`coordinators` = b: a list of host:port"),
        (&["a:1", ""], "`coordinators` = \"\": a list of host:port"),
        (&[":80"], "`coordinators` = :80: a list of host:port"),
        (&["a:0"], "`coordinators` = a:0: a list of host:port"),
        (
            &["a:65536"],
            "`coordinators` = a:65536: a list of host:port",
        ),
        (&["a b:1"], "`coordinators` = a b:1: a list of host:port"),
        (&["a:1", "a:1"], "each member once; a:1 is listed twice"),
    ] {
        let msg = refused(list);
        assert!(msg.contains(shown), "{list:?}: {msg}");
    }
    let many: Vec<String> = (1..=10).map(|i| format!("h{i}:1")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert!(refused(&many).contains("at most 9 members"));
}

fn write_yaml(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn a_yaml_type_error_names_the_key_path() {
    let (_dir, path) = write_yaml("coordinator:\n  port: eighty\n");
    let err = load_section::<CoordinatorConfig>(Some(&path))
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with(r#"coordinator.port: invalid type: string "eighty", expected u16"#),
        "{err}"
    );
    let (_dir, path) = write_yaml("participant:\n  postgres:\n    max_connections: many\n");
    let err = load_section::<ParticipantConfig>(Some(&path))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("participant.postgres.max_connections: invalid type"),
        "{err}"
    );
    let (_dir, path) = write_yaml("participant:\n  log_level: loud\n");
    let err = load_section::<ParticipantConfig>(Some(&path))
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with(
            r#"participant.log_level: invalid value "loud": one of trace, debug, info, warn, error"#
        ),
        "{err}"
    );
}

#[test]
fn enums_read_their_names_in_any_case_and_write_them_in_lower_case() {
    let (_dir, path) = write_yaml("participant:\n  log_level: WARN\n  vote_preference: Random\n");
    let p: ParticipantConfig = load_section(Some(&path)).unwrap();
    assert_eq!(
        (p.log_level, p.vote_preference),
        (LogLevel::Warn, VotePreference::Random)
    );
    assert_eq!(p.log_level.to_string(), "warn");
    assert_eq!(
        serde_json::to_value(ResourceKind::Postgres).unwrap(),
        "postgres"
    );
}

#[derive(clap::Parser)]
struct Participant {
    #[command(flatten)]
    args: ParticipantArgs,
}

fn participant_flags(flags: &[&str]) -> Result<ParticipantArgs, String> {
    use clap::Parser;
    let argv = std::iter::once("participant").chain(flags.iter().copied());
    Participant::try_parse_from(argv)
        .map(|p| p.args)
        .map_err(|e| e.to_string())
}

#[test]
fn flags_are_named_by_section_and_key_and_set_their_key() {
    let args = participant_flags(&[
        "--id",
        "p7",
        "--vote-preference",
        "ABORT",
        "--wal-segment-max-bytes",
        "8192",
        "--unsafe-no-fsync",
        "--postgres-allowed-schemas",
        "a,b",
        "--kv-seed-file",
        "seed.json",
        "--admin-port",
        "0",
        "--insecure",
    ])
    .unwrap();
    let c = args.merged().unwrap();
    assert_eq!(c.id.0, "p7");
    assert_eq!(c.vote_preference, VotePreference::Abort);
    assert_eq!(c.wal.segment_max_bytes, 8192);
    assert!(c.wal.unsafe_no_fsync && c.insecure);
    assert_eq!(c.postgres.allowed_schemas, ["a", "b"]);
    assert_eq!(c.kv.seed_file, Some(PathBuf::from("seed.json")));
    assert_eq!(c.admin_port, Some(0));
    // Keys not given keep their value.
    assert_eq!(c.log_level, LogLevel::Info);
}

#[test]
fn only_the_connection_string_hides_its_variable_in_help() {
    use clap::CommandFactory;
    let cmd = Participant::command();
    let hidden: Vec<&str> = cmd
        .get_arguments()
        .filter(|a| a.get_env().is_some() && a.is_hide_env_values_set())
        .map(|a| a.get_id().as_str())
        .collect();
    assert_eq!(hidden, ["postgres-dsn"]);
}

#[test]
fn a_wrong_enum_flag_is_refused_naming_the_key_and_the_values() {
    let err = participant_flags(&["--resource", "redis"]).unwrap_err();
    assert!(
        err.contains("`resource` = redis: one of vote, kv, postgres"),
        "{err}"
    );
}

/// Every key line of `config.yaml`, commented-out ones (`# admin_port: 9090`)
/// included: its path (`participant.wal.segment_max_bytes`) and its comment
/// with the continuation lines below it.
fn documented_keys() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml")).unwrap();
    let mut keys: Vec<(String, String)> = Vec::new();
    let mut scope: Vec<String> = Vec::new();
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let body = line.trim_start();
        if body.starts_with('#') && indent > 8 {
            // A continuation of the comment above.
            if let Some((_, c)) = keys.last_mut() {
                c.push_str(&body[1..]);
            }
            continue;
        }
        let body = body.strip_prefix("# ").unwrap_or(body);
        let Some((key, rest)) = body.split_once(':') else {
            continue;
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let (value, comment) = rest.split_once('#').unwrap_or((rest, ""));
        scope.truncate(indent / 2);
        if value.trim().is_empty() {
            scope.push(key.to_string());
        } else {
            let path = scope
                .iter()
                .chain([&key.to_string()])
                .cloned()
                .collect::<Vec<_>>();
            keys.push((path.join("."), comment.to_string()));
        }
    }
    keys
}

/// The paths of every leaf of `v`, under `prefix`.
fn leaves(prefix: &str, v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                leaves(&format!("{prefix}.{k}"), v, out);
            }
        }
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

#[test]
fn config_yaml_documents_every_key_and_no_other() {
    let mut accepted = BTreeSet::new();
    let c = serde_json::to_value(CoordinatorConfig::default()).unwrap();
    let p = serde_json::to_value(ParticipantConfig::default()).unwrap();
    leaves("coordinator", &c, &mut accepted);
    leaves("participant", &p, &mut accepted);
    // Accepted by the file's shape, refused by `validate`: the coordinator
    // connects to nobody, so it trusts no CA.
    accepted.remove("coordinator.tls.ca_file");
    let documented: BTreeSet<String> = documented_keys().into_iter().map(|(k, _)| k).collect();
    let missing: Vec<_> = accepted.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&accepted).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "config.yaml lacks {missing:?} and documents unknown {unknown:?}"
    );
}

/// The range of a ranged key as `config.yaml` writes it: `1..10000`, or
/// with binary units for keys in bytes (`4 KiB..1 GiB`).
fn range_text(key: &keys::Key) -> Option<String> {
    let keys::Rule::Range(lo, hi) = key.rule else {
        return None;
    };
    let show = |n: u64| {
        let units = [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")];
        let unit = units
            .into_iter()
            .find(|(shift, _)| n >= 1 << shift && n.is_multiple_of(1 << shift));
        match unit {
            Some((shift, unit)) if key.name.ends_with("_bytes") => format!("{} {unit}", n >> shift),
            _ => n.to_string(),
        }
    };
    Some(format!("{}..{}", show(lo), show(hi)))
}

#[test]
fn config_yaml_states_the_range_of_every_ranged_key() {
    let docs: std::collections::BTreeMap<String, String> = documented_keys()
        .into_iter()
        .map(|(k, c)| (k, c.split_whitespace().collect()))
        .collect();
    let roles = [
        ("coordinator", CoordinatorConfig::sections()),
        ("participant", ParticipantConfig::sections()),
    ];
    let mut wrong = Vec::new();
    let mut ranged = 0;
    for (role, sections) in roles {
        for (section, keys) in sections {
            for key in keys {
                let Some(range) = range_text(key) else {
                    continue;
                };
                ranged += 1;
                let path = format!("{role}.{}", keys::path(section, key.name));
                let range: String = range.split_whitespace().collect();
                match docs.get(&path) {
                    Some(comment) if comment.contains(&range) => {}
                    _ => wrong.push(format!("{path}: {range}")),
                }
            }
        }
    }
    assert!(ranged > 40, "only {ranged} ranged keys found");
    assert!(wrong.is_empty(), "config.yaml should state: {wrong:#?}");
}

#[test]
fn colours_only_on_a_terminal_and_without_no_color() {
    use std::ffi::OsStr;
    assert!(super::colour_allowed(None, true));
    assert!(!super::colour_allowed(None, false), "a file or a pipe");
    assert!(!super::colour_allowed(Some(OsStr::new("1")), true));
    assert!(
        !super::colour_allowed(Some(OsStr::new("0")), true),
        "any value"
    );
    // no-color.org: an empty NO_COLOR does not count.
    assert!(super::colour_allowed(Some(OsStr::new("")), true));
}

#[test]
fn a_group_member_announces_an_admin_address_others_can_reach() {
    let cfg = |host: &str, port: Option<u16>| CoordinatorConfig {
        admin_host: host.into(),
        admin_port: port,
        port: 7001,
        node_id: 2,
        peers: vec!["1=10.0.0.1:7001:7101".into(), "2=10.0.0.2:7001:7101".into()],
        ..CoordinatorConfig::default()
    };
    let c = cfg("127.0.0.1", Some(9090));
    let members = c.members().unwrap();
    assert_eq!(
        c.advertised_admin(&members).as_deref(),
        Some("127.0.0.1:9090")
    );
    // Every interface: the host others reach this member at.
    let c = cfg("0.0.0.0", Some(9090));
    assert_eq!(
        c.advertised_admin(&members).as_deref(),
        Some("10.0.0.2:9090")
    );
    let c = cfg("::", Some(9090));
    assert_eq!(
        c.advertised_admin(&members).as_deref(),
        Some("10.0.0.2:9090")
    );
    let c = cfg("::1", Some(9090));
    assert_eq!(c.advertised_admin(&members).as_deref(), Some("[::1]:9090"));
    let c = cfg("admin.example", Some(9090));
    assert_eq!(
        c.advertised_admin(&members).as_deref(),
        Some("admin.example:9090")
    );
    // No admin API, or a port chosen by the system: nothing to announce.
    assert_eq!(cfg("127.0.0.1", None).advertised_admin(&members), None);
    assert_eq!(cfg("127.0.0.1", Some(0)).advertised_admin(&members), None);
}
