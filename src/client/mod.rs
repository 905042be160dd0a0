//! The client side of the protocol: a connection that says hello as a
//! client, submits transactions and asks for status; plus the `twopc`
//! commands built on it (submit, status, demo, bench).

pub mod bank;
pub mod bench;
pub mod cluster;
pub mod commands;
pub mod diagram;
pub mod ops;

use crate::net::{self, Inbound};
use crate::protocol::{Body, Outcome, Role, SubmitRequest, TxnId, PROTOCOL_VERSION};
use futures::SinkExt;
use serde_json::Value;
use std::time::Duration;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

/// Why a client call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the coordinator at {addr}: {source}; is it running, and is the address right?")]
    Unreachable {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer from the coordinator within {0:?}")]
    Timeout(Duration),
    #[error("the coordinator refused the request ({code}): {message}")]
    Refused { code: String, message: String },
    #[error("the connection to the coordinator was lost before an answer arrived")]
    Closed,
    #[error("unexpected reply from the coordinator: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The `error` code, when the coordinator refused.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// One client connection to a coordinator.
pub struct Client {
    reader: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    writer: FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
    max_frame_bytes: usize,
    timeout: Duration,
    pub coordinator_state: String,
}

/// Frames a client accepts; replies are small except status reports.
pub const CLIENT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

impl Client {
    /// Connect and say hello. `timeout` bounds every later call too.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Client, ClientError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
            .map_err(|source| ClientError::Unreachable {
                addr: addr.to_string(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let mut c = Client {
            reader: FramedRead::new(rd, net::codec(CLIENT_MAX_FRAME_BYTES)),
            writer: FramedWrite::new(wr, net::codec(CLIENT_MAX_FRAME_BYTES)),
            max_frame_bytes: CLIENT_MAX_FRAME_BYTES,
            timeout,
            coordinator_state: String::new(),
        };
        c.send(Body::Hello {
            role: Role::Client,
            id: None,
            protocol_version: PROTOCOL_VERSION,
        })
        .await?;
        match c.recv().await? {
            Body::Welcome { state } => {
                c.coordinator_state = state;
                Ok(c)
            }
            other => Err(unexpected(other)),
        }
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    async fn send(&mut self, body: Body) -> Result<(), ClientError> {
        self.writer
            .send(net::encode(body))
            .await
            .map_err(|_| ClientError::Closed)
    }

    async fn recv(&mut self) -> Result<Body, ClientError> {
        let t = self.timeout;
        let max = self.max_frame_bytes;
        let next = tokio::time::timeout(t, net::read_next(&mut self.reader, max))
            .await
            .map_err(|_| ClientError::Timeout(t))?;
        match next {
            None => Err(ClientError::Closed),
            Some(Inbound::Message(Body::Error { code, message, .. })) => {
                Err(ClientError::Refused { code, message })
            }
            Some(Inbound::Message(b)) => Ok(b),
            Some(Inbound::Invalid(e)) | Some(Inbound::Broken(e)) => {
                Err(ClientError::Protocol(e.to_string()))
            }
        }
    }

    /// Run one transaction; returns its id and outcome.
    pub async fn submit(&mut self, req: SubmitRequest) -> Result<(TxnId, Outcome), ClientError> {
        self.send(Body::Submit(req)).await?;
        loop {
            match self.recv().await? {
                Body::Outcome { txn, outcome } => return Ok((txn, outcome)),
                Body::HeartbeatAck => continue,
                other => return Err(unexpected(other)),
            }
        }
    }

    /// The coordinator's status report.
    pub async fn status(&mut self) -> Result<Value, ClientError> {
        self.send(Body::Status).await?;
        match self.recv().await? {
            Body::StatusReport(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// Send any request and return the first reply (errors become
    /// `ClientError::Refused`).
    pub async fn request(&mut self, body: Body) -> Result<Body, ClientError> {
        self.send(body).await?;
        self.recv().await
    }

    /// Send raw frame bytes (for tools and tests that probe the server).
    pub async fn send_raw(&mut self, bytes: bytes::Bytes) -> Result<(), ClientError> {
        self.writer
            .send(bytes)
            .await
            .map_err(|_| ClientError::Closed)
    }
}

fn unexpected(b: Body) -> ClientError {
    ClientError::Protocol(format!("`{}`", b.message_type()))
}
