//! The one TOML configuration file (F-O1), typed and validated once at start.
//!
//! Every key has a default so that `kolokol run` works with no file at all;
//! unknown keys are rejected (`deny_unknown_fields`) so a typo is an error
//! that names the key, not a silently ignored setting. [`Config::validate`]
//! checks the relations between keys (port ranges, CPU lists) and names the
//! offending key in its message.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::sip::transaction::TimerConfig;

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
        /// Dotted key, e.g. `media.port_min`; an entry of a list is named
        /// with its index, e.g. `policy.dnd[0].start`.
        key: Cow<'static, str>,
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

/// Which data path relays media (DESIGN.md, "Two data paths behind one
/// relay table").
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Datapath {
    /// io_uring over one UDP socket per leg port.
    #[default]
    Sockets,
    /// The XDP relay program on `xdp_interface` forwards plain RTP; what it
    /// does not take still goes through the sockets. Falls back to
    /// `sockets` (and says why) when the program is not built in or cannot
    /// attach. With `xsk_legs`, legs on the IPv4 media `address` get no
    /// socket: each shard
    /// binds an AF_XDP socket per `xdp_interface` per rx queue it owns
    /// (queue `q` to shard `q % count`; copy mode where zero-copy is
    /// refused) and relays their datagrams, SRTP included, from those, so
    /// open files no longer bound the number of calls. The address must be
    /// reachable through `xdp_interface` (e.g. on `lo`, routed by the
    /// peers via the gateway).
    Xdp,
}

/// A string or a list of strings.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
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
    /// SIP listeners, timers and call limits.
    pub sip: SipConfig,
    /// Outbound trunks (`[[trunks]]`), tried in priority then weight order.
    pub trunks: Vec<TrunkConfig>,
    /// Routes by prefix of the called number (`[[routes]]`).
    pub routes: Vec<RouteConfig>,
    /// The contact centre a route may name as its target.
    pub contact_centre: ContactCentreConfig,
    /// Caller identity presented on outbound calls (F-S5).
    pub caller_id: CallerIdConfig,
    /// The portal's HTTPS API (F-A1..F-A5).
    pub api: ApiConfig,
    /// Signed webhooks to the portal (F-A4).
    pub webhooks: WebhooksConfig,
    /// Prompts the portal's flows play.
    pub prompts: PromptsConfig,
    /// The portal's call flows.
    pub flows: FlowsConfig,
    /// Policy and anti-fraud checks for API-originated calls (F-P).
    pub policy: PolicyConfig,
    /// Call detail records (F-C).
    pub cdr: CdrConfig,
}

/// `[cdr]`: where call detail records go and how their numbers are sealed
/// (F-C1..F-C7). With no `keys` the records cannot be stored: the gateway
/// refuses to open the store (naming `cdr.keys`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CdrConfig {
    /// `"sqlite"` (embedded, the default) or `"postgres"`.
    pub backend: String,
    /// The SQLite file (relative to the config file's directory).
    pub path: PathBuf,
    /// PostgreSQL connection string (`host=... user=... dbname=...` or a
    /// `postgres://` URL), for `backend = "postgres"`.
    pub url: Option<String>,
    /// `"aes-256-gcm"` (default) or `"chacha20-poly1305"` (hosts without
    /// AES instructions): the cipher new records are sealed with; records
    /// sealed with the other still open.
    pub cipher: String,
    /// Number-encryption keys, by id; old ids stay listed to read old
    /// records after a rotation.
    pub keys: Vec<CdrKeyConfig>,
    /// The id in `keys` new records are sealed with.
    pub active_key: String,
    /// 32-byte HMAC-SHA256 key (64 hex digits) for searching by number.
    pub search_key_hex: String,
    /// Records whose call began longer ago than this are deleted by the
    /// retention job; 0 keeps them forever.
    pub retention_days: u32,
    /// Hours between retention runs.
    pub retention_interval_h: u32,
    /// Records the writer commits in one transaction at most.
    pub batch_max: usize,
    /// Longest a record waits for its batch to fill, milliseconds.
    pub batch_ms: u64,
    /// Records waiting for the writer at most; over it `submit` refuses.
    pub queue_max: usize,
}

/// One entry of `[cdr] keys`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CdrKeyConfig {
    /// Key id stored beside every number sealed with it (1..=32 bytes of
    /// `[A-Za-z0-9._-]`).
    pub id: String,
    /// 32 bytes as 64 hex digits.
    pub key_hex: String,
}

impl Default for CdrConfig {
    fn default() -> Self {
        CdrConfig {
            backend: "sqlite".into(),
            path: PathBuf::from("cdr.sqlite"),
            url: None,
            cipher: "aes-256-gcm".into(),
            keys: Vec::new(),
            active_key: String::new(),
            search_key_hex: String::new(),
            retention_days: 365,
            retention_interval_h: 1,
            batch_max: 256,
            batch_ms: 5,
            queue_max: 65_536,
        }
    }
}

impl CdrConfig {
    /// Checks the section; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, reason: String| {
            Err(ConfigError::Invalid {
                key: key.into(),
                reason,
            })
        };
        match self.backend.as_str() {
            "sqlite" => {}
            "postgres" => {
                if self.url.as_deref().is_none_or(str::is_empty) {
                    return invalid(
                        "cdr.url".into(),
                        "backend = \"postgres\" needs a connection string".into(),
                    );
                }
            }
            other => {
                return invalid(
                    "cdr.backend".into(),
                    format!("{other:?} is not \"sqlite\" or \"postgres\""),
                )
            }
        }
        if !matches!(self.cipher.as_str(), "aes-256-gcm" | "chacha20-poly1305") {
            return invalid(
                "cdr.cipher".into(),
                format!(
                    "{:?} is not \"aes-256-gcm\" or \"chacha20-poly1305\"",
                    self.cipher
                ),
            );
        }
        if !(1..=100_000).contains(&self.batch_max) {
            return invalid("cdr.batch_max".into(), "must be 1..=100000".into());
        }
        if self.batch_ms > 10_000 {
            return invalid("cdr.batch_ms".into(), "must be at most 10000".into());
        }
        if !(1..=10_000_000).contains(&self.queue_max) {
            return invalid("cdr.queue_max".into(), "must be 1..=10000000".into());
        }
        if self.retention_interval_h == 0 {
            return invalid(
                "cdr.retention_interval_h".into(),
                "must be at least 1".into(),
            );
        }
        if self.keys.is_empty() {
            return Ok(());
        }
        for (i, k) in self.keys.iter().enumerate() {
            let ok_id = (1..=32).contains(&k.id.len())
                && k.id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !ok_id {
                return invalid(
                    format!("cdr.keys[{i}].id"),
                    "must be 1..=32 characters of A-Z a-z 0-9 . _ -".into(),
                );
            }
            if self.keys[..i].iter().any(|o| o.id == k.id) {
                return invalid(
                    format!("cdr.keys[{i}].id"),
                    format!("{:?} is listed twice", k.id),
                );
            }
            if !is_hex_key(&k.key_hex) {
                return invalid(
                    format!("cdr.keys[{i}].key_hex"),
                    "must be 64 hex digits (32 bytes)".into(),
                );
            }
        }
        if !self.keys.iter().any(|k| k.id == self.active_key) {
            return invalid(
                "cdr.active_key".into(),
                format!("{:?} is not an id in cdr.keys", self.active_key),
            );
        }
        if !is_hex_key(&self.search_key_hex) {
            return invalid(
                "cdr.search_key_hex".into(),
                "must be 64 hex digits (32 bytes)".into(),
            );
        }
        Ok(())
    }
}

fn is_hex_key(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `[flows]`: the portal's click-to-call and notifications.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowsConfig {
    /// The support line a click-to-call bridges to when the request names
    /// none (a number, routed by `[[routes]]` like any other).
    pub support_line: Option<String>,
    /// Prompt language when the request names none (`en`, `ru`).
    pub language: String,
    /// Each call of a flow ends after this long whatever happens, seconds.
    pub max_duration_s: u64,
    /// Ended calls kept for `GET /v1/calls/{id}` (oldest forgotten first).
    pub calls_kept: usize,
}

impl Default for FlowsConfig {
    fn default() -> Self {
        FlowsConfig {
            support_line: None,
            language: "en".into(),
            max_duration_s: 3600,
            calls_kept: 100_000,
        }
    }
}

/// `[prompts]`
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PromptsConfig {
    /// A directory of `<language>/<name>.ul|.al` (headerless G.711 at
    /// 8 kHz, as `config/prompts/`); unset, the prompts built into the
    /// binary. Relative to the config file.
    pub dir: Option<PathBuf>,
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
    /// `sockets` or `xdp`.
    pub datapath: Datapath,
    /// Interface(s) the XDP relay attaches to (`datapath = "xdp"`): a name
    /// or a list of names.
    #[serde(deserialize_with = "one_or_many")]
    pub xdp_interface: Vec<String>,
    /// `datapath = "xdp"`: legs on the IPv4 media `address` get no socket;
    /// each shard relays them from AF_XDP sockets (one per `xdp_interface`
    /// per rx queue it owns), so open files no longer bound the number of
    /// calls. Plain pairs are offloaded to the XDP program once latched
    /// either way; a socket-less leg's entry falls back to its AF_XDP
    /// socket when the kernel's FIB has no answer, and goes back to TO_USER
    /// when the offload releases it. Off (the default): legs keep sockets.
    pub xsk_legs: bool,
    /// AF_XDP (`datapath = "xdp"`): UMEM frames per socket, a power of two
    /// in 64..=1048576. Half receive (all handed to the fill ring at
    /// start), half transmit. One socket per `xdp_interface` per rx queue
    /// a shard owns; each costs `xsk_frames * xsk_frame_size` bytes of
    /// locked memory (4096 x 2048 = 8 MiB by default).
    pub xsk_frames: u32,
    /// AF_XDP frame size: 2048 or 4096 bytes (a datagram and its SRTP tag
    /// must fit after 42 bytes of headers).
    pub xsk_frame_size: u32,
    /// AF_XDP descriptors per ring (fill, completion, rx, tx): a power of
    /// two, at least `xsk_frames / 2` so every frame of a half fits on its
    /// ring (the rings then never refuse a frame we own).
    pub xsk_ring: u32,
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
            datapath: Datapath::Sockets,
            xdp_interface: Vec::new(),
            xsk_legs: false,
            xsk_frames: 4096,
            xsk_frame_size: 2048,
            xsk_ring: 2048,
        }
    }
}

