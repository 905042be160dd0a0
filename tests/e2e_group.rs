//! The replicated coordinator group end to end: three real coordinator
//! processes on loopback forming a Raft group, kv shard participants and
//! clients that follow the leader, and the leader killed with SIGKILL.

mod common;
mod http;

use common::run_twopc;
use serde_json::Value;

/// Twenty times: kill -9 the leader under a bank workload, time the
/// takeover, restart the killed member. No client-visible commit may be
/// lost, money is conserved, no balance goes negative, every transfer is
/// on all of its shards or none, and nothing is left in doubt (the final
/// reads take every account's lock).
#[test]
fn killing_the_leader_twenty_times_under_bank_load_loses_nothing() {
    let seed = common::seed().to_string();
    eprintln!("group leader kills: TWOPC_TEST_SEED={seed} replays this run's choices");
    let (code, out, err) = run_twopc(&[
        "bank",
        "--coordinators",
        "3",
        "--leader-kills",
        "20",
        "--transfers",
        "100000",
        "--concurrency",
        "4",
        "--seed",
        &seed,
        "--json",
    ]);
    let r: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
    let all = format!("seed {seed}\nstdout: {out}\nstderr: {err}");
    assert_eq!(code, 0, "{all}");
    assert_eq!(r["ok"], true, "{all}");
    assert_eq!(
        r["violations"].as_array().map(|v| v.len()),
        Some(0),
        "{all}"
    );
    assert_eq!(r["failover_ms"]["count"], 20, "{all}");
    let leader_kills = r["kills"].as_array().map(|k| {
        k.iter()
            .filter(|v| v.as_str().is_some_and(|s| s.ends_with("(leader)")))
            .count()
    });
    assert_eq!(leader_kills, Some(20), "{all}");
    assert!(r["committed"].as_u64().unwrap_or(0) > 0, "{all}");
    eprintln!(
        "takeovers over 20 leader kills (debug build, loaded machine): p50 {} ms, p99 {} ms, max {} ms",
        r["failover_ms"]["p50"], r["failover_ms"]["p99"], r["failover_ms"]["max"]
    );
}

/// `twopc bank --chaos` with a group: random SIGKILLs of shards and of
/// coordinator members, half of them aimed at the leader; the checker's
/// verdict must be clean.
#[test]
fn bank_chaos_with_a_group_kills_leaders_too_and_stays_atomic() {
    let seed = common::seed().to_string();
    eprintln!("group bank chaos: TWOPC_TEST_SEED={seed} replays this run's choices");
    let (code, out, err) = run_twopc(&[
        "bank",
        "--coordinators",
        "3",
        "--chaos",
        "--transfers",
        "600",
        "--seed",
        &seed,
        "--json",
    ]);
    let r: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
    let all = format!("seed {seed}\nstdout: {out}\nstderr: {err}");
    assert_eq!(code, 0, "{all}");
    assert_eq!(r["ok"], true, "{all}");
    assert_eq!(
        r["violations"].as_array().map(|v| v.len()),
        Some(0),
        "{all}"
    );
    let kills: Vec<&str> = r["kills"]
        .as_array()
        .map(|k| k.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    assert!(!kills.is_empty(), "chaos killed nothing: {all}");
    let leaders = kills.iter().filter(|k| k.ends_with("(leader)")).count();
    eprintln!("{} kills, {leaders} of them of the leader", kills.len());
    if leaders > 0 {
        assert!(r["failover_ms"]["count"].as_u64().unwrap_or(0) > 0, "{all}");
    }
}

/// `twopc demo --coordinators 3` kills the leader halfway, shows which
/// member took over, and every transaction after it still gets a decision.
#[test]
fn the_demo_with_three_coordinators_shows_a_takeover() {
    let (code, out, err) = run_twopc(&[
        "demo",
        "--coordinators",
        "3",
        "--transactions",
        "6",
        "--vote-preference",
        "commit",
    ]);
    let all = format!("stdout: {out}\nstderr: {err}");
    assert_eq!(code, 0, "{all}");
    assert!(out.contains("killing the leader"), "{all}");
    assert!(out.contains("took over in"), "{all}");
    assert!(out.contains("rejoins as a follower"), "{all}");
    assert!(out.contains("6 transactions, 6 committed"), "{all}");
}

/// Poll `f` until it returns Some, or fail naming `what`.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < common::PATIENCE,
            "{what} within {:?}",
            common::PATIENCE
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn group_json(list: &str) -> Option<Value> {
    let (code, out, _) = run_twopc(&["cluster", "status", "--coordinator", list, "--json"]);
    (code == 0)
        .then(|| serde_json::from_str(out.trim()).ok())
        .flatten()
}

fn voters(g: &Value) -> Vec<u64> {
    g["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter(|m| m["voter"] == true)
                .filter_map(|m| m["id"].as_u64())
                .collect()
        })
        .unwrap_or_default()
}

