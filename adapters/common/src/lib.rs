//! Runtime-neutral code shared by the Ouli adapters (Tokio, async-std and
//! smol): the TOML configuration, the recording directory's file I/O and
//! other helpers that do not depend on an async runtime.
//!
//! File access here is plain blocking `std::fs`, meant to run at startup,
//! at shutdown or on a blocking thread.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod buffer_pool;
pub mod config;
pub mod endpoint;
pub mod recorder;
pub mod recording_dir;
pub mod stats;