impl MediaConfig {
    /// The AF_XDP socket sizes (`xsk_*`).
    pub fn xsk_sizes(&self) -> crate::media::xdp::xsk::XskConfig {
        crate::media::xdp::xsk::XskConfig {
            frames: self.xsk_frames,
            frame_size: self.xsk_frame_size,
            ring: self.xsk_ring,
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
    /// `json` (one object per line) or `text`.
    pub format: String,
    /// Mask phone numbers in logs (F-O4); off only for debugging.
    pub mask_numbers: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "json".into(),
            mask_numbers: true,
        }
    }
}

/// Most `[[trunks]]` entries: trunk sets index trunks with a 64-bit mask
/// ([`crate::sip::trunk::TrunkMask`]), and a gateway with more carriers
/// than that is not the deployment this is built for.
pub const TRUNKS_MAX: usize = 64;

/// Most `[[routes]]` entries; routing is a linear longest-prefix scan per
/// call, so the table is kept small enough that the scan is cheap.
pub const ROUTES_MAX: usize = 4096;

/// The route target that means "the trunk set" (`to = "trunks"`).
pub const ROUTE_TO_TRUNKS: &str = "trunks";

/// The route target that means the `[contact_centre]`.
pub const ROUTE_TO_CONTACT_CENTRE: &str = "contact-centre";

/// SIP transport toward a peer.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP (RFC 3261 §18).
    #[default]
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP (`sips:` not implied).
    Tls,
}

impl Transport {
    /// Whether the transport is reliable (no retransmit timers, RFC 3261
    /// §17: the `reliable` argument of the transaction machines).
    pub fn is_reliable(self) -> bool {
        self != Transport::Udp
    }

    /// The port used when an address has none (RFC 3261 §19.1.2).
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Udp | Transport::Tcp => 5060,
            Transport::Tls => 5061,
        }
    }
}

/// `[sip]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// Serve SIP at all. `false` runs Kolokol as a media relay driven only
    /// over ng (an rtpengine replacement behind Kamailio/OpenSIPS).
    pub enabled: bool,
    /// UDP listen addresses.
    pub udp: Vec<SocketAddr>,
    /// TCP listen addresses.
    pub tcp: Vec<SocketAddr>,
    /// TLS listen address; none by default.
    pub tls: Option<SocketAddr>,
    /// PEM certificate chain for `tls`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls`.
    pub tls_key: Option<PathBuf>,
    /// PEM bundle of the CAs that sign TLS trunks' certificates; unset,
    /// the system bundle (`/etc/ssl/certs/ca-certificates.crt`).
    pub tls_ca: Option<PathBuf>,
    /// RFC 3261 T1 (RTT estimate), milliseconds.
    pub t1_ms: u64,
    /// RFC 3261 T2 (retransmit interval cap), milliseconds.
    pub t2_ms: u64,
    /// RFC 3261 T4 (message lifetime in the network), milliseconds.
    pub t4_ms: u64,
    /// Concurrent calls per shard; beyond it new calls get 503. Unset, it
    /// is `media.calls_max` (every call needs a media slot, so it cannot be
    /// more); see [`Config::sip_calls_max`].
    pub calls_max: Option<usize>,
    /// New outbound calls per second, whole gateway.
    pub cps_max: u32,
    /// A call is ended after this long however it is going, seconds (F-S6).
    pub max_call_duration_s: u64,
    /// Session interval offered (RFC 4028 Session-Expires), seconds.
    pub session_expires_s: u32,
    /// Smallest session interval accepted (RFC 4028 Min-SE), seconds.
    pub min_se_s: u32,
    /// `User-Agent` / `Server` header value.
    pub user_agent: String,
    /// Codecs (SDP encoding names) kept in offers, in preference order;
    /// others are filtered out (F-S3).
    pub codecs: Vec<String>,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            enabled: true,
            udp: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 5060))],
            tcp: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 5060))],
            tls: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
            calls_max: None,
            cps_max: 200,
            max_call_duration_s: 3 * 3600,
            session_expires_s: 1800,
            min_se_s: 90,
            user_agent: concat!("Kolokol/", env!("CARGO_PKG_VERSION")).into(),
            codecs: vec!["PCMA".into(), "PCMU".into(), "telephone-event".into()],
        }
    }
}

impl SipConfig {
    /// The transaction timers T1, T2, T4.
    pub fn timers(&self) -> TimerConfig {
        TimerConfig {
            t1: Duration::from_millis(self.t1_ms),
            t2: Duration::from_millis(self.t2_ms),
            t4: Duration::from_millis(self.t4_ms),
        }
    }
}

/// One `[[trunks]]` entry: a carrier's SIP server.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrunkConfig {
    /// Unique name, used by routes, metrics and CDRs.
    pub name: String,
    /// `host[:port]` (IPv6 in brackets); the port defaults by transport.
    pub address: String,
    /// Transport toward the trunk.
    pub transport: Transport,
    /// Priority group; lower is tried first (RFC 2782 style).
    pub priority: u16,
    /// Relative weight inside the priority group; 0 is only picked when
    /// nothing weighted is eligible or rarely beside weighted trunks
    /// (RFC 2782).
    pub weight: u16,
    /// Digest user name; set together with `password`.
    pub username: Option<String>,
    /// Digest password.
    pub password: Option<String>,
    /// Expected digest realm; challenges for another realm are not
    /// answered. None answers any realm the trunk names.
    pub realm: Option<String>,
    /// Concurrent calls on this trunk.
    pub max_calls: u32,
    /// New calls per second on this trunk (burst of the same size).
    pub cps: u32,
    /// Seconds between OPTIONS health checks; 0 = no health checks (the
    /// trunk is always considered up).
    pub options_interval_s: u32,
    /// Consecutive failures after which the trunk is down.
    pub down_after: u32,
    /// Consecutive successful checks after which a down trunk is up again.
    pub up_after: u32,
    /// Send `Require: 100rel` (RFC 3262) on INVITEs to this trunk.
    pub require_100rel: bool,
    /// No provisional or final answer to an INVITE within this long means
    /// failover to the next trunk, milliseconds.
    pub timeout_ms: u64,
}

impl Default for TrunkConfig {
    fn default() -> Self {
        TrunkConfig {
            name: String::new(),
            address: String::new(),
            transport: Transport::Udp,
            priority: 10,
            weight: 100,
            username: None,
            password: None,
            realm: None,
            max_calls: 1000,
            cps: 50,
            options_interval_s: 30,
            down_after: 3,
            up_after: 2,
            require_100rel: false,
            timeout_ms: 5000,
        }
    }
}

impl TrunkConfig {
    /// Host (as written, IPv6 with brackets) and port (the transport's
    /// default when the address has none). None if `address` is invalid,
    /// which [`Config::validate`] refuses.
    pub fn host_port(&self) -> Option<(&str, u16)> {
        let (host, port) = crate::sip::uri::split_hostport(&self.address).ok()?;
        Some((host, port.unwrap_or(self.transport.default_port())))
    }
}

/// One `[[routes]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    /// Prefix of the called number (digits, optional leading `+`, which is
    /// ignored when matching); the longest matching prefix wins and `""`
    /// matches everything.
    pub prefix: String,
    /// `"trunks"` or `"contact-centre"`.
    pub to: String,
    /// With `to = "trunks"`: only these trunks (by name); empty = all.
    pub trunks: Vec<String>,
}

impl Default for RouteConfig {
    fn default() -> Self {
        RouteConfig {
            prefix: String::new(),
            to: ROUTE_TO_TRUNKS.into(),
            trunks: Vec::new(),
        }
    }
}

/// `[contact_centre]`
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ContactCentreConfig {
    /// `host[:port]`; none = no contact centre (routes may not name it).
    pub address: Option<String>,
    /// Transport toward the contact centre.
    pub transport: Transport,
}

/// How the official number is presented (F-S5).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CallerIdMode {
    /// P-Asserted-Identity only (RFC 3325); From is left as it is.
    #[default]
    Pai,
    /// From only.
    From,
    /// Both P-Asserted-Identity and From.
    Both,
}

/// `[caller_id]`
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CallerIdConfig {
    /// Official E.164 numbers (`+` then digits), used round-robin; empty =
    /// the caller's identity is passed through unchanged.
    pub pool: Vec<String>,
    /// Where the number is written.
    pub mode: CallerIdMode,
}

