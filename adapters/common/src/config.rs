//! The proxy's TOML configuration file.
//!
//! ```toml
//! # Optional top-level settings (defaults shown).
//! max_connections = 4096
//! max_recorded_body_bytes = 67108864     # 64 MiB
//! header_read_timeout_ms = 10000
//! idle_timeout_ms = 60000
//! upstream_connect_timeout_ms = 5000
//! upstream_response_timeout_ms = 30000
//! max_upstream_idle_per_endpoint = 32
//! max_upstream_in_flight = 1024
//! upstream_in_flight_timeout_ms = 5000
//! shutdown_grace_ms = 10000
//! # tcp_send_buffer_bytes = 65536     # optional; unset = the kernel's default
//! # tcp_recv_buffer_bytes = 65536     # optional; unset = the kernel's default
//! # tls_dir = "certs"   # optional; where the generated listener CA is written (default: the recording dir)
//!
//! [[endpoints]]
//! source_host = "127.0.0.1"    # optional, default 127.0.0.1
//! source_port = 8080           # 0 = ephemeral
//! source_type = "http"         # or "https" (TLS listener)
//! target_host = "api.example.com"
//! target_port = 443
//! target_type = "https"        # or "http"
//! # target_ca_file = "ca.pem"                # optional, with https: an extra trusted CA
//! # insecure_skip_verify_upstream_tls = false  # never for real APIs
//! # source_cert_file = "cert.pem"            # optional, with source_type https,
//! # source_key_file = "key.pem"              # both or neither (then one is generated)
//! redact_request_headers = ["Authorization"]   # optional
//! match_request_headers = []                    # optional
//! # Matching, redaction and [[endpoints.paths]] overrides: see crate::policy_config.
//! ```
//!
//! A file named `*.yml` or `*.yaml` is read as YAML with the same fields
//! (Google test-server's format; see [`crate::yaml_config`]).
//!
//! Unknown keys are errors, reported with their line and column, so typos do
//! not silently fall back to defaults.

use ouli_core::engine::MatchPolicy;
use ouli_core::proxy::{ReplayTiming, UpstreamProtocol};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `max_connections` (default 4096, must be at least 1): the most client
    /// connections served at once. A connection past the limit is answered
    /// 503 and closed at once (counted as refused); the accept loop never
    /// waits for it.
    pub max_connections: usize,
    /// `max_recorded_body_bytes` (default 67108864 = 64 MiB): the largest
    /// request or response body kept in a recording. Record mode refuses
    /// bigger exchanges rather than storing them truncated.
    pub max_recorded_body_bytes: usize,
    /// `header_read_timeout_ms` (default 10000, at least 1): how long a
    /// client may take to send a complete request head.
    pub header_read_timeout: Duration,
    /// `idle_timeout_ms` (default 60000, at least 1): how long an idle
    /// keep-alive client connection is kept open.
    pub idle_timeout: Duration,
    /// `upstream_connect_timeout_ms` (default 5000, at least 1): how long
    /// connecting to the target may take (record mode).
    pub upstream_connect_timeout: Duration,
    /// `upstream_response_timeout_ms` (default 30000, at least 1): how long
    /// the target may take to start its response, and the longest pause
    /// between two reads of the response (record mode).
    pub upstream_response_timeout: Duration,
    /// `max_upstream_idle_per_endpoint` (default 32; 0 disables reuse): the
    /// most idle keep-alive connections to the target kept per endpoint.
    pub max_upstream_idle_per_endpoint: usize,
    /// `max_upstream_in_flight` (default 1024, at least 1): the most requests
    /// forwarded to upstreams at once, across all endpoints (record mode). A
    /// request past it waits for a slot, up to `upstream_in_flight_timeout_ms`.
    pub max_upstream_in_flight: usize,
    /// `upstream_in_flight_timeout_ms` (default 5000, at least 1): how long a
    /// request waits for a slot under `max_upstream_in_flight` before it is
    /// answered 503 with the reason.
    pub upstream_in_flight_timeout: Duration,
    /// `tcp_send_buffer_bytes` (optional, at least 1; unset = the kernel's
    /// default): `SO_SNDBUF` for accepted and upstream sockets. TCP_NODELAY
    /// is always set.
    pub tcp_send_buffer_bytes: Option<usize>,
    /// `tcp_recv_buffer_bytes` (optional, at least 1; unset = the kernel's
    /// default): `SO_RCVBUF` for accepted and upstream sockets.
    pub tcp_recv_buffer_bytes: Option<usize>,
    /// `shutdown_grace_ms` (default 10000; 0 = stop at once): on shutdown,
    /// how long in-flight exchanges may finish before connections are closed.
    pub shutdown_grace: Duration,
    /// `ws_max_frame_bytes` (default 33554432 = 32 MiB, at least 1): the
    /// largest WebSocket frame payload; larger frames are closed with 1009.
    pub ws_max_frame_bytes: usize,
    /// `ws_max_message_bytes` (default 67108864 = 64 MiB, at least 1): the
    /// largest WebSocket message (fragments joined); larger ones get 1009.
    pub ws_max_message_bytes: usize,
    /// `tls_dir` (optional; default: the recording dir): where Ouli writes
    /// `ouli-ca.pem`, the CA it generates for `source_type = "https"`
    /// endpoints without `source_cert_file` (see [`crate::tls`]). A relative
    /// path is relative to the working directory.
    pub tls_dir: Option<PathBuf>,
    /// `[[endpoints]]` (at least one): each is a listening address and the
    /// upstream it stands for.
    pub endpoints: Vec<EndpointConfig>,
}

