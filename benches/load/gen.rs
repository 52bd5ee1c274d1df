//! Recording sets for the replay runs, written with the core's own types
//! and fingerprint, so replay computes the same digests.

use crate::servers::{BODY, CONTENT_TYPE};
use bytes::Bytes;
use ouli_adapter_common::recording_dir::RecordingDir;
use ouli_core::engine::{fingerprint, MatchPolicy};
use ouli_core::message::Header;
use ouli_core::store::{Framing, Interaction, RecordedRequest, RecordedResponse, Recording};
use std::path::Path;

/// The path of the only recording in the one-recording set.
pub const SINGLE_PATH: &str = "/bench";

/// The path of recording `i` in a larger set.
pub fn item_path(i: usize) -> String {
    format!("/item/{i}")
}

/// Writes the test `default` with `count` GET recordings: `/bench` when
/// `count` is 1, `/item/0` .. `/item/{count-1}` otherwise. Each answers as
/// the hyper server does (same status, headers and body; hyper's `date`
/// is recorded as a fixed date of the same length).
pub fn write_set(dir: &Path, count: usize) -> std::io::Result<()> {
    // The bench config changes only `on_repeat`, which does not enter the
    // fingerprint.
    let policy = MatchPolicy::default();
    let mut recording = Recording::new("default");
    for i in 0..count {
        let target = if count == 1 {
            SINGLE_PATH.to_owned()
        } else {
            item_path(i)
        };
        let request = RecordedRequest {
            method: Bytes::from_static(b"GET"),
            target: Bytes::from(target),
            headers: vec![Header::new("Host", "127.0.0.1")],
            body: Bytes::new(),
        };
        recording.interactions.push(Interaction {
            fingerprint: fingerprint(&policy, &request).to_string(),
            request,
            response: RecordedResponse {
                status: 200,
                reason: Bytes::from_static(b"OK"),
                headers: vec![
                    Header::new("content-type", CONTENT_TYPE),
                    Header::new("date", "Thu, 01 Jan 2026 00:00:00 GMT"),
                ],
                framing: Framing::Length,
                chunks: vec![Bytes::from_static(BODY)],
                trailers: vec![],
            },
            websocket: None,
        });
    }
    std::fs::create_dir_all(dir)?;
    RecordingDir::new(dir).write_atomic(&recording)?;
    Ok(())
}
