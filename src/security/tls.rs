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

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const MAKE_CERTS: &str = "make test certificates with `twopc gen-cert --out-dir DIR`";

pub(crate) fn read_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
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

/// Default lifetime of generated certificates, in days: a year, so that a
/// forgotten test certificate expires instead of staying trusted for good.
pub const CERT_DAYS_DEFAULT: u32 = 365;
/// Longest lifetime `gen-cert` accepts, in days (ten years).
pub const CERT_DAYS_MAX: u32 = 3_650;

/// Make a throw-away CA and a server certificate signed by it for `names`
/// (DNS names or IP addresses), in `dir`: `ca.pem`, `server.pem`,
/// `server.key`. Both certificates are valid from an hour ago (clock skew)
/// for `days` days. For tests and trials, not for production PKI.
///
/// Each file is written to a fresh temporary file in `dir` (created
/// exclusively with mode 0600, so never through a link and never readable
/// by others, even briefly), then renamed into place; the key stays 0600,
/// the certificates become 0644. A path that is a symbolic link is refused.
pub fn generate_test_certificates(
    dir: &Path,
    names: &[String],
    days: u32,
) -> Result<GeneratedCerts, GenCertError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    if !(1..=CERT_DAYS_MAX).contains(&days) {
        return Err(GenCertError::Lifetime { days });
    }
    let fail = |what: &'static str, e: rcgen::Error| GenCertError::Make { what, source: e };
    std::fs::create_dir_all(dir).map_err(|e| GenCertError::CreateDir {
        dir: dir.to_path_buf(),
        source: e,
    })?;
    let out = GeneratedCerts {
        ca_file: dir.join("ca.pem"),
        cert_file: dir.join("server.pem"),
        key_file: dir.join("server.key"),
    };
    for path in [&out.ca_file, &out.cert_file, &out.key_file] {
        refuse_symlink(path)?;
    }
    let ca_key = KeyPair::generate().map_err(|e| fail("CA key", e))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(|e| fail("CA", e))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "twopc test CA");
    set_validity(&mut ca_params, days);
    let ca = ca_params
        .self_signed(&ca_key)
        .map_err(|e| fail("CA certificate", e))?;
    let key = KeyPair::generate().map_err(|e| fail("server key", e))?;
    let mut params = CertificateParams::new(names.to_vec())
        .map_err(|e| fail("server certificate (check --name values)", e))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "twopc server");
    set_validity(&mut params, days);
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .map_err(|e| fail("server certificate", e))?;
    write_private_then_rename(dir, &out.key_file, &key.serialize_pem(), 0o600)?;
    write_private_then_rename(dir, &out.ca_file, &ca.pem(), 0o644)?;
    write_private_then_rename(dir, &out.cert_file, &cert.pem(), 0o644)?;
    Ok(out)
}

/// Valid from an hour ago (clock skew) for `days` days.
fn set_validity(params: &mut rcgen::CertificateParams, days: u32) {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let skew = std::time::Duration::from_secs(3600);
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + since_epoch.saturating_sub(skew);
    params.not_after = params.not_before + std::time::Duration::from_secs(u64::from(days) * 86_400);
}

/// Why `gen-cert` made no certificates.
#[derive(Debug, thiserror::Error)]
pub enum GenCertError {
    #[error("a lifetime of {days} days: use 1..={CERT_DAYS_MAX}")]
    Lifetime { days: u32 },
    #[error("cannot create {}: {source}", dir.display())]
    CreateDir {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make the {what}: {source}")]
    Make {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("{} is a symbolic link; refusing to write through it (remove it first)", path.display())]
    Symlink { path: std::path::PathBuf },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

fn refuse_symlink(path: &Path) -> Result<(), GenCertError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(GenCertError::Symlink {
            path: path.to_path_buf(),
        }),
        _ => Ok(()),
    }
}

