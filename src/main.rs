//! The `fluxgate` binary: parse flags, load the config, start writers and
//! workers, wait for SIGINT/SIGTERM, drain, exit.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use fluxgate::config::redis::RedisSource;
use fluxgate::config::source::ConfigSource;
use fluxgate::config::Config;
use fluxgate::control::{Control, Origin};
use fluxgate::server::handoff::Handoffs;
use fluxgate::server::worker::Shared;
use fluxgate::server::Server;
use fluxgate::shutdown::Shutdown;

// mimalloc: per-thread free lists suit thread-per-core workers that allocate
// batches on one thread and free them on a writer thread, and it is markedly
// faster than glibc malloc for that cross-thread pattern.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A replicating proxy in front of InfluxDB 1.x servers.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The TOML configuration file (default fluxgate.toml). With --redis, an
    /// optional local file the Redis config is merged over.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Read the configuration from Redis: redis://host:port/db.
    #[arg(long, global = true)]
    redis: Option<String>,
    /// Password for Redis (prefer the FLUXGATE_REDIS_PASSWORD environment variable:
    /// arguments are visible to every user of the machine).
    #[arg(
        long,
        global = true,
        env = "FLUXGATE_REDIS_PASSWORD",
        hide_env_values = true
    )]
    redis_password: Option<String>,
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
        /// A fluxgate user, when the proxy has [[users]].
        #[arg(long)]
        user: Option<String>,
        /// That user's password.
        #[arg(long, env = "FLUXGATE_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Read a password (or with --token, an API token) on stdin and print its
    /// hash, for `password_hash` / `token_hash` in [[users]].
    HashPassword {
        /// Hash a random API token (128 bits or more) with SHA-256: checked
        /// at no cost per request. Passwords get slow, salted PBKDF2.
        #[arg(long)]
        token: bool,
    },
    /// Move a configuration between a file and Redis.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(clap::Subcommand, Debug)]
