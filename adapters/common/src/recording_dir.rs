//! The recording directory: one JSON file per test name, written atomically,
//! and next to a file, while a record run stores into its test, an
//! append-only journal.
//!
//! File names come from test names by keeping `A-Z a-z 0-9 . _ -` (except a
//! leading `.`) and percent-encoding every other byte as `%XX`, then adding
//! `.json`; see [`file_name_for`] and [`test_name_for`]. The mapping is
//! injective on case-sensitive file systems; on case-insensitive ones (the
//! macOS and Windows defaults) test names that differ only in letter case
//! share a file, so avoid them.
//!
//! # Journals
//!
//! Rewriting a test's whole file for every new interaction would cost
//! O(n²) bytes for n interactions, so the [`Recorder`](crate::recorder::Recorder)
//! appends each interaction to the test's journal, `<file>.journal` (see
//! [`journal_name_for`]), and folds the journal into the file with
//! [`RecordingDir::write_atomic`] (which then deletes the journal) when the
//! run ends and whenever the journal grows large. A run that is killed
//! leaves its journals behind; [`RecordingDir::load_all`] applies them, so
//! replay and the other tools see every stored interaction.
//!
//! A journal is UTF-8 text, one JSON object per line, every line ending in
//! `\n`:
//! * line 1, a [`JournalHeader`]:
//!   `{"format":"ouli-journal","version":1,"test_name":"t","mode":"append","base_sha256":"<hex>"}`,
//!   where `base_sha256` is the SHA-256 of the test's JSON file when the
//!   journal was started (`null`: there was no file) and `mode` says whether
//!   the journal's interactions come after that file's (`append`) or replace
//!   them (`replace`: a re-recorded test);
//! * every further line, one interaction: the object a recording file holds
//!   in its `interactions` list, on one line
//!   ([`Interaction::to_json_line`](ouli_core::store::Interaction::to_json_line)).
//!
//! A journal applies only to the file it was started on: when the JSON
//! file's hash is no longer `base_sha256`, the file was written since (a
//! compaction that had not yet deleted the journal, or a later
//! [`RecordingDir::write_atomic`]) and the journal is ignored. A last line
//! that is incomplete or does not parse is the torn tail of a write that
//! never finished (no store waiting on it returned) and is ignored; any
//! other line that does not parse is an error naming the journal and the
//! line.

use ouli_core::store::{Interaction, Recording, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Prefix of the temporary files [`RecordingDir::write_atomic`] and the
/// recorder create; [`RecordingDir::load_all`] skips such files.
pub const TEMP_PREFIX: &str = ".ouli-tmp";

const EXTENSION: &str = ".json";

/// What a journal's file name adds to its test's file name:
/// `default.json.journal`. No test file name ends with it.
pub const JOURNAL_EXTENSION: &str = ".journal";

/// The `format` of a journal's header line.
pub const JOURNAL_FORMAT: &str = "ouli-journal";

/// The journal version this build reads and writes.
pub const JOURNAL_VERSION: u32 = 1;

/// A directory of recording files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingDir {
    path: PathBuf,
}

/// Why the recordings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The directory does not exist (callers decide whether that is fine).
    #[error("recording dir {0} does not exist")]
    MissingDir(PathBuf),
    /// The directory or a file in it could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A recording file is not a valid recording.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why it is not valid.
        source: StoreError,
    },
}

fn keep(byte: u8, first: bool) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' || (byte == b'.' && !first)
}

/// The file name (without directory) for `test_name`: safe characters kept,
/// the rest percent-encoded, `.json` appended. For example `a/b c` becomes
/// `a%2Fb%20c.json` and `..` becomes `%2E..json`. The empty name maps to
/// `.json`, which [`RecordingDir::write_atomic`] refuses.
pub fn file_name_for(test_name: &str) -> String {
    let mut out = String::with_capacity(test_name.len() + EXTENSION.len());
    for (i, &b) in test_name.as_bytes().iter().enumerate() {
        if keep(b, i == 0) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push_str(EXTENSION);
    out
}

/// The test name whose file is `file_name`, the inverse of
/// [`file_name_for`]; `None` when `file_name` is not exactly what
/// [`file_name_for`] produces for some name.
pub fn test_name_for(file_name: &str) -> Option<String> {
    let stem = file_name.strip_suffix(EXTENSION)?;
    if stem.is_empty() {
        return None;
    }
    let bytes = stem.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = stem.get(i + 1..i + 3)?;
            if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let name = String::from_utf8(out).ok()?;
    // Canonical form only (upper-case hex, no needless escapes), so that the
    // mapping stays one-to-one in both directions.
    (file_name_for(&name) == file_name).then_some(name)
}

/// The journal file name (without directory) for `test_name`: its
/// [`file_name_for`] plus [`JOURNAL_EXTENSION`].
pub fn journal_name_for(test_name: &str) -> String {
    let mut name = file_name_for(test_name);
    name.push_str(JOURNAL_EXTENSION);
    name
}

/// Lower-case hex SHA-256 of `bytes`, as a journal's `base_sha256`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How a journal's interactions relate to the JSON file it was started on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalMode {
    /// They come after the file's interactions.
    Append,
    /// They are the whole recording; the file's interactions are dropped
    /// (the test is being re-recorded).
    Replace,
}

