//! Record mode's store: appends each interaction to its test's journal,
//! flushed before the store returns, and folds journals into the tests'
//! JSON files when they grow large and when the recorder finishes.

use crate::recording_dir::{sha256_hex, JournalHeader, JournalMode, RecordingDir};
use event_listener::{listener, Event};
use ouli_core::store::{Interaction, Recording};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

/// A test's journal is folded into its JSON file once it holds more than
/// this many bytes *and* more bytes than that file. A crash leaves at most
/// that much to apply on load, and, because the threshold grows with the
/// file, each byte is rewritten a bounded number of times: storing stays
/// O(size of the interaction), amortized, however long the recording.
/// 64 MiB: a compaction is a whole-file rewrite on the path of the store
/// that crosses the threshold (the client waits for it), so most
/// recordings are only ever written whole once, at shutdown.
pub const JOURNAL_COMPACT_BYTES: u64 = 64 << 20;

/// Collects the interactions of a record run, one [`Recording`] per test.
///
/// In record mode ([`Recorder::new`]) the first interaction a run stores
/// for a test starts that test's recording afresh (the test is
/// re-recorded); in auto mode ([`Recorder::appending`]) it is appended to
/// the test's existing recording. Either way, tests the run never stores
/// for keep their files untouched.
///
/// Each store appends one line to the test's journal next to its file and
/// flushes it to disk (see [`crate::recording_dir`] for the journal format
/// and why a crash at any point leaves a directory that loads). Journals are
/// folded into the files ([`RecordingDir::write_atomic`]) past
/// [`JOURNAL_COMPACT_BYTES`] and by [`Recorder::finish`], which dropping the
/// recorder also calls. The methods block on file I/O: adapters call them
/// from a blocking context.
pub struct Recorder {
    dir: RecordingDir,
    tests: Mutex<HashMap<String, Arc<TestFile>>>,
    /// Auto mode: the recordings new interactions are appended to, taken
    /// out on a test's first store.
    existing: Mutex<HashMap<String, Recording>>,
    /// [`JOURNAL_COMPACT_BYTES`], lowered by some tests.
    compact_bytes: u64,
}

/// One test's recording and how much of it is on disk.
struct TestFile {
    name: String,
    queue: Mutex<Queue>,
    /// Held while the test's files are written (one writer at a time).
    disk: Mutex<Disk>,
}

/// Everything stored for the test, and the journal lines not yet written.
struct Queue {
    recording: Recording,
    /// Journal lines of `recording.interactions[lines_from..]`.
    lines: Vec<u8>,
    lines_from: usize,
}

struct Disk {
    /// `recording.interactions[..durable]` are what the directory loads as
    /// the test (interactions are only ever appended).
    durable: usize,
    state: State,
}

enum State {
    /// No journal written by this recorder (or the last write failed): the
    /// next write starts one. The file is expected to hold the first
    /// `file_holds` interactions; that is checked before appending to it.
    Start { file_holds: usize },
    /// Appending to the open journal, `len` bytes long, to be folded into
    /// the file past `limit`. It applies to a file holding the first `base`
    /// interactions (0 for a journal that replaces the file).
    Open {
        journal: File,
        len: u64,
        limit: u64,
        base: usize,
    },
    /// The file holds exactly the first `durable` interactions, `len` bytes
    /// whose SHA-256 is `sha256`; there is no journal.
    Compacted { sha256: String, len: u64 },
}

