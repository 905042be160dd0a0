//! One stream type for plain TCP and TLS, so connections share all their
//! logic, and the connecting side's open: TCP, then TLS when configured.

use crate::security::tls::{host_of, TlsClient};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A byte stream a connection can run on: plain TCP or TLS over TCP.
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncStream for T {}

/// A stream whose kind (TCP or TLS) is chosen at run time.
pub type BoxedStream = Box<dyn AsyncStream>;

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot reach {addr}: {source}")]
    Tcp {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "TLS handshake with {addr} failed: {source}; is the server started with --tls-cert and \
         --tls-key, and does --tls-ca hold the CA that signed its certificate for `{host}`?"
    )]
    Tls {
        addr: String,
        host: String,
        #[source]
        source: std::io::Error,
    },
}

/// Open a TCP connection to `addr` and, with `tls`, run the TLS handshake
/// (the server's certificate must name the host part of `addr`).
pub async fn connect(addr: &str, tls: Option<&TlsClient>) -> Result<BoxedStream, ConnectError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| ConnectError::Tcp {
            addr: addr.to_string(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(Box::new(tcp)),
        Some(t) => {
            let host = host_of(addr);
            let s = t
                .connect(host, tcp)
                .await
                .map_err(|source| ConnectError::Tls {
                    addr: addr.to_string(),
                    host: host.to_string(),
                    source,
                })?;
            Ok(Box::new(s))
        }
    }
}

/// Do these first bytes from a server look like a TLS record (handshake or
/// alert)? A frame's length prefix never starts this way below 16 MiB.
pub fn looks_like_tls(first: &[u8]) -> bool {
    matches!(first, [0x15 | 0x16, 0x03, ..])
}
