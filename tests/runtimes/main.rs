//! One suite, three runtimes: the connection layer tested on Tokio, smol and
//! async-std with the same test bodies ([`suite`]), instantiated per runtime
//! by [`instantiate!`].
//!
//! Each proxy runs in its runtime's background tasks ([`TestProxy`]); the
//! tests themselves are plain threads with blocking `std::net` clients and a
//! threaded upstream, so nothing in a test body depends on the runtime.

mod suite;
mod support;

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

/// One `#[test]` per suite function, for one runtime.
macro_rules! instantiate {
    ($module:ident, $harness:ty) => {
        mod $module {
            instantiate!(@tests $harness;
                record_then_replay,
                hostile_inputs_then_serving,
                many_connections_held_open,
                connection_limit,
                in_flight_limit,
                timeouts,
                slow_client_backpressure,
                shutdown_with_requests_in_flight,
            );
        }
    };
    (@tests $harness:ty; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                crate::suite::$name::<$harness>();
            }
        )*
    };
}

instantiate!(tokio_runtime, crate::OnTokio);
instantiate!(smol_runtime, crate::OnSmol);
instantiate!(async_std_runtime, crate::OnAsyncStd);
