//! Access control for every TCP peer: the shared secret and its
//! challenge-response (`auth`, pure), TLS (`tls`), and the settings each
//! side runs with. Authentication happens in the connection layer, before
//! any message reaches a protocol core.
//!
//! Without a secret, authentication is off: anyone who can reach a port
//! can run transactions and resolve them by hand. That is meant for
//! loopback and demos only.

pub mod auth;
pub mod http_auth;
pub mod tls;

use auth::{FailureLog, LogDecision, Secret};
use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Environment variable holding the secret itself (not a file name).
pub const SECRET_ENV: &str = "TWOPC_SECRET";

/// Resolve the shared secret from `secret_file` or `TWOPC_SECRET` (`env`);
/// `None` when neither is set. Errors name the setting and what to do, and
/// never include the secret.
pub fn load_secret(
    secret_file: Option<&Path>,
    env: Option<String>,
) -> Result<Option<Arc<Secret>>, SecretLoadError> {
    if env.as_deref().is_some_and(|v| v.trim().is_empty()) {
        return Err(SecretLoadError::EmptyEnv);
    }
    let text = match (secret_file, env) {
        (Some(path), Some(_)) => return Err(SecretLoadError::Both(path.to_path_buf())),
        (Some(path), None) => private_file_text(path).map_err(|source| {
            let path = path.to_path_buf();
            match source.kind() {
                std::io::ErrorKind::PermissionDenied => {
                    SecretLoadError::FileRefused { path, source }
                }
                _ => SecretLoadError::FileUnreadable { path, source },
            }
        })?,
        (None, Some(v)) => v,
        (None, None) => return Ok(None),
    };
    let origin = secret_file
        .map(|p| format!("secret_file {}", p.display()))
        .unwrap_or_else(|| SECRET_ENV.to_string());
    Secret::from_text(&text)
        .map(|s| Some(Arc::new(s)))
        .map_err(|source| SecretLoadError::Secret { origin, source })
}

/// Why the shared secret could not be loaded. The text names the setting
/// and what to do, and never holds the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretLoadError {
    #[error(
        "{SECRET_ENV} is set but empty; set it to the secret (or a derived key), \
         or unset it to run without authentication"
    )]
    EmptyEnv,
    /// Both `secret_file` (this path) and the variable are set.
    #[error("both secret_file ({}) and {SECRET_ENV} are set; use one of them", .0.display())]
    Both(PathBuf),
    /// The file is readable by group or others (the source says how to fix
    /// it), or the process may not read it.
    #[error("secret_file {}: refused: {source}", path.display())]
    FileRefused {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "secret_file {}: cannot read it ({source}); make one with \
         `(umask 077; openssl rand -hex 32 > {})`",
        path.display(),
        path.display()
    )]
    FileUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is no secret; `origin` is `secret_file PATH` or the variable.
    #[error("{origin}: {source}")]
    Secret {
        origin: String,
        #[source]
        source: auth::SecretError,
    },
}

/// Read a file that holds a secret, refusing one that group or others may
/// read or write (a secret others can read is no secret).
fn private_file_text(path: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "it is accessible to group or others (mode {:04o}); run `chmod 600 {}`",
                mode & 0o7777,
                path.display()
            ),
        ));
    }
    std::fs::read_to_string(path)
}

