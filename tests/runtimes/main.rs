//! One suite, three runtimes: the connection layer tested on Tokio, smol and
//! async-std with the same test bodies ([`suite`]), instantiated per runtime
//! by [`instantiate!`].
//!
//! Each proxy runs in its runtime's background tasks ([`TestProxy`]); the
//! tests themselves are plain threads with blocking `std::net` clients and a
//! threaded upstream, so nothing in a test body depends on the runtime.

mod suite;
mod support;

mod harness;
pub use harness::{Harness, OnAsyncStd, OnSmol, OnTokio, Proxy};

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
