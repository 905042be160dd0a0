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
) -> Result<Option<Arc<Secret>>, String> {
    let env = env.filter(|v| !v.is_empty());
    let text = match (secret_file, env) {
        (Some(path), Some(_)) => {
            return Err(format!(
                "both secret_file ({}) and {SECRET_ENV} are set; use one of them",
                path.display()
            ))
        }
        (Some(path), None) => std::fs::read_to_string(path).map_err(|e| {
            format!(
                "secret_file {}: cannot read it ({e}); make one with \
                 `openssl rand -hex 32 > {}` (mode 0600)",
                path.display(),
                path.display()
            )
        })?,
        (None, Some(v)) => v,
        (None, None) => return Ok(None),
    };
    let origin = secret_file
        .map(|p| format!("secret_file {}", p.display()))
        .unwrap_or_else(|| SECRET_ENV.to_string());
    Secret::from_text(&text)
        .map(|s| Some(Arc::new(s)))
        .map_err(|e| format!("{origin}: {e}"))
}

/// The secret from the process environment (`TWOPC_SECRET`).
pub fn secret_from_env() -> Option<String> {
    std::env::var(SECRET_ENV).ok()
}

/// Logs failed handshakes (authentication, TLS) and refused HTTP admin
/// requests with the peer's address, at most a few lines per ten seconds so
/// a flood cannot flood the log.
#[derive(Debug)]
pub struct FailureLogger {
    start: Instant,
    log: Mutex<FailureLog>,
}

impl Default for FailureLogger {
    fn default() -> Self {
        FailureLogger {
            start: Instant::now(),
            log: Mutex::new(FailureLog::new(10_000, 5)),
        }
    }
}

impl FailureLogger {
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
#[derive(Default)]
pub struct ServerSecurity {
    /// Every peer must prove knowledge of it; `None`: no authentication.
    pub secret: Option<Arc<Secret>>,
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
    /// Load the TLS material of `tls` (errors name the key and the file).
    pub fn new(
        secret: Option<Arc<Secret>>,
        tls: &tls::TlsConfig,
    ) -> Result<ServerSecurity, tls::TlsError> {
        Ok(ServerSecurity {
            secret,
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
    ) -> Result<ClientSecurity, String> {
        Ok(ClientSecurity {
            secret: load_secret(secret_file, env)?,
            tls: ca_file
                .map(tls::TlsClient::from_ca_file)
                .transpose()
                .map_err(|e| e.to_string())?,
        })
    }
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
    pub fn load(&self) -> Result<ClientSecurity, String> {
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
    fn secret_sources() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "0123456789abcdef0123\n").unwrap();
        assert!(load_secret(None, None).unwrap().is_none());
        assert!(load_secret(Some(&f), None).unwrap().is_some());
        let env = Some("from the environment!".to_string());
        assert!(load_secret(None, env.clone()).unwrap().is_some());
        let both = load_secret(Some(&f), env).unwrap_err();
        assert!(both.contains("use one"), "{both}");
        let missing = load_secret(Some(&dir.path().join("nope")), None).unwrap_err();
        assert!(missing.contains("openssl rand"), "{missing}");
        std::fs::write(&f, "short").unwrap();
        let short = load_secret(Some(&f), None).unwrap_err();
        assert!(
            short.contains("at least 16") && !short.contains("short\""),
            "{short}"
        );
    }
}
