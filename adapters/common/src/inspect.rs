//! `ouli inspect DIR`: what a recording directory holds, and what is wrong
//! with it.
//!
//! Unlike [`RecordingDir::load_all`](crate::recording_dir::RecordingDir::load_all),
//! which stops at the first bad file, inspection reads every file and lists
//! every problem: files that do not parse, two files holding the same test
//! name, a file whose name is not the one Ouli writes for its test name,
//! leftover temporary files and journals that no longer apply, interactions
//! with an empty fingerprint, and other files that are not recordings. A
//! journal a stopped record run left is applied, as replay does.

use crate::recording_dir::{
    file_name_for, load_test_files, test_name_for, JournalUse, LoadError, JOURNAL_EXTENSION,
    TEMP_PREFIX,
};
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// One recorded interaction, summarized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InteractionSummary {
    /// Position in the recording.
    pub index: usize,
    /// The request method.
    pub method: String,
    /// The request path (target before `?`).
    pub path: String,
    /// The query (after `?`), if any.
    pub query: Option<String>,
    /// The response status.
    pub status: u16,
    /// Request body bytes.
    pub request_bytes: usize,
    /// Response body bytes.
    pub response_bytes: usize,
    /// WebSocket messages recorded after a 101 answer, if any.
    pub websocket_messages: Option<usize>,
}

/// One recording file, summarized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestSummary {
    /// The file (the journal, when there is only a journal).
    pub file: PathBuf,
    /// The test name inside it.
    pub test_name: String,
    /// Its interactions, in order.
    pub interactions: Vec<InteractionSummary>,
    /// How many of them come from the journal a stopped record run left
    /// next to the file (not yet written into it).
    pub journaled: usize,
}

/// What [`inspect`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inspection {
    /// The directory.
    pub dir: PathBuf,
    /// Every recording that parsed, sorted by file.
    pub tests: Vec<TestSummary>,
    /// Problems, one sentence each, naming the file.
    pub problems: Vec<String>,
}

impl Inspection {
    /// Whether any problem was found.
    pub fn has_problems(&self) -> bool {
        !self.problems.is_empty()
    }
}

