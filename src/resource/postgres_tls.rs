//! TLS to PostgreSQL: a rustls connector for `tokio-postgres`, and the
//! `sslmode` of the connection string mapped onto it.
//!
//! Supported `sslmode` values and what they do here:
//! - `disable`: no TLS;
//! - `prefer` (the default) and `require`: TLS, `prefer` falling back to a
//!   plain connection when the server has no TLS. Without
//!   `postgres.ca_file` the server's certificate is not checked (libpq
//!   does the same without a root certificate): the connection is encrypted
//!   but not authenticated. With `postgres.ca_file` it is checked as for
//!   `verify-full`;
//! - `verify-ca`: TLS, the certificate must chain to `postgres.ca_file`;
//! - `verify-full`: as `verify-ca`, and the certificate must name the host
//!   connected to.
//!
//! `allow`, and the libpq keys `sslrootcert`, `sslcert`, `sslkey` are not
//! supported (the connection string is refused); use `postgres.ca_file`.
//! Client certificates are not supported. This module must never weaken a
//! mode: a verifying mode without a CA file is an error, not a downgrade.

use crate::security::tls::{provider, read_certs};
use futures::future::BoxFuture;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// How the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Encrypted, not authenticated (`prefer`/`require` without a CA file).
    None,
    /// The chain must lead to the CA file; any host name (`verify-ca`).
    Chain,
    /// Chain and host name (`verify-full`, or a CA file with `require`).
    Full,
}

/// Take the verifying modes out of a connection string (which
/// `tokio-postgres` does not parse) and turn them into `sslmode=require`
/// plus the check they ask for. Returns the connection string to parse and
/// the check, if the string named one.
pub fn split_verify_mode(dsn: &str) -> (String, Option<Verify>) {
    for (mode, verify) in [("verify-full", Verify::Full), ("verify-ca", Verify::Chain)] {
        let needle = format!("sslmode={mode}");
        if let Some(at) = dsn.find(&needle) {
            let end = at + needle.len();
            let whole = dsn[end..]
                .chars()
                .next()
                .is_none_or(|c| c.is_whitespace() || c == '&');
            if whole {
                let rewritten = format!("{}sslmode=require{}", &dsn[..at], &dsn[end..]);
                return (rewritten, Some(verify));
            }
        }
    }
    (dsn.to_string(), None)
}

/// The check a connection makes: what the mode asks for, or, without a
/// verifying mode, full checks when a CA file is given and none otherwise.
pub fn effective_verify(
    asked: Option<Verify>,
    ca_file: Option<&Path>,
) -> Result<Verify, CaFileNeeded> {
    match (asked, ca_file) {
        (Some(v), Some(_)) => Ok(v),
        (Some(_), None) => Err(CaFileNeeded),
        (None, Some(_)) => Ok(Verify::Full),
        (None, None) => Ok(Verify::None),
    }
}

/// A verifying `sslmode` without `postgres.ca_file`: this module never
/// weakens a mode, so the connection is refused until the file is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "sslmode verify-ca and verify-full need postgres.ca_file (flag --postgres-ca-file): \
     the CA certificate that signed the server's certificate"
)]
pub struct CaFileNeeded;

