//! Record mode's store: appends interactions to their test's recording and
//! writes the file atomically after each one.

use crate::recording_dir::RecordingDir;
use ouli_core::store::{Interaction, Recording};
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Collects the interactions of a record run, one [`Recording`] per test.
///
/// In record mode ([`Recorder::new`]) the first interaction a run stores
/// for a test starts that test's recording afresh (the test is
/// re-recorded); in auto mode ([`Recorder::appending`]) it is appended to
/// the test's existing recording. Either way, tests the run never stores
/// for keep their files untouched. Each store rewrites the test's file with
/// [`RecordingDir::write_atomic`], so what is on disk is always a whole,
/// parseable recording. The methods block on file I/O: adapters call them
/// from a blocking context.
pub struct Recorder {
    dir: RecordingDir,
    tests: Mutex<HashMap<String, Arc<TestFile>>>,
    /// Auto mode: the recordings new interactions are appended to, taken
    /// out on a test's first store.
    existing: Mutex<HashMap<String, Recording>>,
}

/// One test's recording and how much of it is on disk.
struct TestFile {
    recording: Mutex<Recording>,
    /// Held while the file is written: how many interactions the file on
    /// disk holds (interactions are only ever appended).
    written: Mutex<usize>,
}

impl Recorder {
    /// A recorder writing under `dir`.
    pub fn new(dir: RecordingDir) -> Self {
        Recorder::appending(dir, [])
    }

    /// A recorder writing under `dir` that appends to `existing`
    /// recordings (auto mode). A test that appears twice keeps the later
    /// recording, as the replay index does.
    pub fn appending(dir: RecordingDir, existing: impl IntoIterator<Item = Recording>) -> Self {
        Recorder {
            dir,
            tests: Mutex::new(HashMap::new()),
            existing: Mutex::new(
                existing
                    .into_iter()
                    .map(|r| (r.test_name.clone(), r))
                    .collect(),
            ),
        }
    }

    /// Appends `interaction` to `test_name`'s recording and writes the file;
    /// returns once a file holding it is on disk. Interactions of one test
    /// are written in the order this is called.
    ///
    /// One test's writes are serialized; different tests write in parallel.
    /// Stores that arrive while a write is under way are written together
    /// by the next write (group commit), so concurrent connections recording
    /// into one test share a rewrite and its fsyncs instead of queueing one
    /// each.
    pub fn store(&self, test_name: &str, interaction: Interaction) -> io::Result<PathBuf> {
        let file = {
            let mut tests = self.tests.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(tests.entry(test_name.to_owned()).or_insert_with(|| {
                let existing = self
                    .existing
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(test_name);
                Arc::new(TestFile {
                    recording: Mutex::new(existing.unwrap_or_else(|| Recording::new(test_name))),
                    written: Mutex::new(0),
                })
            }))
        };
        let mine = {
            let mut recording = file.recording.lock().unwrap_or_else(|e| e.into_inner());
            recording.interactions.push(interaction);
            recording.interactions.len()
        };
        let mut written = file.written.lock().unwrap_or_else(|e| e.into_inner());
        if *written >= mine {
            // Written, with ours in it, while this store waited.
            return Ok(self.dir.file_for(test_name));
        }
        let recording = file.recording.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.dir.write_atomic(&recording)?;
        *written = recording.interactions.len();
        Ok(path)
    }

    /// Number of tests recorded in this run.
    pub fn tests_recorded(&self) -> usize {
        self.tests.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ouli_core::store::{Framing, RecordedRequest, RecordedResponse};

    fn interaction(target: String) -> Interaction {
        Interaction {
            fingerprint: "00".into(),
            request: RecordedRequest {
                method: Bytes::from_static(b"GET"),
                target: Bytes::from(target),
                headers: vec![],
                body: Bytes::new(),
            },
            response: RecordedResponse {
                status: 200,
                reason: Bytes::from_static(b"OK"),
                headers: vec![],
                framing: Framing::Length,
                chunks: vec![Bytes::from_static(b"ok")],
                trailers: vec![],
            },
            websocket: None,
        }
    }

    /// Concurrent stores into one test (written together when they meet):
    /// when a store returns, the file on disk holds its interaction, and in
    /// the end it holds every interaction, each thread's in call order.
    #[test]
    fn concurrent_stores_are_on_disk_when_they_return() {
        let dir = std::env::temp_dir().join(format!("ouli-recorder-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let recorder = Arc::new(Recorder::new(RecordingDir::new(&dir)));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let recorder = Arc::clone(&recorder);
                let dir = dir.clone();
                std::thread::spawn(move || {
                    for i in 0..10 {
                        let target = format!("/t{t}/{i}");
                        let path = recorder
                            .store("shared", interaction(target.clone()))
                            .expect("store");
                        let text = std::fs::read_to_string(&path).expect("read");
                        let on_disk = Recording::from_json(&text).expect("parse");
                        assert!(
                            on_disk
                                .interactions
                                .iter()
                                .any(|x| x.request.target == target),
                            "{target} not on disk when its store returned"
                        );
                        assert_eq!(path, RecordingDir::new(&dir).file_for("shared"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let text = std::fs::read_to_string(RecordingDir::new(&dir).file_for("shared")).unwrap();
        let all = Recording::from_json(&text).unwrap();
        assert_eq!(all.interactions.len(), 80);
        for t in 0..8 {
            let mine: Vec<String> = all
                .interactions
                .iter()
                .map(|x| String::from_utf8_lossy(&x.request.target).into_owned())
                .filter(|s| s.starts_with(&format!("/t{t}/")))
                .collect();
            let expected: Vec<String> = (0..10).map(|i| format!("/t{t}/{i}")).collect();
            assert_eq!(mine, expected);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
