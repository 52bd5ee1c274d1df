//! The recording-file loader.

use ouli_core::engine::{fingerprint, Lookup, MatchPolicy, ReplayIndex};
use ouli_core::store::Recording;

/// `Recording::from_json` on the input (as UTF-8, lossily when it is not).
/// A recording that loads must save and load back to the same value, and
/// save to the same text again; it is then indexed and every interaction's
/// request is looked up.
pub fn store_load(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(recording) = Recording::from_json(&text) else {
        return;
    };
    let saved = recording.to_json();
    let loaded = match Recording::from_json(&saved) {
        Ok(r) => r,
        Err(e) => panic!("a loaded recording does not load back: {e}\n{saved}"),
    };
    assert_eq!(loaded, recording, "to_json/from_json changed the recording");
    assert_eq!(loaded.to_json(), saved, "saving is not stable");

    let policy = MatchPolicy::default();
    let index = ReplayIndex::new([recording.clone()]);
    for interaction in &recording.interactions {
        let fp = fingerprint(&policy, &interaction.request);
        match index.lookup(&policy, &recording.test_name, &interaction.request, fp) {
            Lookup::Hit(_) => {}
            Lookup::Miss(report) => {
                let _ = report.to_text();
            }
        }
    }
    let _ = index.usage();
}
