//! Runs every committed corpus file through its target, on stable: this is
//! how a plain `cargo test --workspace` exercises the fuzz targets.
//!
//! `fuzz/corpus/<target>/` holds the generated seeds (`seed-*`, see
//! `ouli_fuzz_targets::seeds`) and the inputs of every crash fuzzing found
//! (`crash-*`), fixed in the core or in the harness, which stay as
//! regression tests.

use std::fs;
use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../corpus")
        .join(target)
}

#[test]
fn every_corpus_file_passes_its_target() {
    let mut total = 0;
    let mut failed = Vec::new();
    for (target, run) in ouli_fuzz_targets::TARGETS {
        let dir = corpus_dir(target);
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no corpus for {target}");
        for file in files {
            let data = fs::read(&file).expect("corpus file");
            let outcome = std::panic::catch_unwind(|| run(&data));
            if outcome.is_err() {
                failed.push(format!("{target}: {}", file.display()));
            }
            total += 1;
        }
    }
    assert!(total > 0);
    assert!(
        failed.is_empty(),
        "failing corpus files:\n{}",
        failed.join("\n")
    );
}

/// The committed seeds are the generated ones. With `OULI_WRITE_SEEDS=1`,
/// (re)writes them instead.
#[test]
fn committed_seeds_match_the_generator() {
    let write = std::env::var_os("OULI_WRITE_SEEDS").is_some();
    for (target, name, bytes) in ouli_fuzz_targets::seeds::seeds() {
        assert!(
            ouli_fuzz_targets::TARGETS.iter().any(|(t, _)| *t == target),
            "seed for unknown target {target}"
        );
        let path = corpus_dir(target).join(format!("seed-{name}"));
        if write {
            fs::create_dir_all(path.parent().expect("parent")).expect("corpus dir");
            fs::write(&path, &bytes).expect("write seed");
        } else {
            let committed = fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (regenerate: OULI_WRITE_SEEDS=1 cargo test -p ouli-fuzz-targets --test corpus)",
                    path.display()
                )
            });
            assert!(
                committed == bytes,
                "{} is out of date (regenerate with OULI_WRITE_SEEDS=1)",
                path.display()
            );
        }
    }
}