/// A journal's first line (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalHeader {
    /// [`JOURNAL_FORMAT`].
    pub format: String,
    /// [`JOURNAL_VERSION`].
    pub version: u32,
    /// The test the journal records.
    pub test_name: String,
    /// Whether the journal extends or replaces the file.
    pub mode: JournalMode,
    /// [`sha256_hex`] of the test's JSON file when the journal was started;
    /// `None` when there was no file.
    pub base_sha256: Option<String>,
}

impl JournalHeader {
    /// The header of a journal for `test_name` started on a JSON file
    /// holding `base` (`None`: no file).
    pub fn new(test_name: &str, mode: JournalMode, base: Option<&[u8]>) -> Self {
        JournalHeader {
            format: JOURNAL_FORMAT.into(),
            version: JOURNAL_VERSION,
            test_name: test_name.into(),
            mode,
            base_sha256: base.map(sha256_hex),
        }
    }

    /// The header line, with its `\n`.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }

    /// Parses a header line (without its `\n`).
    pub fn from_line(line: &str) -> Result<JournalHeader, StoreError> {
        let value: serde_json::Value = serde_json::from_str(line)?;
        match value.get("format") {
            Some(serde_json::Value::String(f)) if f == JOURNAL_FORMAT => {}
            other => {
                return Err(StoreError::WrongFormat {
                    found: match other {
                        None => String::new(),
                        Some(serde_json::Value::String(s)) => s.clone(),
                        Some(v) => v.to_string(),
                    },
                })
            }
        }
        if let Some(v) = value.get("version").and_then(serde_json::Value::as_u64) {
            if v > u64::from(JOURNAL_VERSION) {
                return Err(StoreError::UnsupportedVersion {
                    found: u32::try_from(v).unwrap_or(u32::MAX),
                    supported: JOURNAL_VERSION,
                });
            }
        }
        serde_json::from_value(value).map_err(|e| StoreError::Syntax {
            line: 1,
            column: 1,
            message: e.to_string(),
        })
    }
}

/// A journal as read by [`read_journal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Journal {
    /// Its first line.
    pub header: JournalHeader,
    /// The interactions of its whole lines, in order.
    pub interactions: Vec<Interaction>,
    /// Whether a torn last line was ignored.
    pub torn_tail: bool,
}

/// A journal line's error, positioned at line `line` of the journal.
fn at_line(e: StoreError, line: usize) -> StoreError {
    match e {
        StoreError::Syntax {
            column, message, ..
        } => StoreError::Syntax {
            line,
            column,
            message,
        },
        other => StoreError::Syntax {
            line,
            column: 1,
            message: other.to_string(),
        },
    }
}

fn line_text(line: &[u8], n: usize) -> Result<&str, StoreError> {
    std::str::from_utf8(line).map_err(|e| StoreError::Syntax {
        line: n,
        column: e.valid_up_to() + 1,
        message: "not UTF-8".into(),
    })
}