/// An interaction queued for a test: the test's file, and the interaction's
/// number there (1-based).
type Queued = (Arc<TestFile>, usize);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TestFile {
    /// Journal lines for `interactions[from..]`, and how many interactions
    /// there are; afterwards no line is queued.
    fn lines_from(&self, from: usize) -> (usize, Vec<u8>) {
        let (upto, missing, queued) = {
            let mut q = lock(&self.queue);
            debug_assert!(from <= q.lines_from);
            let from = from.min(q.lines_from);
            let missing = q.recording.interactions[from..q.lines_from].to_vec();
            q.lines_from = q.recording.interactions.len();
            (q.lines_from, missing, std::mem::take(&mut q.lines))
        };
        if missing.is_empty() {
            return (upto, queued);
        }
        let mut lines = Vec::new();
        for i in &missing {
            lines.extend_from_slice(i.to_json_line().as_bytes());
            lines.push(b'\n');
        }
        lines.extend_from_slice(&queued);
        (upto, lines)
    }

    /// Forgets the queued lines (the caller writes every interaction some
    /// other way); returns how many interactions there are.
    fn drain(&self) -> usize {
        let mut q = lock(&self.queue);
        q.lines = Vec::new();
        q.lines_from = q.recording.interactions.len();
        q.lines_from
    }

    /// The first `n` interactions, as a recording.
    fn snapshot(&self, n: usize) -> Recording {
        let q = lock(&self.queue);
        Recording {
            test_name: q.recording.test_name.clone(),
            interactions: q.recording.interactions[..n].to_vec(),
        }
    }
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
            compact_bytes: JOURNAL_COMPACT_BYTES,
        }
    }

    /// Appends `interaction` to `test_name`'s recording; returns once it is
    /// on disk (in the test's journal or its file), with the path of the
    /// test's file. Interactions of one test are written in the order this
    /// is called.
    ///
    /// One test's writes are serialized; different tests write in parallel.
    /// Stores that arrive while a write is under way are written together
    /// by the next write (group commit), so concurrent connections recording
    /// into one test share one append and its flush.
    ///
    /// On an error the interaction stays in the recording and is written
    /// with the next store or by [`Recorder::finish`].
    pub fn store(&self, test_name: &str, interaction: Interaction) -> io::Result<PathBuf> {
        let file = self.enqueue(test_name, interaction)?;
        self.flush(&file.0, file.1)?;
        Ok(self.dir.file_for(test_name))
    }

    /// Stores a batch of interactions, in order, and returns once all are
    /// on disk: each test's new lines are written with one append and one
    /// flush, however many of the batch are its. One result per
    /// interaction, in the batch's order (the result of its test's write).
    pub fn store_batch(
        &self,
        batch: impl IntoIterator<Item = (String, Interaction)>,
    ) -> Vec<io::Result<PathBuf>> {
        let queued: Vec<(String, io::Result<Queued>)> = batch
            .into_iter()
            .map(|(test, interaction)| {
                let queued = self.enqueue(&test, interaction);
                (test, queued)
            })
            .collect();
        // Each test's write covers every one of its interactions queued
        // above, so the last one of a test decides whether it must write.
        let mut written: HashMap<&str, Result<(), (io::ErrorKind, String)>> = HashMap::new();
        for (test, queued) in queued.iter().rev() {
            if let (Ok((file, mine)), false) = (queued, written.contains_key(test.as_str())) {
                let result = self
                    .flush(file, *mine)
                    .map_err(|e| (e.kind(), e.to_string()));
                written.insert(test, result);
            }
        }
        queued
            .iter()
            .map(|(test, queued)| match queued {
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                Ok(_) => match &written[test.as_str()] {
                    Ok(()) => Ok(self.dir.file_for(test)),
                    Err((kind, message)) => Err(io::Error::new(*kind, message.clone())),
                },
            })
            .collect()
    }

    /// Queues `interaction` as `test_name`'s next: its test file and its
    /// number there (1-based).
    fn enqueue(&self, test_name: &str, interaction: Interaction) -> io::Result<Queued> {
        if test_name.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a recording needs a non-empty test name",
            ));
        }
        let file = self.test_file(test_name);
        // Serialized outside the locks: concurrent stores do it in parallel.
        let mut line = interaction.to_json_line();
        line.push('\n');
        let mine = {
            let mut q = lock(&file.queue);
            q.recording.interactions.push(interaction);
            q.lines.extend_from_slice(line.as_bytes());
            q.recording.interactions.len()
        };
        Ok((file, mine))
    }

    /// Returns once `file`'s first `upto` interactions are on disk.
    fn flush(&self, file: &TestFile, upto: usize) -> io::Result<()> {
        let mut disk = lock(&file.disk);
        if disk.durable < upto {
            self.write(file, &mut disk)?;
        }
        // Otherwise written, with ours in it, while this store waited.
        Ok(())
    }

    fn test_file(&self, test_name: &str) -> Arc<TestFile> {
        let mut tests = lock(&self.tests);
        Arc::clone(tests.entry(test_name.to_owned()).or_insert_with(|| {
            let recording = lock(&self.existing)
                .remove(test_name)
                .unwrap_or_else(|| Recording::new(test_name));
            let on_disk = recording.interactions.len();
            Arc::new(TestFile {
                name: test_name.to_owned(),
                queue: Mutex::new(Queue {
                    recording,
                    lines: Vec::new(),
                    lines_from: on_disk,
                }),
                disk: Mutex::new(Disk {
                    durable: on_disk,
                    state: State::Start {
                        file_holds: on_disk,
                    },
                }),
            })
        }))
    }

    /// Writes every queued interaction of `file` to disk.
    fn write(&self, file: &TestFile, disk: &mut Disk) -> io::Result<()> {
        let written = match &mut disk.state {
            State::Open {
                journal,
                len,
                limit,
                base,
            } => {
                let (upto, lines) = file.lines_from(disk.durable);
                let base = *base;
                match journal.write_all(&lines).and_then(|()| journal.sync_data()) {
                    Ok(()) => {
                        *len += lines.len() as u64;
                        Ok((upto, *len > *limit))
                    }
                    Err(e) => {
                        // The journal may end in a partial line now: never
                        // append after it, start a new one.
                        disk.state = State::Start { file_holds: base };
                        Err(e)
                    }
                }
            }
            State::Compacted { sha256, len } => {
                let base = disk.durable;
                let header = JournalHeader {
                    base_sha256: Some(sha256.clone()),
                    ..JournalHeader::new(&file.name, JournalMode::Append, None)
                };
                let limit = self.compact_bytes.max(*len);
                let (upto, lines) = file.lines_from(base);
                self.open(disk, &header, &lines, (upto, limit, base), base)
            }
            State::Start { file_holds } => {
                let file_holds = *file_holds;
                let current = match std::fs::read(self.dir.file_for(&file.name)) {
                    Ok(bytes) => Some(bytes),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(e) => return Err(e),
                };
                // Append when the file holds exactly what it should
                // (auto mode, or after a failed write); otherwise the
                // journal replaces it (record mode re-records the test).
                let appendable = match &current {
                    None => file_holds == 0,
                    Some(bytes) => *bytes == file.snapshot(file_holds).to_json().into_bytes(),
                };
                let (mode, base) = if appendable {
                    (JournalMode::Append, file_holds)
                } else {
                    (JournalMode::Replace, 0)
                };
                let header = JournalHeader::new(&file.name, mode, current.as_deref());
                let limit = match (mode, &current) {
                    (JournalMode::Append, Some(bytes)) => bytes.len() as u64,
                    _ => 0,
                }
                .max(self.compact_bytes);
                let (upto, lines) = file.lines_from(base);
                self.open(disk, &header, &lines, (upto, limit, base), file_holds)
            }
        };
        let (upto, full) = written?;
        disk.durable = upto;
        if full {
            // The interactions are on disk already: a failed compaction
            // leaves them in the journal (or a file that holds them).
            if let Err(e) = self.compact(file, disk, upto) {
                tracing::error!(
                    test = %file.name,
                    "cannot write the journal into the recording file: {e}; \
                     it keeps the interactions"
                );
            }
        }
        Ok(())
    }

    /// Starts a journal holding `header` and `lines` (interactions
    /// `base..upto`); says whether it is past `limit` already. On an error
    /// the next write starts over, on a file holding `file_holds`
    /// interactions.
    fn open(
        &self,
        disk: &mut Disk,
        header: &JournalHeader,
        lines: &[u8],
        (upto, limit, base): (usize, u64, usize),
        file_holds: usize,
    ) -> io::Result<(usize, bool)> {
        match self.dir.start_journal(header, lines) {
            Ok((journal, len)) => {
                disk.state = State::Open {
                    journal,
                    len,
                    limit,
                    base,
                };
                Ok((upto, len > limit))
            }
            Err(e) => {
                // The lines taken are written again from the recording.
                disk.state = State::Start { file_holds };
                Err(e)
            }
        }
    }

    /// Writes the first `upto` interactions to the test's file, which
    /// deletes its journal.
    fn compact(&self, file: &TestFile, disk: &mut Disk, upto: usize) -> io::Result<()> {
        // Closes the journal before it is deleted. Should the write fail,
        // the file holds the old or the new text and the journal may be
        // gone: the next write starts over from whichever it is.
        disk.state = State::Start { file_holds: upto };
        let text = file.snapshot(upto).to_json();
        self.dir.write_text_atomic(&file.name, text.as_bytes())?;
        disk.state = State::Compacted {
            sha256: sha256_hex(text.as_bytes()),
            len: text.len() as u64,
        };
        Ok(())
    }

    /// Writes every test's journal into its file (and deletes the journal),
    /// so that the files alone hold the recordings. Stores may still follow
    /// (they start new journals). Dropping the recorder calls this and logs
    /// an error; call it to see the error. On an error the journals that
    /// could not be folded stay, and loading applies them.
    pub fn finish(&self) -> io::Result<()> {
        let files: Vec<Arc<TestFile>> = lock(&self.tests).values().cloned().collect();
        let mut result = Ok(());
        for file in files {
            let mut disk = lock(&file.disk);
            let upto = file.drain();
            if matches!(disk.state, State::Compacted { .. }) && disk.durable == upto {
                continue;
            }
            match self.compact(&file, &mut disk, upto) {
                Ok(()) => disk.durable = upto,
                Err(e) => {
                    tracing::error!(
                        test = %file.name,
                        "cannot write the journal into the recording file: {e}"
                    );
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
            }
        }
        result
    }

    /// Number of tests recorded in this run.
    pub fn tests_recorded(&self) -> usize {
        lock(&self.tests).len()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // Errors are logged by `finish`; the journals keep the interactions.
        let _ = self.finish();
    }
}