/// Reads every file directly in `dir`. Only a directory that cannot be
/// listed is an error; everything else is a problem in the report.
pub fn inspect(dir: &Path) -> io::Result<Inspection> {
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        files.push(entry.path());
    }
    files.sort();
    let mut out = Inspection {
        dir: dir.to_path_buf(),
        ..Inspection::default()
    };
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    for path in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path.is_dir() {
            out.problems.push(format!(
                "{}: a sub-directory; Ouli only reads files directly in the recording dir",
                path.display()
            ));
            continue;
        }
        if name.starts_with(TEMP_PREFIX) {
            out.problems.push(format!(
                "{}: a leftover temporary file from an interrupted write; delete it",
                path.display()
            ));
            continue;
        }
        let (json, journal) = match name.strip_suffix(JOURNAL_EXTENSION) {
            Some(stem) if stem.ends_with(".json") => {
                let json = path.with_file_name(stem);
                if json.is_file() {
                    continue; // read with its file
                }
                (json, path.clone())
            }
            _ if name.ends_with(".json") => {
                let mut journal = path.clone().into_os_string();
                journal.push(JOURNAL_EXTENSION);
                (path.clone(), PathBuf::from(journal))
            }
            _ => {
                out.problems.push(format!(
                    "{}: not a .json file; Ouli ignores it",
                    path.display()
                ));
                continue;
            }
        };
        let loaded = match load_test_files(&json, &journal) {
            Ok(loaded) => loaded,
            Err(LoadError::Parse { path, source }) => {
                out.problems.push(format!(
                    "{}: not a valid recording ({source}); replay would refuse to start",
                    path.display()
                ));
                continue;
            }
            Err(LoadError::Io { path, source }) => {
                out.problems
                    .push(format!("{}: cannot be read: {source}", path.display()));
                continue;
            }
            Err(e) => {
                out.problems.push(e.to_string());
                continue;
            }
        };
        let journaled = match loaded.journal {
            JournalUse::None => 0,
            JournalUse::Applied { interactions, .. } => interactions,
            JournalUse::Ignored(why) => {
                out.problems.push(format!(
                    "{}: a leftover journal Ouli ignores ({why}); delete it",
                    journal.display()
                ));
                0
            }
        };
        let Some(recording) = loaded.recording else {
            continue;
        };
        let name = json
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if test_name_for(&name).as_deref() != Some(recording.test_name.as_str()) {
            out.problems.push(format!(
                "{}: holds test {:?}, whose file name is {}; re-recording writes there",
                path.display(),
                recording.test_name,
                file_name_for(&recording.test_name)
            ));
        }
        if let Some(first) = seen.get(&recording.test_name) {
            out.problems.push(format!(
                "{}: duplicate test name {:?}, also in {}; replay keeps only one of them",
                path.display(),
                recording.test_name,
                first.display()
            ));
        } else {
            seen.insert(recording.test_name.clone(), path.clone());
        }
        let mut interactions = Vec::with_capacity(recording.interactions.len());
        for (index, i) in recording.interactions.iter().enumerate() {
            if i.fingerprint.is_empty() {
                out.problems.push(format!(
                    "{}: interaction {index} has no fingerprint; it can never be replayed",
                    path.display()
                ));
            }
            let target = String::from_utf8_lossy(&i.request.target).into_owned();
            let (p, q) = match target.split_once('?') {
                Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
                None => (target, None),
            };
            interactions.push(InteractionSummary {
                index,
                method: String::from_utf8_lossy(&i.request.method).into_owned(),
                path: p,
                query: q,
                status: i.response.status,
                request_bytes: i.request.body.len(),
                response_bytes: i.response.body_len(),
                websocket_messages: i.websocket.as_ref().map(|w| w.messages.len()),
            });
        }
        out.tests.push(TestSummary {
            file: if json.is_file() { json } else { journal },
            test_name: recording.test_name,
            interactions,
            journaled,
        });
    }
    Ok(out)
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n: usize = self.tests.iter().map(|t| t.interactions.len()).sum();
        writeln!(
            f,
            "{}: {} test(s), {n} interaction(s)",
            self.dir.display(),
            self.tests.len()
        )?;
        for t in &self.tests {
            let file = t
                .file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            write!(
                f,
                "\ntest {:?} ({file}): {} interaction(s)",
                t.test_name,
                t.interactions.len()
            )?;
            if t.journaled > 0 {
                write!(
                    f,
                    ", {} of them from the journal a stopped record run left",
                    t.journaled
                )?;
            }
            writeln!(f)?;
            for i in &t.interactions {
                let target = match &i.query {
                    Some(q) => format!("{}?{q}", i.path),
                    None => i.path.clone(),
                };
                write!(
                    f,
                    "  #{:<3} {:<7} {target}  -> {}  (request {} B, response {} B",
                    i.index, i.method, i.status, i.request_bytes, i.response_bytes
                )?;
                if let Some(m) = i.websocket_messages {
                    write!(f, ", websocket {m} message(s)")?;
                }
                writeln!(f, ")")?;
            }
        }
        if self.problems.is_empty() {
            writeln!(f, "\nno problems found")
        } else {
            writeln!(f, "\n{} problem(s):", self.problems.len())?;
            for p in &self.problems {
                writeln!(f, "  - {p}")?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ouli_core::message::Header;
    use ouli_core::store::{Framing, Interaction, RecordedRequest, RecordedResponse, Recording};

    fn recording(name: &str) -> Recording {
        let mut r = Recording::new(name);
        r.interactions.push(Interaction {
            fingerprint: "ab".repeat(32),
            request: RecordedRequest {
                method: Bytes::from_static(b"POST"),
                target: Bytes::from_static(b"/v1/items?x=1"),
                headers: vec![Header::new("Host", "api")],
                body: Bytes::from_static(b"12345"),
            },
            response: RecordedResponse {
                status: 201,
                reason: Bytes::from_static(b"Created"),
                headers: vec![],
                framing: Framing::Length,
                chunks: vec![Bytes::from_static(b"ok"), Bytes::from_static(b"!")],
                trailers: vec![],
            },
            websocket: None,
        });
        r
    }

    #[test]
    fn lists_tests_and_problems() {
        let dir = std::env::temp_dir().join(format!("ouli-inspect-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("login.json"), recording("login").to_json()).unwrap();
        fs::write(dir.join("copy.json"), recording("login").to_json()).unwrap();
        fs::write(dir.join("broken.json"), "{\"format\": \"ouli-recording\",").unwrap();
        fs::write(dir.join("notes.txt"), "hi").unwrap();
        fs::write(dir.join(format!("{TEMP_PREFIX}-x")), "").unwrap();
        let report = inspect(&dir).unwrap();
        assert_eq!(report.tests.len(), 2);
        let i = &report.tests[0].interactions[0];
        assert_eq!(
            (i.method.as_str(), i.path.as_str(), i.query.as_deref()),
            ("POST", "/v1/items", Some("x=1"))
        );
        assert_eq!((i.status, i.request_bytes, i.response_bytes), (201, 5, 3));
        let problems = report.problems.join("\n");
        for expected in [
            "broken.json: not a valid recording",
            "duplicate test name \"login\"",
            "copy.json: holds test \"login\", whose file name is login.json",
            "notes.txt: not a .json file",
            "leftover temporary file",
        ] {
            assert!(problems.contains(expected), "{expected} in {problems}");
        }
        let text = report.to_string();
        assert!(text.contains("POST    /v1/items?x=1  -> 201"), "{text}");
        let _ = fs::remove_dir_all(&dir);
    }

    /// Journals a stopped record run left are applied (and said so); one
    /// that no longer applies, or does not parse, is a problem.
    #[test]
    fn applies_journals_and_reports_leftover_ones() {
        use crate::recording_dir::{JournalHeader, JournalMode, RecordingDir};
        let dir = std::env::temp_dir().join(format!("ouli-inspect-j-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let rd = RecordingDir::new(&dir);
        let line = recording("x").interactions[0].to_json_line() + "\n";
        // "a": a file and a journal extending it.
        let a = rd.write_atomic(&recording("a")).unwrap();
        let header = JournalHeader::new("a", JournalMode::Append, Some(&fs::read(&a).unwrap()));
        fs::write(rd.journal_for("a"), header.to_line() + &line + &line).unwrap();
        // "b": only a journal.
        let header = JournalHeader::new("b", JournalMode::Replace, None);
        fs::write(rd.journal_for("b"), header.to_line() + &line).unwrap();
        // "c": a journal its file no longer matches.
        rd.write_atomic(&recording("c")).unwrap();
        let header = JournalHeader::new("c", JournalMode::Append, Some(b"old"));
        fs::write(rd.journal_for("c"), header.to_line() + &line).unwrap();
        // "d": a journal with a corrupt middle line.
        let header = JournalHeader::new("d", JournalMode::Replace, None);
        fs::write(rd.journal_for("d"), header.to_line() + "{oops\n" + &line).unwrap();

        let report = inspect(&dir).unwrap();
        let tests: Vec<(&str, usize, usize)> = report
            .tests
            .iter()
            .map(|t| (t.test_name.as_str(), t.interactions.len(), t.journaled))
            .collect();
        assert_eq!(tests, [("a", 3, 2), ("b", 1, 1), ("c", 1, 0)]);
        assert_eq!(report.tests[1].file, rd.journal_for("b"));
        let problems = report.problems.join("\n");
        assert_eq!(report.problems.len(), 2, "{problems}");
        assert!(
            problems.contains("c.json.journal: a leftover journal Ouli ignores"),
            "{problems}"
        );
        assert!(
            problems.contains("d.json.journal: not a valid recording (line 2"),
            "{problems}"
        );
        let text = report.to_string();
        assert!(
            text.contains("3 interaction(s), 2 of them from the journal"),
            "{text}"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
