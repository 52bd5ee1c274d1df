//! Ouli as a library: the record/replay proxy on the async runtime picked
//! with Cargo features, and the pieces the `ouli` binary is made of.
//!
//! | feature | runtime | adapter crate |
//! |---|---|---|
//! | `tokio` (default) | Tokio | `ouli-tokio` |
//! | `smol` | smol | `ouli-smol` |
//! | `async-std` | async-std (deprecated upstream in favor of smol; supported anyway) | `ouli-async-std` |
//!
//! Build with exactly one, e.g. `cargo build --no-default-features --features
//! smol`: the binary then contains no other runtime. With none, the build
//! stops with a message naming the features. When several are on (as with
//! `--all-features`), one wins by a fixed precedence, **tokio > smol >
//! async-std**, and [`RUNTIME_NAME`] says which.
//!
//! The adapters share all of their connection logic (`ouli-adapter-common`);
//! [`runtime`] is the chosen adapter crate, and its types are re-exported
//! here: [`Proxy`], [`BoundProxy`], [`TestProxy`], [`RunSummary`].
#![deny(missing_docs)]

#[cfg(not(any(feature = "tokio", feature = "smol", feature = "async-std")))]
compile_error!(
    "ouli needs an async runtime: enable one of the features `tokio` (the default), `smol` or \
     `async-std`, e.g. `cargo build --no-default-features --features smol`"
);

/// The adapter of the chosen runtime (tokio > smol > async-std).
#[cfg(feature = "tokio")]
pub use ouli_tokio as runtime;

/// The adapter of the chosen runtime (tokio > smol > async-std).
#[cfg(all(feature = "smol", not(feature = "tokio")))]
pub use ouli_smol as runtime;

/// The adapter of the chosen runtime (tokio > smol > async-std).
#[cfg(all(feature = "async-std", not(any(feature = "tokio", feature = "smol"))))]
pub use ouli_async_std as runtime;

#[cfg(any(feature = "tokio", feature = "smol", feature = "async-std"))]
pub use runtime::{
    BoundProxy, Proxy, ProxyBuilder, RunSummary, StartError, TestProxy, RUNTIME_NAME,
};

pub use ouli_adapter_common::config::Config;
pub use ouli_core::proxy::Mode;

use ouli_adapter_common::sync::Latch;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// Runs `future` to completion on the chosen runtime, the way the `ouli`
/// binary runs the proxy. An error means the runtime could not start.
#[cfg(any(feature = "tokio", feature = "smol", feature = "async-std"))]
pub fn block_on<F: Future>(future: F) -> std::io::Result<F::Output> {
    #[cfg(feature = "tokio")]
    return runtime::block_on(future);
    #[cfg(not(feature = "tokio"))]
    return Ok(runtime::block_on(future));
}

type ForcedExitHook = Arc<Mutex<Option<Box<dyn FnOnce() + Send>>>>;

/// SIGINT and SIGTERM, listened for from [`Signals::listen`] on: the first
/// one starts a graceful shutdown ([`Signals::shutdown`] completes), a second
/// one exits the process at once with status 130.
///
/// Runtime-neutral: a plain thread waits for the signals (`signal-hook`), so
/// it works the same on every runtime. On platforms without Unix signals
/// [`Signals::shutdown`] never completes.
pub struct Signals {
    latch: Arc<Latch>,
    before_forced_exit: ForcedExitHook,
}

impl Signals {
    /// Starts listening (call it early, so an early signal is not lost).
    pub fn listen() -> Signals {
        let signals = Signals {
            latch: Arc::new(Latch::new()),
            before_forced_exit: Arc::default(),
        };
        #[cfg(unix)]
        watch_signals(
            Arc::clone(&signals.latch),
            Arc::clone(&signals.before_forced_exit),
        );
        signals
    }

    /// Runs `hook` (e.g. printing the counters) just before a forced exit.
    pub fn before_forced_exit(&self, hook: impl FnOnce() + Send + 'static) {
        *self
            .before_forced_exit
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Box::new(hook));
    }

    /// Completes on the first signal; pass it to [`BoundProxy::run`].
    pub fn shutdown(&self) -> impl Future<Output = ()> + Send + 'static {
        let latch = Arc::clone(&self.latch);
        async move { latch.wait().await }
    }
}

/// [`Signals::listen`] and its [`Signals::shutdown`] future in one call.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    Signals::listen().shutdown()
}

#[cfg(unix)]
fn watch_signals(latch: Arc<Latch>, before_forced_exit: ForcedExitHook) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ouli: cannot listen for SIGINT/SIGTERM: {e}");
            return;
        }
    };
    let watcher = std::thread::Builder::new()
        .name("ouli-signals".into())
        .spawn(move || {
            let mut received = signals.forever();
            if received.next().is_none() {
                return;
            }
            eprintln!("ouli: shutting down (finishing requests in flight; signal again to force)");
            latch.set();
            if received.next().is_some() {
                eprintln!("ouli: forced exit");
                let hook = before_forced_exit
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                if let Some(hook) = hook {
                    hook();
                }
                std::process::exit(130);
            }
        });
    if let Err(e) = watcher {
        eprintln!("ouli: cannot start the signal thread: {e}");
    }
}