/// `[api]`: the portal's HTTPS API (`control::api`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Serve the API at all.
    pub enabled: bool,
    /// Listen address (port 0 = ephemeral, for tests).
    pub listen: SocketAddr,
    /// PEM certificate chain; with `tls_key`. Unset, the API refuses to
    /// start unless `insecure_http` is set.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP (no TLS): only for loopback tests and a TLS
    /// terminating proxy in front.
    pub insecure_http: bool,
    /// JWKS (RFC 7517) with the RS256/ES256 keys tokens are verified with.
    /// Unset, the API refuses to start.
    pub jwks_file: Option<PathBuf>,
    /// Required member of the tokens' `aud`.
    pub audience: String,
    /// Required `iss` of the tokens, if set.
    pub issuer: Option<String>,
    /// Serve `/metrics` without a token; `false` requires the `admin` scope.
    pub metrics_public: bool,
    /// Concurrent connections; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// A request (other than the event stream) is answered 503 after this
    /// long, milliseconds.
    pub request_timeout_ms: u64,
    /// Idempotency keys remembered at most.
    pub idempotency_max_entries: usize,
    /// How long an idempotency key is remembered, seconds.
    pub idempotency_ttl_s: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            enabled: true,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8443)),
            tls_cert: None,
            tls_key: None,
            insecure_http: false,
            jwks_file: None,
            audience: "kolokol".into(),
            issuer: None,
            metrics_public: true,
            max_connections: 1024,
            request_timeout_ms: 10_000,
            idempotency_max_entries: 100_000,
            idempotency_ttl_s: 86_400,
        }
    }
}

impl ApiConfig {
    /// What keeps an enabled API from starting (no TLS and no
    /// `insecure_http`, no `jwks_file`); the error names the key. Kept out of
    /// [`Config::validate`] so that a configuration without an `[api]`
    /// section stays valid; the API's `spawn` calls it, and so can
    /// `check-config`.
    pub fn check_startable(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if self.tls_cert.is_none() && !self.insecure_http {
            return Err(ConfigError::Invalid {
                key: "api.tls_cert".into(),
                reason: "not set: give api.tls_cert and api.tls_key, or set \
                         api.insecure_http = true for plain HTTP (loopback or behind a TLS proxy)"
                    .into(),
            });
        }
        if self.jwks_file.is_none() {
            return Err(ConfigError::Invalid {
                key: "api.jwks_file".into(),
                reason: "not set: the API verifies bearer tokens with the keys of a JWKS file"
                    .into(),
            });
        }
        Ok(())
    }
}

/// `[webhooks]`: events POSTed to the portal, signed (`control::api::webhook`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// `http://` or `https://` URL; unset = no webhooks.
    pub url: Option<String>,
    /// HMAC-SHA256 key of `X-Kolokol-Signature` (at least 16 bytes);
    /// required with `url`.
    pub secret: Option<String>,
    /// PEM CA bundle trusted for an `https` URL besides the public roots.
    pub ca_file: Option<PathBuf>,
    /// Events queued at most; beyond, the oldest is dropped and counted.
    pub max_queue: usize,
    /// An event not delivered after this long is dropped, seconds.
    pub give_up_s: u64,
    /// First retry delay, milliseconds; doubles per attempt.
    pub retry_min_ms: u64,
    /// Longest retry delay, milliseconds.
    pub retry_max_ms: u64,
    /// One delivery attempt (connect to response), milliseconds.
    pub timeout_ms: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            url: None,
            secret: None,
            ca_file: None,
            max_queue: 10_000,
            give_up_s: 3600,
            retry_min_ms: 1000,
            retry_max_ms: 60_000,
            timeout_ms: 10_000,
        }
    }
}

/// Shortest webhook secret, bytes.
pub const WEBHOOK_SECRET_LEN_MIN: usize = 16;

/// Most entries in each prefix list of `[policy]` (allowed, denied and
/// blocked prefixes): they are matched by a linear scan per request.
pub const POLICY_PREFIXES_MAX: usize = 4096;

/// Most `policy.blocked_numbers` (looked up in a hash set).
pub const POLICY_BLOCKED_NUMBERS_MAX: usize = 1_000_000;

/// Most `policy.support_lines`.
pub const POLICY_SUPPORT_LINES_MAX: usize = 4096;

/// Most `[[policy.dnd]]` windows.
pub const POLICY_DND_MAX: usize = 1024;

/// Most recent-call timestamps all subjects of one table may hold
/// (`accounts_max * account_burst_calls_max`, likewise for numbers): at 8
/// bytes each, 800 MB. A configuration beyond it is a typo, not a plan.
pub const POLICY_BURST_SLOTS_MAX: u64 = 100_000_000;

/// `[policy]`: the checks every call the control API places passes first
/// (SPEC F-P1..F-P3); [`crate::policy::Policy`] applies them. The defaults
/// allow every valid E.164 destination at any hour with moderate limits.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Destinations allowed, by prefix (`+` and digits, `"+"` = all);
    /// empty = all allowed.
    pub allowed_prefixes: Vec<String>,
    /// Destinations refused even when allowed above (premium-rate ranges
    /// and the like), by prefix.
    pub denied_prefixes: Vec<String>,
    /// Numbers never called (E.164).
    pub blocked_numbers: Vec<String>,
    /// Prefixes never called.
    pub blocked_prefixes: Vec<String>,
    /// Click-to-call support lines accepted (E.164); empty = any support
    /// line that passes the destination rules.
    pub support_lines: Vec<String>,
    /// Calls one account may place per UTC day.
    pub account_day_calls_max: u32,
    /// Calls one destination number may receive per UTC day, all accounts
    /// together.
    pub number_day_calls_max: u32,
    /// Calls per second placed through the control API, whole gateway
    /// (token bucket with a burst of the same size). Per-trunk CPS is
    /// `trunks.cps`, applied by the SIP layer.
    pub cps_max: u32,
    /// Accounts whose counts are kept at once; see [`crate::policy`] for
    /// what happens when the table is full.
    pub accounts_max: usize,
    /// Destination numbers whose counts are kept at once.
    pub numbers_max: usize,
    /// Numbers blocked at run time ([`crate::policy::Policy::block_number`])
    /// at once.
    pub runtime_blocks_max: usize,
    /// More than this many calls to one number within
    /// `number_burst_window_s` blocks the number automatically; 0 = off.
    pub number_burst_calls_max: u32,
    /// The burst window for numbers, seconds.
    pub number_burst_window_s: u32,
    /// How long an automatic number block lasts, seconds.
    pub number_burst_block_s: u32,
    /// More than this many calls from one account within
    /// `account_burst_window_s` blocks the account automatically; 0 = off.
    pub account_burst_calls_max: u32,
    /// The burst window for accounts, seconds.
    pub account_burst_window_s: u32,
    /// How long an automatic account block lasts, seconds.
    pub account_burst_block_s: u32,
    /// Do-not-disturb windows (`[[policy.dnd]]`), by destination prefix;
    /// the longest matching prefix applies. None by default.
    pub dnd: Vec<DndConfig>,
    /// Kinds of call that may ask to be exempt from do-not-disturb (e.g.
    /// `["notification"]` for urgent one-time codes); none by default.
    pub dnd_exempt_kinds: Vec<crate::policy::CallKind>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            allowed_prefixes: Vec::new(),
            denied_prefixes: Vec::new(),
            blocked_numbers: Vec::new(),
            blocked_prefixes: Vec::new(),
            support_lines: Vec::new(),
            account_day_calls_max: 1000,
            number_day_calls_max: 10,
            cps_max: 20,
            accounts_max: 10_000,
            numbers_max: 200_000,
            runtime_blocks_max: 10_000,
            number_burst_calls_max: 5,
            number_burst_window_s: 60,
            number_burst_block_s: 3600,
            account_burst_calls_max: 50,
            account_burst_window_s: 60,
            account_burst_block_s: 3600,
            dnd: Vec::new(),
            dnd_exempt_kinds: Vec::new(),
        }
    }
}

/// One `[[policy.dnd]]` window: no calls to numbers with `prefix` from
/// `start` to `end` local time (UTC + `utc_offset_minutes`). A window
/// whose end is before its start wraps midnight (`21:00`-`09:00`).
#[derive(Clone, Debug, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DndConfig {
    /// Destination prefix, e.g. `"+7"`.
    pub prefix: String,
    /// Local time minus UTC, minutes (-720..=840). Fixed: daylight saving
    /// is not followed (see [`crate::policy`]).
    pub utc_offset_minutes: i32,
    /// Start of the quiet window, `HH:MM` local time (inclusive).
    pub start: String,
    /// End of the quiet window, `HH:MM` local time (exclusive).
    pub end: String,
}

