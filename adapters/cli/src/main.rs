//! The `ouli` command line: `ouli record` and `ouli replay`.

#[cfg(not(feature = "tokio"))]
compile_error!("ouli needs a runtime: build with `--features tokio` (the default)");

use clap::{Parser, Subcommand};
use ouli_adapter_common::config::Config;
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
/// Requests pick their test with the `X-Ouli-Test-Name` header (default:
/// `default`). Logs go to stderr; set the level with RUST_LOG (e.g.
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
    /// stops Ouli with the file name and the reason.
    Replay(RunArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The TOML config file with one or more [[endpoints]].
    #[arg(long, value_name = "FILE")]
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
    let (mode, args) = match cli.command {
        Command::Record(a) => (Mode::Record, a),
        Command::Replay(a) => (Mode::Replay, a),
    };
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ouli: {e}");
            return ExitCode::from(2);
        }
    };
    run(config, mode, args.recording_dir)
}

#[cfg(feature = "tokio")]
fn run(config: Config, mode: Mode, recording_dir: PathBuf) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ouli: cannot start the Tokio runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let endpoints = config.endpoints.clone();
        let proxy = match ouli_tokio::Proxy::builder(config, mode, &recording_dir)
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
        };
        for (addr, ep) in proxy.local_addrs().iter().zip(&endpoints) {
            println!(
                "ouli: {verb} on http://{addr} -> {}:{} (recording dir {})",
                ep.target_host,
                ep.target_port,
                recording_dir.display()
            );
        }
        let summary = proxy.run(shutdown_signal()).await;
        println!("ouli: {summary}");
        ExitCode::SUCCESS
    })
}

/// Completes on the first SIGINT or SIGTERM; a second one exits at once.
#[cfg(feature = "tokio")]
async fn shutdown_signal() {
    wait_for_signal().await;
    eprintln!("ouli: shutting down (finishing requests in flight; signal again to force)");
    tokio::spawn(async {
        wait_for_signal().await;
        eprintln!("ouli: forced exit");
        std::process::exit(130);
    });
}

#[cfg(feature = "tokio")]
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
