//! The `ouli` command line: `ouli record`, `ouli replay` and `ouli auto`,
//! and the offline tools `ouli inspect`, `ouli export` and `ouli import`.

mod tools;

use clap::{Parser, Subcommand};
use ouli_adapter_common::config::{Config, TargetType};
use ouli_core::proxy::Mode;
use std::path::PathBuf;
use std::process::ExitCode;

/// Ouli: a deterministic record/replay proxy for HTTP APIs.
///
/// Point your application at Ouli instead of the real API. `ouli record`
/// forwards every request to the real upstream and stores each exchange (with
/// secrets redacted) under the recording dir, one file per test. `ouli replay`
/// answers from those recordings only, never touching the network; a request
/// with no recording gets a 599 answer explaining the closest recorded
/// requests.
///
/// Typical use: `ouli record --config ouli.toml --recording-dir recordings`
/// once, then `ouli replay --config ouli.toml --recording-dir recordings
/// --strict` in CI; `ouli auto` replays what is recorded and records the rest.
///
/// Requests pick their test with the `X-Ouli-Test-Name` header (or
/// test-server's `Test-Name`; default: `default`). Logs go to stderr; set the level with RUST_LOG (e.g.
/// `RUST_LOG=ouli=debug`).
#[derive(Parser, Debug)]
#[command(name = "ouli", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Forward requests to the configured upstreams and record every exchange.
    ///
    /// Tests seen in this run are re-recorded from scratch; other tests' files
    /// are left untouched. Each interaction is on disk (atomically written)
    /// before the next request on the same connection is read.
    Record(RunArgs),
    /// Answer requests from recordings only; never open an upstream socket.
    ///
    /// Every recording file is loaded at start-up; a file that does not parse
    /// stops Ouli with the file name and the reason. At shutdown Ouli prints,
    /// per test, hits, misses and the recordings never used; with --strict
    /// it exits with status 3 when there was any miss or unused recording.
    Replay(ReplayArgs),
    /// Replay what is recorded and record what is not (VCR's new_episodes).
    ///
    /// A request with a recording is answered from it; one without is
    /// forwarded and its exchange appended to the test's recording.
    Auto(RunArgs),
    /// List the tests in a recording dir, their interactions (method, path,
    /// status, sizes) and any problems; exits 1 when there are problems.
    Inspect(tools::InspectArgs),
    /// Export a recording dir to another format (HAR 1.2).
    Export(tools::ExportArgs),
    /// Import HAR 1.2 or Google test-server recordings into a recording dir.
    Import(tools::ImportArgs),
}

/// Exit status of `ouli replay --strict` when a test missed or left
/// recordings unused.
const EXIT_STRICT: u8 = 3;

#[derive(clap::Args, Debug)]
struct ReplayArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Exit with status 3 if any request missed or any recorded interaction
    /// was never used (for CI).
    #[arg(long)]
    strict: bool,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    // The help text is an attribute, not a doc comment, so rustdoc does not
    // read `[[endpoints]]` as an intra-doc link.
    #[arg(
        long,
        value_name = "FILE",
        help = "The TOML config file with one or more [[endpoints]]."
    )]
    config: PathBuf,
    /// Directory holding one recording file per test.
    #[arg(long, value_name = "DIR")]
    recording_dir: PathBuf,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let (mode, args, strict) = match cli.command {
        Command::Record(a) => (Mode::Record, a, false),
        Command::Replay(a) => (Mode::Replay, a.run, a.strict),
        Command::Auto(a) => (Mode::Auto, a, false),
        Command::Inspect(a) => return tools::run_inspect(a),
        Command::Export(a) => return tools::run_export(a),
        Command::Import(a) => return tools::run_import(a),
    };
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ouli: {e}");
            return ExitCode::from(2);
        }
    };
    run(config, mode, args.recording_dir, strict)
}

fn run(config: Config, mode: Mode, recording_dir: PathBuf, strict: bool) -> ExitCode {
    // Listen for signals before serving, so an early one is not lost.
    let signals = ouli::Signals::listen();
    let served = ouli::block_on(async move {
        let endpoints = config.endpoints.clone();
        let proxy = match ouli::Proxy::builder(config, mode, &recording_dir)
            .bind()
            .await
        {
            Ok(p) => p,
            Err(e) => {
                eprintln!("ouli: {e}");
                return ExitCode::from(2);
            }
        };
        let verb = match mode {
            Mode::Record => "recording",
            Mode::Replay => "replaying",
            Mode::Auto => "replaying or recording",
        };
        for (addr, ep) in proxy.local_addrs().iter().zip(&endpoints) {
            // A TLS target is shown as a URL; a plaintext one as host:port.
            let target = match ep.target_type {
                TargetType::Https => format!("https://{}", ep.target_addr()),
                TargetType::Http => ep.target_addr(),
            };
            println!(
                "ouli: {verb} on {}://{addr} -> {target} (recording dir {})",
                ep.source_type,
                recording_dir.display()
            );
        }
        if let Some(path) = proxy.local_ca().and_then(|ca| ca.path()) {
            println!(
                "ouli: https listeners use a certificate for localhost, 127.0.0.1 and ::1 \
                 signed by a CA generated for this run; trust {} (e.g. curl --cacert)",
                path.display()
            );
        }
        tracing::debug!(runtime = ouli::RUNTIME_NAME, "serving");
        let stats = proxy.stats();
        signals.before_forced_exit(move || println!("ouli: {}", stats.snapshot()));
        let summary = proxy.run(signals.shutdown()).await;
        println!("ouli: {summary}");
        if strict && !ouli_adapter_common::report::is_clean(&summary.usage) {
            eprintln!(
                "ouli: --strict: there were replay misses or recordings never used (see above)"
            );
            return ExitCode::from(EXIT_STRICT);
        }
        ExitCode::SUCCESS
    });
    served.unwrap_or_else(|e| {
        eprintln!("ouli: cannot start the {} runtime: {e}", ouli::RUNTIME_NAME);
        ExitCode::from(1)
    })
}
