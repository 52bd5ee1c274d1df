//! The runtimes under test, shared by the test targets that run one suite
//! on Tokio, smol and async-std (tests/runtimes, tests/tls).

use ouli_adapter_common::runtime::Runtime;
use ouli_adapter_common::server::TestProxy;
use std::future::Future;

/// A runtime under test: its [`Runtime`] and a way to run a future on it.
pub trait Harness: 'static {
    /// The runtime the proxy runs on.
    type Rt: Runtime;
    /// Runs `future` to completion where the runtime can serve it.
    fn block_on<F: Future>(future: F) -> F::Output;
}

/// The proxy type a harness runs.
pub type Proxy<H> = TestProxy<<H as Harness>::Rt>;

/// Tokio: one multi-threaded runtime shared by the whole test binary.
pub struct OnTokio;

impl Harness for OnTokio {
    type Rt = ouli_tokio::Tokio;
    fn block_on<F: Future>(future: F) -> F::Output {
        static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
        RUNTIME
            .get_or_init(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("tokio runtime")
            })
            .block_on(future)
    }
}

/// smol: the adapter's own executor threads serve; the test thread blocks.
pub struct OnSmol;

impl Harness for OnSmol {
    type Rt = ouli_smol::Smol;
    fn block_on<F: Future>(future: F) -> F::Output {
        ouli_smol::block_on(future)
    }
}

/// async-std: its global executor serves; the test thread blocks.
pub struct OnAsyncStd;

impl Harness for OnAsyncStd {
    type Rt = ouli_async_std::AsyncStd;
    fn block_on<F: Future>(future: F) -> F::Output {
        ouli_async_std::block_on(future)
    }
}