/// Refuse a server set up to fail open or with the wrong key, unless
/// `insecure` says so explicitly: no secret on an address other than
/// loopback, a weak master secret. `binds` are the `(setting, host)` pairs
/// the server listens on; `own` is the identity whose key the server may
/// hold instead of the master secret (`None`: it needs the master secret).
pub(crate) fn check_server_setup(
    secret: Option<&Secret>,
    binds: &[(&str, &str)],
    own: Option<&auth::Identity>,
    insecure: bool,
) -> Result<(), UnsafeSetup> {
    if let Some(secret) = secret {
        match (secret.identity(), own) {
            (None, _) => {}
            (Some(have), Some(own)) if have == own => {}
            (Some(have), Some(own)) => {
                return Err(UnsafeSetup::OthersKey {
                    held: have.clone(),
                    own: own.clone(),
                })
            }
            (Some(have), None) => return Err(UnsafeSetup::NotMaster(have.clone())),
        }
    }
    if insecure {
        return Ok(());
    }
    match secret {
        Some(s) => {
            if let Some(why) = s.weakness() {
                return Err(UnsafeSetup::WeakSecret(why));
            }
        }
        None => {
            for (setting, host) in binds {
                if !is_loopback(host) {
                    return Err(UnsafeSetup::OpenBind {
                        setting: setting.to_string(),
                        host: host.to_string(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// A server set up to fail open or with the wrong key (see
/// [`check_server_setup`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnsafeSetup {
    /// The secret is another identity's derived key.
    #[error(
        "the secret is {held}'s key, but this process is {own}; give it its own key \
         (`twopc keys derive`) or the master secret"
    )]
    OthersKey {
        held: auth::Identity,
        own: auth::Identity,
    },
    /// The coordinator holds a derived key (this identity's).
    #[error(
        "the secret is {0}'s key; the coordinator needs the cluster's master \
         secret to check every peer's key"
    )]
    NotMaster(auth::Identity),
    /// A weak master secret; holds [`Secret::weakness`]'s sentence.
    #[error("{0}; or pass --insecure to run with it anyway")]
    WeakSecret(String),
    /// No secret, and `setting` binds to `host`, which is not loopback.
    #[error(
        "{setting} is {host}, not a loopback address, and no secret is configured: \
         anyone who reaches it could run and resolve transactions. Set secret_file \
         (or TWOPC_SECRET), bind to 127.0.0.1, or pass --insecure to run open anyway"
    )]
    OpenBind { setting: String, host: String },
}

/// Is `host` a loopback address or name?
pub(crate) fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The secret from the process environment (`TWOPC_SECRET`).
pub fn secret_from_env() -> Option<String> {
    std::env::var(SECRET_ENV).ok()
}

/// Logs failed handshakes (authentication, TLS) and refused HTTP admin
/// requests with the peer's address, at most a few lines per ten seconds so
/// a flood cannot flood the log.
#[derive(Debug)]
pub(crate) struct FailureLogger {
    start: Instant,
    log: Mutex<FailureLog>,
    /// Refusals by (port, reason), for the metrics. Both are fixed words,
    /// so the map stays small.
    counts: Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
}

impl Default for FailureLogger {
    fn default() -> Self {
        FailureLogger {
            start: Instant::now(),
            log: Mutex::new(FailureLog::new(10_000, 5)),
            counts: Mutex::default(),
        }
    }
}

impl FailureLogger {
    /// Count one refusal on `port` (`protocol`, `http`, `participant_admin`)
    /// for `reason` (a fixed word such as `wrong_mac` or `timeout`).
    pub fn count(&self, port: &'static str, reason: &'static str) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *c.entry((port, reason)).or_default() += 1;
    }

    /// Every count so far, by (port, reason).
    pub fn counts(&self) -> Vec<((&'static str, &'static str), u64)> {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// A handshake from `peer` failed because of `why`.
    pub fn failed(&self, peer: &str, why: &str) {
        self.refused(peer, "handshake refused", why);
    }

    /// Something from `peer` was refused (`what`, e.g. "handshake refused")
    /// because of `why`. One rate limit covers every kind of refusal, so a
    /// flood on one port cannot hide failures on another.
    pub fn refused(&self, peer: &str, what: &str, why: &str) {
        let now = self.start.elapsed().as_millis() as u64;
        let decision = match self.log.lock() {
            Ok(mut l) => l.record(now),
            Err(_) => LogDecision::Log {
                suppressed_before: 0,
            },
        };
        if let LogDecision::Log { suppressed_before } = decision {
            if suppressed_before > 0 {
                tracing::warn!(%peer, suppressed = suppressed_before, "{what}: {why} ({suppressed_before} earlier failures not logged)");
            } else {
                tracing::warn!(%peer, "{what}: {why}");
            }
        }
    }
}

/// What a listening side requires of the peers it accepts.
pub(crate) struct ServerSecurity {
    /// Every peer must prove its key with it; `None`: no authentication.
    pub secret: Option<Arc<Secret>>,
    /// Whose keys this port checks.
    pub port: auth::Port,
    /// TLS on this port; `None`: plain TCP.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub failures: FailureLogger,
}

impl std::fmt::Debug for ServerSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSecurity")
            .field("secret", &self.secret)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl ServerSecurity {
    /// This port's name in the failure counts.
    pub fn port_label(&self) -> &'static str {
        match self.port {
            auth::Port::Coordinator => "protocol",
            auth::Port::ParticipantAdmin(_) => "participant_admin",
        }
    }

    /// Load the TLS material of `tls` (errors name the key and the file).
    pub fn new(
        secret: Option<Arc<Secret>>,
        tls: &tls::TlsConfig,
        port: auth::Port,
    ) -> Result<ServerSecurity, tls::TlsError> {
        Ok(ServerSecurity {
            secret,
            port,
            tls: tls::acceptor(tls)?,
            failures: FailureLogger::default(),
        })
    }

    /// Log whether this port is protected, and warn when it is not.
    pub fn announce(&self, port_name: &str) {
        match (&self.secret, &self.tls) {
            (Some(_), Some(_)) => tracing::info!("{port_name}: TLS on, shared-secret authentication on"),
            (Some(_), None) => tracing::info!("{port_name}: shared-secret authentication on, TLS off (traffic is readable on the network)"),
            (None, tls) => tracing::warn!(
                "{port_name}: no shared secret configured: any peer that reaches this port is trusted (TLS {}). Fine on loopback; set secret_file elsewhere",
                if tls.is_some() { "on" } else { "off" }
            ),
        }
    }
}

