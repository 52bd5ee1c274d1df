//! The async-std adapter: the shared async-io backend ([`ouli_async_io`])
//! with tasks and blocking work on async-std's global executor.
//!
//! async-std is discontinued upstream ("Deprecated in favor of smol" on
//! crates.io). Ouli supports it anyway; since async-std drives its sockets
//! with async-io, this face is thin: it only says how async-std spawns. All
//! the connection logic lives in `ouli-adapter-common`, shared with the Tokio
//! and smol adapters.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ouli_adapter_common::config::Config;
//! use ouli_core::proxy::Mode;
//! let config = Config::load("ouli.toml".as_ref())?;
//! ouli_async_std::block_on(async {
//!     let proxy = ouli_async_std::Proxy::builder(config, Mode::Replay, "recordings").bind().await?;
//!     let summary = proxy.run(std::future::pending::<()>()).await;
//!     println!("{summary}");
//!     Ok(())
//! })
//! # }
//! ```
#![deny(missing_docs)]

use ouli_async_io::{AsyncIo, Spawner};
use std::future::Future;

/// Spawns on async-std's global executor.
#[derive(Clone, Copy, Debug, Default)]
pub struct AsyncStdSpawner;

/// async-std as a runtime for the shared connection layer.
pub type AsyncStd = AsyncIo<AsyncStdSpawner>;

ouli_adapter_common::adapter_types!(AsyncStd, "async-std");

impl Spawner for AsyncStdSpawner {
    fn spawn(task: impl Future<Output = ()> + Send + 'static) {
        async_std::task::spawn(task);
    }

    fn spawn_blocking<T: Send + 'static>(
        f: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = T> + Send {
        async_std::task::spawn_blocking(f)
    }
}

/// Runs `future` to completion on the calling thread (the proxy's tasks run
/// on async-std's executor), the way the `ouli` binary runs the proxy.
pub fn block_on<F: Future>(future: F) -> F::Output {
    async_std::task::block_on(future)
}