/// One `[[endpoints]]` table: a listening address and the target it proxies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointConfig {
    /// `source_host` (default `"127.0.0.1"`): the address to listen on.
    pub source_host: String,
    /// `source_port` (required): the port to listen on; 0 picks a free port
    /// (useful in tests). Two endpoints may not share a non-zero
    /// `source_host`/`source_port` pair.
    pub source_port: u16,
    /// `source_type` (optional, default `"http"`): the protocol clients
    /// speak: `"http"`, or `"https"` for a TLS listener (ALPN `h2` and
    /// `http/1.1`).
    pub source_type: SourceType,
    /// `target_host` (required): the upstream's host name or address; also
    /// used as the `Host` the upstream sees.
    pub target_host: String,
    /// `target_port` (required, 1 to 65535): the upstream's port.
    pub target_port: u16,
    /// `target_type` (optional, default `"http"`): the protocol spoken to
    /// the upstream: `"http"`, or `"https"` for TLS (verified against
    /// Mozilla's roots and `target_ca_file`, SNI from `target_host`).
    pub target_type: TargetType,
    /// `target_ca_file` (optional, only with `target_type = "https"`): a PEM
    /// file of CA certificates trusted for the upstream, in addition to the
    /// built-in roots.
    pub target_ca_file: Option<PathBuf>,
    /// `insecure_skip_verify_upstream_tls` (default `false`, only with
    /// `target_type = "https"`): accept any upstream certificate. For
    /// self-signed test servers only; Ouli warns at startup when it is set.
    pub insecure_skip_verify_upstream_tls: bool,
    /// `source_cert_file` (optional, only with `source_type = "https"`,
    /// together with `source_key_file`): the listener's PEM certificate
    /// chain. Without it Ouli generates a certificate for localhost,
    /// 127.0.0.1 and ::1, signed by a CA it writes to `tls_dir`.
    pub source_cert_file: Option<PathBuf>,
    /// `source_key_file` (optional, with `source_cert_file`): the
    /// listener's PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub source_key_file: Option<PathBuf>,
    /// `redact_request_headers` (default `[]`): request header names
    /// (case-insensitive) whose values are replaced before a request is
    /// stored, so secrets such as `Authorization` never reach the recording.
    pub redact_request_headers: Vec<String>,
    /// `match_request_headers` (default `[]`): request header names
    /// (case-insensitive) whose values are part of the request fingerprint,
    /// so requests differing only in these headers replay different
    /// responses.
    pub match_request_headers: Vec<String>,
    /// The matching and redaction rules (with `redact_request_headers` and
    /// `match_request_headers` included) and the `[[endpoints.paths]]`
    /// overrides; see [`crate::policy_config`] for the fields.
    pub policy: MatchPolicy,
    /// `target_protocol` (optional, default `"auto"`): how Ouli talks to the
    /// upstream when recording, whatever the client speaks (Ouli translates
    /// between HTTP/1.1 and HTTP/2): `"http1"`, `"h2c"` (HTTP/2 with prior
    /// knowledge; `target_type = "http"`), `"h2"` (HTTP/2 by TLS ALPN;
    /// `target_type = "https"`), or `"auto"` (over TLS, offer both by ALPN
    /// and speak the upstream's pick; in cleartext, the client's protocol).
    pub target_protocol: UpstreamProtocol,
    /// `replay_timing` (optional, default `"fast"`): how recorded WebSocket
    /// server messages are paced in replay: `"fast"` (as soon as order allows)
    /// or `"recorded"` (the recorded delays).
    pub replay_timing: ReplayTiming,
}

impl EndpointConfig {
    /// `source_host:source_port`, with an IPv6 host in brackets.
    pub fn source_addr(&self) -> String {
        host_port(&self.source_host, self.source_port)
    }

    /// `target_host:target_port`, with an IPv6 host in brackets.
    pub fn target_addr(&self) -> String {
        host_port(&self.target_host, self.target_port)
    }
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The protocol clients speak to an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceType {
    /// Plain HTTP/1.x (and h2c with prior knowledge).
    Http,
    /// HTTP/1.1 or HTTP/2 over TLS.
    Https,
}

/// The protocol spoken to an endpoint's upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetType {
    /// Plain HTTP/1.1 (or h2c).
    Http,
    /// HTTP/1.1 or HTTP/2 over TLS.
    Https,
}

impl SourceType {
    /// The values accepted in the file.
    pub const ALLOWED: &'static [&'static str] = &["http", "https"];

    /// The name used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceType::Http => "http",
            SourceType::Https => "https",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "http" => Some(SourceType::Http),
            "https" => Some(SourceType::Https),
            _ => None,
        }
    }
}

impl TargetType {
    /// The values accepted in the file.
    pub const ALLOWED: &'static [&'static str] = &["http", "https"];

    /// The name used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetType::Http => "http",
            TargetType::Https => "https",
        }
    }

    /// The port the scheme implies (80 or 443).
    pub fn default_port(self) -> u16 {
        match self {
            TargetType::Http => 80,
            TargetType::Https => 443,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "http" => Some(TargetType::Http),
            "https" => Some(TargetType::Https),
            _ => None,
        }
    }
}

impl fmt::Display for SourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for TargetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Io {
        /// The file name as given.
        file: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// TOML syntax error, unknown field, missing field or wrong type.
    #[error("{file}:{line}:{column}: {message}")]
    Parse {
        /// The file name as given.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// What is wrong, naming the field.
        message: String,
    },
    /// The file parses but a value is not allowed; the message names the
    /// field and, where known, its line.
    #[error("{file}: {message}")]
    Invalid {
        /// The file name as given.
        file: String,
        /// What is wrong.
        message: String,
    },
}

const DEFAULT_SOURCE_HOST: &str = "127.0.0.1";

