//! Optional TLS (rustls) for the framed TCP protocol: loading certificates
//! and keys into acceptors and connectors with errors that name the key and
//! the file, and making test certificates (`twopc gen-cert`). No protocol
//! logic: a TLS stream carries exactly the frames a TCP stream would.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::rustls;

/// The `tls:` section of a role's configuration. Servers (the coordinator,
/// a participant's admin port) use `cert_file` + `key_file`; connecting
/// sides (participants, clients) use `ca_file`. Off when unset.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain this server presents (leaf first).
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// PEM CA certificate(s) a connecting side trusts for the server.
    pub ca_file: Option<PathBuf>,
}

/// A TLS setting that cannot be used; the message names the key, the file
/// and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{key} = {path}: {problem}")]
pub struct TlsError {
    pub key: &'static str,
    pub path: String,
    pub problem: String,
}

fn tls_err(key: &'static str, path: &Path, problem: impl Into<String>) -> TlsError {
    TlsError {
        key,
        path: path.display().to_string(),
        problem: problem.into(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const MAKE_CERTS: &str = "make test certificates with `twopc gen-cert --out-dir DIR`";

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    if !path.is_file() {
        return Err(tls_err(key, path, format!("no such file; {MAKE_CERTS}")));
    }
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_err(key, path, format!("cannot read: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(key, path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(tls_err(
            key,
            path,
            format!("holds no `BEGIN CERTIFICATE` block; {MAKE_CERTS}"),
        ));
    }
    Ok(certs)
}

/// Load `cert_file` + `key_file` into an acceptor; `None` when both are
/// unset (TLS off). One without the other is an error.
pub fn acceptor(cfg: &TlsConfig) -> Result<Option<tokio_rustls::TlsAcceptor>, TlsError> {
    let (cert, key) = match (&cfg.cert_file, &cfg.key_file) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        (Some(c), None) => {
            return Err(tls_err(
                "tls.cert_file",
                c,
                "tls.key_file (--tls-key) is required with it",
            ))
        }
        (None, Some(k)) => {
            return Err(tls_err(
                "tls.key_file",
                k,
                "tls.cert_file (--tls-cert) is required with it",
            ))
        }
    };
    let certs = read_certs("tls.cert_file", cert)?;
    if !key.is_file() {
        return Err(tls_err(
            "tls.key_file",
            key,
            format!("no such file; {MAKE_CERTS}"),
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        tls_err(
            "tls.key_file",
            key,
            format!("no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("tls.cert_file", cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| {
            tls_err(
                "tls.key_file",
                key,
                format!("does not fit tls.cert_file or is unsupported: {e}"),
            )
        })?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

/// The connecting side's TLS: a connector that trusts `ca_file`.
#[derive(Clone)]
pub struct TlsClient {
    connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsClient")
    }
}

impl TlsClient {
    /// Trust the CA certificates in `ca_file`.
    pub fn from_ca_file(ca_file: &Path) -> Result<TlsClient, TlsError> {
        const KEY: &str = "tls.ca_file";
        let mut roots = rustls::RootCertStore::empty();
        for c in read_certs(KEY, ca_file)? {
            roots
                .add(c)
                .map_err(|e| tls_err(KEY, ca_file, format!("not a usable CA certificate: {e}")))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err(KEY, ca_file, e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsClient {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// `ca_file` when set.
    pub fn from_config(cfg: &TlsConfig) -> Result<Option<TlsClient>, TlsError> {
        cfg.ca_file.as_deref().map(Self::from_ca_file).transpose()
    }

    /// Run the TLS handshake over `stream` to `host` (the name or IP
    /// address the server's certificate must carry).
    pub async fn connect<S>(
        &self,
        host: &str,
        stream: S,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<S>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        self.connector.connect(name, stream).await
    }
}

/// The host part of `HOST:PORT` (IPv6 in brackets allowed).
pub fn host_of(addr: &str) -> &str {
    match addr.rsplit_once(':') {
        Some((h, _)) => h,
        None => addr,
    }
}

/// Files written by [`generate_test_certificates`].
#[derive(Debug)]
pub struct GeneratedCerts {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Make a throw-away CA and a server certificate signed by it for `names`
/// (DNS names or IP addresses), in `dir`: `ca.pem`, `server.pem`,
/// `server.key` (mode 0600). For tests and trials, not for production PKI.
pub fn generate_test_certificates(dir: &Path, names: &[String]) -> Result<GeneratedCerts, String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let fail = |what: &str, e: rcgen::Error| format!("cannot make the {what}: {e}");
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let ca_key = KeyPair::generate().map_err(|e| fail("CA key", e))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(|e| fail("CA", e))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "twopc test CA");
    let ca = ca_params
        .self_signed(&ca_key)
        .map_err(|e| fail("CA certificate", e))?;
    let key = KeyPair::generate().map_err(|e| fail("server key", e))?;
    let mut params = CertificateParams::new(names.to_vec())
        .map_err(|e| fail("server certificate (check --name values)", e))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "twopc server");
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .map_err(|e| fail("server certificate", e))?;
    let out = GeneratedCerts {
        ca_file: dir.join("ca.pem"),
        cert_file: dir.join("server.pem"),
        key_file: dir.join("server.key"),
    };
    let write = |path: &Path, text: &str, private: bool| -> Result<(), String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(if private { 0o600 } else { 0o644 })
            .open(path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        f.write_all(text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write(&out.ca_file, &ca.pem(), false)?;
    write(&out.cert_file, &cert.pem(), false)?;
    write(&out.key_file, &key.serialize_pem(), true)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_load_on_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        let g = generate_test_certificates(dir.path(), &["127.0.0.1".into(), "localhost".into()])
            .unwrap();
        let cfg = TlsConfig {
            cert_file: Some(g.cert_file.clone()),
            key_file: Some(g.key_file.clone()),
            ca_file: None,
        };
        assert!(acceptor(&cfg).unwrap().is_some());
        assert!(TlsClient::from_ca_file(&g.ca_file).is_ok());
        assert!(acceptor(&TlsConfig::default()).unwrap().is_none());
    }

    #[test]
    fn missing_and_invalid_files_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let err = TlsClient::from_ca_file(&missing).unwrap_err().to_string();
        assert!(
            err.contains("tls.ca_file") && err.contains("no such file"),
            "{err}"
        );
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "hello").unwrap();
        let err = TlsClient::from_ca_file(&junk).unwrap_err().to_string();
        assert!(err.contains("BEGIN CERTIFICATE"), "{err}");
        let half = TlsConfig {
            cert_file: Some(junk.clone()),
            ..TlsConfig::default()
        };
        let err = acceptor(&half).err().unwrap().to_string();
        assert!(err.contains("tls.key_file"), "{err}");
        let g = generate_test_certificates(dir.path(), &["localhost".into()]).unwrap();
        let bad_key = TlsConfig {
            cert_file: Some(g.cert_file),
            key_file: Some(junk),
            ca_file: None,
        };
        let err = acceptor(&bad_key).err().unwrap().to_string();
        assert!(
            err.contains("tls.key_file") && err.contains("private key"),
            "{err}"
        );
    }

    #[test]
    fn host_of_strips_the_port() {
        assert_eq!(host_of("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(host_of("[::1]:8080"), "[::1]");
        assert_eq!(host_of("example.org:1"), "example.org");
    }
}
