//! Files that hold data or secrets are private, end to end: the data
//! directories of real processes, and `twopc gen-cert`'s key and lifetime.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn data_directories_are_private_and_an_open_one_is_fixed_with_a_warning() {
    let mut c = Cluster::new();
    // A coordinator directory left open by an earlier version.
    let cdir = c.coordinator_dir();
    std::fs::create_dir(&cdir).unwrap();
    std::fs::set_permissions(&cdir, std::fs::Permissions::from_mode(0o755)).unwrap();
    c.start_coordinator(&["--expected-participants", "1"], &[]);
    c.start_participant("p1", &["--resource", "kv"], &[]);
    c.wait_ready(1);
    assert_eq!(mode(&cdir), 0o700);
    let log = c.coordinator.as_ref().unwrap().log_text();
    assert!(log.contains("made it private to this user"), "{log}");
    for dir in [cdir, c.participant_dir(0)] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
}

#[test]
fn gen_cert_writes_a_private_key_with_a_bounded_lifetime_and_refuses_links() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let out_s = out.display().to_string();
    let (code, stdout, err) = run_twopc(&["gen-cert", "--out-dir", &out_s, "--days", "30"]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("valid for 30 days"), "{stdout}");
    assert_eq!(mode(&out.join("server.key")), 0o600);
    let (code, _, err) = run_twopc(&["gen-cert", "--out-dir", &out_s, "--days", "40000"]);
    assert_ne!(code, 0, "a lifetime past ten years is refused");
    assert!(err.contains("1..=3650"), "{err}");

    let target = dir.path().join("elsewhere");
    std::fs::write(&target, "keep me").unwrap();
    std::fs::remove_file(out.join("server.key")).unwrap();
    std::os::unix::fs::symlink(&target, out.join("server.key")).unwrap();
    let (code, _, err) = run_twopc(&["gen-cert", "--out-dir", &out_s]);
    assert_eq!(code, 1);
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
}
