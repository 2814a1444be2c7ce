//! Sextant's storage engine.
//!
//! Samples enter through an [`Appender`], are written to the [`wal`] and kept
//! in the in-memory [`head`]; the head's oldest range is cut into immutable,
//! memory-mapped [`block`]s, which [`compact`]ion merges and retention deletes.
//! Queries read head and blocks through one [`querier::SeriesReader`] trait.
//!
//! Architecture invariant: this crate knows nothing of HTTP, PromQL or protobuf.

pub mod bits;
pub mod block;
pub mod chunkenc;
pub mod compact;
mod db;
mod error;
mod fsutil;
pub mod head;
pub mod headchunks;
pub mod index;
pub mod querier;
pub mod wal;

pub use db::{Appender, CommitReport, Db, Metrics, OpenReport, Options, Rejected, SeriesHandle, SeriesRef, Stats};
pub use error::{Error, Result};
pub use head::SampleRejection;
pub use wal::FsyncPolicy;