/// What a connecting side (participant, client, operator tool) uses.
#[derive(Clone, Debug, Default)]
pub struct ClientSecurity {
    pub secret: Option<Arc<Secret>>,
    pub tls: Option<tls::TlsClient>,
}

impl ClientSecurity {
    /// From a role's `secret_file` (or `TWOPC_SECRET` in `env`) and `tls.ca_file`.
    pub fn load(
        secret_file: Option<&Path>,
        env: Option<String>,
        ca_file: Option<&Path>,
    ) -> Result<ClientSecurity, ClientSecurityError> {
        Ok(ClientSecurity {
            secret: load_secret(secret_file, env)?,
            tls: ca_file.map(tls::TlsClient::from_ca_file).transpose()?,
        })
    }
}

/// Why a client's secret or CA could not be loaded; the text says which
/// and why.
#[derive(Debug, thiserror::Error)]
pub enum ClientSecurityError {
    #[error(transparent)]
    Secret(#[from] SecretLoadError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// `--secret-file` and `--tls-ca` of the `twopc` client commands.
#[derive(Args, Debug, Clone, Default)]
pub struct SecurityArgs {
    /// File holding the shared secret the server requires (or set TWOPC_SECRET to the secret itself).
    #[arg(long, env = "TWOPC_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// PEM file of the CA that signed the server's TLS certificate; turns TLS on.
    #[arg(long, env = "TWOPC_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

impl SecurityArgs {
    /// Read the secret and the CA; the error says which and why.
    pub fn load(&self) -> Result<ClientSecurity, ClientSecurityError> {
        ClientSecurity::load(
            self.secret_file.as_deref(),
            secret_from_env(),
            self.tls_ca.as_deref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_refuse_to_fail_open_unless_told() {
        let strong = Secret::from_text(&Secret::random_text()).unwrap();
        let weak = Secret::from_text(&"x".repeat(20)).unwrap();
        let lo = [("host", "127.0.0.1"), ("admin_host", "localhost")];
        let wide = [("host", "127.0.0.1"), ("admin_host", "0.0.0.0")];
        assert!(check_server_setup(None, &lo, None, false).is_ok());
        assert!(check_server_setup(None, &[("host", "::1")], None, false).is_ok());
        let e = check_server_setup(None, &wide, None, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("admin_host is 0.0.0.0") && e.contains("--insecure"),
            "{e}"
        );
        assert!(check_server_setup(None, &wide, None, true).is_ok());
        assert!(check_server_setup(Some(&strong), &wide, None, false).is_ok());
        let e = check_server_setup(Some(&weak), &lo, None, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("different characters") && e.contains("--insecure"),
            "{e}"
        );
        assert!(check_server_setup(Some(&weak), &lo, None, true).is_ok());
        // A derived key: only the process it belongs to may run with it.
        let master = Secret::from_text(&Secret::random_text()).unwrap();
        let p1 = auth::Identity::Participant("p1".into());
        let p1_key = Secret::from_text(&master.derive_text(&p1).unwrap()).unwrap();
        assert!(check_server_setup(Some(&p1_key), &lo, Some(&p1), false).is_ok());
        let p2 = auth::Identity::Participant("p2".into());
        let e = check_server_setup(Some(&p1_key), &lo, Some(&p2), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("participant p1's key") && e.contains("participant p2"),
            "{e}"
        );
        let e = check_server_setup(Some(&p1_key), &lo, None, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs the cluster's master secret"), "{e}");
    }

    #[test]
    fn secret_sources() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "0123456789abcdef0123\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |m: u32| std::fs::set_permissions(&f, std::fs::Permissions::from_mode(m)).unwrap();
        mode(0o644);
        let open = load_secret(Some(&f), None).unwrap_err().to_string();
        assert!(
            open.contains("mode 0644") && open.contains("chmod 600"),
            "{open}"
        );
        mode(0o600);
        assert!(load_secret(None, None).unwrap().is_none());
        assert!(load_secret(Some(&f), None).unwrap().is_some());
        let env = Some("from the environment!".to_string());
        assert!(load_secret(None, env.clone()).unwrap().is_some());
        let empty = load_secret(None, Some(" ".into())).unwrap_err().to_string();
        assert!(empty.contains("set but empty"), "{empty}");
        let both = load_secret(Some(&f), env).unwrap_err().to_string();
        assert!(both.contains("use one"), "{both}");
        let missing = load_secret(Some(&dir.path().join("nope")), None)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("openssl rand"), "{missing}");
        std::fs::write(&f, "short").unwrap();
        mode(0o600);
        let short = load_secret(Some(&f), None).unwrap_err().to_string();
        assert!(
            short.contains("at least 16") && !short.contains("short\""),
            "{short}"
        );
    }
}