enum ConfigCommand {
    /// Print the configuration in Redis (either key layout) as TOML.
    ImportRedis,
    /// Store the --config file in Redis (--redis) and tell every fluxgate
    /// watching it to reload; without --redis, print the redis-cli commands
    /// that do it (`fluxgate config export -c f.toml | redis-cli`).
    Export {
        /// Store only; do not publish a reload.
        #[arg(long)]
        no_reload: bool,
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
    let outcome = match &args.command {
        Some(Command::Status {
            url,
            user,
            password,
        }) => {
            let authorization = user.as_deref().map(|user| {
                fluxgate::auth::basic_authorization(user, password.as_deref().unwrap_or(""))
            });
            fluxgate::status::fetch_and_render(url, authorization)
                .map(|table| print!("{table}"))
                .map_err(anyhow::Error::msg)
        }
        Some(Command::HashPassword { token }) => hash_password(*token),
        Some(Command::Config(command)) => config_command(&args, command),
        None => run(&args),
    };
    if let Err(e) = outcome {
        if args.command.is_none() {
            tracing::error!("{e:#}");
        }
        eprintln!("fluxgate: {e:#}");
        std::process::exit(1);
    }
}

fn hash_password(token: bool) -> anyhow::Result<()> {
    let mut secret = String::new();
    std::io::stdin()
        .read_line(&mut secret)
        .context("cannot read stdin")?;
    let secret = secret.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(
        !secret.is_empty(),
        "nothing to hash: write the password on stdin"
    );
    if token {
        println!("{}", fluxgate::auth::hash_token(secret));
    } else {
        println!("{}", fluxgate::auth::hash_secret(secret)?);
    }
    Ok(())
}

fn redis(args: &Args) -> anyhow::Result<Option<RedisSource>> {
    args.redis
        .as_deref()
        .map(|url| RedisSource::new(url, args.redis_password.as_deref()))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--redis: {e}"))
}

fn source(args: &Args) -> anyhow::Result<ConfigSource> {
    Ok(match redis(args)? {
        Some(redis) => ConfigSource::Redis {
            redis: Box::new(redis),
            base: args.config.clone(),
        },
        None => ConfigSource::File(
            args.config
                .clone()
                .unwrap_or_else(|| PathBuf::from("fluxgate.toml")),
        ),
    })
}

fn config_command(args: &Args, command: &ConfigCommand) -> anyhow::Result<()> {
    let redis = redis(args)?;
    match command {
        ConfigCommand::ImportRedis => {
            let redis = redis.context("--redis is required")?;
            let source = ConfigSource::Redis {
                redis: Box::new(redis),
                base: args.config.clone(),
            };
            let loaded = source.load()?;
            for warning in &loaded.warnings {
                eprintln!("warning: {warning}");
            }
            print!("{}", loaded.toml);
        }
        ConfigCommand::Export { no_reload } => {
            let path = args.config.as_deref().context("--config is required")?;
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            // Refused here rather than by every proxy of the fleet.
            Config::from_toml(&text)?;
            let Some(redis) = redis else {
                print!(
                    "{}",
                    fluxgate::config::redis::redis_cli_commands(&text, !no_reload)
                );
                return Ok(());
            };
            redis.store(&text)?;
            eprintln!("stored {} in {}", path.display(), redis.describe());
            if !no_reload {
                let receivers = redis.publish_reload()?;
                eprintln!("reload published to {receivers} subscriber(s)");
            }
        }
    }
    Ok(())
}

fn run(args: &Args) -> anyhow::Result<()> {
    let source = source(args)?;
    let loaded = source.load()?;
    if args.check {
        println!("config from {} is valid", source.describe());
        return Ok(());
    }
    let shutdown = Arc::new(Shutdown::new());
    // Registered before any thread starts, so a signal is never missed.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])
    .context("cannot install signal handlers")?;

    let mut control = Control::new(source, shutdown.clone());
    let current = control.start(loaded).context("cannot start the backends")?;
    let watched = control.source().redis().cloned();
    let (reloads, control_thread) = control.spawn().context("cannot start the control thread")?;
    let config = current.load().config.clone();
    let shared = Arc::new(Shared {
        current,
        workers: (0..config.worker_count()).map(|_| Arc::default()).collect(),
        shutdown: shutdown.clone(),
        started: Instant::now(),
        reloads: reloads.clone(),
        handoffs: Handoffs::new(config.worker_count()),
    });
    let server = Server::start(shared.clone())
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    tracing::info!(
        addr = %server.local_addr,
        workers = config.worker_count(),
        driver = server.driver,
        backends = config.backends.len(),
        "fluxgate listening on {}",
        server.local_addr
    );
    // With Redis, a message on the reload channel reloads every instance.
    let stop_watching = Arc::new(AtomicBool::new(false));
    let watcher = match watched {
        Some(redis) => {
            let (stop, reloads) = (stop_watching.clone(), reloads.clone());
            Some(
                std::thread::Builder::new()
                    .name("fluxgate-redis-watch".into())
                    .spawn(move || redis.watch(&stop, || reloads.notify(Origin::PubSub)))
                    .context("cannot start the Redis watcher")?,
            )
        }
        None => None,
    };

    let signal = loop {
        match signals.forever().next() {
            Some(signal_hook::consts::SIGHUP) => reloads.notify(Origin::Signal),
            other => break other,
        }
    };
    tracing::info!(
        ?signal,
        "shutting down: draining connections and queued batches"
    );
    shutdown.request(shared.current.load().config.write.shutdown_timeout);
    server.join();
    stop_watching.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(watcher) = watcher {
        let _ = watcher.join();
    }
    // The control thread ends once nobody can ask for a reload any more.
    drop(reloads);
    drop(shared);
    let control = control_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the control thread panicked"))?;
    // The writers stop once every generation is gone and their queues are empty.
    let lost = control.finish();
    if lost > 0 {
        anyhow::bail!(
            "{lost} points could not be delivered before the shutdown grace period ended"
        );
    }
    tracing::info!("stopped");
    Ok(())
}