impl PolicyConfig {
    /// Checks `[policy]` on its own; the error names the key, with the
    /// index for list entries (`policy.dnd[0].start`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        use crate::policy::number::{is_prefix, E164};
        fn invalid(key: String, reason: String) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key: key.into(),
                reason,
            })
        }
        let prefix_lists = [
            ("policy.allowed_prefixes", &self.allowed_prefixes),
            ("policy.denied_prefixes", &self.denied_prefixes),
            ("policy.blocked_prefixes", &self.blocked_prefixes),
        ];
        for (key, list) in prefix_lists {
            if list.len() > POLICY_PREFIXES_MAX {
                return invalid(
                    key.into(),
                    format!("{} entries; at most {POLICY_PREFIXES_MAX}", list.len()),
                );
            }
            let mut seen = std::collections::HashSet::with_capacity(list.len());
            for (i, p) in list.iter().enumerate() {
                if !is_prefix(p) {
                    return invalid(
                        format!("{key}[{i}]"),
                        format!("{p:?} is not + and up to 15 digits (no leading 0)"),
                    );
                }
                if !seen.insert(p) {
                    return invalid(format!("{key}[{i}]"), format!("{p:?} is listed twice"));
                }
            }
        }
        let number_lists = [
            (
                "policy.blocked_numbers",
                &self.blocked_numbers,
                POLICY_BLOCKED_NUMBERS_MAX,
            ),
            (
                "policy.support_lines",
                &self.support_lines,
                POLICY_SUPPORT_LINES_MAX,
            ),
        ];
        for (key, list, max) in number_lists {
            if list.len() > max {
                return invalid(key.into(), format!("{} entries; at most {max}", list.len()));
            }
            let mut seen = std::collections::HashSet::with_capacity(list.len());
            for (i, n) in list.iter().enumerate() {
                let Some(e) = E164::parse(n) else {
                    return invalid(
                        format!("{key}[{i}]"),
                        format!("{n:?} is not an E.164 number (+ and 8..=15 digits)"),
                    );
                };
                if !seen.insert(e) {
                    return invalid(format!("{key}[{i}]"), format!("{n:?} is listed twice"));
                }
            }
        }
        let ranges: [(&str, u64, u64, u64); 12] = [
            (
                "policy.account_day_calls_max",
                self.account_day_calls_max.into(),
                1,
                10_000_000,
            ),
            (
                "policy.number_day_calls_max",
                self.number_day_calls_max.into(),
                1,
                1_000_000,
            ),
            ("policy.cps_max", self.cps_max.into(), 1, 100_000),
            (
                "policy.accounts_max",
                self.accounts_max as u64,
                1,
                1_000_000,
            ),
            ("policy.numbers_max", self.numbers_max as u64, 1, 10_000_000),
            (
                "policy.runtime_blocks_max",
                self.runtime_blocks_max as u64,
                1,
                1_000_000,
            ),
            (
                "policy.number_burst_calls_max",
                self.number_burst_calls_max.into(),
                0,
                1000,
            ),
            (
                "policy.number_burst_window_s",
                self.number_burst_window_s.into(),
                1,
                86_400,
            ),
            (
                "policy.number_burst_block_s",
                self.number_burst_block_s.into(),
                1,
                7 * 86_400,
            ),
            (
                "policy.account_burst_calls_max",
                self.account_burst_calls_max.into(),
                0,
                10_000,
            ),
            (
                "policy.account_burst_window_s",
                self.account_burst_window_s.into(),
                1,
                86_400,
            ),
            (
                "policy.account_burst_block_s",
                self.account_burst_block_s.into(),
                1,
                7 * 86_400,
            ),
        ];
        for (key, v, lo, hi) in ranges {
            if !(lo..=hi).contains(&v) {
                return invalid(key.into(), format!("{v} is not in {lo}..={hi}"));
            }
        }
        let slots = [
            (
                "policy.numbers_max",
                self.numbers_max as u64,
                "policy.number_burst_calls_max",
                u64::from(self.number_burst_calls_max),
            ),
            (
                "policy.accounts_max",
                self.accounts_max as u64,
                "policy.account_burst_calls_max",
                u64::from(self.account_burst_calls_max),
            ),
        ];
        for (key, subjects, other, calls) in slots {
            if subjects * calls > POLICY_BURST_SLOTS_MAX {
                return invalid(
                    key.into(),
                    format!(
                        "{subjects} x {other} {calls} recent-call slots is more than \
                         {POLICY_BURST_SLOTS_MAX} (8 bytes each)"
                    ),
                );
            }
        }
        if self.dnd.len() > POLICY_DND_MAX {
            return invalid(
                "policy.dnd".into(),
                format!("{} windows; at most {POLICY_DND_MAX}", self.dnd.len()),
            );
        }
        for (i, d) in self.dnd.iter().enumerate() {
            if !is_prefix(&d.prefix) {
                return invalid(
                    format!("policy.dnd[{i}].prefix"),
                    format!("{:?} is not + and up to 15 digits", d.prefix),
                );
            }
            if self.dnd[..i].iter().any(|e| e.prefix == d.prefix) {
                return invalid(
                    format!("policy.dnd[{i}].prefix"),
                    format!("{:?} already has a window", d.prefix),
                );
            }
            if !(-720..=840).contains(&d.utc_offset_minutes) {
                return invalid(
                    format!("policy.dnd[{i}].utc_offset_minutes"),
                    format!(
                        "{} is not in -720..=840 (UTC-12 to UTC+14)",
                        d.utc_offset_minutes
                    ),
                );
            }
            let start = crate::policy::parse_time_of_day(&d.start);
            if start.is_none() {
                return invalid(
                    format!("policy.dnd[{i}].start"),
                    format!("{:?} is not HH:MM (00:00..23:59)", d.start),
                );
            }
            let end = crate::policy::parse_time_of_day(&d.end);
            if end.is_none() {
                return invalid(
                    format!("policy.dnd[{i}].end"),
                    format!("{:?} is not HH:MM (00:00..23:59)", d.end),
                );
            }
            if start == end {
                return invalid(
                    format!("policy.dnd[{i}].end"),
                    format!("equals start {:?}: the window would be empty", d.start),
                );
            }
        }
        for (i, k) in self.dnd_exempt_kinds.iter().enumerate() {
            if self.dnd_exempt_kinds[..i].contains(k) {
                return invalid(
                    format!("policy.dnd_exempt_kinds[{i}]"),
                    format!("{k:?} is listed twice"),
                );
            }
        }
        Ok(())
    }
}

/// Whether `s` is an E.164 number: `+`, a non-zero digit, at most 15
/// digits in all (ITU-T E.164 §6).
pub fn is_e164(s: &str) -> bool {
    let Some(d) = s.strip_prefix('+') else {
        return false;
    };
    (1..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
}

/// Whether `s` can be an SDP encoding name (an RFC 4566 token).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
                )
        })
}

impl Config {
    /// Concurrent SIP calls per shard: `sip.calls_max`, or
    /// `media.calls_max` when that is unset.
    pub fn sip_calls_max(&self) -> usize {
        self.sip.calls_max.unwrap_or(self.media.calls_max)
    }

