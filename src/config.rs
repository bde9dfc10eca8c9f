//! The one TOML configuration file (F-O1), typed and validated once at start.
//!
//! Every key has a default so that `kolokol run` works with no file at all;
//! unknown keys are rejected (`deny_unknown_fields`) so a typo is an error
//! that names the key, not a silently ignored setting. [`Config::validate`]
//! checks the relations between keys (port ranges, CPU lists) and names the
//! offending key in its message.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use serde::Deserialize;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// TOML syntax error, wrong type or unknown key (the message names it).
    #[error("{0}")]
    Parse(String),
    /// A value out of range or inconsistent with another key.
    #[error("invalid `{key}`: {reason}")]
    Invalid {
        /// Dotted key, e.g. `media.port_min`.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// How local media ports are given to legs.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PortMode {
    /// Every leg has its own local port (and RTCP port unless rtcp-mux).
    PerLeg,
    /// Both legs of a call share one local port and are told apart by source
    /// address; halves the descriptors per call.
    PerCall,
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Shard threads.
    pub shards: ShardsConfig,
    /// Media relay.
    pub media: MediaConfig,
    /// rtpengine ng control protocol.
    pub ng: NgConfig,
    /// Logging.
    pub log: LogConfig,
}

/// `[shards]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShardsConfig {
    /// Number of shard threads.
    pub count: usize,
    /// CPU for each shard; empty means no pinning.
    pub cpus: Vec<usize>,
    /// Wake-up batching window in microseconds (io_uring min-wait): once a
    /// completion is there, the shard waits at most this long for more
    /// before it wakes. Bounds the latency it adds; 0 wakes on every one.
    pub min_wait_us: u32,
}

impl Default for ShardsConfig {
    fn default() -> Self {
        ShardsConfig {
            count: 1,
            cpus: Vec::new(),
            min_wait_us: 200,
        }
    }
}

/// `[media]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// IPv4 (or IPv6) address media sockets bind to.
    pub address: IpAddr,
    /// Optional IPv6 address for `address family: IP6` offers.
    pub address_v6: Option<Ipv6Addr>,
    /// Address written into SDP instead of `address` (1:1 NAT).
    pub advertise: Option<IpAddr>,
    /// Lowest media port.
    pub port_min: u16,
    /// Highest media port.
    pub port_max: u16,
    /// Seconds of silence on every leg after which a call is ended.
    pub timeout_s: u64,
    /// Drop packets from sources other than the expected one.
    pub strict_source: bool,
    /// DSCP code point (0..=63) for relayed media; 0 leaves TOS alone.
    pub dscp: u8,
    /// How local ports are given to legs.
    pub port_mode: PortMode,
    /// Concurrent calls per shard.
    pub calls_max: usize,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            address_v6: None,
            advertise: None,
            port_min: 20000,
            port_max: 59999,
            timeout_s: 60,
            strict_source: false,
            dscp: 46,
            port_mode: PortMode::PerLeg,
            calls_max: 16000,
        }
    }
}

/// `[ng]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NgConfig {
    /// UDP address of the ng control socket.
    pub listen: SocketAddr,
}

impl Default for NgConfig {
    fn default() -> Self {
        NgConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 2223)),
        }
    }
}

/// `[log]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// error, warn, info, debug or trace.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
        }
    }
}

