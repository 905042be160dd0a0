//! The settings that take one of a few names, as typed enums.

use super::keys::config_enum;
pub use crate::resource::VotePreference;

/// Least severe log events written (`RUST_LOG`, when set, overrides).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// How log lines are written on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines, control characters escaped.
    Text,
    /// One JSON object per line.
    Json,
}

/// The async runtime a server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    /// One thread for the event loop and every connection: no hand-over
    /// between threads per message, the least CPU per transaction (the
    /// default).
    CurrentThread,
    /// A worker thread per core: connections are read and written in
    /// parallel with the event loop, at the price of a hand-over between
    /// threads per message.
    MultiThread,
}

/// What a participant votes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    /// The vote preference only; holds no data.
    Vote,
    /// The embedded transactional key-value store.
    Kv,
    /// A PostgreSQL database (`postgres:` settings).
    Postgres,
}

config_enum!(LogLevel, LogFormat, ResourceKind, Runtime, VotePreference);
