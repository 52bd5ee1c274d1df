//! Runtime-neutral code shared by the Ouli adapters (Tokio, async-std and
//! smol): the TOML configuration, the recording directory's file I/O, and
//! the whole connection layer written once over the small [`runtime::Runtime`]
//! trait: the accept loop with its connection limit ([`server`]), the
//! per-connection driver (`driver.rs`), the upstream pool and in-flight limit
//! ([`upstream`]), TCP tuning ([`tcp`]), TLS on either side ([`tls`], driven
//! on in-memory buffers by the same driver) and graceful shutdown.
//!
//! An adapter crate only implements [`runtime::Runtime`] (its socket and
//! listener types, a timer, `spawn` and `spawn_blocking`) and names the
//! [`server`] types for its runtime. No adapter parses protocol bytes: that
//! is `ouli-core`'s job.
//!
//! File access here is plain blocking `std::fs`, meant to run at startup,
//! at shutdown or on a blocking thread.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod buffer_pool;
pub mod config;
mod driver;
pub mod endpoint;
pub mod har;
pub mod inspect;
pub mod policy_config;
pub mod recorder;
pub mod recording_dir;
pub mod report;
pub mod runtime;
pub mod server;
pub mod stats;
pub mod sync;
pub mod tcp;
pub mod test_server;
pub mod tls;
mod transport;
pub mod upstream;
pub mod yaml_config;
