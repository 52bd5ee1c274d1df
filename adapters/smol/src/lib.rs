//! The smol adapter: the shared async-io backend ([`ouli_async_io`]) with
//! tasks on a smol executor and blocking work on smol's thread pool.
//!
//! All the connection logic lives in `ouli-adapter-common` and is shared with
//! the Tokio and async-std adapters; this crate only says how smol spawns.
//! Tasks run on one process-wide executor with one worker thread per core
//! (`std::thread::available_parallelism`), started on first use.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ouli_adapter_common::config::Config;
//! use ouli_core::proxy::Mode;
//! let config = Config::load("ouli.toml".as_ref())?;
//! ouli_smol::block_on(async {
//!     let proxy = ouli_smol::Proxy::builder(config, Mode::Replay, "recordings").bind().await?;
//!     println!("listening on {:?}", proxy.local_addrs());
//!     let summary = proxy.run(std::future::pending::<()>()).await;
//!     println!("{summary}");
//!     Ok(())
//! })
//! # }
//! ```
#![deny(missing_docs)]

use ouli_async_io::{AsyncIo, Spawner};
use smol::Executor;
use std::future::Future;
use std::sync::Once;

/// Spawns on the process-wide smol executor ([`executor`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct SmolSpawner;

/// smol as a runtime for the shared connection layer.
pub type Smol = AsyncIo<SmolSpawner>;

ouli_adapter_common::adapter_types!(Smol, "smol");

/// The executor the proxy's tasks run on. The first call starts one worker
/// thread per core to run it; tasks need no `block_on` of the caller's.
pub fn executor() -> &'static Executor<'static> {
    static EXECUTOR: Executor<'static> = Executor::new();
    static WORKERS: Once = Once::new();
    WORKERS.call_once(|| {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        for n in 0..workers {
            let started = std::thread::Builder::new()
                .name(format!("ouli-smol-{n}"))
                .spawn(|| smol::block_on(EXECUTOR.run(std::future::pending::<()>())));
            if let Err(e) = started {
                panic!("cannot start a smol worker thread: {e}");
            }
        }
    });
    &EXECUTOR
}

impl Spawner for SmolSpawner {
    fn spawn(task: impl Future<Output = ()> + Send + 'static) {
        executor().spawn(task).detach();
    }

    fn spawn_blocking<T: Send + 'static>(
        f: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = T> + Send {
        smol::unblock(f)
    }
}

/// Runs `future` to completion on the calling thread (the proxy's tasks run
/// on the [`executor`]'s workers), the way the `ouli` binary runs the proxy.
pub fn block_on<F: Future>(future: F) -> F::Output {
    smol::block_on(future)
}