/// `twopc cluster add` brings a member started with `--join` into a running
/// group (it catches up, then votes); `twopc cluster remove` takes one out;
/// a client keeps submitting throughout and every transaction gets its one
/// outcome; bad requests are refused with what to do.
#[test]
fn members_are_added_and_removed_at_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..11).map(|_| common::free_port()).collect();
    let admin = |i: usize| format!("127.0.0.1:{}", ports[8 + i]);
    let entry = |i: usize| format!("{}=127.0.0.1:{}:{}", i + 1, ports[i], ports[4 + i]);
    let peers = (0..3).map(entry).collect::<Vec<_>>().join(",");
    let list = (0..3)
        .map(|i| format!("127.0.0.1:{}", ports[i]))
        .collect::<Vec<_>>()
        .join(",");
    let mut procs = Vec::new();
    let mut founders = Vec::new();
    for i in 0..3 {
        let args = common::member_args(i + 1, ports[i], ports[8 + i], &peers, 2, dir.path());
        procs.push(common::start_logged(
            dir.path(),
            &format!("c{}", i + 1),
            &args,
        ));
        founders.push(args);
    }
    for p in ["p1", "p2"] {
        let args: Vec<String> = [
            "participant",
            "--id",
            p,
            "--coordinators",
            &list,
            "--data-dir",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([dir.path().join(p).display().to_string()])
        .collect();
        procs.push(common::start_logged(dir.path(), p, &args));
    }
    let joining = joining_args(ports[3], &entry(3), 2, dir.path());
    procs.push(common::start_logged(dir.path(), "c4", &joining));
    let g = eventually("a leader", || {
        group_json(&list).filter(|g| g["leader"].is_u64())
    });
    assert_eq!(voters(&g), vec![1, 2, 3], "{g}");
    // A client-chosen id may be submitted again after an error (a leader
    // change at the wrong moment) and still runs at most once.
    let submit = |id: &str| {
        let members = format!("{list},127.0.0.1:{}", ports[3]);
        let mut last = String::new();
        for _ in 0..3 {
            let (code, out, err) =
                run_twopc(&["submit", "--coordinator", &members, "--txn-id", id]);
            if code == 0 {
                return;
            }
            last = format!("{out}{err}");
        }
        panic!("{id} did not commit: {last}");
    };
    // Ready: both participants registered with the leader.
    eventually("participants registered", || {
        let (code, out, _) = run_twopc(&["status", "--coordinator", &list, "--json"]);
        let s: Value = serde_json::from_str(out.trim()).ok()?;
        (code == 0 && s["state"] == "READY").then_some(())
    });
    submit("before-add");

    // Load throughout the membership changes: one client submitting
    // transactions with ids of its own, each resubmitted after any error
    // until it has an outcome.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let members = format!("{list},127.0.0.1:{}", ports[3]);
    let load = {
        let (stop, members) = (stop.clone(), members.clone());
        std::thread::spawn(move || common::block_on(keep_submitting(&members, &stop)))
    };

    // Health and metrics tell the leader and a follower apart.
    let leader = group_json(&list)
        .and_then(|g| g["leader"].as_u64())
        .unwrap() as usize;
    let follower = if leader == 1 { 2 } else { 1 };
    let health = common::http_get(&admin(leader - 1), "/health");
    assert!(health.contains("\"role\":\"leader\""), "{health}");
    let health = common::http_get(&admin(follower - 1), "/health");
    assert!(health.contains("\"role\":\"follower\""), "{health}");
    let metrics = common::http_get(&admin(leader - 1), "/metrics");
    assert!(metrics.contains("twopc_group_leader 1"), "{metrics}");
    assert!(
        metrics.contains("twopc_group_member_lag_entries{member="),
        "{metrics}"
    );
    let metrics = common::http_get(&admin(follower - 1), "/metrics");
    assert!(metrics.contains("twopc_group_leader 0"), "{metrics}");
    assert!(metrics.contains("twopc_group_has_leader 1"), "{metrics}");
    // A follower names the leader's admin API: in its health, and in a 421
    // `not_leader` to anything it does not serve itself (a submit included).
    let health: Value =
        serde_json::from_str(&common::http_get(&admin(follower - 1), "/health")).unwrap();
    assert_eq!(
        health["leader_admin"],
        admin(leader - 1).as_str(),
        "{health}"
    );
    for (method, path, body) in [
        ("GET", "/transactions", None),
        ("GET", "/participants", None),
        (
            "POST",
            "/transactions",
            Some(&br#"{"transaction_id": "at-a-follower", "data": {"n": 1}}"#[..]),
        ),
    ] {
        let r = http::http(&admin(follower - 1), method, path, body);
        assert_eq!(r.status, 421, "{method} {path}: {}", r.body);
        let v = r.json();
        assert_eq!(v["error"], "not_leader", "{method} {path}: {v}");
        assert_eq!(v["leader"], leader as u64, "{method} {path}: {v}");
        assert_eq!(
            v["leader_admin"],
            admin(leader - 1).as_str(),
            "{method} {path}: {v}"
        );
        let message = v["message"].as_str().unwrap();
        assert!(
            message.contains(&admin(leader - 1)),
            "{method} {path}: {message}"
        );
    }
    // `twopc http` given only a follower follows it to the leader.
    let (code, out, err) = run_twopc(&[
        "http",
        "POST",
        "/transactions",
        "--data",
        r#"{"transaction_id": "via-a-follower", "data": {"n": 1}}"#,
        "--coordinator-admin",
        &admin(follower - 1),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"decision\":\"commit\""), "{out}");
    assert!(err.contains("does not lead the coordinator group"), "{err}");
    // `twopc http` given every member's admin address sends to the leader.
    let admins = (0..3).map(admin).collect::<Vec<_>>().join(",");
    let (code, out, err) = run_twopc(&[
        "http",
        "POST",
        "/transactions",
        "--data",
        r#"{"transaction_id": "via-http", "data": {"n": 1}}"#,
        "--coordinator-admin",
        &admins,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"decision\":\"commit\""), "{out}");

    let (code, out, err) = run_twopc(&[
        "cluster",
        "add",
        &entry(3),
        "--coordinator",
        &list,
        "--json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let g: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(voters(&g), vec![1, 2, 3, 4], "{g}");
    submit("after-add");

    // Adding it again, or removing a member that is not there, is refused.
    let (code, _, err) = run_twopc(&["cluster", "add", &entry(3), "--coordinator", &list]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already in the group"), "{err}");
    let (code, _, err) = run_twopc(&["cluster", "remove", "9", "--coordinator", &list]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("member 9 is not in the group"), "{err}");
    let (code, _, err) = run_twopc(&["cluster", "add", "4@nowhere", "--coordinator", &list]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("ID=HOST:PORT:RAFT_PORT"), "{err}");

    // Remove a follower; the others carry on.
    let g = group_json(&list).expect("status");
    let leader = g["leader"].as_u64().unwrap();
    let follower = [1u64, 2, 3, 4].into_iter().find(|m| *m != leader).unwrap();
    let (code, out, err) = run_twopc(&[
        "cluster",
        "remove",
        &follower.to_string(),
        "--coordinator",
        &list,
        "--json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let g: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(!voters(&g).contains(&follower), "{g}");
    assert_eq!(voters(&g).len(), 3, "{g}");
    submit("after-remove");

    // The founders' `peers` matched the group they formed: no warning.
    for p in &procs[..3] {
        let log = p.log_text();
        assert!(!log.contains("does not match"), "{}: {log}", p.name);
    }
    // A founder restarted with its old `peers` after the changes is told
    // that they no longer match, and how.
    let again = [1u64, 2, 3]
        .into_iter()
        .find(|m| *m != leader && *m != follower)
        .unwrap() as usize;
    procs[again - 1].kill9();
    procs[again - 1] =
        common::start_logged(dir.path(), &format!("c{again}-again"), &founders[again - 1]);
    let warned = eventually("the warning about `peers`", || {
        let log = procs[again - 1].log_text();
        log.contains("`peers` does not match the coordinator group's membership")
            .then_some(log)
    });
    assert!(warned.contains("the group has 4=127.0.0.1:"), "{warned}");
    assert!(
        warned.contains(&format!("`peers` has {follower}=127.0.0.1:")),
        "{warned}"
    );

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let outcomes = load.join().expect("load thread");
    assert!(
        !outcomes.is_empty(),
        "no transaction ran during the changes"
    );
    // Every id the load ran has its one outcome: submitted again, it is
    // answered as a repeat with the same decision.
    common::block_on(async {
        let mut c = twopc::Client::connect_with(&members, &Default::default(), common::PATIENCE)
            .await
            .expect("connect");
        for (id, decision) in &outcomes {
            let (_, o) = c.submit(named(id)).await.expect("resubmit");
            assert!(o.repeated, "{id} ran again");
            assert_eq!(o.decision, *decision, "{id}");
        }
    });
}

/// A member added after the group's log before its snapshot was purged
/// gets the snapshot: sent in parts of a quarter frame (the smallest frames
/// allowed, 64 KiB), installed, and kept on its disk with the outcomes of
/// the transactions that ran before it joined.
#[test]
fn a_member_added_after_the_log_was_purged_gets_the_snapshot_in_parts() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..11).map(|_| common::free_port()).collect();
    let entry = |i: usize| format!("{}=127.0.0.1:{}:{}", i + 1, ports[i], ports[4 + i]);
    let peers = (0..3).map(entry).collect::<Vec<_>>().join(",");
    let list = (0..3)
        .map(|i| format!("127.0.0.1:{}", ports[i]))
        .collect::<Vec<_>>()
        .join(",");
    let small = [
        "--raft-snapshot-every",
        "10",
        "--raft-max-frame-bytes",
        "65536",
    ];
    let mut procs = Vec::new();
    for i in 0..3 {
        let mut args = common::member_args(i + 1, ports[i], ports[8 + i], &peers, 1, dir.path());
        args.extend(small.iter().map(|s| s.to_string()));
        procs.push(common::start_logged(
            dir.path(),
            &format!("c{}", i + 1),
            &args,
        ));
    }
    let p1: Vec<String> = [
        "participant",
        "--id",
        "p1",
        "--coordinators",
        &list,
        "--data-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([dir.path().join("p1").display().to_string()])
    .collect();
    procs.push(common::start_logged(dir.path(), "p1", &p1));
    eventually("participants registered", || {
        let (code, out, _) = run_twopc(&["status", "--coordinator", &list, "--json"]);
        let s: Value = serde_json::from_str(out.trim()).ok()?;
        (code == 0 && s["state"] == "READY").then_some(())
    });
    // Client-named transactions: their outcomes are kept for exactly-once
    // answers, so the snapshot grows past one part (about 12 KiB).
    const N: usize = 400;
    common::block_on(async {
        let mut c = twopc::Client::connect_with(&list, &Default::default(), common::PATIENCE)
            .await
            .expect("connect");
        for n in 0..N {
            let id = format!("before-join-{n}");
            let (_, o) = c.submit(named(&id)).await.expect("submit");
            assert_eq!(o.decision, twopc::Decision::Commit, "{id}");
        }
    });
    let g = group_json(&list).expect("status");
    let commit = g["commit_index"].as_u64().expect("commit index");
    assert!(commit > 2 * 10, "{g}");
    let mut joining = joining_args(ports[3], &entry(3), 1, dir.path());
    joining.extend(small.iter().map(|s| s.to_string()));
    procs.push(common::start_logged(dir.path(), "c4", &joining));
    let (code, out, err) = run_twopc(&["cluster", "add", &entry(3), "--coordinator", &list]);
    assert_eq!(code, 0, "{out}{err}");
    // Member 4 caught up: it applied at least what was committed before it
    // came, starting from the snapshot (the entries before it are gone).
    let g = eventually("member 4 caught up", || {
        let g = group_json(&list)?;
        let m4 = g["members"]
            .as_array()?
            .iter()
            .find(|m| m["id"] == 4)?
            .clone();
        (m4["matched_index"].as_u64()? >= commit).then_some(g)
    });
    assert_eq!(voters(&g), vec![1, 2, 3, 4], "{g}");
    let snapshot = std::fs::read(dir.path().join("c4").join("raft").join("snapshot.json"))
        .expect("member 4 keeps the snapshot it was sent");
    assert!(
        snapshot.len() > 64 * 1024 / 4,
        "a snapshot of {} bytes fits one part; the test needs several",
        snapshot.len()
    );
    let text = String::from_utf8_lossy(&snapshot);
    assert!(
        text.contains("\"before-join-0\""),
        "the first outcome is in it"
    );
    // The leader's latest snapshot (every 10 entries) holds most of them;
    // the rest came to member 4 as log entries after it.
    assert!(
        text.contains(&format!("\"before-join-{}\"", N / 2)),
        "a later outcome is in it"
    );
    let log = procs[4].log_text();
    assert!(!log.contains("ERROR"), "{log}");
}

/// The arguments of member 4 (`entry`, coordinator port `port`), started
/// with `--join` to be added to a running group, its data in `dir/c4`.
fn joining_args(port: u16, entry: &str, expected: usize, dir: &std::path::Path) -> Vec<String> {
    [
        "coordinator",
        "--port",
        &port.to_string(),
        "--peers",
        entry,
        "--node-id",
        "4",
        "--join",
        "--expected-participants",
        &expected.to_string(),
        "--data-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([dir.join("c4").display().to_string()])
    .collect()
}

fn named(id: &str) -> twopc::SubmitRequest {
    twopc::SubmitRequest {
        transaction_id: Some(twopc::TxnId(id.to_string())),
        ..Default::default()
    }
}

/// Submit `load-1`, `load-2`, ... until `stop`, each until it has an
/// outcome (at most a minute per id); the outcomes.
async fn keep_submitting(
    members: &str,
    stop: &std::sync::atomic::AtomicBool,
) -> Vec<(String, twopc::Decision)> {
    let mut outcomes = Vec::new();
    let mut client: Option<twopc::Client> = None;
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        n += 1;
        let id = format!("load-{n}");
        let start = std::time::Instant::now();
        loop {
            assert!(start.elapsed() < common::PATIENCE, "{id} got no outcome");
            if client.is_none() {
                client = twopc::Client::connect_with(
                    members,
                    &Default::default(),
                    std::time::Duration::from_secs(5),
                )
                .await
                .ok();
            }
            let Some(c) = client.as_mut() else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            match c.submit(named(&id)).await {
                Ok((_, o)) => {
                    outcomes.push((id, o.decision));
                    break;
                }
                Err(_) => {
                    client = None;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
    outcomes
}