/// Why no TLS connector to PostgreSQL could be built: the participant does
/// not start; fix the setting the text names.
#[derive(Debug, thiserror::Error)]
pub enum PgTlsError {
    #[error(transparent)]
    CaFileNeeded(#[from] CaFileNeeded),
    /// The TLS library offers no protocol version it considers safe (a
    /// build without a usable crypto provider).
    #[error("{0}")]
    Protocols(#[source] rustls::Error),
    /// `postgres.ca_file` is missing or holds no PEM certificate.
    #[error(transparent)]
    CaFile(#[from] crate::security::tls::TlsError),
    /// A certificate of `postgres.ca_file` cannot serve as a trust root.
    #[error("postgres.ca_file = {}: not a usable CA certificate: {source}", path.display())]
    NotACa {
        path: std::path::PathBuf,
        #[source]
        source: rustls::Error,
    },
    /// The certificates of `postgres.ca_file` do not make a verifier.
    #[error("postgres.ca_file = {}: {source}", path.display())]
    Verifier {
        path: std::path::PathBuf,
        #[source]
        source: rustls::client::VerifierBuilderError,
    },
}

/// A `tokio-postgres` TLS connector over rustls.
#[derive(Clone)]
pub struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for RustlsConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RustlsConnect")
    }
}

impl RustlsConnect {
    /// A connector checking certificates as `verify` says, against the CA
    /// certificates of `ca_file` when checks are made.
    pub fn new(verify: Verify, ca_file: Option<&Path>) -> Result<RustlsConnect, PgTlsError> {
        const KEY: &str = "postgres.ca_file";
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(PgTlsError::Protocols)?;
        let config = match (verify, ca_file) {
            (Verify::None, _) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
                .with_no_client_auth(),
            (_, None) => return Err(CaFileNeeded.into()),
            (Verify::Chain | Verify::Full, Some(path)) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in read_certs(KEY, path)? {
                    roots.add(c).map_err(|source| PgTlsError::NotACa {
                        path: path.to_path_buf(),
                        source,
                    })?;
                }
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|source| PgTlsError::Verifier {
                    path: path.to_path_buf(),
                    source,
                })?;
                let verifier: Arc<dyn ServerCertVerifier> = if verify == Verify::Chain {
                    Arc::new(AnyName(webpki))
                } else {
                    webpki
                };
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(verifier)
                    .with_no_client_auth()
            }
        };
        Ok(RustlsConnect {
            config: Arc::new(config),
        })
    }
}

impl<S> MakeTlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnector;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnector> {
        let name = ServerName::try_from(domain.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(RustlsConnector {
            connector: tokio_rustls::TlsConnector::from(self.config.clone()),
            name,
        })
    }
}

/// One connection's TLS handshake.
pub struct RustlsConnector {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = BoxFuture<'static, io::Result<RustlsStream<S>>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let s = self.connector.connect(self.name, stream).await?;
            Ok(RustlsStream(s))
        })
    }
}

/// A TLS stream to the database. No channel binding: SCRAM still
/// authenticates, without tying the login to this TLS session.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

/// `prefer`/`require` without a CA file: the handshake's signatures are
/// still checked (so the session key belongs to whoever holds the
/// certificate's key), the certificate itself is not.
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the full check except the host name.
#[derive(Debug)]
struct AnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifying_modes_become_require_with_a_check() {
        assert_eq!(
            split_verify_mode("host=h sslmode=verify-full user=u"),
            ("host=h sslmode=require user=u".into(), Some(Verify::Full))
        );
        assert_eq!(
            split_verify_mode("postgres://u@h/db?sslmode=verify-ca"),
            (
                "postgres://u@h/db?sslmode=require".into(),
                Some(Verify::Chain)
            )
        );
        assert_eq!(
            split_verify_mode("host=h sslmode=require"),
            ("host=h sslmode=require".into(), None)
        );
        assert_eq!(
            split_verify_mode("host=h sslmode=verify-fullx"),
            ("host=h sslmode=verify-fullx".into(), None)
        );
    }

    #[test]
    fn a_verifying_mode_without_a_ca_file_is_refused_never_downgraded() {
        let ca = Path::new("/ca.pem");
        assert!(effective_verify(Some(Verify::Full), None).is_err());
        assert!(effective_verify(Some(Verify::Chain), None).is_err());
        assert_eq!(
            effective_verify(Some(Verify::Chain), Some(ca)),
            Ok(Verify::Chain)
        );
        assert_eq!(effective_verify(None, Some(ca)), Ok(Verify::Full));
        assert_eq!(effective_verify(None, None), Ok(Verify::None));
    }
}