/// Record mode's writer: one thread per proxy that stores interactions
/// for async tasks, in batches.
///
/// A store used to be a blocking-pool task per interaction; under load
/// those tasks queued on the recorder's locks, and each store cost several
/// thread wake-ups (perf on `ouli record` under `wrk -c64`: a quarter of
/// the CPU in context switches). Here a store is queued on a channel; the
/// thread takes everything queued, writes it with
/// [`Recorder::store_batch`] (one append and one flush per test), and
/// wakes the waiting tasks. A store still returns only once its
/// interaction is on disk.
pub struct RecordWriter {
    jobs: mpsc::Sender<StoreJob>,
    thread: std::thread::JoinHandle<()>,
}

/// One interaction for the writer thread, and where its result goes.
struct StoreJob {
    /// The test and the interaction, taken by the writer thread.
    item: Option<(String, Interaction)>,
    done: Arc<StoreDone>,
    /// Dropped once the interaction is on disk (or failed): a shutdown
    /// counting these waits for the files, even if the waiting task is
    /// gone.
    writing: Option<Box<dyn Send>>,
}

#[derive(Default)]
struct StoreDone {
    result: Mutex<Option<io::Result<PathBuf>>>,
    event: Event,
}

impl StoreDone {
    fn set(&self, result: io::Result<PathBuf>) {
        let mut slot = lock(&self.result);
        if slot.is_none() {
            *slot = Some(result);
        }
        drop(slot);
        self.event.notify(usize::MAX);
    }

