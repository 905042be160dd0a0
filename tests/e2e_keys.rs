//! Keys per identity, over real processes: the coordinator holds the master
//! secret, each participant only its own derived key, clients and operators
//! theirs (`twopc keys derive`). A key proves its own identity and nothing
//! more: a client key cannot register as a participant, one participant's
//! key cannot stand in for another, only the operator key removes
//! participants, only a participant's admin key (or its own) opens its admin
//! port. And servers refuse to start set up to fail open.

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::Arc;
use twopc::client::Client;
use twopc::protocol::{Body, Decision, ParticipantId, Role, PROTOCOL_VERSION};
use twopc::security::auth::{self, Context, Identity, Prover, Secret};
use twopc::security::ClientSecurity;

const MASTER: &str = "e2e-keys-master-secret-0123456789abcdef";

/// `twopc keys derive ARGS` with the master secret in a file.
fn derive(c: &Cluster, args: &[&str]) -> String {
    let master = c.path("master");
    write_private(&master, MASTER);
    let master = master.display().to_string();
    let mut all = vec!["keys", "derive"];
    all.extend_from_slice(args);
    all.extend(["--secret-file", &master]);
    let (code, out, err) = run_twopc(&all);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("twopc-key-v1 "), "{out}");
    out.trim().to_string()
}

/// A private file holding `text`; returns its path.
fn key_file(c: &Cluster, name: &str, text: &str) -> String {
    let path = c.path(name);
    write_private(&path, text);
    path.display().to_string()
}

fn security(text: &str) -> ClientSecurity {
    ClientSecurity {
        secret: Some(Arc::new(Secret::from_text(text).expect("a valid key"))),
        tls: None,
    }
}

/// A coordinator with the master secret and participants p1, p2 each with
/// its own key and an admin port. Returns the admin addresses.
fn cluster(c: &mut Cluster) -> Vec<String> {
    let master = key_file(c, "master.secret", MASTER);
    c.start_coordinator(
        &["--expected-participants", "2", "--secret-file", &master],
        &[],
    );
    c.security = security(MASTER);
    let mut admins = Vec::new();
    for id in ["p1", "p2"] {
        let key = derive(c, &["--participant", id]);
        let file = key_file(c, &format!("{id}.key"), &key);
        let (_, admin) = c.start_participant_admin(id, &["--secret-file", &file], &[]);
        admins.push(admin);
    }
    c.wait_ready(2);
    admins
}

/// A raw hello as `(role, id)` answered with a MAC under `key`'s identity
/// `as_identity`: what a peer that holds one key but claims another sends.
fn raw_claim(
    addr: &str,
    role: Role,
    id: Option<&str>,
    key: &Secret,
    as_identity: &Identity,
) -> RawConn {
    let mut raw = RawConn::connect(addr);
    raw.send(Body::Hello {
        role,
        id: id.map(ParticipantId::from),
        protocol_version: PROTOCOL_VERSION,
    });
    let m = raw.recv().expect("challenge");
    assert_eq!(m["message_type"], "challenge", "{m}");
    let server_nonce = m["payload"]["nonce"].as_str().expect("nonce").to_string();
    let peer_nonce = auth::fresh_nonce();
    let ctx = Context {
        role,
        id: id.unwrap_or(""),
        server_nonce: &server_nonce,
        peer_nonce: &peer_nonce,
    };
    let k = key
        .key_for(as_identity)
        .expect("the key proves its own identity");
    raw.send(Body::Auth {
        mac: auth::mac(&k, Prover::Peer, &ctx),
        nonce: peer_nonce,
    });
    raw
}

