//! The `fluxgate` binary: parse flags, load the config, start writers and
//! workers, wait for SIGINT/SIGTERM, drain, exit.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use fluxgate::config::Config;
use fluxgate::route::Router;
use fluxgate::server::worker::Shared;
use fluxgate::server::Server;
use fluxgate::shutdown::Shutdown;
use fluxgate::writer::Writers;

// mimalloc: per-thread free lists suit thread-per-core workers that allocate
// batches on one thread and free them on a writer thread, and it is markedly
// faster than glibc malloc for that cross-thread pattern.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A replicating proxy in front of InfluxDB 1.x servers.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Path of the TOML configuration file.
    #[arg(long, short, default_value = "fluxgate.toml")]
    config: PathBuf,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Show a running fluxgate's backends, queues and spools as a table.
    Status {
        /// The proxy's address.
        #[arg(long, default_value = "http://127.0.0.1:7076")]
        url: String,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLUXGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    if let Some(Command::Status { url }) = &args.command {
        match fluxgate::status::fetch_and_render(url) {
            Ok(table) => print!("{table}"),
            Err(e) => {
                eprintln!("fluxgate status: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    if let Err(e) = run(&args) {
        tracing::error!("{e:#}");
        eprintln!("fluxgate: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    if config.spool.is_none() {
        tracing::warn!("no [spool]: while a backend is down its batches are retried in memory and clients are pushed back (503) once its queue is full");
    }
    if args.check {
        println!("config {} is valid", args.config.display());
        return Ok(());
    }
    let shutdown = Arc::new(Shutdown::new());
    // Registered before any thread starts, so a signal is never missed.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("cannot install signal handlers")?;

    let (writers, queues) =
        Writers::start(&config, shutdown.clone()).context("cannot start writer threads")?;
    let grace = config.write.shutdown_timeout;
    let shared = Arc::new(Shared {
        source: format!("file {}", args.config.display()),
        router: Router::new(&config),
        backends: writers.stats.clone(),
        queues: writers.queues.clone(),
        workers: (0..config.worker_count()).map(|_| Arc::default()).collect(),
        shutdown: shutdown.clone(),
        started: Instant::now(),
        config,
    });
    let server = Server::start(shared.clone(), &queues)
        .with_context(|| format!("cannot listen on {}", shared.config.server.listen))?;
    tracing::info!(
        addr = %server.local_addr,
        workers = shared.config.worker_count(),
        driver = server.driver,
        backends = shared.config.backends.len(),
        "fluxgate listening on {}",
        server.local_addr
    );

    let signal = signals.forever().next();
    tracing::info!(
        ?signal,
        "shutting down: draining connections and queued batches"
    );
    shutdown.request(grace);
    server.join();
    // The writers stop once every sender is gone and their queues are empty.
    drop(queues);
    writers.join();
    let lost: u64 = shared
        .backends
        .iter()
        .map(|s| s.points_lost.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    if lost > 0 {
        anyhow::bail!(
            "{lost} points could not be delivered before the shutdown grace period ended"
        );
    }
    tracing::info!("stopped");
    Ok(())
}
