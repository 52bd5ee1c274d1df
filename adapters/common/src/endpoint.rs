//! Turning the config into what the core needs for each endpoint.

use crate::config::{Config, EndpointConfig, TargetType};
use crate::recorder::Recorder;
use crate::recording_dir::{LoadError, RecordingDir};
use ouli_core::engine::ReplayIndex;
use ouli_core::proxy::{Mode, ProxySettings};
use ouli_core::store::Recording;
use ouli_core::ws::WsLimits;

/// The `Host` value Ouli sends upstream: the target host, with the port
/// unless it is the scheme's default (80 for http, 443 for https).
pub fn upstream_authority(endpoint: &EndpointConfig) -> String {
    if endpoint.target_port == endpoint.target_type.default_port() {
        endpoint.target_host.clone()
    } else if endpoint.target_host.contains(':') && !endpoint.target_host.starts_with('[') {
        format!("[{}]:{}", endpoint.target_host, endpoint.target_port)
    } else {
        format!("{}:{}", endpoint.target_host, endpoint.target_port)
    }
}

/// The core's settings for one endpoint's connections.
pub fn proxy_settings(config: &Config, endpoint: &EndpointConfig, mode: Mode) -> ProxySettings {
    let mut s = ProxySettings::new(mode, upstream_authority(endpoint));
    s.policy = endpoint.policy.clone();
    s.max_body_bytes = config.max_recorded_body_bytes;
    s.header_read_timeout = config.header_read_timeout;
    s.idle_timeout = config.idle_timeout;
    s.upstream_response_timeout = config.upstream_response_timeout;
    s.ws_limits = WsLimits {
        max_frame_payload_bytes: config.ws_max_frame_bytes,
        max_message_bytes: config.ws_max_message_bytes,
    };
    s.ws_replay_timing = endpoint.replay_timing;
    s.upstream_protocol = endpoint.target_protocol;
    s.upstream_tls = endpoint.target_type == TargetType::Https;
    s
}

/// Loads every recording under `dir` into a replay index. A file that does
/// not parse is an error naming the file and the reason.
pub fn load_replay_index(dir: &RecordingDir) -> Result<ReplayIndex, LoadError> {
    let recordings = dir.load_all()?;
    Ok(ReplayIndex::new(recordings.into_iter().map(|(_, r)| r)))
}

/// Auto mode: the replay index of everything under `dir`, and a recorder
/// that appends new interactions to those recordings. A missing directory
/// is an empty one (it is created on the first store).
pub fn load_auto(dir: &RecordingDir) -> Result<(ReplayIndex, Recorder), LoadError> {
    let recordings: Vec<Recording> = match dir.load_all() {
        Ok(found) => found.into_iter().map(|(_, r)| r).collect(),
        Err(LoadError::MissingDir(_)) => Vec::new(),
        Err(e) => return Err(e),
    };
    let index = ReplayIndex::new(recordings.iter().cloned());
    Ok((index, Recorder::appending(dir.clone(), recordings)))
}