impl Default for Config {
    fn default() -> Self {
        Config {
            max_connections: 4096,
            max_recorded_body_bytes: 64 * 1024 * 1024,
            header_read_timeout: Duration::from_millis(10_000),
            idle_timeout: Duration::from_millis(60_000),
            upstream_connect_timeout: Duration::from_millis(5_000),
            upstream_response_timeout: Duration::from_millis(30_000),
            max_upstream_idle_per_endpoint: 32,
            max_upstream_in_flight: 1024,
            upstream_in_flight_timeout: Duration::from_millis(5_000),
            tcp_send_buffer_bytes: None,
            tcp_recv_buffer_bytes: None,
            shutdown_grace: Duration::from_millis(10_000),
            ws_max_frame_bytes: ouli_core::ws::MAX_FRAME_PAYLOAD_BYTES,
            ws_max_message_bytes: ouli_core::ws::MAX_MESSAGE_BYTES,
            tls_dir: None,
            endpoints: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    max_connections: Option<Spanned<usize>>,
    max_recorded_body_bytes: Option<usize>,
    header_read_timeout_ms: Option<Spanned<u64>>,
    idle_timeout_ms: Option<Spanned<u64>>,
    upstream_connect_timeout_ms: Option<Spanned<u64>>,
    upstream_response_timeout_ms: Option<Spanned<u64>>,
    max_upstream_idle_per_endpoint: Option<usize>,
    max_upstream_in_flight: Option<Spanned<usize>>,
    upstream_in_flight_timeout_ms: Option<Spanned<u64>>,
    tcp_send_buffer_bytes: Option<Spanned<usize>>,
    tcp_recv_buffer_bytes: Option<Spanned<usize>>,
    shutdown_grace_ms: Option<u64>,
    ws_max_frame_bytes: Option<Spanned<usize>>,
    ws_max_message_bytes: Option<Spanned<usize>>,
    tls_dir: Option<Spanned<String>>,
    #[serde(default)]
    endpoints: Vec<Spanned<RawEndpoint>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    source_host: Option<Spanned<String>>,
    source_port: Spanned<u16>,
    source_type: Option<Spanned<String>>,
    target_host: Spanned<String>,
    target_port: Spanned<u16>,
    target_type: Option<Spanned<String>>,
    target_ca_file: Option<Spanned<String>>,
    insecure_skip_verify_upstream_tls: Option<Spanned<bool>>,
    source_cert_file: Option<Spanned<String>>,
    source_key_file: Option<Spanned<String>>,
    target_protocol: Option<Spanned<String>>,
    replay_timing: Option<Spanned<String>>,
    #[serde(default)]
    redact_request_headers: Vec<Spanned<String>>,
    #[serde(default)]
    match_request_headers: Vec<Spanned<String>>,
    // Matching and redaction: see crate::policy_config.
    #[serde(default)]
    ignore_request_headers: Vec<Spanned<String>>,
    #[serde(default)]
    ignore_query_params: Vec<Spanned<String>>,
    match_body: Option<Spanned<String>>,
    #[serde(default)]
    ignore_json_fields: Vec<Spanned<String>>,
    on_repeat: Option<Spanned<String>>,
    #[serde(default)]
    redact_response_headers: Vec<Spanned<String>>,
    #[serde(default)]
    redact_query_params: Vec<Spanned<String>>,
    #[serde(default)]
    redact_json_fields: Vec<Spanned<String>>,
    #[serde(default)]
    paths: Vec<Spanned<crate::policy_config::RawPathOverride>>,
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut line = 1;
    let mut column = 1;
    for (i, c) in text.char_indices() {
        if i >= offset {
            break;
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

/// An endpoint's TLS fields, as written.
struct RawTls<'a> {
    target_ca_file: &'a Option<Spanned<String>>,
    insecure_skip_verify_upstream_tls: &'a Option<Spanned<bool>>,
    source_cert_file: &'a Option<Spanned<String>>,
    source_key_file: &'a Option<Spanned<String>>,
}

struct Checker<'a> {
    file: &'a str,
    text: &'a str,
}

impl Checker<'_> {
    fn invalid(&self, span: Option<Range<usize>>, message: impl fmt::Display) -> ConfigError {
        let message = match span {
            Some(span) => {
                let (line, column) = line_column(self.text, span.start);
                format!("line {line}, column {column}: {message}")
            }
            None => message.to_string(),
        };
        ConfigError::Invalid {
            file: self.file.to_string(),
            message,
        }
    }

    fn millis(
        &self,
        field: &str,
        value: Option<Spanned<u64>>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) if *v.get_ref() == 0 => {
                Err(self.invalid(Some(v.span()), format_args!("`{field}` must be at least 1")))
            }
            Some(v) => Ok(Duration::from_millis(v.into_inner())),
        }
    }

    fn at_least_one(
        &self,
        field: &str,
        value: Option<Spanned<usize>>,
    ) -> Result<Option<usize>, ConfigError> {
        match value {
            Some(v) if *v.get_ref() == 0 => {
                Err(self.invalid(Some(v.span()), format_args!("`{field}` must be at least 1")))
            }
            v => Ok(v.map(Spanned::into_inner)),
        }
    }

    fn header_names(
        &self,
        index: usize,
        field: &str,
        names: Vec<Spanned<String>>,
    ) -> Result<Vec<String>, ConfigError> {
        names
            .into_iter()
            .map(|n| {
                let span = n.span();
                let name = n.into_inner();
                if name.is_empty() || !name.bytes().all(is_tchar) {
                    Err(self.invalid(
                        Some(span),
                        format_args!(
                            "endpoints[{index}].{field}: {name:?} is not a valid header name"
                        ),
                    ))
                } else {
                    Ok(name)
                }
            })
            .collect()
    }

