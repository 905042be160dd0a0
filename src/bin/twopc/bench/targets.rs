//! The performance targets of README "Performance", judged from the runs of
//! one `twopc bench` (and an earlier report given with `--compare`, and the
//! skeleton's throughput given with `--skeleton-tps`): each is met, not
//! met, or not judged by these runs, with what would judge it. Pure:
//! reports in, verdicts out; nothing here measures.

use serde_json::{json, Value};

/// Throughput at a higher concurrency than the peak's may fall at most this
/// far below the peak (0.9: not more than 10%).
pub const CURVE_FLOOR_RATIO: f64 = 0.9;

/// The concurrencies of the curve target.
pub const CURVE_TARGET: [u64; 6] = [1, 4, 16, 64, 256, 1024];

/// The concurrency the throughput, CPU, writes and comparison targets are
/// stated at.
const AT: u64 = 64;

/// Settings two runs must share to be compared (besides the one compared).
const SAME_SETTINGS: [&str; 7] = [
    "participants",
    "participants_per_transaction",
    "resource",
    "unsafe_no_fsync",
    "setsid",
    "server_runtime",
    "per_connection",
];

/// The peak of a throughput curve, given as (concurrency, throughput) in
/// rising concurrency, and the lowest point at a higher concurrency as its
/// index and ratio to the peak (`None` when the peak is the last point).
pub fn peak_and_fall(points: &[(u64, f64)]) -> Option<(usize, Option<(usize, f64)>)> {
    let peak = (0..points.len()).max_by(|&a, &b| points[a].1.total_cmp(&points[b].1))?;
    let peak_tps = points[peak].1;
    let worst = (peak + 1..points.len())
        .map(|i| {
            (
                i,
                if peak_tps > 0.0 {
                    points[i].1 / peak_tps
                } else {
                    1.0
                },
            )
        })
        .min_by(|a, b| a.1.total_cmp(&b.1));
    Some((peak, worst))
}