    /// Read, parse and validate a file. Relative file names in it
    /// (`sip.tls_cert`, `sip.tls_key`, `sip.tls_ca`, `api.tls_cert`,
    /// `api.tls_key`, `api.jwks_file`, `webhooks.ca_file`) are taken relative to
    /// the file's directory, so a config works from any working directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut cfg = Config::parse(&text)?;
        if let Some(dir) = path.parent() {
            for p in [
                &mut cfg.sip.tls_cert,
                &mut cfg.sip.tls_key,
                &mut cfg.sip.tls_ca,
                &mut cfg.api.tls_cert,
                &mut cfg.api.tls_key,
                &mut cfg.api.jwks_file,
                &mut cfg.webhooks.ca_file,
                &mut cfg.prompts.dir,
            ]
            .into_iter()
            .flatten()
            {
                if p.is_relative() {
                    *p = dir.join(&*p);
                }
            }
            if cfg.cdr.path.is_relative() {
                cfg.cdr.path = dir.join(&cfg.cdr.path);
            }
        }
        Ok(cfg)
    }

    /// Parse and validate TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check relations between keys; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: String| {
            Err(ConfigError::Invalid {
                key: key.into(),
                reason,
            })
        };
        if !matches!(self.log.format.as_str(), "json" | "text") {
            return invalid(
                "log.format",
                format!("{:?} is not json or text", self.log.format),
            );
        }
        let f = &self.flows;
        if !matches!(f.language.as_str(), "en" | "ru") {
            return invalid(
                "flows.language",
                format!("{:?} is not en or ru", f.language),
            );
        }
        if f.max_duration_s == 0 || f.max_duration_s > 24 * 3600 {
            return invalid(
                "flows.max_duration_s",
                format!("{} is not in 1..=86400", f.max_duration_s),
            );
        }
        if f.calls_kept == 0 || f.calls_kept > 10_000_000 {
            return invalid(
                "flows.calls_kept",
                format!("{} is not in 1..=10000000", f.calls_kept),
            );
        }
        if let Some(n) = &f.support_line {
            let digits = n.strip_prefix('+').unwrap_or(n);
            if digits.is_empty() || digits.len() > 32 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return invalid("flows.support_line", format!("{n:?} is not a number"));
            }
        }
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
        if m.datapath == Datapath::Xdp && m.xdp_interface.is_empty() {
            return invalid(
                "media.xdp_interface",
                "datapath = \"xdp\" needs the interface(s) to attach to".into(),
            );
        }
        if let Err(e) = m.xsk_sizes().validate() {
            return invalid("media.xsk_frames", e);
        }
        if m.xdp_interface.len() > crate::media::xdp::XSK_IFS_MAX as usize {
            return invalid(
                "media.xdp_interface",
                format!("at most {} interfaces", crate::media::xdp::XSK_IFS_MAX),
            );
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
        self.validate_sip()?;
        self.validate_trunks()?;
        self.validate_api()?;
        self.cdr.validate()?;
        self.policy.validate()
    }

    /// `[api]` and `[webhooks]`.
    fn validate_api(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: String| {
            Err(ConfigError::Invalid {
                key: key.into(),
                reason,
            })
        };
        let a = &self.api;
        match (&a.tls_cert, &a.tls_key) {
            (Some(_), None) => {
                return invalid("api.tls_key", "must be set with api.tls_cert".into())
            }
            (None, Some(_)) => {
                return invalid("api.tls_cert", "must be set with api.tls_key".into())
            }
            (Some(_), Some(_)) if a.insecure_http => {
                return invalid(
                    "api.insecure_http",
                    "is set but so are api.tls_cert/api.tls_key; choose one".into(),
                )
            }
            _ => {}
        }
        if a.audience.is_empty() {
            return invalid("api.audience", "must not be empty".into());
        }
        if a.issuer.as_deref() == Some("") {
            return invalid(
                "api.issuer",
                "must not be empty (leave it out instead)".into(),
            );
        }
        if a.max_connections == 0 || a.max_connections > 65_536 {
            return invalid(
                "api.max_connections",
                format!("{} is not in 1..=65536", a.max_connections),
            );
        }
        if !(100..=600_000).contains(&a.request_timeout_ms) {
            return invalid(
                "api.request_timeout_ms",
                format!("{} is not in 100..=600000", a.request_timeout_ms),
            );
        }
        if a.idempotency_max_entries == 0 || a.idempotency_max_entries > 10_000_000 {
            return invalid(
                "api.idempotency_max_entries",
                format!("{} is not in 1..=10000000", a.idempotency_max_entries),
            );
        }
        if !(60..=7 * 86_400).contains(&a.idempotency_ttl_s) {
            return invalid(
                "api.idempotency_ttl_s",
                format!(
                    "{} is not in 60..=604800 (a minute to a week)",
                    a.idempotency_ttl_s
                ),
            );
        }
        let w = &self.webhooks;
        if let Some(url) = &w.url {
            let ok = url.parse::<http::Uri>().ok().is_some_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https"))
                    && u.host().is_some_and(|h| !h.is_empty())
            });
            if !ok {
                return invalid(
                    "webhooks.url",
                    format!("{url:?} is not an http:// or https:// URL with a host"),
                );
            }
            match &w.secret {
                None => return invalid("webhooks.secret", "must be set with webhooks.url".into()),
                Some(s) if s.len() < WEBHOOK_SECRET_LEN_MIN => {
                    return invalid(
                        "webhooks.secret",
                        format!("at least {WEBHOOK_SECRET_LEN_MIN} bytes"),
                    )
                }
                Some(_) => {}
            }
        }
        if w.max_queue == 0 || w.max_queue > 1_000_000 {
            return invalid(
                "webhooks.max_queue",
                format!("{} is not in 1..=1000000", w.max_queue),
            );
        }
        if w.give_up_s == 0 || w.give_up_s > 7 * 86_400 {
            return invalid(
                "webhooks.give_up_s",
                format!("{} is not in 1..=604800", w.give_up_s),
            );
        }
        if w.retry_min_ms == 0 || w.retry_min_ms > 3_600_000 {
            return invalid(
                "webhooks.retry_min_ms",
                format!("{} is not in 1..=3600000", w.retry_min_ms),
            );
        }
        if w.retry_max_ms < w.retry_min_ms || w.retry_max_ms > 3_600_000 {
            return invalid(
                "webhooks.retry_max_ms",
                format!(
                    "{} is not in webhooks.retry_min_ms ({})..=3600000",
                    w.retry_max_ms, w.retry_min_ms
                ),
            );
        }
        if !(100..=300_000).contains(&w.timeout_ms) {
            return invalid(
                "webhooks.timeout_ms",
                format!("{} is not in 100..=300000", w.timeout_ms),
            );
        }
        Ok(())
    }

    /// `[sip]` on its own.
    fn validate_sip(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: String| {
            Err(ConfigError::Invalid {
                key: key.into(),
                reason,
            })
        };
        let s = &self.sip;
        if s.enabled && s.udp.is_empty() && s.tcp.is_empty() && s.tls.is_none() {
            return invalid(
                "sip.udp",
                "no SIP listener: give at least one of sip.udp, sip.tcp, sip.tls".into(),
            );
        }
        if let Some(a) = s
            .udp
            .iter()
            .chain(&s.tcp)
            .chain(&s.tls)
            .find(|a| a.port() == 0)
        {
            return invalid("sip.udp", format!("{a}: port 0 is not a listen port"));
        }
        // Our Via sent-by and Contact carry the listen address: a wildcard
        // would tell peers to send to 0.0.0.0, and a second address of one
        // family would be answered from the first.
        if let Some(a) = s.udp.iter().find(|a| a.ip().is_unspecified()) {
            return invalid(
                "sip.udp",
                format!("{a}: give the address peers reach, not a wildcard"),
            );
        }
        if s.udp.iter().filter(|a| a.is_ipv4()).count() > 1
            || s.udp.iter().filter(|a| a.is_ipv6()).count() > 1
        {
            return invalid(
                "sip.udp",
                "at most one IPv4 and one IPv6 address (replies leave from the first of \
                 a family)"
                    .into(),
            );
        }
        for (key, list) in [("sip.udp", &s.udp), ("sip.tcp", &s.tcp)] {
            if let Some((i, a)) = list
                .iter()
                .enumerate()
                .find(|(i, a)| list[..*i].contains(a))
            {
                return invalid(key, format!("{a} is listed twice (entry {i})"));
            }
        }
        if s.tls.is_some() {
            if s.tls_cert.is_none() {
                return invalid("sip.tls_cert", "required when sip.tls is set".into());
            }
            if s.tls_key.is_none() {
                return invalid("sip.tls_key", "required when sip.tls is set".into());
            }
            if s.tcp.iter().any(|a| Some(*a) == s.tls) {
                return invalid(
                    "sip.tls",
                    "is also a sip.tcp address; TLS needs its own port".into(),
                );
            }
        }
        if s.t1_ms == 0 || s.t1_ms > 10_000 {
            return invalid("sip.t1_ms", format!("{} is not in 1..=10000", s.t1_ms));
        }
        if s.t2_ms < s.t1_ms || s.t2_ms > 60_000 {
            return invalid(
                "sip.t2_ms",
                format!("{} is not in sip.t1_ms ({})..=60000", s.t2_ms, s.t1_ms),
            );
        }
        if s.t4_ms == 0 || s.t4_ms > 60_000 {
            return invalid("sip.t4_ms", format!("{} is not in 1..=60000", s.t4_ms));
        }
        if let Some(calls_max) = s.calls_max {
            if calls_max == 0 || calls_max > 1_000_000 {
                return invalid(
                    "sip.calls_max",
                    format!("{calls_max} is not in 1..=1000000"),
                );
            }
            if calls_max > self.media.calls_max {
                return invalid(
                    "sip.calls_max",
                    format!(
                        "{calls_max} is above media.calls_max {}: every call needs a media slot",
                        self.media.calls_max
                    ),
                );
            }
        }
        if s.cps_max == 0 || s.cps_max > 1_000_000 {
            return invalid(
                "sip.cps_max",
                format!("{} is not in 1..=1000000", s.cps_max),
            );
        }
        if s.max_call_duration_s == 0 || s.max_call_duration_s > 7 * 86_400 {
            return invalid(
                "sip.max_call_duration_s",
                format!("{} is not in 1..=604800 (7 days)", s.max_call_duration_s),
            );
        }
        // RFC 4028 §4: Min-SE is never below 90 seconds.
        if s.min_se_s < 90 {
            return invalid(
                "sip.min_se_s",
                format!("{} is below the RFC 4028 minimum of 90", s.min_se_s),
            );
        }
        if s.session_expires_s < s.min_se_s || s.session_expires_s > 86_400 {
            return invalid(
                "sip.session_expires_s",
                format!(
                    "{} is not in sip.min_se_s ({})..=86400",
                    s.session_expires_s, s.min_se_s
                ),
            );
        }
        if s.user_agent.is_empty()
            || s.user_agent.len() > 128
            || !s.user_agent.bytes().all(|b| (0x20..0x7f).contains(&b))
        {
            return invalid(
                "sip.user_agent",
                "must be 1..=128 printable ASCII characters".into(),
            );
        }
        if s.codecs.is_empty() {
            return invalid("sip.codecs", "must name at least one codec".into());
        }
        for (i, c) in s.codecs.iter().enumerate() {
            if !is_token(c) {
                return invalid("sip.codecs", format!("{c:?} is not an SDP encoding name"));
            }
            if s.codecs[..i].iter().any(|d| d.eq_ignore_ascii_case(c)) {
                return invalid("sip.codecs", format!("{c:?} is listed twice"));
            }
        }
        if s.codecs
            .iter()
            .all(|c| c.eq_ignore_ascii_case("telephone-event"))
        {
            return invalid(
                "sip.codecs",
                "telephone-event alone carries no audio; add a codec".into(),
            );
        }
        Ok(())
    }

    /// `[[trunks]]`, `[[routes]]`, `[contact_centre]`, `[caller_id]`.
    fn validate_trunks(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: String| {
            Err(ConfigError::Invalid {
                key: key.into(),
                reason,
            })
        };
        if self.trunks.len() > TRUNKS_MAX {
            return invalid(
                "trunks",
                format!("{} trunks; at most {TRUNKS_MAX}", self.trunks.len()),
            );
        }
        for (i, t) in self.trunks.iter().enumerate() {
            let n = &t.name;
            if n.is_empty()
                || n.len() > 64
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                return invalid(
                    "trunks.name",
                    format!("trunk #{i}: {n:?} must be 1..=64 of A-Z a-z 0-9 - _ ."),
                );
            }
            if self.trunks[..i].iter().any(|u| u.name == *n) {
                return invalid("trunks.name", format!("duplicate trunk name {n:?}"));
            }
            if t.host_port().is_none() {
                return invalid(
                    "trunks.address",
                    format!("trunk {n:?}: {:?} is not host[:port]", t.address),
                );
            }
            if t.username.is_some() != t.password.is_some() {
                let key = if t.username.is_some() {
                    "trunks.password"
                } else {
                    "trunks.username"
                };
                return invalid(
                    key,
                    format!("trunk {n:?}: username and password go together"),
                );
            }
            if t.username.as_deref() == Some("") {
                return invalid("trunks.username", format!("trunk {n:?}: is empty"));
            }
            if t.realm.is_some() && t.username.is_none() {
                return invalid(
                    "trunks.realm",
                    format!("trunk {n:?}: a realm without username/password is unused"),
                );
            }
            if t.max_calls == 0 {
                return invalid(
                    "trunks.max_calls",
                    format!("trunk {n:?}: must be at least 1"),
                );
            }
            if t.cps == 0 || t.cps > 1_000_000 {
                return invalid(
                    "trunks.cps",
                    format!("trunk {n:?}: {} is not in 1..=1000000", t.cps),
                );
            }
            if t.options_interval_s > 3600 {
                return invalid(
                    "trunks.options_interval_s",
                    format!("trunk {n:?}: {} is not in 0..=3600", t.options_interval_s),
                );
            }
            if t.down_after == 0 || t.down_after > 100 {
                return invalid(
                    "trunks.down_after",
                    format!("trunk {n:?}: {} is not in 1..=100", t.down_after),
                );
            }
            if t.up_after == 0 || t.up_after > 100 {
                return invalid(
                    "trunks.up_after",
                    format!("trunk {n:?}: {} is not in 1..=100", t.up_after),
                );
            }
            // Past Timer B (64*T1) the transaction itself has timed out, so a
            // longer failover timeout would never fire.
            let timer_b_ms = self.sip.t1_ms * 64;
            if t.timeout_ms < 100 || t.timeout_ms > timer_b_ms {
                return invalid(
                    "trunks.timeout_ms",
                    format!(
                        "trunk {n:?}: {} is not in 100..={timer_b_ms} (Timer B = 64*sip.t1_ms)",
                        t.timeout_ms
                    ),
                );
            }
        }
        if let Some(a) = &self.contact_centre.address {
            if crate::sip::uri::split_hostport(a).is_err() {
                return invalid(
                    "contact_centre.address",
                    format!("{a:?} is not host[:port]"),
                );
            }
        }
        if self.routes.len() > ROUTES_MAX {
            return invalid(
                "routes",
                format!("{} routes; at most {ROUTES_MAX}", self.routes.len()),
            );
        }
        for (i, r) in self.routes.iter().enumerate() {
            let p = &r.prefix;
            let digits = p.strip_prefix('+').unwrap_or(p);
            if p.len() > 32 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return invalid(
                    "routes.prefix",
                    format!("{p:?} is not digits with an optional leading +"),
                );
            }
            if self.routes[..i]
                .iter()
                .any(|q| q.prefix.strip_prefix('+').unwrap_or(&q.prefix) == digits)
            {
                return invalid("routes.prefix", format!("prefix {p:?} is listed twice"));
            }
            match r.to.as_str() {
                ROUTE_TO_TRUNKS => {
                    if self.trunks.is_empty() {
                        return invalid(
                            "routes.to",
                            format!("route {p:?} goes to trunks but no [[trunks]] are configured"),
                        );
                    }
                    for (j, name) in r.trunks.iter().enumerate() {
                        if !self.trunks.iter().any(|t| t.name == *name) {
                            return invalid(
                                "routes.trunks",
                                format!("route {p:?}: unknown trunk {name:?}"),
                            );
                        }
                        if r.trunks[..j].contains(name) {
                            return invalid(
                                "routes.trunks",
                                format!("route {p:?}: trunk {name:?} is listed twice"),
                            );
                        }
                    }
                }
                ROUTE_TO_CONTACT_CENTRE => {
                    if self.contact_centre.address.is_none() {
                        return invalid(
                            "routes.to",
                            format!("route {p:?} goes to the contact centre but contact_centre.address is not set"),
                        );
                    }
                    if !r.trunks.is_empty() {
                        return invalid(
                            "routes.trunks",
                            format!("route {p:?}: only meaningful with to = \"trunks\""),
                        );
                    }
                }
                other => {
                    return invalid(
                        "routes.to",
                        format!("route {p:?}: {other:?} is not \"trunks\" or \"contact-centre\""),
                    )
                }
            }
        }
        let pool = &self.caller_id.pool;
        for (i, n) in pool.iter().enumerate() {
            if !is_e164(n) {
                return invalid(
                    "caller_id.pool",
                    format!("{n:?} is not an E.164 number (+ and up to 15 digits)"),
                );
            }
            if pool[..i].contains(n) {
                return invalid("caller_id.pool", format!("{n:?} is listed twice"));
            }
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
    fn cdr_section_is_checked_and_its_path_resolved() {
        let keys = format!(
            "[cdr]\nkeys = [{{ id = \"k1\", key_hex = \"{}\" }}]\nactive_key = \"k1\"\nsearch_key_hex = \"{}\"\n",
            "ab".repeat(32),
            "cd".repeat(32)
        );
        let c = Config::parse(&keys).unwrap();
        assert_eq!(c.cdr.backend, "sqlite");
        for (extra, key) in [
            ("backend = \"kafka\"\n", "cdr.backend"),
            ("backend = \"postgres\"\n", "cdr.url"),
            ("cipher = \"des\"\n", "cdr.cipher"),
            ("batch_max = 0\n", "cdr.batch_max"),
        ] {
            let e = Config::parse(&format!("{keys}{extra}")).unwrap_err();
            assert!(e.to_string().contains(key), "{e}");
        }
        let e =
            Config::parse(&keys.replace("active_key = \"k1\"", "active_key = \"k2\"")).unwrap_err();
        assert!(e.to_string().contains("cdr.active_key"), "{e}");
        let e = Config::parse(&keys.replace(&"ab".repeat(32), "xyz")).unwrap_err();
        assert!(e.to_string().contains("cdr.keys[0].key_hex"), "{e}");
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
        let x = Config::parse("[media]\ndatapath = \"xdp\"\nxdp_interface = [\"eth0\"]\n").unwrap();
        assert_eq!(x.media.datapath, Datapath::Xdp);
        assert_eq!(x.media.xdp_interface, vec!["eth0".to_string()]);
        assert!(Config::parse("[media]\ndatapath = \"dpdk\"\n").is_err());
        let one =
            Config::parse("[media]\ndatapath = \"xdp\"\nxdp_interface = \"veth0\"\n").unwrap();
        assert_eq!(one.media.xdp_interface, vec!["veth0".to_string()]);
        let sized = Config::parse(
            "[media]\ndatapath = \"xdp\"\nxdp_interface = \"veth0\"\nxsk_frames = 256\nxsk_ring = 128\n",
        )
        .unwrap();
        assert_eq!(sized.media.xsk_sizes().frames, 256);
        assert_eq!(sized.media.xsk_sizes().frame_size, 2048);
        let e = Config::parse("[media]\nxsk_frames = 1000\n").unwrap_err();
        assert!(e.to_string().contains("media.xsk_frames"), "{e}");
        let e = Config::parse("[media]\nxsk_frames = 4096\nxsk_ring = 1024\n").unwrap_err();
        assert!(e.to_string().contains("half the frames"), "{e}");
        let e = Config::parse("[media]\ndatapath = \"xdp\"\n").unwrap_err();
        assert!(e.to_string().contains("media.xdp_interface"), "{e}");
    }

    #[test]
    fn example_config_has_sip_trunk_route_and_pool() {
        let cfg = Config::parse(include_str!("../config/kolokol.toml")).unwrap();
        assert_eq!(cfg.sip.udp, vec!["127.0.0.1:5060".parse().unwrap()]);
        assert_eq!(cfg.sip.tcp, vec!["127.0.0.1:5060".parse().unwrap()]);
        assert_eq!(cfg.sip.tls, Some("127.0.0.1:5061".parse().unwrap()));
        // Loaded from its file, the test certificate's relative names
        // resolve next to it, from whatever directory.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/kolokol.toml");
        let loaded = Config::load(&path).unwrap();
        for f in [&loaded.sip.tls_cert, &loaded.sip.tls_key] {
            let f = f.as_ref().expect("example sets the TLS files");
            assert!(f.is_absolute() && f.exists(), "{}", f.display());
        }
        assert_eq!(cfg.trunks.len(), 1);
        assert_eq!(cfg.trunks[0].host_port(), Some(("127.0.0.1", 5090)));
        assert_eq!(cfg.routes[0].to, ROUTE_TO_TRUNKS);
        assert_eq!(cfg.caller_id.pool.len(), 2);
        // The example's policy allows every valid number with the default
        // limits.
        let p = &cfg.policy;
        assert_eq!(p.allowed_prefixes, ["+"]);
        assert_eq!(
            PolicyConfig {
                allowed_prefixes: Vec::new(),
                ..p.clone()
            },
            PolicyConfig::default()
        );
    }

    #[test]
    fn sip_and_trunk_defaults() {
        let cfg = Config::parse("").unwrap();
        let s = &cfg.sip;
        assert_eq!(s.udp, vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 5060))]);
        assert_eq!((s.t1_ms, s.t2_ms, s.t4_ms), (500, 4000, 5000));
        assert_eq!(s.timers().timeout(), Duration::from_secs(32));
        assert_eq!(s.max_call_duration_s, 10800);
        assert_eq!((s.session_expires_s, s.min_se_s), (1800, 90));
        assert_eq!(s.codecs, ["PCMA", "PCMU", "telephone-event"]);
        assert!(s.user_agent.starts_with("Kolokol/"));
        assert!(!Transport::Udp.is_reliable() && Transport::Tls.is_reliable());
        assert!(cfg.trunks.is_empty() && cfg.routes.is_empty());
        assert_eq!(cfg.caller_id.mode, CallerIdMode::Pai);
        assert_eq!(cfg.contact_centre.address, None);
        // Unset, the SIP call limit follows the media one, so a config that
        // only lowers media.calls_max stays valid.
        assert_eq!(cfg.sip_calls_max(), cfg.media.calls_max);
        let small = Config::parse("[media]\ncalls_max = 64\n").unwrap();
        assert_eq!(small.sip_calls_max(), 64);

        let cfg = Config::parse(
            "[[trunks]]\nname = \"a\"\naddress = \"sip.example\"\ntransport = \"tls\"\n",
        )
        .unwrap();
        let t = &cfg.trunks[0];
        assert_eq!(t.host_port(), Some(("sip.example", 5061)));
        assert_eq!(
            (t.priority, t.weight, t.max_calls, t.cps),
            (10, 100, 1000, 50)
        );
        assert_eq!((t.options_interval_s, t.down_after, t.up_after), (30, 3, 2));
        assert_eq!(t.timeout_ms, 5000);
        assert!(!t.require_100rel);
        assert_eq!(t.username, None);
    }

    #[test]
    fn parses_everything() {
        let text = r#"
[sip]
udp = ["127.0.0.1:5060", "[::1]:5060"]
tcp = []
tls = "127.0.0.1:5061"
tls_cert = "c.pem"
tls_key = "k.pem"
codecs = ["PCMU"]
[[trunks]]
name = "a"
address = "[2001:db8::1]:5080"
transport = "tcp"
priority = 1
weight = 0
username = "u"
password = "p"
realm = "r"
require_100rel = true
[[trunks]]
name = "b"
address = "10.0.0.1"
[[routes]]
prefix = "+49"
to = "trunks"
trunks = ["b"]
[[routes]]
prefix = "800"
to = "contact-centre"
[contact_centre]
address = "cc.example:5070"
transport = "tcp"
[caller_id]
pool = ["+15551230000"]
mode = "both"
"#;
        let cfg = Config::parse(text).unwrap();
        assert_eq!(cfg.sip.udp.len(), 2);
        assert_eq!(cfg.sip.tls_key.as_deref(), Some(Path::new("k.pem")));
        assert_eq!(cfg.trunks[0].transport, Transport::Tcp);
        assert_eq!(cfg.trunks[0].host_port(), Some(("[2001:db8::1]", 5080)));
        assert_eq!(cfg.trunks[1].host_port(), Some(("10.0.0.1", 5060)));
        assert_eq!(cfg.routes[0].trunks, ["b"]);
        assert_eq!(cfg.contact_centre.transport, Transport::Tcp);
        assert_eq!(cfg.caller_id.mode, CallerIdMode::Both);
    }

    /// Parses `text` and returns the key the error names.
    fn bad_key(text: &str) -> Cow<'static, str> {
        match Config::parse(text) {
            Err(ConfigError::Invalid { key, reason }) => {
                assert!(!reason.is_empty());
                key
            }
            other => panic!("expected Invalid for {text:?}, got {other:?}"),
        }
    }

    const T: &str = "[[trunks]]\nname = \"a\"\naddress = \"127.0.0.1:5090\"\n";

    #[test]
    fn sip_errors_name_the_key() {
        let cases: &[(&str, &str)] = &[
            ("[sip]\nudp = []\ntcp = []\n", "sip.udp"),
            ("[sip]\nudp = [\"127.0.0.1:0\"]\n", "sip.udp"),
            ("[sip]\nudp = [\"0.0.0.0:5060\"]\n", "sip.udp"),
            ("[sip]\nudp = [\"127.0.0.1:5060\", \"127.0.0.2:5060\"]\n", "sip.udp"),
            ("[sip]\nudp = [\"127.0.0.1:5\", \"127.0.0.1:5\"]\n", "sip.udp"),
            ("[sip]\ntcp = [\"127.0.0.1:5\", \"127.0.0.1:5\"]\n", "sip.tcp"),
            ("[sip]\ntls = \"127.0.0.1:5061\"\n", "sip.tls_cert"),
            ("[sip]\ntls = \"127.0.0.1:5061\"\ntls_cert = \"c\"\n", "sip.tls_key"),
            (
                "[sip]\ntcp = [\"127.0.0.1:5061\"]\ntls = \"127.0.0.1:5061\"\ntls_cert = \"c\"\ntls_key = \"k\"\n",
                "sip.tls",
            ),
            ("[sip]\nt1_ms = 0\n", "sip.t1_ms"),
            ("[sip]\nt2_ms = 100\n", "sip.t2_ms"),
            ("[sip]\nt4_ms = 0\n", "sip.t4_ms"),
            ("[sip]\ncalls_max = 0\n", "sip.calls_max"),
            ("[media]\ncalls_max = 64\n[sip]\ncalls_max = 65\n", "sip.calls_max"),
            ("[sip]\ncalls_max = 16001\n", "sip.calls_max"),
            ("[sip]\ncps_max = 0\n", "sip.cps_max"),
            ("[sip]\nmax_call_duration_s = 0\n", "sip.max_call_duration_s"),
            ("[sip]\nmin_se_s = 89\n", "sip.min_se_s"),
            ("[sip]\nsession_expires_s = 60\n", "sip.session_expires_s"),
            ("[sip]\nsession_expires_s = 100\nmin_se_s = 120\n", "sip.session_expires_s"),
            ("[sip]\nuser_agent = \"\"\n", "sip.user_agent"),
            ("[sip]\nuser_agent = \"a\\nb\"\n", "sip.user_agent"),
            ("[sip]\ncodecs = []\n", "sip.codecs"),
            ("[sip]\ncodecs = [\"PC MA\"]\n", "sip.codecs"),
            ("[sip]\ncodecs = [\"PCMA\", \"pcma\"]\n", "sip.codecs"),
            ("[sip]\ncodecs = [\"telephone-event\"]\n", "sip.codecs"),
        ];
        for (text, key) in cases {
            assert_eq!(bad_key(text), *key, "{text}");
        }
        // Unknown keys are parse errors that name the key.
        let e = Config::parse("[sip]\nt1 = 5\n").unwrap_err();
        assert!(e.to_string().contains("t1"), "{e}");
        let e = Config::parse(&format!("{T}prio = 1\n")).unwrap_err();
        assert!(e.to_string().contains("prio"), "{e}");
        let e = Config::parse(&format!("{T}transport = \"sctp\"\n")).unwrap_err();
        assert!(e.to_string().contains("sctp"), "{e}");
    }

    #[test]
    fn trunk_route_caller_id_errors_name_the_key() {
        let many: String = (0..=TRUNKS_MAX)
            .map(|i| format!("[[trunks]]\nname = \"t{i}\"\naddress = \"h\"\n"))
            .collect();
        let cases: Vec<(String, &str)> = vec![
            (many, "trunks"),
            ("[[trunks]]\naddress = \"h\"\n".into(), "trunks.name"),
            ("[[trunks]]\nname = \"a b\"\naddress = \"h\"\n".into(), "trunks.name"),
            (format!("{T}{T}"), "trunks.name"),
            ("[[trunks]]\nname = \"a\"\n".into(), "trunks.address"),
            ("[[trunks]]\nname = \"a\"\naddress = \"h:99999\"\n".into(), "trunks.address"),
            ("[[trunks]]\nname = \"a\"\naddress = \"[::1\"\n".into(), "trunks.address"),
            ("[[trunks]]\nname = \"a\"\naddress = \"sip:h\"\n".into(), "trunks.address"),
            (format!("{T}username = \"u\"\n"), "trunks.password"),
            (format!("{T}password = \"p\"\n"), "trunks.username"),
            (format!("{T}username = \"\"\npassword = \"p\"\n"), "trunks.username"),
            (format!("{T}realm = \"r\"\n"), "trunks.realm"),
            (format!("{T}max_calls = 0\n"), "trunks.max_calls"),
            (format!("{T}cps = 0\n"), "trunks.cps"),
            (format!("{T}options_interval_s = 3601\n"), "trunks.options_interval_s"),
            (format!("{T}down_after = 0\n"), "trunks.down_after"),
            (format!("{T}up_after = 0\n"), "trunks.up_after"),
            (format!("{T}timeout_ms = 50\n"), "trunks.timeout_ms"),
            (format!("{T}timeout_ms = 32001\n"), "trunks.timeout_ms"),
            ("[contact_centre]\naddress = \"a b\"\n".into(), "contact_centre.address"),
            ("[[routes]]\nprefix = \"\"\n".into(), "routes.to"),
            (format!("{T}[[routes]]\nprefix = \"49x\"\n"), "routes.prefix"),
            (format!("{T}[[routes]]\nprefix = \"+49\"\n[[routes]]\nprefix = \"49\"\n"), "routes.prefix"),
            (format!("{T}[[routes]]\nto = \"pstn\"\n"), "routes.to"),
            (format!("{T}[[routes]]\ntrunks = [\"b\"]\n"), "routes.trunks"),
            (format!("{T}[[routes]]\ntrunks = [\"a\", \"a\"]\n"), "routes.trunks"),
            (format!("{T}[[routes]]\nto = \"contact-centre\"\n"), "routes.to"),
            (
                format!("{T}[contact_centre]\naddress = \"h\"\n[[routes]]\nto = \"contact-centre\"\ntrunks = [\"a\"]\n"),
                "routes.trunks",
            ),
            ("[caller_id]\npool = [\"4930123\"]\n".into(), "caller_id.pool"),
            ("[caller_id]\npool = [\"+0301\"]\n".into(), "caller_id.pool"),
            ("[caller_id]\npool = [\"+1234567890123456\"]\n".into(), "caller_id.pool"),
            ("[caller_id]\npool = [\"+49\", \"+49\"]\n".into(), "caller_id.pool"),
        ];
        for (text, key) in &cases {
            assert_eq!(bad_key(text), *key, "{text}");
        }
        // A lone trunk with weight 0 is fine: it is the whole group.
        Config::parse(&format!("{T}weight = 0\n[[routes]]\n")).unwrap();
    }

    #[test]
    fn example_config_serves_the_api() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/kolokol.toml");
        let cfg = Config::load(&path).unwrap();
        let a = &cfg.api;
        assert!(a.enabled && !a.insecure_http && a.metrics_public);
        assert_eq!(a.listen, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(a.audience, "kolokol");
        for f in [&a.tls_cert, &a.tls_key, &a.jwks_file] {
            let f = f.as_ref().expect("example sets the API files");
            assert!(f.is_absolute() && f.exists(), "{}", f.display());
        }
        a.check_startable().unwrap();
        assert_eq!(cfg.webhooks.url, None);
        assert_eq!(cfg.webhooks.max_queue, 10_000);
        assert_eq!(cfg.webhooks.give_up_s, 3600);
    }

    #[test]
    fn api_defaults_and_errors_name_the_key() {
        let cfg = Config::parse("").unwrap();
        assert!(cfg.api.enabled);
        assert_eq!(
            cfg.api.listen,
            SocketAddr::from((Ipv4Addr::LOCALHOST, 8443))
        );
        assert_eq!(cfg.api.idempotency_max_entries, 100_000);
        assert_eq!(
            (cfg.webhooks.retry_min_ms, cfg.webhooks.retry_max_ms),
            (1000, 60_000)
        );
        // An empty config stays valid; starting its API is what fails.
        let e = cfg.api.check_startable().unwrap_err();
        assert!(e.to_string().contains("api.tls_cert"), "{e}");
        let plain = Config::parse("[api]\ninsecure_http = true\n").unwrap();
        let e = plain.api.check_startable().unwrap_err();
        assert!(e.to_string().contains("api.jwks_file"), "{e}");
        Config::parse("[api]\nenabled = false\n")
            .unwrap()
            .api
            .check_startable()
            .unwrap();
        let w =
            "[webhooks]\nurl = \"https://portal.example/hook\"\nsecret = \"0123456789abcdef\"\n";
        Config::parse(w).unwrap();
        let cases: Vec<(String, &str)> = vec![
            ("[api]\ntls_cert = \"c\"\n".into(), "api.tls_key"),
            ("[api]\ntls_key = \"k\"\n".into(), "api.tls_cert"),
            (
                "[api]\ntls_cert = \"c\"\ntls_key = \"k\"\ninsecure_http = true\n".into(),
                "api.insecure_http",
            ),
            ("[api]\naudience = \"\"\n".into(), "api.audience"),
            ("[api]\nissuer = \"\"\n".into(), "api.issuer"),
            ("[api]\nmax_connections = 0\n".into(), "api.max_connections"),
            (
                "[api]\nrequest_timeout_ms = 10\n".into(),
                "api.request_timeout_ms",
            ),
            (
                "[api]\nidempotency_max_entries = 0\n".into(),
                "api.idempotency_max_entries",
            ),
            (
                "[api]\nidempotency_ttl_s = 1\n".into(),
                "api.idempotency_ttl_s",
            ),
            (
                "[webhooks]\nurl = \"ftp://x/y\"\nsecret = \"0123456789abcdef\"\n".into(),
                "webhooks.url",
            ),
            (
                "[webhooks]\nurl = \"/relative\"\nsecret = \"0123456789abcdef\"\n".into(),
                "webhooks.url",
            ),
            (
                "[webhooks]\nurl = \"https://p.example/h\"\n".into(),
                "webhooks.secret",
            ),
            (
                "[webhooks]\nurl = \"https://p.example/h\"\nsecret = \"short\"\n".into(),
                "webhooks.secret",
            ),
            ("[webhooks]\nmax_queue = 0\n".into(), "webhooks.max_queue"),
            ("[webhooks]\ngive_up_s = 0\n".into(), "webhooks.give_up_s"),
            (
                "[webhooks]\nretry_min_ms = 0\n".into(),
                "webhooks.retry_min_ms",
            ),
            (
                "[webhooks]\nretry_min_ms = 5000\nretry_max_ms = 1000\n".into(),
                "webhooks.retry_max_ms",
            ),
            ("[webhooks]\ntimeout_ms = 0\n".into(), "webhooks.timeout_ms"),
        ];
        for (text, key) in &cases {
            assert_eq!(bad_key(text), *key, "{text}");
        }
        let e = Config::parse("[api]\nlisten_addr = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("listen_addr"), "{e}");
    }

    #[test]
    fn policy_defaults() {
        let p = Config::parse("").unwrap().policy;
        assert_eq!(p, PolicyConfig::default());
        assert!(p.allowed_prefixes.is_empty() && p.denied_prefixes.is_empty());
        assert_eq!(
            (p.account_day_calls_max, p.number_day_calls_max),
            (1000, 10)
        );
        assert_eq!(p.cps_max, 20);
        assert_eq!(
            (
                p.number_burst_calls_max,
                p.number_burst_window_s,
                p.number_burst_block_s
            ),
            (5, 60, 3600)
        );
        assert_eq!(
            (
                p.account_burst_calls_max,
                p.account_burst_window_s,
                p.account_burst_block_s
            ),
            (50, 60, 3600)
        );
        assert!(p.dnd.is_empty() && p.dnd_exempt_kinds.is_empty());
        let p = Config::parse(
            "[policy]\nallowed_prefixes = [\"+7\", \"+49\"]\ndnd_exempt_kinds = [\"notification\"]\n\
             [[policy.dnd]]\nprefix = \"+7\"\nutc_offset_minutes = 180\nstart = \"21:00\"\nend = \"09:00\"\n",
        )
        .unwrap()
        .policy;
        assert_eq!(p.allowed_prefixes, ["+7", "+49"]);
        assert_eq!(p.dnd_exempt_kinds, [crate::policy::CallKind::Notification]);
        assert_eq!(p.dnd[0].utc_offset_minutes, 180);
    }

    #[test]
    fn policy_errors_name_the_key() {
        let d = "[[policy.dnd]]\nprefix = \"+7\"\nstart = \"21:00\"\nend = \"09:00\"\n";
        let cases: Vec<(String, &str)> = vec![
            (
                "[policy]\nallowed_prefixes = [\"7\"]\n".into(),
                "policy.allowed_prefixes[0]",
            ),
            (
                "[policy]\nallowed_prefixes = [\"+7\", \"+7\"]\n".into(),
                "policy.allowed_prefixes[1]",
            ),
            (
                "[policy]\ndenied_prefixes = [\"+0\"]\n".into(),
                "policy.denied_prefixes[0]",
            ),
            (
                "[policy]\nblocked_prefixes = [\"+4 9\"]\n".into(),
                "policy.blocked_prefixes[0]",
            ),
            (
                "[policy]\nblocked_numbers = [\"+49\"]\n".into(),
                "policy.blocked_numbers[0]",
            ),
            (
                "[policy]\nblocked_numbers = [\"+4930123456\", \"+49 30 123456\"]\n".into(),
                "policy.blocked_numbers[1]",
            ),
            (
                "[policy]\nsupport_lines = [\"112\"]\n".into(),
                "policy.support_lines[0]",
            ),
            (
                "[policy]\naccount_day_calls_max = 0\n".into(),
                "policy.account_day_calls_max",
            ),
            (
                "[policy]\nnumber_day_calls_max = 0\n".into(),
                "policy.number_day_calls_max",
            ),
            ("[policy]\ncps_max = 0\n".into(), "policy.cps_max"),
            ("[policy]\naccounts_max = 0\n".into(), "policy.accounts_max"),
            ("[policy]\nnumbers_max = 0\n".into(), "policy.numbers_max"),
            (
                "[policy]\nruntime_blocks_max = 0\n".into(),
                "policy.runtime_blocks_max",
            ),
            (
                "[policy]\nnumber_burst_calls_max = 1001\n".into(),
                "policy.number_burst_calls_max",
            ),
            (
                "[policy]\nnumber_burst_window_s = 0\n".into(),
                "policy.number_burst_window_s",
            ),
            (
                "[policy]\nnumber_burst_block_s = 0\n".into(),
                "policy.number_burst_block_s",
            ),
            (
                "[policy]\naccount_burst_calls_max = 10001\n".into(),
                "policy.account_burst_calls_max",
            ),
            (
                "[policy]\naccount_burst_window_s = 86401\n".into(),
                "policy.account_burst_window_s",
            ),
            (
                "[policy]\naccount_burst_block_s = 604801\n".into(),
                "policy.account_burst_block_s",
            ),
            (
                "[policy]\nnumbers_max = 10000000\nnumber_burst_calls_max = 11\n".into(),
                "policy.numbers_max",
            ),
            (
                "[[policy.dnd]]\nstart = \"21:00\"\nend = \"09:00\"\n".into(),
                "policy.dnd[0].prefix",
            ),
            (format!("{d}{d}"), "policy.dnd[1].prefix"),
            (
                format!("{d}utc_offset_minutes = 900\n"),
                "policy.dnd[0].utc_offset_minutes",
            ),
            (
                "[[policy.dnd]]\nprefix = \"+7\"\nstart = \"9pm\"\nend = \"09:00\"\n".into(),
                "policy.dnd[0].start",
            ),
            (
                format!(
                    "{d}[[policy.dnd]]\nprefix = \"+49\"\nstart = \"21:00\"\nend = \"24:00\"\n"
                ),
                "policy.dnd[1].end",
            ),
            (
                "[[policy.dnd]]\nprefix = \"+7\"\nstart = \"21:00\"\nend = \"21:00\"\n".into(),
                "policy.dnd[0].end",
            ),
            (
                "[policy]\ndnd_exempt_kinds = [\"notification\", \"notification\"]\n".into(),
                "policy.dnd_exempt_kinds[1]",
            ),
        ];
        for (text, key) in &cases {
            assert_eq!(bad_key(text), *key, "{text}");
        }
        // Unknown keys and kinds are parse errors that name them.
        let e = Config::parse("[policy]\ncps = 5\n").unwrap_err();
        assert!(e.to_string().contains("cps"), "{e}");
        let e = Config::parse(&format!("{d}offset = 5\n")).unwrap_err();
        assert!(e.to_string().contains("offset"), "{e}");
        let e = Config::parse("[policy]\ndnd_exempt_kinds = [\"robocall\"]\n").unwrap_err();
        assert!(e.to_string().contains("robocall"), "{e}");
        // The message of a list entry names its index.
        let e = Config::parse(&format!("{d}{d}")).unwrap_err();
        assert!(e.to_string().contains("`policy.dnd[1].prefix`"), "{e}");
    }

    #[test]
    fn e164() {
        assert!(is_e164("+493012345670"));
        assert!(is_e164("+1"));
        assert!(!is_e164("+"));
        assert!(!is_e164("493012345670"));
        assert!(!is_e164("+49 30"));
        assert!(!is_e164("+0123"));
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