    /// The TLS file and verification fields, each allowed only with the
    /// type it belongs to, so a setting that would be ignored is an error.
    #[allow(clippy::type_complexity)]
    fn tls_fields(
        &self,
        index: usize,
        raw: RawTls<'_>,
        source_type: SourceType,
        target_type: TargetType,
    ) -> Result<(Option<PathBuf>, bool, Option<PathBuf>, Option<PathBuf>), ConfigError> {
        let path = |field: &str, value: &Option<Spanned<String>>| match value {
            Some(v) if v.get_ref().trim().is_empty() => Err(self.invalid(
                Some(v.span()),
                format_args!("endpoints[{index}].{field} must not be empty"),
            )),
            Some(v) => Ok(Some(PathBuf::from(v.get_ref()))),
            None => Ok(None),
        };
        let target_ca_file = path("target_ca_file", raw.target_ca_file)?;
        let source_cert_file = path("source_cert_file", raw.source_cert_file)?;
        let source_key_file = path("source_key_file", raw.source_key_file)?;
        let insecure = raw
            .insecure_skip_verify_upstream_tls
            .as_ref()
            .is_some_and(|v| *v.get_ref());
        let needs = |field: &str, span: Option<Range<usize>>, what: &str| {
            self.invalid(
                span,
                format_args!("endpoints[{index}].{field} needs {what}"),
            )
        };
        if target_type != TargetType::Https {
            if let Some(v) = raw.target_ca_file {
                return Err(needs(
                    "target_ca_file",
                    Some(v.span()),
                    "target_type = \"https\"",
                ));
            }
            if let Some(v) = raw.insecure_skip_verify_upstream_tls {
                return Err(needs(
                    "insecure_skip_verify_upstream_tls",
                    Some(v.span()),
                    "target_type = \"https\"",
                ));
            }
        }
        if insecure {
            if let Some(v) = raw.target_ca_file {
                return Err(self.invalid(
                    Some(v.span()),
                    format_args!(
                        "endpoints[{index}]: target_ca_file and \
                         insecure_skip_verify_upstream_tls = true contradict each other: \
                         keep target_ca_file"
                    ),
                ));
            }
        }
        for (field, value) in [
            ("source_cert_file", raw.source_cert_file),
            ("source_key_file", raw.source_key_file),
        ] {
            if let Some(v) = value {
                if source_type != SourceType::Https {
                    return Err(needs(field, Some(v.span()), "source_type = \"https\""));
                }
            }
        }
        match (raw.source_cert_file, raw.source_key_file) {
            (Some(v), None) => {
                return Err(needs("source_cert_file", Some(v.span()), "source_key_file"))
            }
            (None, Some(v)) => {
                return Err(needs("source_key_file", Some(v.span()), "source_cert_file"))
            }
            _ => {}
        }
        Ok((target_ca_file, insecure, source_cert_file, source_key_file))
    }

    fn endpoint(&self, index: usize, raw: RawEndpoint) -> Result<EndpointConfig, ConfigError> {
        let source_host = match raw.source_host {
            None => DEFAULT_SOURCE_HOST.to_string(),
            Some(h) if h.get_ref().trim().is_empty() => {
                return Err(self.invalid(
                    Some(h.span()),
                    format_args!("endpoints[{index}].source_host must not be empty"),
                ))
            }
            Some(h) => h.into_inner(),
        };
        // Optional: defaults to "http".
        let source_type = match &raw.source_type {
            None => SourceType::Http,
            Some(value) => SourceType::parse(value.get_ref()).ok_or_else(|| {
                self.invalid(
                    Some(value.span()),
                    format_args!(
                        "endpoints[{index}].source_type {:?} is not supported (allowed: {})",
                        value.get_ref(),
                        allowed(SourceType::ALLOWED)
                    ),
                )
            })?,
        };
        // Optional: defaults to "http".
        let target_type = match &raw.target_type {
            None => TargetType::Http,
            Some(value) => TargetType::parse(value.get_ref()).ok_or_else(|| {
                self.invalid(
                    Some(value.span()),
                    format_args!(
                        "endpoints[{index}].target_type {:?} is not supported (allowed: {})",
                        value.get_ref(),
                        allowed(TargetType::ALLOWED)
                    ),
                )
            })?,
        };
        let (target_ca_file, insecure_skip_verify_upstream_tls, source_cert_file, source_key_file) =
            self.tls_fields(
                index,
                RawTls {
                    target_ca_file: &raw.target_ca_file,
                    insecure_skip_verify_upstream_tls: &raw.insecure_skip_verify_upstream_tls,
                    source_cert_file: &raw.source_cert_file,
                    source_key_file: &raw.source_key_file,
                },
                source_type,
                target_type,
            )?;
        let target_protocol = match &raw.target_protocol {
            None => UpstreamProtocol::Auto,
            Some(v) => {
                let protocol = match v.get_ref().as_str() {
                    "http1" => UpstreamProtocol::Http1,
                    "h2c" => UpstreamProtocol::H2c,
                    "h2" => UpstreamProtocol::H2,
                    "auto" => UpstreamProtocol::Auto,
                    other => {
                        return Err(self.invalid(
                            Some(v.span()),
                            format_args!(
                                "endpoints[{index}].target_protocol {other:?} is not supported \
                                 (allowed: \"http1\", \"h2c\", \"h2\", \"auto\")"
                            ),
                        ))
                    }
                };
                // h2c is HTTP/2 in cleartext, h2 is HTTP/2 agreed by TLS ALPN.
                let mismatch = match (protocol, target_type) {
                    (UpstreamProtocol::H2c, TargetType::Https) => Some(
                        "\"h2c\" is HTTP/2 in cleartext: with target_type = \"https\" use \"h2\"",
                    ),
                    (UpstreamProtocol::H2, TargetType::Http) => {
                        Some("\"h2\" is HTTP/2 over TLS: with target_type = \"http\" use \"h2c\"")
                    }
                    _ => None,
                };
                if let Some(why) = mismatch {
                    return Err(self.invalid(
                        Some(v.span()),
                        format_args!("endpoints[{index}].target_protocol {why}"),
                    ));
                }
                protocol
            }
        };
        let replay_timing = match &raw.replay_timing {
            None => ReplayTiming::AsFastAsPossible,
            Some(v) => match v.get_ref().as_str() {
                "fast" => ReplayTiming::AsFastAsPossible,
                "recorded" => ReplayTiming::Recorded,
                other => {
                    return Err(self.invalid(
                        Some(v.span()),
                        format_args!(
                            "endpoints[{index}].replay_timing {other:?} is not supported \
                             (allowed: \"fast\", \"recorded\")"
                        ),
                    ))
                }
            },
        };
        if raw.target_host.get_ref().trim().is_empty() {
            return Err(self.invalid(
                Some(raw.target_host.span()),
                format_args!("endpoints[{index}].target_host must not be empty"),
            ));
        }
        if *raw.target_port.get_ref() == 0 {
            return Err(self.invalid(
                Some(raw.target_port.span()),
                format_args!("endpoints[{index}].target_port must be 1 to 65535, not 0"),
            ));
        }
        let redact_request_headers =
            self.header_names(index, "redact_request_headers", raw.redact_request_headers)?;
        let match_request_headers =
            self.header_names(index, "match_request_headers", raw.match_request_headers)?;
        let policy = crate::policy_config::build_policy(
            index,
            crate::policy_config::RawMatching {
                redact_request_headers: redact_request_headers.clone(),
                match_request_headers: match_request_headers.clone(),
                ignore_request_headers: raw.ignore_request_headers,
                ignore_query_params: raw.ignore_query_params,
                match_body: raw.match_body,
                ignore_json_fields: raw.ignore_json_fields,
                on_repeat: raw.on_repeat,
                redact_response_headers: raw.redact_response_headers,
                redact_query_params: raw.redact_query_params,
                redact_json_fields: raw.redact_json_fields,
                paths: raw.paths,
            },
            &|span, message| self.invalid(span, message),
        )?;
        Ok(EndpointConfig {
            source_host,
            source_port: raw.source_port.into_inner(),
            source_type,
            target_host: raw.target_host.into_inner(),
            target_port: raw.target_port.into_inner(),
            target_type,
            target_ca_file,
            insecure_skip_verify_upstream_tls,
            source_cert_file,
            source_key_file,
            redact_request_headers,
            match_request_headers,
            policy,
            target_protocol,
            replay_timing,
        })
    }
}