#[test]
fn a_key_proves_its_own_identity_and_nothing_more() {
    let mut c = Cluster::new();
    let mut admins = cluster(&mut c);
    let addr = c.addr();
    let client_key = derive(&c, &["--client"]);
    let operator_key = derive(&c, &["--operator"]);
    let p1_key = derive(&c, &["--participant", "p1"]);
    let client = Secret::from_text(&client_key).unwrap();
    let p2 = Secret::from_text(&derive(&c, &["--participant", "p2"])).unwrap();

    // With p1 down, a client key or p2's key claiming to be p1 is refused,
    // and p1's own key is accepted.
    c.participants[0].kill9();
    c.wait_status("p1 gone", |s| connected(s) == 1);
    for (key, proving) in [
        (&client, Identity::Client),
        (&p2, Identity::Participant("p2".into())),
    ] {
        let mut raw = raw_claim(&addr, Role::Participant, Some("p1"), key, &proving);
        let why = raw.expect_error("unauthorized");
        assert!(why.contains("as participant p1 failed"), "{why}");
        raw.expect_closed();
    }
    assert_eq!(connected(&c.status()), 1, "no impostor registered");
    let p1 = Secret::from_text(&p1_key).unwrap();
    let mut raw = raw_claim(
        &addr,
        Role::Participant,
        Some("p1"),
        &p1,
        &Identity::Participant("p1".into()),
    );
    let m = raw.recv().expect("authenticated");
    assert_eq!(m["message_type"], "authenticated", "{m}");
    drop(raw);

    // A participant process given another's key refuses to start.
    let wrong = key_file(&c, "wrong.key", &p1_key);
    let mut cmd = clean_command(PARTICIPANT);
    cmd.args(["--id", "p3", "--coordinator-port", &c.port.to_string()])
        .args(["--secret-file", &wrong])
        .arg("--data-dir")
        .arg(c.path("p3"));
    let (code, _, err) = run_bounded(&mut cmd, PATIENCE);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("participant p1's key, but this process is participant p3"),
        "{err}"
    );

    // A client key submits and reads, but cannot remove a participant.
    let p1_file = key_file(&c, "p1b.key", &p1_key);
    admins[0] = c.restart_participant_admin(0, &["--secret-file", &p1_file], &[]);
    c.wait_ready(2);
    let (_, o) = block_on(async {
        let mut cl = Client::connect_with(&addr, &security(&client_key), PATIENCE).await?;
        cl.submit(req(json!({"n": 1}))).await
    })
    .expect("a client key submits");
    assert_eq!(o.decision, Decision::Commit);
    let client_file = key_file(&c, "client.key", &client_key);
    let (code, out, err) = run_twopc(&[
        "status",
        "--coordinator",
        &addr,
        "--secret-file",
        &client_file,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = run_twopc(&[
        "participants",
        "remove",
        "p2",
        "--coordinator",
        &addr,
        "--secret-file",
        &client_file,
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("needs the operator key"), "{err}");
    assert_eq!(connected(&c.status()), 2, "p2 is still a member");

    // The operator key removes (p2 is connected: refused by the core for
    // that reason, not for want of authority).
    let operator_file = key_file(&c, "operator.key", &operator_key);
    let (_, _, err) = run_twopc(&[
        "participants",
        "remove",
        "p2",
        "--coordinator",
        &addr,
        "--secret-file",
        &operator_file,
    ]);
    assert!(!err.contains("operator key"), "{err}");

    // A participant's admin port: its admin key or its own key, not a
    // client's, the operator's or another participant's.
    let admin_key = derive(&c, &["--admin", "p1"]);
    for (name, key, ok) in [
        ("admin", admin_key.as_str(), true),
        ("own", p1_key.as_str(), true),
        ("master", MASTER, true),
        ("client", client_key.as_str(), false),
        ("operator", operator_key.as_str(), false),
    ] {
        let file = key_file(&c, &format!("admin-{name}.key"), key);
        let (code, out, err) = run_twopc(&[
            "txn",
            "list",
            "--participant",
            &admins[0],
            "--json",
            "--secret-file",
            &file,
        ]);
        if ok {
            assert_eq!(code, 0, "{name}: {out}{err}");
            let v: Value = serde_json::from_str(&out).expect("JSON");
            assert!(v["total"].as_u64().is_some(), "{name}: {v}");
        } else {
            assert_ne!(code, 0, "{name}: {out}");
            assert!(
                err.contains("cannot prove the admin port of participant p1"),
                "{name}: {err}"
            );
        }
    }
}

/// Run a coordinator with `args` and `env`; it must refuse to start.
fn refused_start(c: &Cluster, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = clean_command(COORDINATOR);
    cmd.args(["--port", "0", "--data-dir"])
        .arg(c.path("refused"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let (code, _, err) = run_bounded(&mut cmd, PATIENCE);
    assert_eq!(code, 2, "{args:?}: {err}");
    err
}

#[test]
fn servers_refuse_to_start_set_up_to_fail_open() {
    let c = Cluster::new();
    let err = refused_start(&c, &[], &[("TWOPC_SECRET", "")]);
    assert!(err.contains("TWOPC_SECRET is set but empty"), "{err}");
    let err = refused_start(&c, &["--host", "0.0.0.0"], &[]);
    assert!(
        err.contains("host is 0.0.0.0, not a loopback address, and no secret is configured")
            && err.contains("--insecure"),
        "{err}"
    );
    let err = refused_start(&c, &["--admin-port", "0", "--admin-host", "0.0.0.0"], &[]);
    assert!(err.contains("admin_host is 0.0.0.0"), "{err}");
    let weak = key_file(&c, "weak", &"z".repeat(32));
    let err = refused_start(&c, &["--secret-file", &weak], &[]);
    assert!(err.contains("only 1 different characters"), "{err}");
    let open = c.path("open");
    std::fs::write(&open, MASTER).unwrap();
    let err = refused_start(&c, &["--secret-file", &open.display().to_string()], &[]);
    assert!(
        err.contains("mode 0644") && err.contains("chmod 600"),
        "{err}"
    );
    let client = key_file(
        &c,
        "client-only",
        &Secret::from_text(MASTER)
            .unwrap()
            .derive_text(&Identity::Client)
            .unwrap(),
    );
    let err = refused_start(&c, &["--secret-file", &client], &[]);
    assert!(err.contains("needs the cluster's master secret"), "{err}");

    // --insecure says it on purpose: the coordinator starts (its admin API
    // on every address, with no secret) and warns.
    let mut c = Cluster::new();
    let proc = c.start_coordinator(
        &["--admin-port", "0", "--admin-host", "0.0.0.0", "--insecure"],
        &[],
    );
    let log = wait_log(proc, 0, "admin http: no shared secret configured");
    assert!(log.contains("anyone who reaches this port"), "{log}");
}
