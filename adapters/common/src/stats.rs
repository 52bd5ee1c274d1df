//! Counters for a run, fed from the core's events, and the shutdown summary.

use ouli_core::proxy::ProxyEvent;
use std::sync::atomic::{AtomicU64, Ordering};

/// What happened during a run. Every adapter feeds the same counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Exchanges forwarded and stored.
    pub recorded: AtomicU64,
    /// Requests answered from recordings.
    pub replayed: AtomicU64,
    /// Requests with no recording.
    pub missed: AtomicU64,
    /// Exchanges forwarded but not stored (over a limit, or a write failed).
    pub not_recorded: AtomicU64,
    /// Requests rejected for breaking a protocol rule.
    pub client_errors: AtomicU64,
    /// Upstream failures (connect, timeout, invalid answer).
    pub upstream_errors: AtomicU64,
    /// Connections refused because the connection limit was reached.
    pub refused_connections: AtomicU64,
    /// Connections accepted.
    pub accepted_connections: AtomicU64,
}

/// A plain copy of [`Stats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// See [`Stats::recorded`].
    pub recorded: u64,
    /// See [`Stats::replayed`].
    pub replayed: u64,
    /// See [`Stats::missed`].
    pub missed: u64,
    /// See [`Stats::not_recorded`].
    pub not_recorded: u64,
    /// See [`Stats::client_errors`].
    pub client_errors: u64,
    /// See [`Stats::upstream_errors`].
    pub upstream_errors: u64,
    /// See [`Stats::refused_connections`].
    pub refused_connections: u64,
    /// See [`Stats::accepted_connections`].
    pub accepted_connections: u64,
}

impl Stats {
    /// Counts and logs one event from the core.
    pub fn observe(&self, event: &ProxyEvent) {
        match event {
            ProxyEvent::Replayed {
                test_name,
                request_line,
            } => {
                self.replayed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(test = %test_name, request = %request_line, "replayed");
            }
            ProxyEvent::Missed(report) => {
                self.missed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(test = %report.test_name, request = %report.request_line, "replay miss\n{}", report.to_text());
            }
            ProxyEvent::Recorded {
                test_name,
                request_line,
                status,
            } => {
                self.recorded.fetch_add(1, Ordering::Relaxed);
                tracing::info!(test = %test_name, request = %request_line, status, "recorded");
            }
            ProxyEvent::NotRecorded { test_name, reason } => {
                self.not_recorded.fetch_add(1, Ordering::Relaxed);
                tracing::error!(test = %test_name, "not recorded: {reason}");
            }
            ProxyEvent::ClientError { status, reason } => {
                self.client_errors.fetch_add(1, Ordering::Relaxed);
                tracing::info!(status, "rejected client input: {reason}");
            }
            ProxyEvent::UpstreamError { status, reason } => {
                self.upstream_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(status, "upstream error: {reason}");
            }
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            recorded: get(&self.recorded),
            replayed: get(&self.replayed),
            missed: get(&self.missed),
            not_recorded: get(&self.not_recorded),
            client_errors: get(&self.client_errors),
            upstream_errors: get(&self.upstream_errors),
            refused_connections: get(&self.refused_connections),
            accepted_connections: get(&self.accepted_connections),
        }
    }
}

impl std::fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "interactions recorded: {}, replayed: {}, missed: {}, not recorded: {}; \
             rejected requests: {}, upstream errors: {}; connections accepted: {}, refused: {}",
            self.recorded,
            self.replayed,
            self.missed,
            self.not_recorded,
            self.client_errors,
            self.upstream_errors,
            self.accepted_connections,
            self.refused_connections
        )
    }
}