fn allowed(values: &[&str]) -> String {
    values
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl Config {
    /// Parses and checks a configuration; `file_name` is only used in error
    /// messages.
    pub fn from_toml_str(text: &str, file_name: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = match e.span() {
                Some(span) => line_column(text, span.start),
                None => (1, 1),
            };
            ConfigError::Parse {
                file: file_name.to_string(),
                line,
                column,
                message: e.message().trim_end().to_string(),
            }
        })?;
        let check = Checker {
            file: file_name,
            text,
        };
        let defaults = Config::default();

        let max_connections = check
            .at_least_one("max_connections", raw.max_connections)?
            .unwrap_or(defaults.max_connections);
        let max_upstream_in_flight = check
            .at_least_one("max_upstream_in_flight", raw.max_upstream_in_flight)?
            .unwrap_or(defaults.max_upstream_in_flight);
        let tcp_send_buffer_bytes =
            check.at_least_one("tcp_send_buffer_bytes", raw.tcp_send_buffer_bytes)?;
        let tcp_recv_buffer_bytes =
            check.at_least_one("tcp_recv_buffer_bytes", raw.tcp_recv_buffer_bytes)?;
        let ws_max_frame_bytes = check
            .at_least_one("ws_max_frame_bytes", raw.ws_max_frame_bytes)?
            .unwrap_or(defaults.ws_max_frame_bytes);
        let ws_max_message_bytes = check
            .at_least_one("ws_max_message_bytes", raw.ws_max_message_bytes)?
            .unwrap_or(defaults.ws_max_message_bytes);

        if raw.endpoints.is_empty() {
            return Err(check.invalid(
                None,
                "no endpoints configured: add at least one [[endpoints]] table with source_port, \
                 target_host and target_port",
            ));
        }
        let mut endpoints: Vec<EndpointConfig> = Vec::with_capacity(raw.endpoints.len());
        for (index, ep) in raw.endpoints.into_iter().enumerate() {
            let span = ep.span();
            let ep = check.endpoint(index, ep.into_inner())?;
            if ep.source_port != 0 {
                if let Some(first) = endpoints.iter().position(|o| {
                    o.source_port == ep.source_port && o.source_host == ep.source_host
                }) {
                    return Err(check.invalid(
                        Some(span),
                        format_args!(
                            "endpoints[{index}] listens on {}, like endpoints[{first}]",
                            ep.source_addr()
                        ),
                    ));
                }
            }
            endpoints.push(ep);
        }

        Ok(Config {
            max_connections,
            max_recorded_body_bytes: raw
                .max_recorded_body_bytes
                .unwrap_or(defaults.max_recorded_body_bytes),
            header_read_timeout: check.millis(
                "header_read_timeout_ms",
                raw.header_read_timeout_ms,
                defaults.header_read_timeout,
            )?,
            idle_timeout: check.millis(
                "idle_timeout_ms",
                raw.idle_timeout_ms,
                defaults.idle_timeout,
            )?,
            upstream_connect_timeout: check.millis(
                "upstream_connect_timeout_ms",
                raw.upstream_connect_timeout_ms,
                defaults.upstream_connect_timeout,
            )?,
            upstream_response_timeout: check.millis(
                "upstream_response_timeout_ms",
                raw.upstream_response_timeout_ms,
                defaults.upstream_response_timeout,
            )?,
            max_upstream_idle_per_endpoint: raw
                .max_upstream_idle_per_endpoint
                .unwrap_or(defaults.max_upstream_idle_per_endpoint),
            max_upstream_in_flight,
            upstream_in_flight_timeout: check.millis(
                "upstream_in_flight_timeout_ms",
                raw.upstream_in_flight_timeout_ms,
                defaults.upstream_in_flight_timeout,
            )?,
            tcp_send_buffer_bytes,
            tcp_recv_buffer_bytes,
            shutdown_grace: raw
                .shutdown_grace_ms
                .map(Duration::from_millis)
                .unwrap_or(defaults.shutdown_grace),
            ws_max_frame_bytes,
            ws_max_message_bytes,
            tls_dir: match raw.tls_dir {
                Some(v) if v.get_ref().trim().is_empty() => {
                    return Err(check.invalid(Some(v.span()), "`tls_dir` must not be empty"))
                }
                v => v.map(|v| PathBuf::from(v.into_inner())),
            },
            endpoints,
        })
    }

    /// Reads and parses the file at `path`: YAML when its extension is
    /// `yml` or `yaml`, TOML otherwise.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            file: file.clone(),
            source,
        })?;
        let yaml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("yml") || e.eq_ignore_ascii_case("yaml"));
        if yaml {
            // Google test-server's format; see crate::yaml_config.
            return Config::from_yaml_str(&text, &file);
        }
        Config::from_toml_str(&text, &file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[endpoints]]