/// Reads the journal at `path`. `Ok(None)` when not even its header line
/// is whole (a journal whose start was interrupted: nothing in it was ever
/// acknowledged). The last line, when it has no `\n` or does not parse, is
/// a torn write and ignored; any other bad line is a [`LoadError::Parse`]
/// naming `path` and the line.
pub fn read_journal(path: &Path) -> Result<Option<Journal>, LoadError> {
    let bytes = fs::read(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let parse_error = |source: StoreError| LoadError::Parse {
        path: path.to_path_buf(),
        source,
    };
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    // What follows the last `\n` (empty when the file ends with one) was
    // never finished.
    let tail = lines.pop().unwrap_or_default();
    let mut torn_tail = !tail.is_empty();
    // Without a torn piece after it, the last whole line may be the torn
    // one (a crash that lost the power, not only the process, can leave
    // garbage there).
    let last_may_be_torn = !torn_tail;
    let Some((first, rest)) = lines.split_first() else {
        return Ok(None);
    };
    let header = match line_text(first, 1).and_then(JournalHeader::from_line) {
        Ok(h) => h,
        Err(_) if rest.is_empty() && last_may_be_torn => return Ok(None),
        Err(e) => {
            let mut e = at_line(e, 1);
            if let StoreError::Syntax { message, .. } = &mut e {
                *message = format!("journal header: {message}");
            }
            return Err(parse_error(e));
        }
    };
    let mut interactions = Vec::with_capacity(rest.len());
    for (i, line) in rest.iter().enumerate() {
        let n = i + 2;
        match line_text(line, n).and_then(Interaction::from_json_line) {
            Ok(interaction) => interactions.push(interaction),
            Err(_) if i + 1 == rest.len() && last_may_be_torn => torn_tail = true,
            Err(e) => return Err(parse_error(at_line(e, n))),
        }
    }
    Ok(Some(Journal {
        header,
        interactions,
        torn_tail,
    }))
}

/// What a test's journal contributed to its recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalUse {
    /// There is no journal.
    None,
    /// The journal was applied.
    Applied {
        /// Interactions read from it.
        interactions: usize,
        /// Whether they followed the file's or replaced them.
        mode: JournalMode,
        /// Whether a torn last line was ignored.
        torn_tail: bool,
    },
    /// The journal was ignored, for the reason given.
    Ignored(&'static str),
}

/// One test's files as loaded: see [`RecordingDir::load_test`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedTest {
    /// The recording; `None` when neither file holds one.
    pub recording: Option<Recording>,
    /// What the journal contributed.
    pub journal: JournalUse,
}