/// The verdict on the curve of these runs (any order of concurrency).
pub fn curve_verdict(runs: &[Value]) -> Value {
    let mut points: Vec<(u64, f64)> = runs
        .iter()
        .map(|r| {
            (
                r["concurrency"].as_u64().unwrap_or(0),
                r["throughput_tps"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    points.sort_by_key(|p| p.0);
    let Some((peak, worst)) = peak_and_fall(&points) else {
        return Value::Null;
    };
    let lowest = worst.map_or(1.0, |w| w.1);
    json!({
        "points": points.iter().map(|(c, t)| json!({"concurrency": c, "throughput_tps": t})).collect::<Vec<_>>(),
        "peak_concurrency": points[peak].0,
        "peak_tps": points[peak].1,
        "lowest_after_peak_ratio": lowest,
        "lowest_after_peak_concurrency": worst.map(|w| points[w.0].0),
        "never_falls_more_than_10_percent": lowest >= CURVE_FLOOR_RATIO,
    })
}

/// The runs of a report: those of a curve, or the report itself.
fn runs_of(report: &Value) -> Vec<&Value> {
    match report["curve"].as_array() {
        Some(runs) => runs.iter().collect(),
        None if report.is_object() => vec![report],
        None => Vec::new(),
    }
}

/// One target's verdict.
fn verdict(
    id: &str,
    target: &str,
    measured: Option<f64>,
    met: Option<bool>,
    note: String,
) -> Value {
    json!({ "id": id, "target": target, "measured": measured, "met": met, "note": note })
}

/// Judged when `measured` is known: met when `ok` holds for it.
fn judged(
    id: &str,
    target: &str,
    measured: Option<f64>,
    ok: impl Fn(f64) -> bool,
    judged_note: String,
    unjudged_note: &str,
) -> Value {
    match measured {
        Some(m) => verdict(id, target, Some(m), Some(ok(m)), judged_note),
        None => verdict(id, target, None, None, unjudged_note.into()),
    }
}

/// The run at `concurrency` among `runs`.
fn at<'a>(runs: &[&'a Value], concurrency: u64) -> Option<&'a Value> {
    runs.iter()
        .copied()
        .find(|r| r["concurrency"].as_u64() == Some(concurrency))
}

/// Two runs at `concurrency` that differ in `key` only (`a` has `a_val`, `b`
/// has `b_val`), from all the runs given.
fn pair<'a>(
    all: &[&'a Value],
    key: &str,
    a_val: &Value,
    b_val: &Value,
    concurrency: u64,
) -> Option<(&'a Value, &'a Value)> {
    let at_c = |r: &&&Value| r["concurrency"].as_u64() == Some(concurrency);
    let same = |a: &Value, b: &Value| {
        SAME_SETTINGS
            .iter()
            .filter(|k| **k != key)
            .all(|k| a[*k] == b[*k])
    };
    for a in all.iter().filter(at_c).filter(|r| &r[key] == a_val) {
        if let Some(b) = all
            .iter()
            .filter(at_c)
            .find(|r| &r[key] == b_val && same(a, r))
        {
            return Some((a, b));
        }
    }
    None
}

fn tps(r: &Value) -> Option<f64> {
    r["throughput_tps"].as_f64().filter(|t| *t > 0.0)
}

/// A ratio of the throughputs of a pair, with the note that says which.
fn ratio_of(p: Option<(&Value, &Value)>, what: &str) -> (Option<f64>, String) {
    match p.and_then(|(a, b)| Some((tps(a)?, tps(b)?))) {
        Some((a, b)) => (Some(a / b), format!("{what}: {a:.0} / {b:.0} txn/s")),
        None => (None, String::new()),
    }
}

/// Every target, judged from `runs` (this bench's), the curve verdict, an
/// earlier report and the skeleton's throughput.
pub fn judge(
    runs: &[Value],
    curve: Option<&Value>,
    compare: Option<&Value>,
    skeleton_tps: &[(usize, f64)],
) -> Value {
    let mine: Vec<&Value> = runs.iter().collect();
    let mut all = mine.clone();
    if let Some(c) = compare {
        all.extend(runs_of(c));
    }
    let mut out = Vec::new();
    for c in [64u64, 256] {
        let run = at(&mine, c);
        let skel = skeleton_tps
            .iter()
            .find(|(sc, _)| *sc as u64 == c)
            .map(|s| s.1);
        let ratio = run.and_then(tps).zip(skel).map(|(t, s)| t / s);
        out.push(judged(
            &format!("throughput_vs_skeleton_{c}"),
            &format!("throughput at {c} in flight >= 1.3x the minimal 2PC skeleton's"),
            ratio,
            |r| r >= 1.3,
            format!("ratio to the skeleton's {:.0} txn/s", skel.unwrap_or(0.0)),
            &format!("needs a run at {c} in flight and the skeleton's throughput there (--skeleton-tps {c}=TPS)"),
        ));
    }
    let run64 = at(&mine, AT).filter(|r| r["participants"] == 3);
    out.push(judged(
        "cpu_per_txn",
        "CPU per committed transaction, coordinator + 3 participants, at 64 in flight <= 70 µs",
        run64.and_then(|r| r["cluster_cpu_us_per_txn"].as_f64()),
        |us| us <= 70.0,
        "µs, /proc/PID/stat user + system".into(),
        "needs a run with 3 participants at 64 in flight whose processes are watched (--local 3, or --pid)",
    ));
    out.push(judged(
        "coordinator_writes_per_txn",
        "coordinator write system calls per transaction at 64 in flight <= 1.0",
        at(&mine, AT).and_then(|r| r["processes"][0]["writes_per_txn"].as_f64()),
        |w| w <= 1.0,
        "write/writev calls, /proc/PID/io syscw".into(),
        "needs a run at 64 in flight with the coordinator watched (--local, or --pid coordinator=PID first)",
    ));
    let relative: [(&str, &str, &str, Value, Value, f64, &str); 3] = [
        (
            "durable_vs_no_fsync",
            "durable throughput at 64 in flight >= 0.9x --unsafe-no-fsync",
            "unsafe_no_fsync",
            json!(false),
            json!(true),
            0.9,
            "durable / no fsync",
        ),
        (
            "setsid_vs_same_session",
            "throughput with --setsid at 64 in flight >= 0.85x the same session's",
            "setsid",
            json!(true),
            json!(false),
            0.85,
            "setsid / same session",
        ),
        (
            "kv_vs_vote",
            "throughput with --resource kv at 64 in flight >= 0.8x vote",
            "resource",
            json!("kv"),
            json!("vote"),
            0.8,
            "kv / vote",
        ),
    ];
    for (id, target, key, a, b, min, what) in relative {
        let (ratio, note) = ratio_of(pair(&all, key, &a, &b, AT), what);
        out.push(judged(
            id,
            target,
            ratio,
            |r| r >= min,
            note,
            &format!("needs two runs at 64 in flight that differ only in {key} ({a} and {b}): run one with --json > FILE, the other with --compare FILE"),
        ));
    }
    let one = at(&mine, 1).filter(|r| r["calibration"].is_object());
    for (id, key, max) in [
        ("latency_p50", "p50_over_floor", 1.3),
        ("latency_p99", "p99_over_floor", 3.0),
    ] {
        let pct = &key[..3];
        out.push(judged(
            id,
            &format!("latency {pct} at 1 in flight <= {max}x the floor (--calibrate)"),
            one.and_then(|r| r["calibration"][key].as_f64()),
            |x| x <= max,
            "multiple of the floor measured by --calibrate".into(),
            "needs a run at 1 in flight with --calibrate",
        ));
    }
    let full_curve = curve.filter(|v| {
        let cs: Vec<u64> = v["points"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["concurrency"].as_u64())
            .collect();
        CURVE_TARGET.iter().all(|c| cs.contains(c))
    });
    out.push(judged(
        "curve",
        "throughput over 1,4,16,64,256,1024 in flight never falls > 10% below its peak at a higher concurrency",
        full_curve.and_then(|v| v["lowest_after_peak_ratio"].as_f64()),
        |r| r >= CURVE_FLOOR_RATIO,
        "lowest throughput past the peak / the peak".into(),
        "needs --curve 1,4,16,64,256,1024",
    ));
    let wide = mine
        .iter()
        .find(|r| r["participants_per_transaction"].as_u64() >= Some(64));
    out.push(match wide {
        Some(r) => {
            let clean = r["commits"].as_u64() > Some(0)
                && r["aborts"] == 0
                && r["errors"].as_object().is_some_and(|e| e.is_empty());
            verdict(
                "participants_64",
                "transactions over 64 participants commit",
                r["commits"].as_f64(),
                Some(clean),
                format!(
                    "committed transactions over {} participants ({} aborted, errors {})",
                    r["participants_per_transaction"], r["aborts"], r["errors"]
                ),
            )
        }
        None => verdict(
            "participants_64",
            "transactions over 64 participants commit",
            None,
            None,
            "needs a run whose transactions touch 64 participants (--local 64)".into(),
        ),
    });
    let big = mine
        .iter()
        .find(|r| r["concurrency"].as_u64() >= Some(10_000));
    out.push(judged(
        "memory_per_txn_in_flight",
        "coordinator memory per transaction in flight at 10000 in flight <= 4 KiB",
        big.and_then(|r| r["coordinator_rss"]["bytes_per_txn_in_flight"].as_f64()),
        |b| b <= 4096.0,
        "bytes: resident growth from idle to peak / transactions in flight (an upper bound: it holds the client connections too)".into(),
        "needs a run at 10000 in flight with the coordinator watched (--local, or --pid coordinator=PID first)",
    ));
    Value::Array(out)
}

/// The curve as a table, and its verdict.
pub fn print_curve(runs: &[Value], verdict: &Value) {
    println!("curve");
    println!(
        "  {:>9}  {:>9}  {:>8}  {:>8}",
        "in flight", "txn/s", "p50 ms", "p99 ms"
    );
    for r in runs {
        let ms = |k: &str| crate::commands::fmt_ms(r["latency_ms"][k].as_f64().unwrap_or(0.0));
        println!(
            "  {:>9}  {:>9.0}  {:>8}  {:>8}",
            r["concurrency"],
            r["throughput_tps"].as_f64().unwrap_or(0.0),
            ms("p50"),
            ms("p99")
        );
    }
    if verdict.is_object() {
        println!(
            "  peak {:.0} txn/s at {} in flight; lowest past it {:.2}x the peak: {}",
            verdict["peak_tps"].as_f64().unwrap_or(0.0),
            verdict["peak_concurrency"],
            verdict["lowest_after_peak_ratio"].as_f64().unwrap_or(0.0),
            if verdict["never_falls_more_than_10_percent"] == true {
                "never falls more than 10%"
            } else {
                "FALLS more than 10%"
            }
        );
    }
}

/// One line per target: met, NOT MET, or not judged and what would judge it.
pub fn print_targets(targets: &Value) {
    println!("targets (judged from this run where it holds what a target needs)");
    for t in targets.as_array().into_iter().flatten() {
        let mark = match t["met"].as_bool() {
            Some(true) => "met    ",
            Some(false) => "NOT MET",
            None => "-      ",
        };
        let measured = match t["measured"].as_f64() {
            Some(m) if m.abs() >= 100.0 => format!("{m:.0}"),
            Some(m) => format!("{m:.3}"),
            None => "not judged".into(),
        };
        println!(
            "  {mark}  {}: {measured} ({})",
            t["target"].as_str().unwrap_or("?"),
            t["note"].as_str().unwrap_or("")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(c: u64, tps: f64) -> Value {
        json!({
            "concurrency": c, "throughput_tps": tps, "participants": 3,
            "participants_per_transaction": 3, "resource": "vote",
            "unsafe_no_fsync": false, "setsid": false, "server_runtime": null,
            "per_connection": 16, "commits": 10, "aborts": 0, "errors": {},
        })
    }

    fn find<'a>(v: &'a Value, id: &str) -> &'a Value {
        v.as_array()
            .and_then(|a| a.iter().find(|t| t["id"] == id))
            .unwrap_or_else(|| panic!("no target {id} in {v}"))
    }

    #[test]
    fn the_curve_is_judged_on_the_fall_past_its_peak() {
        let pts = [
            (1, 100.0),
            (4, 400.0),
            (16, 1000.0),
            (64, 950.0),
            (256, 880.0),
        ];
        assert_eq!(peak_and_fall(&pts), Some((2, Some((4, 0.88)))));
        assert_eq!(peak_and_fall(&[(1, 1.0), (2, 2.0)]), Some((1, None)));
        assert_eq!(peak_and_fall(&[]), None);
        // Runs in any order are sorted by concurrency first.
        let v = curve_verdict(&[run(64, 950.0), run(16, 1000.0), run(1, 100.0)]);
        assert_eq!(v["peak_concurrency"], 16);
        assert_eq!(v["lowest_after_peak_ratio"], 0.95);
        assert_eq!(v["never_falls_more_than_10_percent"], true);
        let v = curve_verdict(&[run(16, 1000.0), run(64, 899.0)]);
        assert_eq!(v["never_falls_more_than_10_percent"], false);
    }

    #[test]
    fn a_single_run_judges_only_what_it_holds() {
        let mut r = run(64, 1000.0);
        r["cluster_cpu_us_per_txn"] = json!(80.0);
        r["processes"] = json!([{"name": "coordinator", "writes_per_txn": 0.5}]);
        let t = judge(&[r], None, None, &[(64, 800.0)]);
        assert_eq!(find(&t, "throughput_vs_skeleton_64")["met"], false);
        assert_eq!(find(&t, "throughput_vs_skeleton_64")["measured"], 1.25);
        assert_eq!(find(&t, "throughput_vs_skeleton_256")["met"], Value::Null);
        assert_eq!(find(&t, "cpu_per_txn")["met"], false);
        assert_eq!(find(&t, "coordinator_writes_per_txn")["met"], true);
        for id in [
            "durable_vs_no_fsync",
            "setsid_vs_same_session",
            "kv_vs_vote",
            "latency_p50",
            "latency_p99",
            "curve",
            "participants_64",
            "memory_per_txn_in_flight",
        ] {
            assert_eq!(find(&t, id)["met"], Value::Null, "{id}");
            assert!(
                find(&t, id)["note"].as_str().unwrap().starts_with("needs"),
                "{id}"
            );
        }
    }

    #[test]
    fn comparisons_pair_runs_that_differ_in_one_setting_only() {
        let durable = run(64, 950.0);
        let mut no_fsync = run(64, 1000.0);
        no_fsync["unsafe_no_fsync"] = json!(true);
        let t = judge(std::slice::from_ref(&durable), None, Some(&no_fsync), &[]);
        assert_eq!(find(&t, "durable_vs_no_fsync")["measured"], 0.95);
        assert_eq!(find(&t, "durable_vs_no_fsync")["met"], true);
        // Either run may be the earlier one.
        let t = judge(std::slice::from_ref(&no_fsync), None, Some(&durable), &[]);
        assert_eq!(find(&t, "durable_vs_no_fsync")["met"], true);
        // Another difference besides makes them incomparable.
        no_fsync["participants"] = json!(4);
        let t = judge(&[durable], None, Some(&no_fsync), &[]);
        assert_eq!(find(&t, "durable_vs_no_fsync")["met"], Value::Null);
        let mut kv = run(64, 700.0);
        kv["resource"] = json!("kv");
        let t = judge(
            &[kv],
            None,
            Some(&json!({"curve": [run(1, 10.0), run(64, 1000.0)]})),
            &[],
        );
        assert_eq!(find(&t, "kv_vs_vote")["measured"], 0.7);
        assert_eq!(find(&t, "kv_vs_vote")["met"], false);
    }

    #[test]
    fn latency_width_memory_and_curve_are_judged_from_their_runs() {
        let mut one = run(1, 900.0);
        one["calibration"] = json!({"p50_over_floor": 1.2, "p99_over_floor": 3.5});
        let mut wide = run(4, 50.0);
        wide["participants"] = json!(64);
        wide["participants_per_transaction"] = json!(64);
        let mut big = run(10_000, 500.0);
        big["coordinator_rss"] = json!({"bytes_per_txn_in_flight": 3000.0});
        let runs: Vec<Value> = [one, wide, big]
            .into_iter()
            .chain(CURVE_TARGET.iter().skip(1).map(|c| run(*c, 1000.0)))
            .collect();
        let curve = curve_verdict(&runs);
        let t = judge(&runs, Some(&curve), None, &[]);
        assert_eq!(find(&t, "latency_p50")["met"], true);
        assert_eq!(find(&t, "latency_p99")["met"], false);
        assert_eq!(find(&t, "participants_64")["met"], true);
        assert_eq!(find(&t, "memory_per_txn_in_flight")["met"], true);
        assert_eq!(find(&t, "curve")["met"], false, "{curve}");
        // A curve without the target's concurrencies is not judged.
        let part = curve_verdict(&runs[..2]);
        let t = judge(&runs[..2], Some(&part), None, &[]);
        assert_eq!(find(&t, "curve")["met"], Value::Null);
    }
}