source_port = 8080
source_type = "http"
target_host = "api.example.com"
target_port = 80
target_type = "http"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, "ouli.toml")
    }

    fn parse_err(text: &str) -> (usize, usize, String) {
        match parse(text) {
            Err(ConfigError::Parse {
                file,
                line,
                column,
                message,
            }) => {
                assert_eq!(file, "ouli.toml");
                (line, column, message)
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    fn invalid(text: &str) -> String {
        match parse(text) {
            Err(e @ ConfigError::Invalid { .. }) => e.to_string(),
            other => panic!("expected an invalid error, got {other:?}"),
        }
    }

    #[test]
    fn minimal_uses_defaults() {
        let c = parse(MINIMAL).unwrap();
        let d = Config::default();
        assert_eq!(c.max_connections, 4096);
        assert_eq!(c.max_recorded_body_bytes, 67_108_864);
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.upstream_connect_timeout, Duration::from_secs(5));
        assert_eq!(c.upstream_response_timeout, Duration::from_secs(30));
        assert_eq!(c.max_upstream_idle_per_endpoint, 32);
        assert_eq!(c.max_upstream_in_flight, 1024);
        assert_eq!(c.upstream_in_flight_timeout, Duration::from_secs(5));
        assert_eq!(c.tcp_send_buffer_bytes, None);
        assert_eq!(c.tcp_recv_buffer_bytes, None);
        assert_eq!(c.shutdown_grace, Duration::from_secs(10));
        assert_eq!(
            Config {
                endpoints: vec![],
                ..c.clone()
            },
            d
        );
        assert_eq!(
            c.endpoints,
            vec![EndpointConfig {
                source_host: "127.0.0.1".into(),
                source_port: 8080,
                source_type: SourceType::Http,
                target_host: "api.example.com".into(),
                target_port: 80,
                target_type: TargetType::Http,
                target_ca_file: None,
                insecure_skip_verify_upstream_tls: false,
                source_cert_file: None,
                source_key_file: None,
                redact_request_headers: vec![],
                match_request_headers: vec![],
                policy: MatchPolicy::default(),
                target_protocol: UpstreamProtocol::Auto,
                replay_timing: ReplayTiming::AsFastAsPossible,
            }]
        );
        assert_eq!(c.endpoints[0].source_addr(), "127.0.0.1:8080");
    }

    #[test]
    fn full_file() {
        let c = parse(
            r#"
max_connections = 10
max_recorded_body_bytes = 1024
header_read_timeout_ms = 1
idle_timeout_ms = 2
upstream_connect_timeout_ms = 3
upstream_response_timeout_ms = 4
max_upstream_idle_per_endpoint = 0
max_upstream_in_flight = 7
upstream_in_flight_timeout_ms = 5
tcp_send_buffer_bytes = 65536
tcp_recv_buffer_bytes = 32768
shutdown_grace_ms = 0

[[endpoints]]
source_host = "::1"
source_port = 0
source_type = "http"
target_host = "a"
target_port = 1
target_type = "http"
redact_request_headers = ["Authorization", "X-Api-Key"]
match_request_headers = ["Accept"]

[[endpoints]]
source_port = 0
source_type = "http"
target_host = "b"
target_port = 2
target_type = "http"
"#,
        )
        .unwrap();
        assert_eq!(c.max_connections, 10);
        assert_eq!(c.max_recorded_body_bytes, 1024);
        assert_eq!(c.header_read_timeout, Duration::from_millis(1));
        assert_eq!(c.idle_timeout, Duration::from_millis(2));
        assert_eq!(c.upstream_connect_timeout, Duration::from_millis(3));
        assert_eq!(c.upstream_response_timeout, Duration::from_millis(4));
        assert_eq!(c.max_upstream_idle_per_endpoint, 0);
        assert_eq!(c.max_upstream_in_flight, 7);
        assert_eq!(c.upstream_in_flight_timeout, Duration::from_millis(5));
        assert_eq!(c.tcp_send_buffer_bytes, Some(65536));
        assert_eq!(c.tcp_recv_buffer_bytes, Some(32768));
        assert_eq!(c.shutdown_grace, Duration::ZERO);
        assert_eq!(c.endpoints.len(), 2);
        assert_eq!(c.endpoints[0].source_addr(), "[::1]:0");
        assert_eq!(
            c.endpoints[0].redact_request_headers,
            ["Authorization", "X-Api-Key"]
        );
        assert_eq!(c.endpoints[0].match_request_headers, ["Accept"]);
        assert_eq!(c.endpoints[1].target_addr(), "b:2");
    }

    #[test]
    fn unknown_field_reports_line_and_name() {
        let text = MINIMAL.replace("target_port = 80", "target_prot = 80");
        let (line, column, message) = parse_err(&text);
        assert_eq!((line, column), (6, 1));
        assert!(message.contains("unknown field `target_prot`"), "{message}");
        let shown = parse(&text).unwrap_err().to_string();
        assert!(
            shown.starts_with("ouli.toml:6:1: unknown field `target_prot`"),
            "{shown}"
        );

        let (line, _, message) = parse_err(&format!("max_conections = 3\n{MINIMAL}"));
        assert_eq!(line, 1);
        assert!(message.contains("max_conections"), "{message}");
    }

    #[test]
    fn missing_field_is_named() {
        let text = MINIMAL.replace("target_host = \"api.example.com\"\n", "");
        let (line, _, message) = parse_err(&text);
        assert!(message.contains("missing field `target_host`"), "{message}");
        assert_eq!(line, 2, "points at the [[endpoints]] table");
    }

    #[test]
    fn wrong_type_reports_line() {
        let text = MINIMAL.replace("source_port = 8080", "source_port = \"8080\"");
        let (line, column, message) = parse_err(&text);
        assert_eq!((line, column), (3, 15));
        assert!(message.contains("invalid type"), "{message}");

        let (line, _, message) =
            parse_err(&MINIMAL.replace("target_port = 80", "target_port = 70000"));
        assert_eq!(line, 6);
        assert!(message.contains("70000"), "{message}");

        let (line, _, message) = parse_err(&format!("max_connections = -1\n{MINIMAL}"));
        assert_eq!(line, 1);
        assert!(message.contains("-1"), "{message}");
    }

    #[test]
    fn syntax_error_reports_line() {
        let text = MINIMAL.replace("target_port = 80", "target_port = = 80");
        let (line, _, _) = parse_err(&text);
        assert_eq!(line, 6);
    }

    #[test]
    fn no_endpoints() {
        let msg = invalid("max_connections = 5\n");
        assert!(msg.starts_with("ouli.toml: no endpoints"), "{msg}");
        assert!(invalid("").contains("no endpoints"));
    }

    #[test]
    fn target_port_zero() {
        let msg = invalid(&MINIMAL.replace("target_port = 80", "target_port = 0"));
        assert!(msg.contains("line 6"), "{msg}");
        assert!(msg.contains("endpoints[0].target_port"), "{msg}");
    }

    #[test]
    fn max_connections_zero_and_zero_timeouts() {
        let msg = invalid(&format!("max_connections = 0\n{MINIMAL}"));
        assert!(
            msg.contains("line 1") && msg.contains("max_connections"),
            "{msg}"
        );
        let msg = invalid(&format!("\nidle_timeout_ms = 0\n{MINIMAL}"));
        assert!(
            msg.contains("line 2") && msg.contains("idle_timeout_ms"),
            "{msg}"
        );
    }

    #[test]
    fn connection_layer_fields_must_be_positive() {
        for (field, line) in [
            ("max_upstream_in_flight", 1),
            ("upstream_in_flight_timeout_ms", 2),
            ("tcp_send_buffer_bytes", 3),
            ("tcp_recv_buffer_bytes", 4),
        ] {
            let text = format!("{}{field} = 0\n{MINIMAL}", "\n".repeat(line - 1));
            let msg = invalid(&text);
            assert!(
                msg.contains(&format!("line {line}")) && msg.contains(field),
                "{msg}"
            );
        }
        let (line, _, message) = parse_err(&format!("\n\ntcp_send_buffer_bytes = -5\n{MINIMAL}"));
        assert_eq!(line, 3);
        assert!(message.contains("-5"), "{message}");
    }

    #[test]
    fn unknown_types_name_allowed_values() {
        let msg = invalid(&MINIMAL.replace("target_type = \"http\"", "target_type = \"ftp\""));
        assert!(msg.contains("line 7"), "{msg}");
        assert!(
            msg.contains("target_type \"ftp\" is not supported (allowed: \"http\", \"https\")"),
            "{msg}"
        );
        let msg = invalid(&MINIMAL.replace("source_type = \"http\"", "source_type = \"grpc\""));
        assert!(
            msg.contains("line 4") && msg.contains("source_type \"grpc\""),
            "{msg}"
        );
    }

    #[test]
    fn duplicate_source_address() {
        let twice = format!("{MINIMAL}{MINIMAL}");
        let msg = invalid(&twice);
        assert!(
            msg.contains("endpoints[1] listens on 127.0.0.1:8080, like endpoints[0]"),
            "{msg}"
        );
        assert!(msg.contains("line 9"), "{msg}");
        // Ephemeral ports and different hosts do not clash.
        assert!(parse(&twice.replace("8080", "0")).is_ok());
        let other_host = format!(
            "{MINIMAL}{}",
            MINIMAL.replace(
                "[[endpoints]]",
                "[[endpoints]]\nsource_host = \"127.0.0.2\""
            )
        );
        assert!(parse(&other_host).is_ok());
    }

    #[test]
    fn bad_header_names() {
        let msg = invalid(&format!(
            "{MINIMAL}redact_request_headers = [\"Bad Header\"]\n"
        ));
        assert!(
            msg.contains("redact_request_headers") && msg.contains("line 8"),
            "{msg}"
        );
        let msg = invalid(&format!("{MINIMAL}match_request_headers = [\"\"]\n"));
        assert!(msg.contains("match_request_headers"), "{msg}");
    }

    #[test]
    fn load_reports_io_errors_with_file_name() {
        let path = std::env::temp_dir().join("ouli-config-test-does-not-exist.toml");
        match Config::load(&path) {
            Err(e @ ConfigError::Io { .. }) => assert!(e
                .to_string()
                .contains("ouli-config-test-does-not-exist.toml")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn line_column_counts_characters() {
        let text = "é\nab\u{2713}c";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 3), (2, 1));
        assert_eq!(line_column(text, 5), (2, 3));
        assert_eq!(line_column(text, 8), (2, 4));
        assert_eq!(line_column(text, 1000), (2, 5));
    }

    #[test]
    fn protocol_timing_and_websocket_limits() {
        let text = "ws_max_frame_bytes = 1024\nws_max_message_bytes = 4096\n\n[[endpoints]]\n\
                    source_port = 1\ntarget_host = \"h\"\ntarget_port = 2\n\
                    target_protocol = \"h2c\"\nreplay_timing = \"recorded\"\n";
        let c = Config::from_toml_str(text, "p.toml").unwrap();
        assert_eq!(c.ws_max_frame_bytes, 1024);
        assert_eq!(c.ws_max_message_bytes, 4096);
        assert_eq!(c.endpoints[0].target_protocol, UpstreamProtocol::H2c);
        assert_eq!(c.endpoints[0].replay_timing, ReplayTiming::Recorded);
        let bad = text.replace("\"h2c\"", "\"h3\"");
        let e = Config::from_toml_str(&bad, "p.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("p.toml") && e.contains("line 8") && e.contains("target_protocol"),
            "{e}"
        );
        // h2 needs TLS, h2c cleartext.
        let bad = text.replace("\"h2c\"", "\"h2\"");
        let e = Config::from_toml_str(&bad, "p.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 8") && e.contains("use \"h2c\""), "{e}");
        let tls = text.replace(
            "target_port = 2",
            "target_port = 2\ntarget_type = \"https\"",
        );
        let e = Config::from_toml_str(&tls, "p.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 9") && e.contains("use \"h2\""), "{e}");
        let h2 = tls.replace("\"h2c\"", "\"h2\"");
        let c = Config::from_toml_str(&h2, "p.toml").unwrap();
        assert_eq!(c.endpoints[0].target_protocol, UpstreamProtocol::H2);
        let bad = text.replace("\"recorded\"", "\"slow\"");
        let e = Config::from_toml_str(&bad, "p.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("replay_timing") && e.contains("line 9"), "{e}");
        let zero = text.replace("= 1024", "= 0");
        let e = Config::from_toml_str(&zero, "p.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ws_max_frame_bytes"), "{e}");
    }

    #[test]
    fn tls_fields() {
        let https = MINIMAL
            .replace("source_type = \"http\"", "source_type = \"https\"")
            .replace("target_type = \"http\"", "target_type = \"https\"");
        let c = parse(&format!(
            "tls_dir = \"certs\"\n{https}target_ca_file = \"ca.pem\"\n\
             source_cert_file = \"c.pem\"\nsource_key_file = \"k.pem\"\n"
        ))
        .unwrap();
        assert_eq!(c.tls_dir, Some(PathBuf::from("certs")));
        let ep = &c.endpoints[0];
        assert_eq!(ep.source_type, SourceType::Https);
        assert_eq!(ep.target_type, TargetType::Https);
        assert_eq!(ep.target_ca_file, Some(PathBuf::from("ca.pem")));
        assert!(!ep.insecure_skip_verify_upstream_tls);
        assert_eq!(ep.source_cert_file, Some(PathBuf::from("c.pem")));
        assert_eq!(ep.source_key_file, Some(PathBuf::from("k.pem")));
        let insecure = parse(&format!(
            "{https}insecure_skip_verify_upstream_tls = true\n"
        ))
        .unwrap();
        assert!(insecure.endpoints[0].insecure_skip_verify_upstream_tls);

        // Settings that would be ignored are errors naming what they need.
        for (extra, needs) in [
            (
                "target_ca_file = \"ca.pem\"",
                "target_ca_file needs target_type = \"https\"",
            ),
            (
                "insecure_skip_verify_upstream_tls = true",
                "insecure_skip_verify_upstream_tls needs target_type = \"https\"",
            ),
            (
                "source_cert_file = \"c.pem\"\nsource_key_file = \"k.pem\"",
                "source_cert_file needs source_type = \"https\"",
            ),
        ] {
            let msg = invalid(&format!("{MINIMAL}{extra}\n"));
            assert!(msg.contains(needs) && msg.contains("line 8"), "{msg}");
        }
        let msg = invalid(&format!("{https}source_cert_file = \"c.pem\"\n"));
        assert!(
            msg.contains("source_cert_file needs source_key_file"),
            "{msg}"
        );
        let msg = invalid(&format!("{https}source_key_file = \"k.pem\"\n"));
        assert!(
            msg.contains("source_key_file needs source_cert_file"),
            "{msg}"
        );
        let msg = invalid(&format!(
            "{https}target_ca_file = \"ca.pem\"\ninsecure_skip_verify_upstream_tls = true\n"
        ));
        assert!(msg.contains("contradict"), "{msg}");
        let msg = invalid(&format!("{https}target_ca_file = \" \"\n"));
        assert!(msg.contains("target_ca_file must not be empty"), "{msg}");
    }
}
