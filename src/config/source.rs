//! Where the config comes from: a TOML file (the default), or Redis for a
//! fleet of proxies sharing one config. Start-up and reloads read it the same
//! way, through [`ConfigSource::load`].

use std::fmt;
use std::path::PathBuf;

use super::{Config, ConfigError};

pub enum ConfigSource {
    File(PathBuf),
    /// The config in Redis, merged over an optional local file that holds
    /// what is per instance (`[server]`, `[spool]`), see `config::redis`.
    Redis {
        redis: Box<super::redis::RedisSource>,
        base: Option<PathBuf>,
    },
}

/// A config read and validated, with what an operator should know about it.
pub struct Loaded {
    pub config: Config,
    /// The TOML text it was parsed from (for `config import-redis`).
    pub toml: String,
    /// Settings read but without a meaning in fluxgate, and the like.
    pub warnings: Vec<String>,
}

#[derive(Debug)]
pub enum LoadError {
    Config(ConfigError),
    Redis(super::redis::RedisConfigError),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Config(e) => e.fmt(f),
            LoadError::Redis(e) => write!(f, "cannot read the config from Redis: {e}"),
        }
    }
}

impl std::error::Error for LoadError {}

impl From<ConfigError> for LoadError {
    fn from(e: ConfigError) -> Self {
        LoadError::Config(e)
    }
}

impl ConfigSource {
    /// "file fluxgate.toml", "redis redis://10.0.0.5:6379/0 over file local.toml".
    pub fn describe(&self) -> String {
        match self {
            ConfigSource::File(path) => format!("file {}", path.display()),
            ConfigSource::Redis { redis, base: None } => format!("redis {}", redis.describe()),
            ConfigSource::Redis {
                redis,
                base: Some(base),
            } => format!("redis {} over file {}", redis.describe(), base.display()),
        }
    }

    /// Reads, parses and validates the config.
    ///
    /// # Errors
    /// The file or Redis cannot be read, or the config is invalid.
    pub fn load(&self) -> Result<Loaded, LoadError> {
        match self {
            ConfigSource::File(path) => {
                let toml = super::read_file(path)?;
                Ok(Loaded {
                    config: Config::from_toml(&toml)?,
                    toml,
                    warnings: Vec::new(),
                })
            }
            ConfigSource::Redis { redis, base } => {
                let base = base.as_deref().map(super::read_file).transpose()?;
                let fetched = redis.fetch(base.as_deref()).map_err(LoadError::Redis)?;
                Ok(Loaded {
                    config: Config::from_toml(&fetched.toml)?,
                    toml: fetched.toml,
                    warnings: fetched.warnings,
                })
            }
        }
    }

    pub fn redis(&self) -> Option<&super::redis::RedisSource> {
        match self {
            ConfigSource::Redis { redis, .. } => Some(redis),
            ConfigSource::File(_) => None,
        }
    }
}
