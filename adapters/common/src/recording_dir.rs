//! The recording directory: one JSON file per test name, written atomically.
//!
//! File names come from test names by keeping `A-Z a-z 0-9 . _ -` (except a
//! leading `.`) and percent-encoding every other byte as `%XX`, then adding
//! `.json`; see [`file_name_for`] and [`test_name_for`]. The mapping is
//! injective on case-sensitive file systems; on case-insensitive ones (the
//! macOS and Windows defaults) test names that differ only in letter case
//! share a file, so avoid them.

use ouli_core::store::{Recording, StoreError};
use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Prefix of the temporary files [`RecordingDir::write_atomic`] creates;
/// [`RecordingDir::load_all`] skips such files.
pub const TEMP_PREFIX: &str = ".ouli-tmp";

const EXTENSION: &str = ".json";

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

    /// Loads every `*.json` file directly in the directory, sorted by path.
    ///
    /// Other files, sub-directories and leftover temporary files (starting
    /// with [`TEMP_PREFIX`]) are skipped. A file that cannot be read or
    /// parsed is an error naming it. A missing directory is
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
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| LoadError::Io {
                path: self.path.clone(),
                source,
            })?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue; // not a name this crate writes
            };
            if !name.ends_with(EXTENSION) || name.starts_with(TEMP_PREFIX) {
                continue;
            }
            let path = entry.path();
            // Follows symlinks, so a linked recording file is loaded.
            match fs::metadata(&path) {
                Ok(m) if m.is_file() => files.push(path),
                Ok(_) => {}
                Err(source) => return Err(LoadError::Io { path, source }),
            }
        }
        files.sort();

        let mut out = Vec::with_capacity(files.len());
        let mut seen: HashMap<String, PathBuf> = HashMap::new();
        for path in files {
            let text = match fs::read_to_string(&path) {
                Ok(text) => text,
                Err(source) => return Err(LoadError::Io { path, source }),
            };
            let recording = match Recording::from_json(&text) {
                Ok(r) => r,
                Err(source) => return Err(LoadError::Parse { path, source }),
            };
            let file_name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
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
    /// Returns the file written.
    pub fn write_atomic(&self, recording: &Recording) -> io::Result<PathBuf> {
        if recording.test_name.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a recording needs a non-empty test name",
            ));
        }
        fs::create_dir_all(&self.path)?;
        let file_name = file_name_for(&recording.test_name);
        let target = self.path.join(&file_name);
        // The encoded name is ASCII, so any byte index is a char boundary;
        // shortened to keep the temp name within file name limits.
        let short = file_name
            .get(..file_name.len().min(100))
            .unwrap_or("recording");
        let temp = self.path.join(format!(
            "{TEMP_PREFIX}-{short}-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = write_and_rename(&temp, &target, recording.to_json().as_bytes());
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result?;
        sync_dir(&self.path)?;
        Ok(target)
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
        let loaded = dir.load_all().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].1, recording("t"));
        fs::remove_dir_all(p).unwrap();
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
