//! The offline subcommands: `ouli inspect`, `ouli export --har` and
//! `ouli import --har | --test-server`. None of them opens a socket.

use ouli_adapter_common::config::Config;
use ouli_adapter_common::har::{export_har, import_har};
use ouli_adapter_common::inspect::inspect;
use ouli_adapter_common::recording_dir::RecordingDir;
use ouli_adapter_common::test_server::import_test_server;
use ouli_core::engine::MatchPolicy;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit status when `inspect` found problems.
pub const EXIT_PROBLEMS: u8 = 1;
/// Exit status for unusable arguments or files.
pub const EXIT_USAGE: u8 = 2;

/// `ouli inspect DIR`.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The recording directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// `ouli export --har --recording-dir DIR --output FILE`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Write HTTP Archive 1.2 (the only export format).
    #[arg(long, required = true)]
    pub har: bool,
    /// The recording directory to export.
    #[arg(long, value_name = "DIR")]
    pub recording_dir: PathBuf,
    /// The HAR file to write (`-` for standard output).
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
}

/// `ouli import (--har FILE | --test-server DIR) --recording-dir DIR`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["har", "test_server"])))]
pub struct ImportArgs {
    /// A HAR 1.2 file to import.
    #[arg(long, value_name = "FILE")]
    pub har: Option<PathBuf>,
    /// A Google test-server recording directory to convert.
    #[arg(long, value_name = "DIR")]
    pub test_server: Option<PathBuf>,
    /// The Ouli recording directory to write into (a test already there is replaced).
    #[arg(long, value_name = "DIR")]
    pub recording_dir: PathBuf,
    /// Use this config's first endpoint's matching and redaction rules for
    /// the fingerprints and the redaction of what is imported (else the
    /// defaults).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The test for HAR entries that do not name one (default: the HAR
    /// file's name without its extension).
    #[arg(long, value_name = "NAME")]
    pub test_name: Option<String>,
}

/// Runs `ouli inspect`: 0 when the directory is clean, 1 when it has
/// problems, 2 when it cannot be read.
pub fn run_inspect(args: InspectArgs) -> ExitCode {
    match inspect(&args.dir) {
        Ok(report) => {
            print!("{report}");
            if report.has_problems() {
                ExitCode::from(EXIT_PROBLEMS)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("ouli: {}: {e}", args.dir.display());
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Runs `ouli export --har`.
pub fn run_export(args: ExportArgs) -> ExitCode {
    let dir = RecordingDir::new(args.recording_dir);
    let recordings = match dir.load_all() {
        Ok(r) => r.into_iter().map(|(_, r)| r).collect::<Vec<_>>(),
        Err(e) => {
            eprintln!("ouli: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let har = export_har(&recordings);
    let mut text = match serde_json::to_string_pretty(&har) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ouli: cannot write HAR: {e}");
            return ExitCode::from(1);
        }
    };
    text.push('\n');
    let entries: usize = recordings.iter().map(|r| r.interactions.len()).sum();
    if args.output == Path::new("-") {
        print!("{text}");
        return ExitCode::SUCCESS;
    }
    if let Err(e) = std::fs::write(&args.output, text) {
        eprintln!("ouli: {}: {e}", args.output.display());
        return ExitCode::from(1);
    }
    println!(
        "ouli: exported {} test(s), {entries} entries to {}",
        recordings.len(),
        args.output.display()
    );
    ExitCode::SUCCESS
}

fn policy_from(config: Option<&Path>) -> Result<Option<MatchPolicy>, String> {
    let Some(path) = config else {
        return Ok(None);
    };
    let config = Config::load(path).map_err(|e| e.to_string())?;
    Ok(config.endpoints.first().map(|e| e.policy.clone()))
}

/// Runs `ouli import`.
pub fn run_import(args: ImportArgs) -> ExitCode {
    let policy = match policy_from(args.config.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ouli: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let dest = RecordingDir::new(args.recording_dir);
    if let Some(src) = &args.test_server {
        return match import_test_server(src, &dest, policy.as_ref()) {
            Ok(report) => {
                print!("ouli: {report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ouli: {}: {e}", src.display());
                ExitCode::from(1)
            }
        };
    }
    let Some(har_path) = &args.har else {
        eprintln!("ouli: give --har FILE or --test-server DIR");
        return ExitCode::from(EXIT_USAGE);
    };
    let text = match std::fs::read_to_string(har_path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ouli: {}: {e}", har_path.display());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let default_name = args.test_name.clone().unwrap_or_else(|| {
        har_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_owned())
    });
    let recordings = match import_har(&text, &default_name, policy.as_ref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ouli: {}: {e}", har_path.display());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    for r in &recordings {
        match dest.write_atomic(r) {
            Ok(path) => println!(
                "ouli: test {:?}: {} interaction(s) -> {}",
                r.test_name,
                r.interactions.len(),
                path.display()
            ),
            Err(e) => {
                eprintln!("ouli: cannot write test {:?}: {e}", r.test_name);
                return ExitCode::from(1);
            }
        }
    }
    ExitCode::SUCCESS
}
