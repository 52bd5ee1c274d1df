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
