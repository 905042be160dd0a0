//! One stream type for plain TCP and TLS, so connections share all their
//! logic, and the connecting side's open: TCP, then TLS when configured.

use super::codec;
use crate::security::tls::{host_of, TlsClient};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
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
    #[cfg(feature = "sim")]
    if crate::sim::active() && tls.is_none() {
        return turmoil::net::TcpStream::connect(addr)
            .await
            .map(|s| Box::new(crate::sim::SimStream::new(s)) as BoxedStream)
            .map_err(|source| ConnectError::Tcp {
                addr: addr.to_string(),
                source,
            });
    }
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

/// Why a plain TCP connection opened with [`connect_plain_sending`] is not
/// usable.
#[derive(Debug, thiserror::Error)]
pub enum PlainOpenError {
    #[error("cannot connect: {0}")]
    Unreachable(#[source] std::io::Error),
    /// The first frame could not be written.
    #[error("the connection closed before the first frame was written")]
    Closed,
    /// The server answered with a TLS record: it expects TLS.
    #[error("the server speaks TLS")]
    ServerSpeaksTls,
}

/// Plain TCP: connect, write `first_payload` as one frame, and look at the
/// server's first bytes before they are framed: a TLS server answers a
/// plaintext frame with a TLS alert, which would otherwise read as a huge
/// frame length.
pub async fn connect_plain_sending(
    addr: &str,
    first_payload: &[u8],
) -> Result<BoxedStream, PlainOpenError> {
    #[cfg(feature = "sim")]
    if crate::sim::active() {
        // No TLS in a simulation: nothing to look for in the first bytes.
        let mut stream = turmoil::net::TcpStream::connect(addr)
            .await
            .map(crate::sim::SimStream::new)
            .map_err(PlainOpenError::Unreachable)?;
        stream
            .write_all(&codec::frame(first_payload))
            .await
            .map_err(|_| PlainOpenError::Closed)?;
        return Ok(Box::new(stream));
    }
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(PlainOpenError::Unreachable)?;
    let _ = stream.set_nodelay(true);
    stream
        .write_all(&codec::frame(first_payload))
        .await
        .map_err(|_| PlainOpenError::Closed)?;
    let mut first = [0u8; 2];
    match stream.peek(&mut first).await {
        Ok(2) if looks_like_tls(&first) => Err(PlainOpenError::ServerSpeaksTls),
        _ => Ok(Box::new(stream)),
    }
}