impl Config {
    /// Read, parse and validate a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text)
    }

    /// Parse and validate TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check relations between keys; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        let s = &self.shards;
        if s.count == 0 || s.count > 256 {
            return invalid("shards.count", format!("{} is not in 1..=256", s.count));
        }
        if !s.cpus.is_empty() && s.cpus.len() != s.count {
            return invalid(
                "shards.cpus",
                format!(
                    "has {} entries but shards.count is {}; give one CPU per shard or none",
                    s.cpus.len(),
                    s.count
                ),
            );
        }
        let online = std::thread::available_parallelism().map_or(1, |n| n.get());
        if let Some(cpu) = s.cpus.iter().find(|&&c| c >= 1024) {
            return invalid(
                "shards.cpus",
                format!("CPU {cpu} is out of range (this host has {online})"),
            );
        }
        if s.min_wait_us > 5000 {
            return invalid(
                "shards.min_wait_us",
                format!(
                    "{} us would add more than 5 ms to every packet; use 0..=5000",
                    s.min_wait_us
                ),
            );
        }
        let m = &self.media;
        if m.port_min < 1024 {
            return invalid(
                "media.port_min",
                format!("{} is a privileged port; use 1024 or above", m.port_min),
            );
        }
        if m.port_max < m.port_min {
            return invalid(
                "media.port_max",
                format!("{} is below media.port_min {}", m.port_max, m.port_min),
            );
        }
        let ports = usize::from(m.port_max - m.port_min) + 1;
        if ports / s.count < 4 {
            return invalid(
                "media.port_max",
                format!(
                    "range {}-{} gives fewer than 4 ports per shard",
                    m.port_min, m.port_max
                ),
            );
        }
        if m.dscp > 63 {
            return invalid("media.dscp", format!("{} is not in 0..=63", m.dscp));
        }
        if m.timeout_s == 0 {
            return invalid("media.timeout_s", "must be at least 1 second".into());
        }
        if m.calls_max == 0 || m.calls_max > 1_000_000 {
            return invalid(
                "media.calls_max",
                format!("{} is not in 1..=1000000", m.calls_max),
            );
        }
        if m.address.is_unspecified() {
            return invalid(
                "media.address",
                "must be a concrete address (it is written into SDP)".into(),
            );
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&self.log.level.as_str()) {
            return invalid(
                "log.level",
                format!(
                    "{:?} is not one of error, warn, info, debug, trace",
                    self.log.level
                ),
            );
        }
        Ok(())
    }

    /// The port slice `[lo, hi]` of shard `k` (ranges split evenly, in order).
    pub fn shard_ports(&self, k: usize) -> (u16, u16) {
        assert!(k < self.shards.count);
        let min = u32::from(self.media.port_min);
        let len = u32::from(self.media.port_max) - min + 1;
        let n = self.shards.count as u32;
        let lo = min + len * k as u32 / n;
        let hi = min + len * (k as u32 + 1) / n - 1;
        // Both bounds lie inside [port_min, port_max], which fit in u16.
        (lo as u16, hi as u16)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../config/kolokol.toml");
        let cfg = Config::parse(text).unwrap();
        assert_eq!(cfg.ng.listen.port(), 2223);
        assert_eq!(cfg.media.port_min, 20000);
        assert_eq!(cfg.media.port_max, 59999);
    }

    #[test]
    fn empty_config_uses_defaults() {
        let cfg = Config::parse("").unwrap();
        assert_eq!(cfg.shards.count, 1);
        assert_eq!(cfg.media.dscp, 46);
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse("[media]\nport_min = 30000\nport_max = 20000\n").unwrap_err();
        assert!(e.to_string().contains("media.port_max"), "{e}");
        let e = Config::parse("[media]\nportmin = 3\n").unwrap_err();
        assert!(e.to_string().contains("portmin"), "{e}");
        let e = Config::parse("[shards]\ncount = 2\ncpus = [0]\n").unwrap_err();
        assert!(e.to_string().contains("shards.cpus"), "{e}");
        let e = Config::parse("[media]\ndscp = 64\n").unwrap_err();
        assert!(e.to_string().contains("media.dscp"), "{e}");
        let e = Config::parse("[media]\nport_mode = \"per-call\"\n").unwrap();
        assert_eq!(e.media.port_mode, PortMode::PerCall);
    }

    #[test]
    fn shard_slices_partition_the_range() {
        let cfg = Config::parse("[shards]\ncount = 3\n[media]\nport_min=20000\nport_max=20099\n")
            .unwrap();
        let s: Vec<_> = (0..3).map(|k| cfg.shard_ports(k)).collect();
        assert_eq!(s[0].0, 20000);
        assert_eq!(s[2].1, 20099);
        assert_eq!(s[0].1 + 1, s[1].0);
        assert_eq!(s[1].1 + 1, s[2].0);
    }
}
