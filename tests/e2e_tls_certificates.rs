//! A client refuses a coordinator whose TLS certificate it must not trust,
//! even when the certificate is signed by the CA the client was given: one
//! that expired, and one that names another host. The refusal is the
//! client's own certificate check, reported with the reason and a hint.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use twopc::client::{Client, ClientError};
use twopc::security::tls::TlsClient;
use twopc::security::ClientSecurity;

/// `ca.pem`, `server.pem` and `server.key` in `dir`: a CA and a server
/// certificate it signed for `names`, valid from `not_before` to `not_after`
/// (years, 1 January).
fn certificates(dir: &Path, names: &[&str], valid: (i32, i32)) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{date_time_ymd, BasicConstraints, CertificateParams, IsCa, KeyPair};
    std::fs::create_dir_all(dir).expect("certificate dir");
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("server params");
    params.not_before = date_time_ymd(valid.0, 1, 1);
    params.not_after = date_time_ymd(valid.1, 1, 1);
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .expect("server certificate");
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca.pem()).expect("write ca.pem");
    std::fs::write(&paths.1, cert.pem()).expect("write server.pem");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write server.key");
    paths
}

/// A coordinator serving `cert`; a client trusting `ca` must refuse it,
/// in the library and in the `twopc` tool, with `reason` in the error.
fn refused(certs: (PathBuf, PathBuf, PathBuf), c: &mut Cluster, reason: &str) {
    let (ca, cert, key) = certs;
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    c.start_coordinator(
        &[
            "--expected-participants",
            "1",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
        &[],
    );
    let addr = c.addr();
    let tls = TlsClient::from_ca_file(&ca).expect("the CA loads");
    let security = ClientSecurity {
        secret: None,
        tls: Some(tls),
    };
    let err = block_on(Client::connect_with(&addr, &security, PATIENCE))
        .err()
        .expect("the client refuses the certificate");
    let msg = err.to_string();
    assert!(matches!(err, ClientError::Tls(_)), "{err:?}");
    assert!(
        msg.contains(&format!("TLS handshake with {addr} failed"))
            && msg.contains(reason)
            && msg.contains("for `127.0.0.1`"),
        "{msg}"
    );

    let ca = ca.display().to_string();
    let (code, out, err) = run_twopc(&["status", "--coordinator", &addr, "--tls-ca", &ca]);
    assert_eq!(code, 1, "stdout {out}; stderr {err}");
    assert!(
        err.contains(&format!("TLS handshake with {addr} failed")) && err.contains(reason),
        "{err}"
    );
    // The coordinator itself is fine: it still runs and serves others.
    let coordinator = c.coordinator.as_mut().expect("coordinator");
    assert!(coordinator.is_running(), "{}", coordinator.log_text());
}

#[test]
fn a_client_refuses_an_expired_certificate() {
    let mut c = Cluster::new();
    let certs = certificates(&c.path("certs"), &["127.0.0.1", "localhost"], (2000, 2001));
    refused(
        certs,
        &mut c,
        "invalid peer certificate: certificate expired",
    );
}

#[test]
fn a_client_refuses_a_certificate_for_another_host() {
    let mut c = Cluster::new();
    let certs = certificates(&c.path("certs"), &["db.example.org"], (2000, 4000));
    refused(
        certs,
        &mut c,
        "invalid peer certificate: certificate not valid for name \"127.0.0.1\"",
    );
}
