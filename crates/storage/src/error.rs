//! The storage engine's error type.

use std::io;

/// Errors from the storage engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// A write failed to reach the disk earlier; the store refuses writes.
    #[error("storage is read-only: {0}")]
    Poisoned(String),
    /// On-disk data failed its checksum or could not be decoded.
    #[error("corrupt {what} at {path}: {detail}")]
    Corrupt {
        what: &'static str,
        path: String,
        detail: String,
    },
    /// The caller passed something invalid.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The store has been closed.
    #[error("storage is closed")]
    Closed,
    /// A read would load more samples than allowed.
    #[error("query processing would load too many samples into memory (limit {limit})")]
    TooManySamples { limit: usize },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