    fn take(&self) -> Option<io::Result<PathBuf>> {
        lock(&self.result).take()
    }
}

impl Drop for StoreJob {
    fn drop(&mut self) {
        // Dropped unwritten only if the writer thread died mid-batch.
        self.done.set(Err(io::Error::other(
            "the recording writer stopped before writing this interaction",
        )));
    }
}

impl RecordWriter {
    /// Starts the writer thread for `recorder`. The thread ends once the
    /// writer is dropped and the stores queued before have been written.
    pub fn start(recorder: Arc<Recorder>) -> io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<StoreJob>();
        let thread = std::thread::Builder::new()
            .name("ouli-record-writer".into())
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    let mut batch = vec![first];
                    batch.extend(queue.try_iter());
                    let items: Vec<(String, Interaction)> =
                        batch.iter_mut().filter_map(|job| job.item.take()).collect();
                    debug_assert_eq!(items.len(), batch.len(), "every job holds its item");
                    let results = recorder.store_batch(items);
                    for (mut job, result) in batch.into_iter().zip(results) {
                        // Before the task can see its result.
                        drop(job.writing.take());
                        job.done.set(result);
                    }
                }
            })?;
        Ok(RecordWriter { jobs, thread })
    }

    /// Stops the thread once the stores queued before are written, and
    /// waits for it (dropping the writer stops it without waiting).
    pub fn close(self) {
        let RecordWriter { jobs, thread } = self;
        drop(jobs);
        // A panic in the thread has already failed its stores.
        let _ = thread.join();
    }

    /// Stores `interaction` as `test_name`'s next and completes once it is
    /// on disk, with the path of the test's file. `writing` is dropped at
    /// that point, whether or not this future is still awaited.
    pub async fn store(
        &self,
        test_name: String,
        interaction: Interaction,
        writing: impl Send + 'static,
    ) -> io::Result<PathBuf> {
        let done = Arc::new(StoreDone::default());
        let job = StoreJob {
            item: Some((test_name, interaction)),
            done: Arc::clone(&done),
            writing: Some(Box::new(writing)),
        };
        if let Err(mpsc::SendError(job)) = self.jobs.send(job) {
            drop(job);
        }
        loop {
            if let Some(result) = done.take() {
                return result;
            }
            listener!(done.event => listener);
            if let Some(result) = done.take() {
                return result;
            }
            listener.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording_dir::LoadedTest;
    use bytes::Bytes;
    use ouli_core::store::{Framing, RecordedRequest, RecordedResponse};
    use std::path::Path;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn interaction(target: impl Into<String>) -> Interaction {
        with_body(target, Bytes::from_static(b"ok"))
    }

    fn with_body(target: impl Into<String>, body: Bytes) -> Interaction {
        Interaction {
            fingerprint: "00".into(),
            request: RecordedRequest {
                method: Bytes::from_static(b"GET"),
                target: Bytes::from(target.into()),
                headers: vec![],
                body: Bytes::new(),
            },
            response: RecordedResponse {
                status: 200,
                reason: Bytes::from_static(b"OK"),
                headers: vec![],
                framing: Framing::Length,
                chunks: vec![body],
                trailers: vec![],
            },
            websocket: None,
        }
    }

    /// A fresh directory (not created) under the system temp dir.
    fn scratch(tag: &str) -> RecordingDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ouli-recorder-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        RecordingDir::new(dir)
    }

    fn targets(r: &Recording) -> Vec<String> {
        r.interactions
            .iter()
            .map(|x| String::from_utf8_lossy(&x.request.target).into_owned())
            .collect()
    }

    /// What the directory loads for `test`, as targets.
    fn loaded(dir: &RecordingDir, test: &str) -> Vec<String> {
        match dir.load_test(test).expect("load") {
            LoadedTest {
                recording: Some(r), ..
            } => targets(&r),
            LoadedTest {
                recording: None, ..
            } => vec![],
        }
    }

    /// What the test's JSON file alone holds.
    fn in_file(dir: &RecordingDir, test: &str) -> Vec<String> {
        let text = std::fs::read_to_string(dir.file_for(test)).expect("read the file");
        targets(&Recording::from_json(&text).expect("parse"))
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn header_of(journal: &Path) -> JournalHeader {
        let text = std::fs::read_to_string(journal).expect("read the journal");
        JournalHeader::from_line(text.lines().next().expect("a header")).expect("header")
    }

    /// Each store is in what the directory loads when it returns, in call
    /// order, from the journal; `finish` writes the file and removes the
    /// journal; the returned path is the test's file.
    #[test]
    fn stores_in_order_then_finish_writes_the_file() {
        let dir = scratch("order");
        let recorder = Recorder::new(dir.clone());
        let mut expected = Vec::new();
        for i in 0..5 {
            let target = format!("/{i}");
            let path = recorder.store("t", interaction(&target)).unwrap();
            assert_eq!(path, dir.file_for("t"));
            expected.push(target);
            assert_eq!(loaded(&dir, "t"), expected);
        }
        // Nothing rewrote the file: everything is in the journal.
        assert!(!dir.file_for("t").exists());
        assert!(dir.journal_for("t").exists());
        recorder.finish().unwrap();
        assert!(!dir.journal_for("t").exists());
        assert_eq!(in_file(&dir, "t"), expected);
        // Finishing twice is harmless; stores after it start a new journal
        // on top of the file.
        recorder.finish().unwrap();
        recorder.store("t", interaction("/5")).unwrap();
        expected.push("/5".into());
        assert_eq!(loaded(&dir, "t"), expected);
        assert_eq!(header_of(&dir.journal_for("t")).mode, JournalMode::Append);
        drop(recorder);
        assert!(!dir.journal_for("t").exists(), "dropping finishes");
        assert_eq!(in_file(&dir, "t"), expected);
        assert_eq!(dir.load_all().unwrap().len(), 1);
        std::fs::remove_dir_all(dir.path()).unwrap();
    }

    /// A recorder that is never finished (the process was killed) leaves
    /// journals that load with their files, per test.
    #[test]
    fn an_unfinished_run_loads_from_its_journals() {
        let dir = scratch("killed");
        dir.write_atomic(&Recording {
            test_name: "other".into(),
            interactions: vec![interaction("/kept")],
        })
        .unwrap();
        let recorder = Recorder::new(dir.clone());
        for i in 0..3 {
            recorder.store("a", interaction(format!("/a{i}"))).unwrap();
            recorder
                .store("b c", interaction(format!("/b{i}")))
                .unwrap();
        }
        std::mem::forget(recorder); // no finish, as after kill -9
        let all = dir.load_all().unwrap();
        let found: Vec<(String, Vec<String>)> = all
            .iter()
            .map(|(_, r)| (r.test_name.clone(), targets(r)))
            .collect();
        assert_eq!(
            found,
            vec![
                ("a".to_string(), strings(&["/a0", "/a1", "/a2"])),
                ("b c".to_string(), strings(&["/b0", "/b1", "/b2"])),
                ("other".to_string(), strings(&["/kept"])),
            ]
        );
        std::fs::remove_dir_all(dir.path()).unwrap();
    }

    /// Record mode re-records: the first store replaces what the test held
    /// (file and leftover journal), at once, not only once finished.
    #[test]
    fn record_mode_starts_the_test_afresh() {
        let dir = scratch("rerecord");
        let first = Recorder::new(dir.clone());
        first.store("t", interaction("/old1")).unwrap();
        first.finish().unwrap();
        first.store("t", interaction("/old2")).unwrap();
        std::mem::forget(first); // leaves a journal on top of the file
        assert_eq!(loaded(&dir, "t"), strings(&["/old1", "/old2"]));

        let second = Recorder::new(dir.clone());
        second.store("t", interaction("/new1")).unwrap();
        assert_eq!(header_of(&dir.journal_for("t")).mode, JournalMode::Replace);
        assert_eq!(loaded(&dir, "t"), strings(&["/new1"]));
        second.store("t", interaction("/new2")).unwrap();
        assert_eq!(loaded(&dir, "t"), strings(&["/new1", "/new2"]));
        drop(second);
        assert_eq!(in_file(&dir, "t"), strings(&["/new1", "/new2"]));
        assert!(!dir.journal_for("t").exists());
        std::fs::remove_dir_all(dir.path()).unwrap();
    }

    /// Auto mode appends to what the directory loaded: with a clean file,
    /// the journal extends it (the file is not rewritten before the end);
    /// with a leftover journal, the new journal holds the whole recording.
    #[test]
    fn auto_mode_appends_to_the_existing_recording() {
        let dir = scratch("append");
        let first = Recorder::new(dir.clone());
        first.store("t", interaction("/1")).unwrap();
        first.store("u", interaction("/u1")).unwrap();
        drop(first);
        let before = std::fs::read(dir.file_for("t")).unwrap();

        let existing = dir.load_all().unwrap().into_iter().map(|(_, r)| r);
        let second = Recorder::appending(dir.clone(), existing);
        second.store("t", interaction("/2")).unwrap();
        assert_eq!(header_of(&dir.journal_for("t")).mode, JournalMode::Append);
        assert_eq!(std::fs::read(dir.file_for("t")).unwrap(), before);
        assert_eq!(loaded(&dir, "t"), strings(&["/1", "/2"]));
        std::mem::forget(second); // killed: the journal stays

        // The next auto run loads file + journal and appends after both.
        let existing = dir.load_all().unwrap().into_iter().map(|(_, r)| r);
        let third = Recorder::appending(dir.clone(), existing);
        third.store("t", interaction("/3")).unwrap();
        assert_eq!(header_of(&dir.journal_for("t")).mode, JournalMode::Replace);
        assert_eq!(loaded(&dir, "t"), strings(&["/1", "/2", "/3"]));
        third.finish().unwrap();
        assert_eq!(in_file(&dir, "t"), strings(&["/1", "/2", "/3"]));
        // A test the run never stored into is untouched.
        assert_eq!(in_file(&dir, "u"), strings(&["/u1"]));
        std::fs::remove_dir_all(dir.path()).unwrap();
    }

    /// Past JOURNAL_COMPACT_BYTES the journal is written into the file (and
    /// deleted) by the store that crossed it, which still returns Ok.
    #[test]
    fn journal_is_compacted_past_journal_compact_bytes() {
        let dir = scratch("compact-limit");
        let recorder = Recorder::new(dir.clone());
        let body = Bytes::from(vec![b'x'; 1 << 20]);
        let mut stored = 0;
        loop {
            let journal = std::fs::metadata(dir.journal_for("t")).map(|m| m.len());
            recorder
                .store("t", with_body(format!("/{stored}"), body.clone()))
                .unwrap();
            stored += 1;
            if !dir.journal_for("t").exists() {
                // Compacted by this store: the journal held just under the
                // limit before it, and over it with it.
                let before = journal.unwrap();
                assert!(before <= JOURNAL_COMPACT_BYTES, "{before}");
                assert!(before + (1 << 20) > JOURNAL_COMPACT_BYTES, "{before}");
                break;
            }
            assert!(
                stored < (JOURNAL_COMPACT_BYTES >> 20) as usize + 4,
                "never compacted"
            );
        }
        assert_eq!(in_file(&dir, "t").len(), stored);
        // The next store starts a journal on top of the file.
        recorder.store("t", interaction("/after")).unwrap();
        assert_eq!(header_of(&dir.journal_for("t")).mode, JournalMode::Append);
        assert_eq!(loaded(&dir, "t").len(), stored + 1);
        std::mem::forget(recorder);
        std::fs::remove_dir_all(dir.path()).unwrap();
    }

    /// With a low limit: once the file is larger than the limit, the
    /// journal may grow up to the file's size before it is written in, so
    /// compactions get rarer as the recording grows (amortized O(1)
    /// rewrites per byte), and the journal never exceeds either bound by
    /// more than one store.
    #[test]
    fn compaction_threshold_grows_with_the_file() {
        let dir = scratch("compact-ratio");
        let mut recorder = Recorder::new(dir.clone());
        recorder.compact_bytes = 2_000;
        let mut compactions = Vec::new();
        for i in 0..400 {
            let file_len = std::fs::metadata(dir.file_for("t")).map_or(0, |m| m.len());
            recorder.store("t", interaction(format!("/{i}"))).unwrap();
            match std::fs::metadata(dir.journal_for("t")) {
                Ok(m) => {
                    let line = 300;
                    assert!(m.len() <= file_len.max(2_000) + line, "{i}: {}", m.len());
                }
                Err(_) => compactions.push(i),
            }
        }
        assert_eq!(loaded(&dir, "t").len(), 400);
        // Each compaction at least doubles the file: a handful, not ~60.
        assert!(
            (3..=8).contains(&compactions.len()),
            "compacted after stores {compactions:?}"
        );
        drop(recorder);
        assert_eq!(in_file(&dir, "t").len(), 400);
        std::fs::remove_dir_all(dir.path()).unwrap();
    }

    /// Concurrent stores into one test (written together when they meet):
    /// when a store returns, the directory holds its interaction, and in
    /// the end it holds every interaction, each thread's in call order.
    #[test]
    fn concurrent_stores_are_on_disk_when_they_return() {
        let dir = scratch("concurrent");
        let mut recorder = Recorder::new(dir.clone());
        // Low, so that compactions happen among the concurrent stores.
        recorder.compact_bytes = 4_000;
        let recorder = Arc::new(recorder);
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
                        assert_eq!(path, dir.file_for("shared"));
                        assert!(
                            loaded(&dir, "shared").contains(&target),
                            "{target} not on disk when its store returned"
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let check = |all: Vec<String>| {
            assert_eq!(all.len(), 80);
            for t in 0..8 {
                let prefix = format!("/t{t}/");
                let mine: Vec<&String> = all.iter().filter(|s| s.starts_with(&prefix)).collect();
                let expected: Vec<String> = (0..10).map(|i| format!("/t{t}/{i}")).collect();
                assert_eq!(mine, expected.iter().collect::<Vec<_>>());
            }
        };
        check(loaded(&dir, "shared"));
        drop(recorder);
        assert!(!dir.journal_for("shared").exists());
        check(in_file(&dir, "shared"));
        std::fs::remove_dir_all(dir.path()).unwrap();
    }

    /// A store whose append fails returns the error; the interaction is
    /// written by the next store, into a new journal (never after the
    /// partial line a failed append may leave).
    #[test]
    fn a_failed_store_is_written_by_the_next() {
        let dir = scratch("failure");
        let recorder = Recorder::new(dir.clone());
        recorder.store("t", interaction("/1")).unwrap();
        {
            // The disk fails mid-append: a partial line is left, and the
            // handle refuses writes.
            let file = recorder.test_file("t");
            let mut disk = lock(&file.disk);
            let State::Open { journal, .. } = &mut disk.state else {
                panic!("a journal is open")
            };
            let mut appending = std::fs::OpenOptions::new()
                .append(true)
                .open(dir.journal_for("t"))
                .unwrap();
            appending
                .write_all(b"{\"fingerprint\": \"00\",\"requ")
                .unwrap();
            *journal = File::open(dir.journal_for("t")).unwrap();
        }
        assert!(recorder.store("t", interaction("/2")).is_err());
        assert_eq!(
            loaded(&dir, "t"),
            strings(&["/1"]),
            "the torn line is ignored"
        );
        recorder.store("t", interaction("/3")).unwrap();
        assert_eq!(loaded(&dir, "t"), strings(&["/1", "/2", "/3"]));
        let text = std::fs::read_to_string(dir.journal_for("t")).unwrap();
        assert_eq!(
            text.lines().count(),
            4,
            "header and three whole lines: {text}"
        );
        drop(recorder);
        assert_eq!(in_file(&dir, "t"), strings(&["/1", "/2", "/3"]));
        std::fs::remove_dir_all(dir.path()).unwrap();
    }

    #[test]
    fn a_batch_is_stored_in_order_with_a_result_each() {
        let dir = scratch("batch");
        let recorder = Recorder::new(dir.clone());
        let batch = vec![
            ("a".to_owned(), interaction("/a/1")),
            ("b".to_owned(), interaction("/b/1")),
            (String::new(), interaction("/nameless")),
            ("a".to_owned(), interaction("/a/2")),
        ];
        let results = recorder.store_batch(batch);
        assert_eq!(results.len(), 4);
        assert_eq!(results[0].as_ref().unwrap(), &dir.file_for("a"));
        assert_eq!(results[1].as_ref().unwrap(), &dir.file_for("b"));
        let nameless = results[2].as_ref().unwrap_err();
        assert_eq!(nameless.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(results[3].as_ref().unwrap(), &dir.file_for("a"));
        // On disk when the batch returns, each test's in batch order.
        assert_eq!(loaded(&dir, "a"), strings(&["/a/1", "/a/2"]));
        assert_eq!(loaded(&dir, "b"), strings(&["/b/1"]));
        drop(recorder);
        assert_eq!(in_file(&dir, "a"), strings(&["/a/1", "/a/2"]));
        std::fs::remove_dir_all(dir.path()).unwrap();
    }

    /// Runs `future` on this thread, parking it while the future waits.
    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        use std::task::{Context, Poll, Wake, Waker};
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut future = std::pin::pin!(future);
        loop {
            if let Poll::Ready(v) = future.as_mut().poll(&mut Context::from_waker(&waker)) {
                return v;
            }
            std::thread::park();
        }
    }

    #[test]
    fn the_writer_thread_stores_for_tasks_and_drops_their_guards_once_on_disk() {
        let dir = scratch("writer");
        let mut recorder = Recorder::new(dir.clone());
        recorder.compact_bytes = 4_000;
        let writer = Arc::new(RecordWriter::start(Arc::new(recorder)).expect("writer thread"));
        let guards = Arc::new(AtomicU64::new(0));
        struct Guard(Arc<AtomicU64>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (writer, dir, guards) = (Arc::clone(&writer), dir.clone(), Arc::clone(&guards));
                std::thread::spawn(move || {
                    let test = if t % 2 == 0 { "even" } else { "odd" };
                    for i in 0..10 {
                        let target = format!("/t{t}/{i}");
                        guards.fetch_add(1, Ordering::SeqCst);
                        let guard = Guard(Arc::clone(&guards));
                        let path = block_on(writer.store(
                            test.to_owned(),
                            interaction(target.clone()),
                            guard,
                        ))
                        .expect("store");
                        assert_eq!(path, dir.file_for(test));
                        assert!(
                            loaded(&dir, test).contains(&target),
                            "{target} not on disk when its store returned"
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(guards.load(Ordering::SeqCst), 0, "every guard was dropped");
        for (test, parity) in [("even", 0), ("odd", 1)] {
            let all = loaded(&dir, test);
            assert_eq!(all.len(), 40, "{test}");
            for t in (0..8).filter(|t| t % 2 == parity) {
                let prefix = format!("/t{t}/");
                let mine: Vec<String> = all
                    .iter()
                    .filter(|s| s.starts_with(&prefix))
                    .cloned()
                    .collect();
                let expected: Vec<String> = (0..10).map(|i| format!("/t{t}/{i}")).collect();
                assert_eq!(mine, expected, "{test}: each task's stores in its order");
            }
        }
        // A failed store reaches its task as an error.
        let nameless = block_on(writer.store(String::new(), interaction("/x"), ()));
        assert_eq!(nameless.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        Arc::into_inner(writer).expect("the last handle").close();
        std::fs::remove_dir_all(dir.path()).unwrap();
    }
}
