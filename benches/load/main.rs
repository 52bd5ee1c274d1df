//! `ouli-bench`: the load bench's helper binary. `benches/load.sh` builds
//! Ouli for every runtime and calls `ouli-bench run`; the other
//! subcommands are the pieces it starts (and can be run by hand).

mod gen;
mod pace;
mod probes;
mod run;
mod servers;

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "ouli-bench", about = "Ouli's load bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The minimal hyper 1 server (HTTP/1.1 and h2c on one port): the ceiling.
    Hyper {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: String,
    },
    /// A WebSocket echo server (tokio-tungstenite).
    WsEcho {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: String,
    },
    /// Writes a recording set of COUNT recordings (test `default`) into DIR.
    Gen {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        count: usize,
    },
    /// WebSocket echo conversations against ADDR; prints round trips/s.
    WsClient {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 64)]
        conns: usize,
        #[arg(long, default_value_t = 100)]
        messages: usize,
        /// Seconds to run; 0 runs one conversation per connection.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// KB of RSS per idle keep-alive connection of the server process PID.
    Idle {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value_t = 4096)]
        conns: usize,
        #[arg(long, default_value = "/bench")]
        path: String,
    },
    /// Connection setup time: sequential new connections, each with one GET.
    Setup {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 2000)]
        n: usize,
        #[arg(long, default_value = "/bench")]
        path: String,
    },
    /// Requests at a fixed rate over keep-alive connections (open loop,
    /// latency from each request's scheduled time); prints one JSON line.
    Pace {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value = "/bench")]
        path: String,
        #[arg(long, default_value_t = 4096)]
        conns: usize,
        #[arg(long, default_value_t = 50_000)]
        rate: u32,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Requests scheduled in these first seconds are left out of the
        /// steady percentiles.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
    },
    /// The whole load bench (see load.sh).
    Run(run::RunArgs),
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Hyper { addr } => servers::hyper_server(&addr),
        Command::WsEcho { addr } => servers::ws_echo_server(&addr),
        Command::Gen { dir, count } => gen::write_set(&dir, count).expect("write recordings"),
        Command::WsClient {
            addr,
            conns,
            messages,
            seconds,
        } => {
            let duration = (seconds > 0.0).then(|| Duration::from_secs_f64(seconds));
            let r = probes::ws_run(addr, conns, messages, duration);
            println!(
                "{} round trips in {:.2} s = {:.0}/s; {} conversations, {} errors",
                r.round_trips,
                r.elapsed.as_secs_f64(),
                r.round_trips as f64 / r.elapsed.as_secs_f64(),
                r.conversations,
                r.errors
            );
        }
        Command::Idle {
            addr,
            pid,
            conns,
            path,
        } => {
            run::raise_nofile();
            match probes::idle_kb(addr, pid, &path, conns) {
                Ok(kb) => println!("{kb:.2} KB per idle connection ({conns} connections)"),
                Err(e) => {
                    eprintln!("idle: {e}");
                    std::process::exit(1);
                }
            }
        }
        Command::Setup { addr, n, path } => {
            let s = probes::setup_times(addr, &path, n);
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            println!(
                "first exchange on a new connection: p50 {:.1} us, p99 {:.1} us; warm exchange p50 \
                 {:.1} us; setup (first - warm) {:.1} us; connect() alone p50 {:.1} us",
                us(s.first_p50),
                us(s.first_p99),
                us(s.warm_p50),
                us(s.overhead()),
                us(s.connect_p50)
            );
        }
        Command::Pace {
            addr,
            path,
            conns,
            rate,
            seconds,
            warmup,
        } => {
            run::raise_nofile();
            let opts = pace::PaceOptions {
                addr,
                path,
                conns,
                rate,
                duration: Duration::from_secs_f64(seconds),
                warmup: Duration::from_secs_f64(warmup),
                drain: pace::DRAIN,
            };
            match pace::run(&opts) {
                Ok(r) => println!("{}", r.into_json()),
                Err(e) => {
                    eprintln!("pace: {e}");
                    std::process::exit(1);
                }
            }
        }
        Command::Run(args) => run::run(args),
    }
}