/// Write `text` to a new temporary file in `dir` (exclusive create, mode
/// 0600), set `mode`, make it durable and rename it to `path`.
fn write_private_then_rename(
    dir: &Path,
    path: &Path,
    text: &str,
    mode: u32,
) -> Result<(), GenCertError> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let cannot = |e: std::io::Error| GenCertError::Write {
        path: path.to_path_buf(),
        source: e,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".twopc-gen-cert-")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(cannot)?;
    tmp.write_all(text.as_bytes()).map_err(cannot)?;
    if mode != 0o600 {
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(cannot)?;
    }
    tmp.as_file().sync_all().map_err(cannot)?;
    // Checked again just before the rename (it replaces a link rather than
    // following it, but a link there means someone expects it to be used).
    refuse_symlink(path)?;
    tmp.persist(path).map_err(|e| cannot(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_load_on_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        let g = generate_test_certificates(
            dir.path(),
            &["127.0.0.1".into(), "localhost".into()],
            CERT_DAYS_DEFAULT,
        )
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
        let g = generate_test_certificates(dir.path(), &["localhost".into()], CERT_DAYS_DEFAULT)
            .unwrap();
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

    /// The certificate's `notAfter` in seconds since the epoch, from its
    /// DER: the second time value (UTCTime or GeneralizedTime) in it.
    fn not_after_secs(pem: &str) -> i64 {
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
            .map(|c: CertificateDer| c.to_vec())
            .unwrap();
        let mut times = Vec::new();
        let mut i = 0;
        while i + 2 < der.len() && times.len() < 2 {
            let (tag, len) = (der[i], der[i + 1] as usize);
            // A time is digits ending in 'Z'; the same two header bytes
            // can occur by chance in the serial number or the key.
            let body = der.get(i + 2..i + 2 + len).unwrap_or_default();
            let is_time = body.len() == len
                && body.last() == Some(&b'Z')
                && body[..len - 1].iter().all(u8::is_ascii_digit);
            if is_time && ((tag == 0x17 && len == 13) || (tag == 0x18 && len == 15)) {
                times.push(String::from_utf8_lossy(body).into_owned());
                i += 2 + len;
            } else {
                i += 1;
            }
        }
        let t = &times[1];
        let (year, rest) = if t.len() == 13 {
            (2000 + t[..2].parse::<i64>().unwrap(), &t[2..])
        } else {
            (t[..4].parse::<i64>().unwrap(), &t[4..])
        };
        let n = |a: usize| rest[a..a + 2].parse::<i64>().unwrap();
        // Days from the civil date (proleptic Gregorian).
        let (y, m, d) = (if n(0) <= 2 { year - 1 } else { year }, n(0), n(2));
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        days * 86_400 + n(4) * 3600 + n(6) * 60 + n(8)
    }

    #[test]
    fn certificates_expire_after_the_lifetime_asked_for() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        for days in [CERT_DAYS_DEFAULT, 30] {
            let dir = tempfile::tempdir().unwrap();
            let g = generate_test_certificates(dir.path(), &["localhost".into()], days).unwrap();
            for f in [&g.ca_file, &g.cert_file] {
                let end = not_after_secs(&std::fs::read_to_string(f).unwrap());
                let expected = now - 3600 + i64::from(days) * 86_400;
                assert!(
                    (end - expected).abs() < 120,
                    "{}: not after {end}, expected about {expected}",
                    f.display()
                );
            }
        }
        let dir = tempfile::tempdir().unwrap();
        for bad in [0, CERT_DAYS_MAX + 1] {
            assert!(generate_test_certificates(dir.path(), &[], bad).is_err());
        }
    }

    #[test]
    fn key_files_are_private_from_the_start_and_links_are_refused() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("server.key");
        // A key left readable by an earlier run is replaced, not reused.
        std::fs::write(&key, "old").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let old_inode = std::fs::metadata(&key).unwrap().ino();
        let g = generate_test_certificates(dir.path(), &["localhost".into()], 1).unwrap();
        let meta = std::fs::metadata(&g.key_file).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_ne!(meta.ino(), old_inode, "a fresh file, not the old one");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&g.ca_file), mode(&g.cert_file)), (0o644, 0o644));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".twopc"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("target");
        std::fs::write(&target, "untouched").unwrap();
        let linked = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&target, linked.path().join("server.key")).unwrap();
        let err = generate_test_certificates(linked.path(), &["localhost".into()], 1).unwrap_err();
        assert!(
            matches!(&err, GenCertError::Symlink { path } if path.ends_with("server.key")),
            "{err}"
        );
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
    }

    #[test]
    fn host_of_strips_the_port() {
        assert_eq!(host_of("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(host_of("[::1]:8080"), "[::1]");
        assert_eq!(host_of("example.org:1"), "example.org");
    }
}