fn read_json(path: &Path) -> Result<Option<Vec<u8>>, LoadError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LoadError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn parse_json(path: &Path, bytes: Vec<u8>) -> Result<Recording, LoadError> {
    let text = String::from_utf8(bytes).map_err(|e| LoadError::Io {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    })?;
    Recording::from_json(&text).map_err(|source| LoadError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads a test from its JSON file `json` and its journal `journal`, either
/// of which may be missing.
pub fn load_test_files(json: &Path, journal: &Path) -> Result<LoadedTest, LoadError> {
    let json_bytes = read_json(json)?;
    let journal_read = match fs::metadata(journal) {
        Ok(m) if m.is_file() => Some(read_journal(journal)?),
        Ok(_) => None,
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(LoadError::Io {
                path: journal.to_path_buf(),
                source,
            })
        }
    };
    let file_alone = |why| -> Result<LoadedTest, LoadError> {
        Ok(LoadedTest {
            recording: json_bytes
                .clone()
                .map(|b| parse_json(json, b))
                .transpose()?,
            journal: why,
        })
    };
    let j = match journal_read {
        None => return file_alone(JournalUse::None),
        Some(None) => {
            return file_alone(JournalUse::Ignored(
                "its header line is incomplete (its start was interrupted)",
            ))
        }
        Some(Some(j)) => j,
    };
    if json_bytes.as_deref().map(sha256_hex) != j.header.base_sha256 {
        return file_alone(JournalUse::Ignored(
            "the recording file was written after it (it is already in the file, or replaced)",
        ));
    }
    let used = JournalUse::Applied {
        interactions: j.interactions.len(),
        mode: j.header.mode,
        torn_tail: j.torn_tail,
    };
    let recording = match (j.header.mode, json_bytes) {
        (JournalMode::Append, Some(bytes)) => {
            let mut r = parse_json(json, bytes)?;
            r.interactions.extend(j.interactions);
            r
        }
        // Replaced (the file is not even parsed) or nothing to append to.
        (JournalMode::Replace, _) | (JournalMode::Append, None) => Recording {
            test_name: j.header.test_name,
            interactions: j.interactions,
        },
    };
    Ok(LoadedTest {
        recording: Some(recording),
        journal: used,
    })
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl RecordingDir {
    /// A recording directory at `path` (not touched until used).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RecordingDir { path: path.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file that holds `test_name`'s recording (see [`file_name_for`]).
    pub fn file_for(&self, test_name: &str) -> PathBuf {
        self.path.join(file_name_for(test_name))
    }

    /// The journal of `test_name`'s recording (see [`journal_name_for`]).
    pub fn journal_for(&self, test_name: &str) -> PathBuf {
        self.path.join(journal_name_for(test_name))
    }

    /// Loads `test_name`'s recording from its file and journal
    /// ([`load_test_files`]).
    pub fn load_test(&self, test_name: &str) -> Result<LoadedTest, LoadError> {
        load_test_files(&self.file_for(test_name), &self.journal_for(test_name))
    }

    /// Loads every `*.json` file directly in the directory, with its journal
    /// applied, and every journal without a `*.json` file, sorted by the
    /// `*.json` path (the path returned is the journal's when there is only
    /// a journal).
    ///
    /// Other files, sub-directories and leftover temporary files (starting
    /// with [`TEMP_PREFIX`]) are skipped, and so are journals that no longer
    /// apply (see the [module docs](self)). A file or journal that cannot be
    /// read or parsed is an error naming it. A missing directory is
    /// [`LoadError::MissingDir`].
    pub fn load_all(&self) -> Result<Vec<(PathBuf, Recording)>, LoadError> {
        let entries = match fs::read_dir(&self.path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LoadError::MissingDir(self.path.clone()))
            }
            Err(source) => {
                return Err(LoadError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        // By the `*.json` path: whether that file and its journal exist.
        let mut tests: BTreeMap<PathBuf, (bool, bool)> = BTreeMap::new();
        for entry in entries {
            let entry = entry.map_err(|source| LoadError::Io {
                path: self.path.clone(),
                source,
            })?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue; // not a name this crate writes
            };
            if name.starts_with(TEMP_PREFIX) {
                continue;
            }
            let (json_name, is_journal) = match name.strip_suffix(JOURNAL_EXTENSION) {
                Some(stem) => (stem, true),
                None => (name, false),
            };
            if !json_name.ends_with(EXTENSION) {
                continue;
            }
            let path = entry.path();
            // Follows symlinks, so a linked recording file is loaded.
            match fs::metadata(&path) {
                Ok(m) if m.is_file() => {
                    let found = tests.entry(self.path.join(json_name)).or_default();
                    if is_journal {
                        found.1 = true;
                    } else {
                        found.0 = true;
                    }
                }
                Ok(_) => {}
                Err(source) => return Err(LoadError::Io { path, source }),
            }
        }

        let mut out = Vec::with_capacity(tests.len());
        let mut seen: HashMap<String, PathBuf> = HashMap::new();
        for (json, (has_json, has_journal)) in tests {
            let mut journal = json.clone().into_os_string();
            journal.push(JOURNAL_EXTENSION);
            let journal = PathBuf::from(journal);
            let loaded = if has_journal {
                load_test_files(&json, &journal)?
            } else {
                // Only what the directory listing showed.
                let bytes = read_json(&json)?.unwrap_or_default();
                LoadedTest {
                    recording: Some(parse_json(&json, bytes)?),
                    journal: JournalUse::None,
                }
            };
            match &loaded.journal {
                JournalUse::None => {}
                JournalUse::Applied {
                    interactions,
                    mode,
                    torn_tail,
                } => tracing::info!(
                    journal = %journal.display(),
                    interactions,
                    ?mode,
                    torn_tail,
                    "applied the journal a record run left (it was stopped before \
                     writing it into the recording file)"
                ),
                JournalUse::Ignored(why) => tracing::info!(
                    journal = %journal.display(),
                    "ignored a leftover journal: {why}"
                ),
            }
            let Some(recording) = loaded.recording else {
                continue;
            };
            let path = if has_json { json } else { journal };
            let file_name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let file_name = file_name
                .strip_suffix(JOURNAL_EXTENSION)
                .unwrap_or(file_name);
            if test_name_for(file_name).as_deref() != Some(recording.test_name.as_str()) {
                tracing::warn!(
                    file = %path.display(),
                    test_name = %recording.test_name,
                    expected_file = %file_name_for(&recording.test_name),
                    "recording file name does not match its test name; it will be \
                     loaded, but a re-recording writes to the expected file"
                );
            }
            if let Some(first) = seen.get(&recording.test_name) {
                tracing::warn!(
                    file = %path.display(),
                    other = %first.display(),
                    test_name = %recording.test_name,
                    "two recording files hold the same test name"
                );
            } else {
                seen.insert(recording.test_name.clone(), path.clone());
            }
            out.push((path, recording));
        }
        Ok(out)
    }

    /// Writes `recording` to [`file_for`](Self::file_for) its test name,
    /// atomically: the directory is created if needed, the text goes to a
    /// temporary file in the same directory which is flushed to disk and
    /// renamed over the target, then the directory itself is flushed. A crash
    /// at any point leaves the old file or the new one, never a partial one.
    /// The test's journal, if any, is then deleted: the file written is the
    /// whole recording (a journal left by a crash right before the deletion
    /// no longer applies to the new file, see the [module docs](self)).
    /// Returns the file written.
    pub fn write_atomic(&self, recording: &Recording) -> io::Result<PathBuf> {
        if recording.test_name.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a recording needs a non-empty test name",
            ));
        }
        self.write_text_atomic(&recording.test_name, recording.to_json().as_bytes())
    }

    /// [`write_atomic`](Self::write_atomic) of a recording's text, `bytes`
    /// (what `Recording::to_json` returns).
    pub(crate) fn write_text_atomic(&self, test_name: &str, bytes: &[u8]) -> io::Result<PathBuf> {
        fs::create_dir_all(&self.path)?;
        let target = self.file_for(test_name);
        let temp = self.temp_for(test_name);
        let result = write_and_rename(&temp, &target, bytes);
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result?;
        sync_dir(&self.path)?;
        // Only once the new file is durable: until then the journal may be
        // what holds the newest interactions.
        match fs::remove_file(self.journal_for(test_name)) {
            Ok(()) => sync_dir(&self.path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(target)
    }

    /// Starts `header.test_name`'s journal, atomically replacing any old one:
    /// the header line and `lines` go to a temporary file which is flushed
    /// and renamed over the journal, then the directory is flushed. Returns
    /// the open journal, positioned at its end, and its length.
    pub(crate) fn start_journal(
        &self,
        header: &JournalHeader,
        lines: &[u8],
    ) -> io::Result<(fs::File, u64)> {
        fs::create_dir_all(&self.path)?;
        let target = self.journal_for(&header.test_name);
        let temp = self.temp_for(&header.test_name);
        let head = header.to_line();
        let result = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)?;
            file.write_all(head.as_bytes())?;
            file.write_all(lines)?;
            file.sync_all()?;
            fs::rename(&temp, &target)?;
            Ok(file)
        })();
        let file = match result {
            Ok(file) => file,
            Err(e) => {
                let _ = fs::remove_file(&temp);
                return Err(e);
            }
        };
        sync_dir(&self.path)?;
        Ok((file, (head.len() + lines.len()) as u64))
    }

    /// A fresh temporary file name in the directory for `test_name`.
    fn temp_for(&self, test_name: &str) -> PathBuf {
        let file_name = file_name_for(test_name);
        // The encoded name is ASCII, so any byte index is a char boundary;
        // shortened to keep the temp name within file name limits.
        let short = file_name
            .get(..file_name.len().min(100))
            .unwrap_or("recording");
        self.path.join(format!(
            "{TEMP_PREFIX}-{short}-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ))
    }
}

fn write_and_rename(temp: &Path, target: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(temp, target)
}

/// Flushes the directory entry (the rename) to disk where the platform
/// allows opening a directory.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ouli_core::message::Header;
    use ouli_core::store::{Framing, Interaction, RecordedRequest, RecordedResponse};

    /// A fresh, empty directory under the system temp dir.
    fn scratch(tag: &str) -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ouli-recording-dir-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn recording(name: &str) -> Recording {
        let mut r = Recording::new(name);
        r.interactions.push(Interaction {
            fingerprint: "00ff".into(),
            request: RecordedRequest {
                method: Bytes::from_static(b"GET"),
                target: Bytes::from_static(b"/x"),
                headers: vec![Header::new("Host", "example.com")],
                body: Bytes::new(),
            },
            response: RecordedResponse {
                status: 200,
                reason: Bytes::from_static(b"OK"),
                headers: vec![],
                framing: Framing::Length,
                chunks: vec![Bytes::from_static(b"\xffbinary")],
                trailers: vec![],
            },
            websocket: None,
        });
        r
    }

    #[test]
    fn file_name_mapping_round_trips() {
        let cases = [
            ("default", "default.json"),
            ("a/b c", "a%2Fb%20c.json"),
            ("..", "%2E..json"),
            (".hidden", "%2Ehidden.json"),
            ("x.y_z-1", "x.y_z-1.json"),
            ("100%", "100%25.json"),
            ("ü", "%C3%BC.json"),
            ("C:\\x", "C%3A%5Cx.json"),
        ];
        for (name, file) in cases {
            assert_eq!(file_name_for(name), file);
            assert_eq!(test_name_for(file).as_deref(), Some(name), "{file}");
        }
        assert_eq!(
            RecordingDir::new("/r").file_for("a/b"),
            Path::new("/r/a%2Fb.json")
        );
    }

    #[test]
    fn file_names_are_safe_and_distinct() {
        let names = [
            "",
            "a",
            "A",
            "a/b",
            "a%2Fb",
            "a b",
            "a%20b",
            "..",
            ".",
            "%2E",
            "\u{0}",
            "日本語",
            "a.json",
        ];
        let files: Vec<String> = names.iter().map(|n| file_name_for(n)).collect();
        for (i, f) in files.iter().enumerate() {
            assert!(
                !f.contains('/') && !f.contains('\\') && !f.contains('\0'),
                "{f}"
            );
            assert!(f.is_ascii());
            if !names[i].is_empty() {
                assert!(!f.starts_with('.'), "{f}");
            }
            for g in &files[i + 1..] {
                assert_ne!(f, g);
            }
        }
    }

    #[test]
    fn non_canonical_file_names_are_not_test_names() {
        for f in [
            "a.txt", ".json", "%41.json", "%2e.json", "a b.json", ".a.json", "%.json", "%4.json",
            "%ZZ.json", "%FF.json",
        ] {
            assert_eq!(test_name_for(f), None, "{f}");
        }
    }

    #[test]
    fn write_then_load_round_trip() {
        let dir = RecordingDir::new(scratch("roundtrip").join("nested"));
        assert!(matches!(dir.load_all(), Err(LoadError::MissingDir(_))));
        let a = recording("suite/test one");
        let b = recording("default");
        let pa = dir.write_atomic(&a).unwrap();
        let pb = dir.write_atomic(&b).unwrap();
        assert_eq!(pa, dir.file_for("suite/test one"));
        assert_eq!(fs::read_to_string(&pa).unwrap(), a.to_json());
        // Overwrite replaces.
        let mut a2 = a.clone();
        a2.interactions.push(a.interactions[0].clone());
        dir.write_atomic(&a2).unwrap();
        let loaded = dir.load_all().unwrap();
        assert_eq!(loaded, vec![(pb, b), (pa, a2)]);
        // No temp files left behind.
        for e in fs::read_dir(dir.path()).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            assert!(!name.starts_with(TEMP_PREFIX), "{name}");
        }
        fs::remove_dir_all(dir.path().parent().unwrap()).unwrap();
    }

    #[test]
    fn empty_test_name_is_refused() {
        let dir = RecordingDir::new(scratch("empty"));
        let err = dir.write_atomic(&Recording::new("")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn leftovers_and_other_files_are_ignored() {
        let dir = RecordingDir::new(scratch("leftover"));
        dir.write_atomic(&recording("t")).unwrap();
        let p = dir.path();
        fs::write(p.join(".ouli-tmp-t.json-1-0"), "{partial").unwrap();
        fs::write(p.join(".ouli-tmp-x.json"), "{partial").unwrap();
        fs::write(p.join("notes.txt"), "hello").unwrap();
        fs::create_dir(p.join("sub.json")).unwrap();
        // Journals: an interrupted start (temp), names that are no test's
        // journal, a directory, and a stale journal of `t` (its file was
        // written after it).
        let stale = JournalHeader::new("t", JournalMode::Append, Some(b"older file"));
        fs::write(p.join(".ouli-tmp-t.json-1-1"), stale.to_line()).unwrap();
        fs::write(p.join("notes.journal"), stale.to_line()).unwrap();
        fs::write(p.join("x.txt.journal"), stale.to_line()).unwrap();
        fs::create_dir(p.join("sub2.json.journal")).unwrap();
        let line = recording("t").interactions[0].to_json_line();
        fs::write(dir.journal_for("t"), format!("{}{line}\n", stale.to_line())).unwrap();
        let loaded = dir.load_all().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].1, recording("t"));
        assert_eq!(
            dir.load_test("t").unwrap().journal,
            JournalUse::Ignored(
                "the recording file was written after it (it is already in the file, or replaced)"
            )
        );
        fs::remove_dir_all(p).unwrap();
    }

    /// A journal as the recorder writes it: `header`, then `lines`.
    fn write_journal(dir: &RecordingDir, header: &JournalHeader, lines: &[&Interaction]) {
        let mut text = header.to_line();
        for i in lines {
            text.push_str(&i.to_json_line());
            text.push('\n');
        }
        fs::create_dir_all(dir.path()).unwrap();
        fs::write(dir.journal_for(&header.test_name), text).unwrap();
    }

    fn with_target(target: &'static str) -> Interaction {
        let mut i = recording("x").interactions.remove(0);
        i.request.target = Bytes::from_static(target.as_bytes());
        i
    }

    fn targets(r: &Recording) -> Vec<&str> {
        r.interactions
            .iter()
            .map(|i| std::str::from_utf8(&i.request.target).unwrap())
            .collect()
    }

    #[test]
    fn journal_appends_to_its_file_or_replaces_it() {
        let dir = RecordingDir::new(scratch("merge"));
        let mut file = Recording::new("t");
        file.interactions.push(with_target("/a"));
        let json = dir.write_atomic(&file).unwrap();
        let bytes = fs::read(&json).unwrap();
        let (b, c) = (with_target("/b"), with_target("/c"));
        write_journal(
            &dir,
            &JournalHeader::new("t", JournalMode::Append, Some(&bytes)),
            &[&b, &c],
        );
        let all = dir.load_all().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0, json);
        assert_eq!(targets(&all[0].1), ["/a", "/b", "/c"]);
        assert_eq!(
            dir.load_test("t").unwrap().journal,
            JournalUse::Applied {
                interactions: 2,
                mode: JournalMode::Append,
                torn_tail: false
            }
        );

        // Replacing: the file's interactions are dropped, and the file is
        // not even parsed (a re-recording repairs a broken file).
        fs::write(&json, "{broken").unwrap();
        write_journal(
            &dir,
            &JournalHeader::new("t", JournalMode::Replace, Some(b"{broken")),
            &[&c],
        );
        let all = dir.load_all().unwrap();
        assert_eq!(targets(&all[0].1), ["/c"]);

        // A journal without a file (a first recording, killed): loaded,
        // under the journal's path.
        let d = with_target("/d");
        write_journal(
            &dir,
            &JournalHeader::new("new test", JournalMode::Replace, None),
            &[&d],
        );
        let all = dir.load_all().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].0, dir.journal_for("new test"));
        assert_eq!(all[0].1.test_name, "new test");
        assert_eq!(targets(&all[0].1), ["/d"]);

        // Writing the file makes the journal obsolete: it is deleted.
        dir.write_atomic(&file).unwrap();
        assert!(!dir.journal_for("t").exists());
        assert_eq!(targets(&dir.load_all().unwrap()[1].1), ["/a"]);
        fs::remove_dir_all(dir.path()).unwrap();
    }

    /// A journal whose file changed since it was started (a compaction
    /// that wrote the file but was killed before deleting the journal) is
    /// ignored: nothing is loaded twice. Without its file, a journal that
    /// extended one is ignored too.
    #[test]
    fn stale_journal_is_ignored() {
        let dir = RecordingDir::new(scratch("stale"));
        let mut file = Recording::new("t");
        file.interactions.push(with_target("/a"));
        let json = dir.write_atomic(&file).unwrap();
        let old = fs::read(&json).unwrap();
        let b = with_target("/b");
        let header = JournalHeader::new("t", JournalMode::Append, Some(&old));
        write_journal(&dir, &header, &[&b]);
        // The compaction: the file gets /a and /b; the journal stays.
        file.interactions.push(b.clone());
        fs::write(&json, file.to_json()).unwrap();
        assert_eq!(targets(&dir.load_all().unwrap()[0].1), ["/a", "/b"]);
        // The file is gone: the journal has nothing to extend.
        fs::remove_file(&json).unwrap();
        assert_eq!(dir.load_all().unwrap(), vec![]);
        assert!(dir.load_test("t").unwrap().recording.is_none());
        fs::remove_dir_all(dir.path()).unwrap();
    }

    /// What a crash leaves at the end of a journal is ignored: a line
    /// without its newline, a last line that does not parse, a header
    /// that never got its newline.
    #[test]
    fn torn_last_line_is_ignored() {
        let dir = RecordingDir::new(scratch("torn"));
        let (a, b) = (with_target("/a"), with_target("/b"));
        let header = JournalHeader::new("t", JournalMode::Replace, None);
        write_journal(&dir, &header, &[&a, &b]);
        let whole = fs::read(dir.journal_for("t")).unwrap();
        // Every proper prefix that ends inside b's line loads /a only.
        let b_starts = whole.len() - b.to_json_line().len() - 1;
        for cut in [b_starts + 1, b_starts + 40, whole.len() - 1] {
            fs::write(dir.journal_for("t"), &whole[..cut]).unwrap();
            let loaded = dir.load_test("t").unwrap();
            assert_eq!(targets(loaded.recording.as_ref().unwrap()), ["/a"], "{cut}");
            assert!(
                matches!(
                    loaded.journal,
                    JournalUse::Applied {
                        torn_tail: true,
                        ..
                    }
                ),
                "{cut}"
            );
        }
        // Garbage (a power loss) as a whole last line.
        let mut garbage = whole.clone();
        garbage.extend_from_slice(b"\0\0\0\0\n");
        fs::write(dir.journal_for("t"), &garbage).unwrap();
        assert_eq!(
            targets(dir.load_test("t").unwrap().recording.as_ref().unwrap()),
            ["/a", "/b"]
        );
        // A header cut short: nothing was ever stored in that journal.
        let head = header.to_line();
        for cut in [0, 1, head.len() - 1] {
            fs::write(dir.journal_for("t"), &head.as_bytes()[..cut]).unwrap();
            assert_eq!(dir.load_all().unwrap(), vec![], "{cut}");
        }
        fs::remove_dir_all(dir.path()).unwrap();
    }

    /// A bad line that is not the last is corruption, not a torn write:
    /// an error naming the journal and the line.
    #[test]
    fn corrupt_middle_line_is_an_error_naming_journal_and_line() {
        let dir = RecordingDir::new(scratch("corrupt-journal"));
        let (a, b, c) = (with_target("/a"), with_target("/b"), with_target("/c"));
        let header = JournalHeader::new("t", JournalMode::Replace, None);
        write_journal(&dir, &header, &[&a, &b, &c]);
        let text = fs::read_to_string(dir.journal_for("t")).unwrap();
        let broken = text.replace("\"/b\"", "/b\"");
        fs::write(dir.journal_for("t"), &broken).unwrap();
        let e = dir.load_all().unwrap_err();
        let LoadError::Parse { path, source } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(path, &dir.journal_for("t"));
        assert!(
            matches!(source, StoreError::Syntax { line: 3, .. }),
            "{source:?}"
        );
        let shown = e.to_string();
        assert!(
            shown.contains("t.json.journal") && shown.contains("line 3"),
            "{shown}"
        );
        // A valid line of the wrong shape, and a bad header, likewise.
        let broken = text.replace("\"status\": 200", "\"status\": 5");
        fs::write(dir.journal_for("t"), &broken).unwrap();
        let shown = dir.load_all().unwrap_err().to_string();
        assert!(
            shown.contains("line 2") && shown.contains("status 5"),
            "{shown}"
        );
        let broken = text.replacen("ouli-journal", "other", 1);
        fs::write(dir.journal_for("t"), &broken).unwrap();
        let shown = dir.load_all().unwrap_err().to_string();
        assert!(
            shown.contains("line 1") && shown.contains("\"other\""),
            "{shown}"
        );
        let broken = text.replacen("\"version\":1", "\"version\":2", 1);
        fs::write(dir.journal_for("t"), &broken).unwrap();
        let shown = dir.load_all().unwrap_err().to_string();
        assert!(shown.contains("version 2 is newer"), "{shown}");
        fs::remove_dir_all(dir.path()).unwrap();
    }

    #[test]
    fn corrupt_file_is_a_parse_error_naming_it() {
        let dir = RecordingDir::new(scratch("corrupt"));
        dir.write_atomic(&recording("good")).unwrap();
        let bad = dir.path().join("bad.json");
        fs::write(&bad, "{\n  \"format\": \"ouli-recording\",\n  oops\n}\n").unwrap();
        match dir.load_all() {
            Err(e @ LoadError::Parse { .. }) => {
                let LoadError::Parse { path, source } = &e else {
                    unreachable!()
                };
                assert_eq!(path, &bad);
                assert!(
                    matches!(source, StoreError::Syntax { line: 3, .. }),
                    "{source:?}"
                );
                let shown = e.to_string();
                assert!(
                    shown.contains("bad.json") && shown.contains("line 3"),
                    "{shown}"
                );
            }
            other => panic!("{other:?}"),
        }
        fs::remove_dir_all(dir.path()).unwrap();
    }

    #[test]
    fn non_utf8_file_is_an_io_error_naming_it() {
        let dir = RecordingDir::new(scratch("nonutf8"));
        fs::create_dir_all(dir.path()).unwrap();
        let bad = dir.path().join("x.json");
        fs::write(&bad, b"\xff\xfe").unwrap();
        match dir.load_all() {
            Err(LoadError::Io { path, .. }) => assert_eq!(path, bad),
            other => panic!("{other:?}"),
        }
        fs::remove_dir_all(dir.path()).unwrap();
    }
}
