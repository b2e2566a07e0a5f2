//! Every setting of the sidecar: its flag, its environment variable and its
//! default (docs/protocol.md section 8, plus the few tuning knobs documented in
//! `docs/protocol.md`). Parsed once in `main`, validated before any port is
//! bound, then shared read-only as `Arc<Config>`.
//!
//! A setting is one field with its parser ([`parsers`]): times arrive as
//! [`Duration`]s read in their variable's unit, counts that cannot be 0 as
//! `NonZero*`, so a bad value stops clap with the variable named and users
//! never convert units. [`Config::validate`] keeps only what one field's
//! parser cannot see: combinations and ranges across settings.
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub mod parsers;

use parsers::{DurationIn, Positive, Span};

/// How connections prove who they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Signed JWTs (HS256 with `RTS_JWT_SECRET`, RS256/ES256 with `RTS_JWT_PUBLIC_KEY`).
    Jwt,
    /// Development only: trusts `{userId, userName}` and grants every table.
    None,
}

/// A feature turned on or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// What an applied change must reach before it is acknowledged
/// (docs/protocol.md 11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Durability {
    /// The primary's memory (today's behaviour).
    None,
    /// At least one replica (`WAIT 1`).
    Replica,
    /// The primary's AOF, fsynced (`WAITAOF 1 0`; Redis ≥ 7.2).
    Aof,
}

#[derive(Clone, Debug, Parser)]
#[command(
    name = "rtsync",
    version,
    about = "Real-time sync sidecar over Redis Streams"
)]
pub struct Config {
    /// HTTP + WebSocket address.
    #[arg(long, env = "RTS_LISTEN", default_value = "0.0.0.0:4000")]
    pub listen: SocketAddr,

    /// Redis URL (or comma-separated cluster seed nodes).
    #[arg(long, env = "RTS_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// Treat `--redis-url` as Redis Cluster seed nodes.
    #[arg(long, env = "RTS_REDIS_CLUSTER", default_value_t = false, action = clap::ArgAction::Set)]
    pub redis_cluster: bool,

    /// Sentinel addresses (`host:port,...`): the primary is found, and
    /// followed through failovers, through them.
    #[arg(long, env = "RTS_REDIS_SENTINELS")]
    pub redis_sentinels: Option<String>,

    /// The master name the Sentinels monitor.
    #[arg(long, env = "RTS_REDIS_MASTER_NAME")]
    pub redis_master_name: Option<String>,

    /// The Sentinels' password, if they require one.
    #[arg(long, env = "RTS_REDIS_SENTINEL_PASSWORD")]
    pub redis_sentinel_password: Option<String>,

    /// What an applied change must reach before it is acknowledged.
    #[arg(long, env = "RTS_DURABLE_WRITES", value_enum, default_value = "none")]
    pub durable_writes: Durability,

    /// How long a commit waits for `RTS_DURABLE_WRITES` (then `timeout`).
    #[arg(long = "durable-timeout-ms", value_name = "DURABLE_TIMEOUT_MS", env = "RTS_DURABLE_TIMEOUT_MS", default_value = "500", value_parser = DurationIn::millis())]
    pub durable_timeout: Duration,

    /// This sidecar's consumer group name (default: host name + pid).
    #[arg(long, env = "RTS_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Prefix of every key and channel.
    #[arg(long, env = "RTS_KEY_PREFIX", default_value = "rts")]
    pub key_prefix: String,

    /// `jwt` or `none` (development only).
    #[arg(long, env = "RTS_AUTH", value_enum, default_value = "jwt")]
    pub auth: AuthMode,

    /// HS256 shared secret.
    #[arg(long, env = "RTS_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Path of a PEM public key (RSA for RS256, EC P-256 for ES256).
    #[arg(long, env = "RTS_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// Required `aud` claim of tokens, when set.
    #[arg(long, env = "RTS_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Required `iss` claim of tokens, when set.
    #[arg(long, env = "RTS_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Accepted clock skew when checking `exp`/`nbf`, in seconds.
    #[arg(long = "jwt-leeway-secs", value_name = "JWT_LEEWAY_SECS", env = "RTS_JWT_LEEWAY_SECS", default_value = "30", value_parser = DurationIn::secs())]
    pub jwt_leeway: Duration,

    /// Bearer token for `/api/v1`.
    #[arg(long, env = "RTS_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// How long table streams keep events.
    #[arg(long = "retention-secs", value_name = "RETENTION_SECS", env = "RTS_RETENTION_SECS", default_value = "86400", value_parser = DurationIn::secs().nonzero())]
    pub retention: Duration,

    /// Most changes a record's history (`record_history`) goes back: the
    /// ids its history index keeps (1..=10000; older ones also go with the
    /// stream's retention).
    #[arg(long, env = "RTS_RECORD_HISTORY", default_value = "100", value_parser = Positive::<NonZeroUsize>::new())]
    pub record_history: NonZeroUsize,

    /// Presence without heartbeat or activity for this long is removed.
    #[arg(long = "presence-ttl-secs", value_name = "PRESENCE_TTL_SECS", env = "RTS_PRESENCE_TTL_SECS", default_value = "300", value_parser = DurationIn::secs().nonzero())]
    pub presence_ttl: Duration,

    /// Delay before `user_left` once a user's last connection closed.
    #[arg(long = "presence-grace-ms", value_name = "PRESENCE_GRACE_MS", env = "RTS_PRESENCE_GRACE_MS", default_value = "3000", value_parser = DurationIn::millis())]
    pub presence_grace: Duration,

    /// v1.3: an editing indicator ends this long after its last start
    /// unless renewed (a client renews before it runs out).
    #[arg(long = "editing-ttl-ms", value_name = "EDITING_TTL_MS", env = "RTS_EDITING_TTL_MS", default_value = "5000", value_parser = DurationIn::millis().nonzero())]
    pub editing_ttl: Duration,

    /// Larger frames close the connection with 4413.
    #[arg(long, env = "RTS_MAX_FRAME_BYTES", default_value = "1048576", value_parser = Positive::<NonZeroUsize>::new())]
    pub max_frame_bytes: NonZeroUsize,

    /// v1.3: `permessage-deflate` on WebSockets that offer it, and
    /// compressed long-polling and API responses (`on` or `off`).
    #[arg(long, env = "RTS_COMPRESSION", value_enum, default_value = "on")]
    pub compression: Switch,

    /// v1.3: messages and responses of at least this many bytes are
    /// compressed; smaller ones are not worth the CPU.
    #[arg(long, env = "RTS_COMPRESSION_THRESHOLD", default_value = "1024")]
    pub compression_threshold: usize,

    /// Messages per second per connection (burst twice that).
    #[arg(long, env = "RTS_RATE_LIMIT", default_value = "200", value_parser = Positive::<NonZeroU32>::new())]
    pub rate_limit: NonZeroU32,

    /// Most WebSocket connections on this sidecar; more get HTTP 503.
    #[arg(long, env = "RTS_MAX_CONNECTIONS", default_value = "20000", value_parser = Positive::<NonZeroUsize>::new())]
    pub max_connections: NonZeroUsize,

    /// Most authenticated connections of one user on this sidecar; more are
    /// refused with `rate_limited` and closed with 4429.
    #[arg(long, env = "RTS_MAX_CONNECTIONS_PER_USER", default_value = "32", value_parser = Positive::<NonZeroUsize>::new())]
    pub max_connections_per_user: NonZeroUsize,

    /// Log filter (tracing `EnvFilter` syntax); logs are JSON lines on stderr.
    #[arg(long, env = "RTS_LOG", default_value = "info")]
    pub log: String,

    /// Frames a connection may have queued for sending before it is
    /// dropped as a slow consumer (close 4503).
    #[arg(long, env = "RTS_SEND_QUEUE", default_value = "1024", value_parser = Positive::<NonZeroUsize>::new())]
    pub send_queue: NonZeroUsize,

    /// Bytes a connection may have queued for sending before it is dropped
    /// as a slow consumer (close 4503).
    #[arg(long, env = "RTS_SEND_QUEUE_BYTES", default_value = "4194304", value_parser = Positive::<NonZeroUsize>::new())]
    pub send_queue_bytes: NonZeroUsize,

    /// How long one write or flush to a client socket may take; a socket
    /// that does not drain in time is closed (4503).
    #[arg(long = "write-timeout-ms", value_name = "WRITE_TIMEOUT_MS", env = "RTS_WRITE_TIMEOUT_MS", default_value = "10000", value_parser = DurationIn::millis().nonzero())]
    pub write_timeout: Duration,

    /// Tables one connection may subscribe to; one more is `bad_request`.
    #[arg(long, env = "RTS_MAX_SUBSCRIPTIONS", default_value = "100", value_parser = Positive::<NonZeroUsize>::new())]
    pub max_subscriptions: NonZeroUsize,

    /// Connections that have not authenticated yet, on this sidecar; more
    /// get HTTP 503, so they cannot fill `RTS_MAX_CONNECTIONS`.
    #[arg(long, env = "RTS_MAX_UNAUTHENTICATED", default_value = "1000", value_parser = Positive::<NonZeroUsize>::new())]
    pub max_unauthenticated: NonZeroUsize,

    /// Most field changes in one change.
    #[arg(long, env = "RTS_MAX_CHANGES", default_value = "1000", value_parser = Positive::<NonZeroUsize>::new())]
    pub max_changes: NonZeroUsize,

    /// Events sent as `recent_changes` after a subscribe.
    #[arg(long, env = "RTS_RECENT_CHANGES", default_value_t = 50)]
    pub recent_changes: usize,

    /// Most bytes of record states in one `load_records` page, and of field
    /// values in one commit answer (or one batch's answers).
    #[arg(long, env = "RTS_MAX_PAGE_BYTES", default_value_t = 1_048_576)]
    pub max_page_bytes: usize,

    /// Most bytes one record's state may hold (field ids and values); a
    /// change or seed past it is `payload_too_large`.
    #[arg(long, env = "RTS_MAX_RECORD_BYTES", default_value = "4194304", value_parser = Positive::<NonZeroUsize>::new())]
    pub max_record_bytes: NonZeroUsize,

    /// Tables one user may have subscribed on this sidecar, over all of
    /// their connections; one more is `bad_request`.
    #[arg(long, env = "RTS_MAX_SUBSCRIPTIONS_PER_USER", default_value = "500", value_parser = Positive::<NonZeroUsize>::new())]
    pub max_subscriptions_per_user: NonZeroUsize,

    /// Connections from one source address that have not authenticated yet.
    #[arg(long, env = "RTS_MAX_UNAUTHENTICATED_PER_IP", default_value = "64", value_parser = Positive::<NonZeroUsize>::new())]
    pub max_unauthenticated_per_ip: NonZeroUsize,

    /// Most changes in one batch (HTTP batch API, offline sync).
    #[arg(long, env = "RTS_MAX_BATCH", default_value = "1000", value_parser = Positive::<NonZeroUsize>::new())]
    pub max_batch: NonZeroUsize,

    /// Largest HTTP request body in bytes.
    #[arg(long, env = "RTS_MAX_BODY_BYTES", default_value = "4194304", value_parser = Positive::<NonZeroUsize>::new())]
    pub max_body_bytes: NonZeroUsize,

    /// Redis connections for commands (commits, reads); each is multiplexed.
    #[arg(long, env = "RTS_REDIS_POOL", default_value = "16", value_parser = Positive::<NonZeroUsize>::new())]
    pub redis_pool: NonZeroUsize,

    /// Stream reader tasks of the tailer; tables are spread over them.
    #[arg(long, env = "RTS_TAILER_READERS", default_value = "2", value_parser = Positive::<NonZeroUsize>::new())]
    pub tailer_readers: NonZeroUsize,

    /// Probe `GET /healthz` on the listen port and exit 0 (healthy) or 1;
    /// for container health checks.
    #[arg(long)]
    pub health_check: bool,

    /// Directory of the demo page's files (`demo/` of the source tree).
    #[arg(long, env = "RTS_DEMO_DIR", default_value = "demo")]
    pub demo_dir: std::path::PathBuf,

    /// Serve the demo page at `/demo` (development, with RTS_AUTH=none).
    #[arg(long, env = "RTS_DEMO", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub demo: bool,

    /// Serve Socket.IO clients at `/socket.io/` (docs/protocol.md section 10).
    #[arg(long, env = "RTS_SOCKETIO", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub socketio: bool,

    /// Socket.IO's heartbeat (Engine.IO's handshake `pingInterval` and
    /// `pingTimeout`): the server pings every interval, and closes a
    /// connection that sent nothing within the timeout after a ping (an
    /// abandoned long-polling session included).
    #[arg(long = "socketio-ping-interval-ms", value_name = "SOCKETIO_PING_INTERVAL_MS", env = "RTS_SOCKETIO_PING_INTERVAL_MS", default_value = "25000", value_parser = DurationIn::millis())]
    pub socketio_ping_interval: Duration,
    #[arg(long = "socketio-ping-timeout-ms", value_name = "SOCKETIO_PING_TIMEOUT_MS", env = "RTS_SOCKETIO_PING_TIMEOUT_MS", default_value = "20000", value_parser = DurationIn::millis())]
    pub socketio_ping_timeout: Duration,

    /// Origins allowed to reach `/socket.io/` long-polling from a browser
    /// (comma-separated; a listed origin is echoed with credentials; `*`
    /// for any, answered `*` without credentials; `null` is never
    /// allowed). Unset: the same origin only.
    #[arg(long, env = "RTS_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// How long the audit log keeps entries (`30d`, `12h`, `90m`, `3600s`).
    #[arg(long, env = "RTS_AUDIT_RETENTION", default_value = "30d", value_parser = Span)]
    pub audit_retention: Duration,

    /// Audit entries per minute one source (address or user) may cause
    /// by failing (refused logins and requests, abuse closes); a burst of
    /// as many, then one every 60/N s. The rest are dropped and counted.
    #[arg(long, env = "RTS_AUDIT_RATE_PER_MIN", default_value = "60", value_parser = Positive::<NonZeroU32>::new())]
    pub audit_rate_per_min: NonZeroU32,

    /// Test aid, off by default: load the function library with its key
    /// check (`lua/keycheck.lua`): a call touching a key that is not one
    /// of its KEYS fails with `RTSYNC_KEYCHECK`. The test harness turns it
    /// on for every sidecar; it costs a lookup per Redis command.
    #[arg(long, env = "RTS_LUA_KEY_CHECK", default_value_t = false, hide = true, value_parser = clap::builder::BoolishValueParser::new())]
    pub lua_key_check: bool,

    /// Without a mode, rtsync runs the sidecar.
    #[command(subcommand)]
    pub mode: Option<Mode>,
}

/// The process modes of the binary besides the sidecar.
#[derive(Clone, Debug, Subcommand)]
pub enum Mode {
    /// Deliver every table's change events to the app's HTTP endpoint
    /// (docs/protocol.md section 9). Uses the shared RTS_REDIS_URL,
    /// RTS_REDIS_CLUSTER, RTS_KEY_PREFIX, RTS_INSTANCE_ID, RTS_LISTEN (health
    /// and metrics), RTS_LOG and RTS_RETENTION_SECS; no JWT settings.
    Sink(SinkConfig),
    /// The audit log (docs/protocol.md section 12). Uses the shared
    /// RTS_REDIS_URL, RTS_REDIS_CLUSTER and RTS_KEY_PREFIX.
    #[command(subcommand)]
    Audit(AuditCommand),
}

/// `rtsync audit ...`.
#[derive(Clone, Debug, Subcommand)]
pub enum AuditCommand {
    /// Walks the audit stream oldest first and checks every entry's hash
    /// and its link to the one before: "ok, N entries, ..." and exit code
    /// 0, or the first break and exit code 1.
    Verify,
}

/// Settings of `rtsync sink`.
#[derive(Clone, Debug, Args)]
pub struct SinkConfig {
    /// Where batches are POSTed, e.g. https://app/internal/rtsync-events.
    #[arg(long, env = "RTS_SINK_URL")]
    pub url: String,

    /// Signs each body: `X-Rtsync-Signature: sha256=<hex HMAC-SHA256>`.
    #[arg(long, env = "RTS_SINK_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// Entries the sink has not acknowledged are kept at most this long.
    #[arg(long = "max-lag-secs", value_name = "MAX_LAG_SECS", env = "RTS_SINK_MAX_LAG_SECS", default_value = "604800", value_parser = DurationIn::secs().nonzero())]
    pub max_lag: Duration,

    /// Events per POST.
    #[arg(long, env = "RTS_SINK_BATCH", default_value = "100", value_parser = Positive::<NonZeroUsize>::new())]
    pub batch: NonZeroUsize,

    /// Also deliver the audit log (docs/protocol.md 12) as
    /// `{"audit": [...]}` batches.
    #[arg(long, env = "RTS_SINK_AUDIT", default_value_t = false, action = clap::ArgAction::Set)]
    pub audit: bool,

    /// Milliseconds a POST may take before it is retried.
    #[arg(long = "timeout-ms", value_name = "TIMEOUT_MS", env = "RTS_SINK_TIMEOUT_MS", default_value = "10000", value_parser = DurationIn::millis().nonzero())]
    pub timeout: Duration,
}

/// Shortest HS256 secret accepted: the hash's own size (RFC 7518 3.2).
pub const MIN_HS256_SECRET: usize = 32;
/// Shortest API token accepted: a guessable token opens the whole API.
pub const MIN_API_TOKEN: usize = 16;
/// The largest `RTS_RECORD_HISTORY`: the cap `rtsync_commit` accepts for a
/// record's history index (`lua/commit.lua`).
pub const MAX_RECORD_HISTORY: usize = 10_000;

/// A setting that cannot work, found before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("RTS_AUTH=jwt needs RTS_JWT_SECRET or RTS_JWT_PUBLIC_KEY")]
    NoJwtKey,
    #[error("set only one of RTS_JWT_SECRET and RTS_JWT_PUBLIC_KEY")]
    TwoJwtKeys,
    #[error("{0} is set but empty or blank; set a real value or leave it unset")]
    Blank(&'static str),
    #[error("RTS_JWT_SECRET must be at least {MIN_HS256_SECRET} bytes for HS256 (it is {0})")]
    ShortSecret(usize),
    #[error("RTS_KEY_PREFIX must be 1..=64 bytes without '{{', '}}', ':' or spaces")]
    BadPrefix,
    #[error("RTS_INSTANCE_ID must be 1..=128 bytes without control characters, '{{' or '}}'")]
    BadInstanceId,
    #[error("RTS_API_TOKEN must be at least {MIN_API_TOKEN} bytes (it is {0})")]
    ShortApiToken(usize),
    #[error("RTS_RECORD_HISTORY must be at most 10000 (the history index's largest cap, lua/commit.lua)")]
    LongRecordHistory,
    #[error("RTS_MAX_PAGE_BYTES must be at least 1024")]
    SmallPage,
    #[error("RTS_SINK_URL must be an http:// or https:// URL ({0})")]
    BadSinkUrl(String),
    #[error("RTS_REDIS_SENTINELS needs RTS_REDIS_MASTER_NAME, and cannot be used with RTS_REDIS_CLUSTER")]
    BadSentinels,
    #[error("RTS_DURABLE_TIMEOUT_MS must be 1..=1500 (the wait must end within the 2 s command timeout)")]
    DurableTimeout,
}

impl Config {
    /// The outbound compression of a connection whose upgrade offered
    /// `permessage-deflate` (`offered`), if it is on.
    pub fn deflate(&self, offered: bool) -> Option<crate::compression::Deflate> {
        (offered && self.compression == Switch::On).then_some(crate::compression::Deflate {
            threshold: self.compression_threshold,
        })
    }

    /// The bounds every change is validated against.
    pub fn change_limits(&self) -> crate::change::ChangeLimits {
        crate::change::ChangeLimits {
            max_changes: self.max_changes.get(),
            max_event_bytes: self.max_frame_bytes.get(),
            max_record_bytes: self.max_record_bytes.get(),
            answer_bytes: self.max_page_bytes,
        }
    }

    /// Checks what clap cannot: combinations and ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match &self.mode {
            Some(Mode::Sink(sink)) => return self.validate_sink(sink),
            Some(Mode::Audit(_)) => return self.validate_shared(),
            None => {}
        }
        for (name, value) in [
            ("RTS_JWT_SECRET", &self.jwt_secret),
            ("RTS_API_TOKEN", &self.api_token),
            ("RTS_JWT_AUDIENCE", &self.jwt_audience),
            ("RTS_JWT_ISSUER", &self.jwt_issuer),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(ConfigError::Blank(name));
            }
        }
        if let Some(secret) = &self.jwt_secret {
            if secret.len() < MIN_HS256_SECRET {
                return Err(ConfigError::ShortSecret(secret.len()));
            }
        }
        if let Some(token) = &self.api_token {
            if token.len() < MIN_API_TOKEN {
                return Err(ConfigError::ShortApiToken(token.len()));
            }
        }
        if self.max_page_bytes < 1024 {
            return Err(ConfigError::SmallPage);
        }
        if self.record_history.get() > MAX_RECORD_HISTORY {
            return Err(ConfigError::LongRecordHistory);
        }
        if !(Duration::from_millis(1)..=Duration::from_millis(1500)).contains(&self.durable_timeout)
        {
            return Err(ConfigError::DurableTimeout);
        }
        if self.auth == AuthMode::Jwt {
            match (&self.jwt_secret, &self.jwt_public_key) {
                (None, None) => return Err(ConfigError::NoJwtKey),
                (Some(_), Some(_)) => return Err(ConfigError::TwoJwtKeys),
                _ => {}
            }
        }
        self.validate_shared()
    }

    /// Settings the sidecar and the sink share.
    fn validate_shared(&self) -> Result<(), ConfigError> {
        if self
            .redis_sentinels
            .as_deref()
            .is_some_and(|s| !s.trim().is_empty())
            && (self.redis_cluster
                || self
                    .redis_master_name
                    .as_deref()
                    .is_none_or(|m| m.trim().is_empty()))
        {
            return Err(ConfigError::BadSentinels);
        }
        let p = &self.key_prefix;
        if p.is_empty()
            || p.len() > 64
            || p.chars()
                .any(|c| matches!(c, '{' | '}' | ':') || c.is_whitespace())
        {
            return Err(ConfigError::BadPrefix);
        }
        if let Some(id) = &self.instance_id {
            if !crate::change::ids::is_valid_id(id) {
                return Err(ConfigError::BadInstanceId);
            }
        }
        Ok(())
    }

    /// The sink's settings and the shared ones it uses.
    fn validate_sink(&self, sink: &SinkConfig) -> Result<(), ConfigError> {
        match url::Url::parse(&sink.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            Ok(u) => return Err(ConfigError::BadSinkUrl(format!("scheme {}", u.scheme()))),
            Err(e) => return Err(ConfigError::BadSinkUrl(e.to_string())),
        }
        if sink.secret.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(ConfigError::Blank("RTS_SINK_SECRET"));
        }
        self.validate_shared()
    }

    /// Fixes settings whose combination would defeat a limit; returns a
    /// warning for each. Connections waiting to authenticate must leave
    /// room for real users: at most half of `RTS_MAX_CONNECTIONS`.
    pub fn clamp(&mut self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.max_unauthenticated >= self.max_connections {
            let clamped =
                NonZeroUsize::new(self.max_connections.get() / 2).unwrap_or(NonZeroUsize::MIN);
            warnings.push(format!(
                "RTS_MAX_UNAUTHENTICATED ({}) must be below RTS_MAX_CONNECTIONS ({}); using {clamped}",
                self.max_unauthenticated, self.max_connections
            ));
            self.max_unauthenticated = clamped;
        }
        if self.max_unauthenticated_per_ip > self.max_unauthenticated {
            self.max_unauthenticated_per_ip = self.max_unauthenticated;
        }
        // The opaque origin `null` is shared by every sandboxed frame and
        // `file:` page: allowing it would allow them all.
        let before = self.cors_origins.len();
        self.cors_origins
            .retain(|o| !o.trim().eq_ignore_ascii_case("null"));
        if self.cors_origins.len() < before {
            warnings.push(
                "RTS_CORS_ORIGINS lists \"null\", which is never allowed (any sandboxed page sends it); ignored"
                    .to_owned(),
            );
        }
        warnings
    }

    /// Binds the listen address; returns the listener and the address it got.
    pub async fn bind(&self) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
        let listener = tokio::net::TcpListener::bind(self.listen).await?;
        let addr = listener.local_addr()?;
        Ok((listener, addr))
    }

    /// The Redis URLs: one, or the cluster's comma-separated seed nodes.
    pub fn redis_urls(&self) -> Vec<String> {
        self.redis_url
            .split(',')
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// The consumer group name: the configured id, or host name + pid.
    pub fn instance_id(&self) -> String {
        if let Some(id) = &self.instance_id {
            return id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "rtsync".to_owned());
        format!("{host}-{}", std::process::id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sidecar's settings from `flags` alone (defaults elsewhere).
    fn parse(flags: &[&str]) -> Result<Config, String> {
        let args = std::iter::once("rtsync").chain(flags.iter().copied());
        Config::try_parse_from(args).map_err(|e| e.to_string())
    }

    fn sink_of(config: &Config) -> &SinkConfig {
        match &config.mode {
            Some(Mode::Sink(sink)) => sink,
            _ => panic!("not the sink"),
        }
    }

    type Read = fn(&Config) -> Duration;

    /// Every time setting: flag, environment variable, its getter, and
    /// its default as written in the docs (in the variable's unit).
    const TIMES: [(&str, &str, Read, u64); 9] = [
        (
            "--durable-timeout-ms",
            "RTS_DURABLE_TIMEOUT_MS",
            |c| c.durable_timeout,
            500,
        ),
        (
            "--jwt-leeway-secs",
            "RTS_JWT_LEEWAY_SECS",
            |c| c.jwt_leeway,
            30,
        ),
        (
            "--retention-secs",
            "RTS_RETENTION_SECS",
            |c| c.retention,
            86_400,
        ),
        (
            "--presence-ttl-secs",
            "RTS_PRESENCE_TTL_SECS",
            |c| c.presence_ttl,
            300,
        ),
        (
            "--presence-grace-ms",
            "RTS_PRESENCE_GRACE_MS",
            |c| c.presence_grace,
            3_000,
        ),
        (
            "--editing-ttl-ms",
            "RTS_EDITING_TTL_MS",
            |c| c.editing_ttl,
            5_000,
        ),
        (
            "--write-timeout-ms",
            "RTS_WRITE_TIMEOUT_MS",
            |c| c.write_timeout,
            10_000,
        ),
        (
            "--socketio-ping-interval-ms",
            "RTS_SOCKETIO_PING_INTERVAL_MS",
            |c| c.socketio_ping_interval,
            25_000,
        ),
        (
            "--socketio-ping-timeout-ms",
            "RTS_SOCKETIO_PING_TIMEOUT_MS",
            |c| c.socketio_ping_timeout,
            20_000,
        ),
    ];

    /// A number of the unit the variable's name states.
    fn in_unit(env: &str, n: u64) -> Duration {
        if env.ends_with("_MS") {
            Duration::from_millis(n)
        } else {
            Duration::from_secs(n)
        }
    }

    type Count = fn(&Config) -> usize;

    /// Every count that must not be 0: flag, variable, getter, default.
    const COUNTS: [(&str, &str, Count, usize); 17] = [
        (
            "--record-history",
            "RTS_RECORD_HISTORY",
            |c| c.record_history.get(),
            100,
        ),
        (
            "--max-frame-bytes",
            "RTS_MAX_FRAME_BYTES",
            |c| c.max_frame_bytes.get(),
            1_048_576,
        ),
        (
            "--rate-limit",
            "RTS_RATE_LIMIT",
            |c| c.rate_limit.get() as usize,
            200,
        ),
        (
            "--max-connections",
            "RTS_MAX_CONNECTIONS",
            |c| c.max_connections.get(),
            20_000,
        ),
        (
            "--max-connections-per-user",
            "RTS_MAX_CONNECTIONS_PER_USER",
            |c| c.max_connections_per_user.get(),
            32,
        ),
        (
            "--send-queue",
            "RTS_SEND_QUEUE",
            |c| c.send_queue.get(),
            1024,
        ),
        (
            "--send-queue-bytes",
            "RTS_SEND_QUEUE_BYTES",
            |c| c.send_queue_bytes.get(),
            4 << 20,
        ),
        (
            "--max-subscriptions",
            "RTS_MAX_SUBSCRIPTIONS",
            |c| c.max_subscriptions.get(),
            100,
        ),
        (
            "--max-unauthenticated",
            "RTS_MAX_UNAUTHENTICATED",
            |c| c.max_unauthenticated.get(),
            1_000,
        ),
        (
            "--max-changes",
            "RTS_MAX_CHANGES",
            |c| c.max_changes.get(),
            1000,
        ),
        (
            "--max-record-bytes",
            "RTS_MAX_RECORD_BYTES",
            |c| c.max_record_bytes.get(),
            4 << 20,
        ),
        (
            "--max-subscriptions-per-user",
            "RTS_MAX_SUBSCRIPTIONS_PER_USER",
            |c| c.max_subscriptions_per_user.get(),
            500,
        ),
        (
            "--max-unauthenticated-per-ip",
            "RTS_MAX_UNAUTHENTICATED_PER_IP",
            |c| c.max_unauthenticated_per_ip.get(),
            64,
        ),
        ("--max-batch", "RTS_MAX_BATCH", |c| c.max_batch.get(), 1000),
        (
            "--max-body-bytes",
            "RTS_MAX_BODY_BYTES",
            |c| c.max_body_bytes.get(),
            4 << 20,
        ),
        ("--redis-pool", "RTS_REDIS_POOL", |c| c.redis_pool.get(), 16),
        (
            "--tailer-readers",
            "RTS_TAILER_READERS",
            |c| c.tailer_readers.get(),
            2,
        ),
    ];

    /// Time settings where 0 means nothing: a zero is refused at parse.
    const NONZERO_TIMES: [&str; 4] = [
        "RTS_RETENTION_SECS",
        "RTS_PRESENCE_TTL_SECS",
        "RTS_WRITE_TIMEOUT_MS",
        "RTS_EDITING_TTL_MS",
    ];

    #[test]
    fn every_time_setting_keeps_its_documented_default() {
        let config = parse(&[]).unwrap();
        for (_, env, read, default) in TIMES {
            assert_eq!(read(&config), in_unit(env, default), "{env}");
        }
    }

    #[test]
    fn every_time_setting_is_read_in_the_unit_its_variable_names() {
        for (flag, env, read, _) in TIMES {
            let config = parse(&[flag, "7"]).unwrap();
            assert_eq!(read(&config), in_unit(env, 7), "{env}");
        }
    }

    #[test]
    fn a_zero_time_that_means_nothing_is_refused_naming_its_variable() {
        for (flag, env, _, _) in TIMES.iter().filter(|t| NONZERO_TIMES.contains(&t.1)) {
            let refused = parse(&[flag, "0"]).err().unwrap_or_default();
            assert!(
                refused.contains(&format!("{env} must be greater than zero")),
                "{refused}"
            );
        }
    }

    #[test]
    fn a_zero_time_that_works_is_accepted() {
        for (flag, env, read, _) in TIMES.iter().filter(|t| !NONZERO_TIMES.contains(&t.1)) {
            let config = parse(&[flag, "0"]).unwrap();
            assert_eq!(read(&config), Duration::ZERO, "{env}");
        }
    }

    #[test]
    fn a_time_that_is_not_a_whole_number_is_refused_naming_its_unit() {
        let refused = parse(&["--write-timeout-ms", "1.5"])
            .err()
            .unwrap_or_default();
        assert!(
            refused.contains("RTS_WRITE_TIMEOUT_MS must be a whole number of milliseconds"),
            "{refused}"
        );
    }

    #[test]
    fn every_count_keeps_its_documented_default() {
        let config = parse(&[]).unwrap();
        for (_, env, read, default) in COUNTS {
            assert_eq!(read(&config), default, "{env}");
        }
    }

    #[test]
    fn every_count_takes_the_number_given() {
        for (flag, env, read, _) in COUNTS {
            let config = parse(&[flag, "3"]).unwrap();
            assert_eq!(read(&config), 3, "{env}");
        }
    }

    #[test]
    fn a_zero_count_is_refused_naming_its_variable() {
        for (flag, env, _, _) in COUNTS {
            let refused = parse(&[flag, "0"]).err().unwrap_or_default();
            assert!(
                refused.contains(&format!("{env} must be greater than zero")),
                "{refused}"
            );
        }
    }

    #[test]
    fn a_record_history_past_the_index_cap_is_refused_by_validate() {
        let config = parse(&["--record-history", "10001"]).unwrap();
        assert!(matches!(
            config.validate(),
            Err(ConfigError::LongRecordHistory)
        ));
        let config = parse(&["--record-history", "10000"]).unwrap();
        assert!(!matches!(
            config.validate(),
            Err(ConfigError::LongRecordHistory)
        ));
    }

    #[test]
    fn a_zero_durable_timeout_is_refused_by_validate_with_its_range() {
        let config = parse(&["--auth", "none", "--durable-timeout-ms", "0"]).unwrap();
        assert!(matches!(
            config.validate(),
            Err(ConfigError::DurableTimeout)
        ));
    }

    #[test]
    fn a_durable_timeout_past_the_command_timeout_is_refused_by_validate() {
        let config = parse(&["--auth", "none", "--durable-timeout-ms", "1501"]).unwrap();
        assert!(matches!(
            config.validate(),
            Err(ConfigError::DurableTimeout)
        ));
    }

    #[test]
    fn the_sink_keeps_its_documented_defaults() {
        let config = parse(&["sink", "--url", "http://app/hook"]).unwrap();
        let sink = sink_of(&config);
        assert_eq!(sink.batch.get(), 100);
        assert_eq!(sink.timeout, Duration::from_millis(10_000));
        assert_eq!(sink.max_lag, Duration::from_secs(7 * 24 * 3600));
    }

    #[test]
    fn the_sinks_times_are_read_in_their_units() {
        let flags = [
            "sink",
            "--url",
            "http://a/",
            "--timeout-ms",
            "9",
            "--max-lag-secs",
            "9",
        ];
        let config = parse(&flags).unwrap();
        let sink = sink_of(&config);
        assert_eq!(sink.timeout, Duration::from_millis(9));
        assert_eq!(sink.max_lag, Duration::from_secs(9));
    }

    #[test]
    fn a_zero_sink_setting_is_refused_naming_its_variable() {
        for (flag, env) in [
            ("--batch", "RTS_SINK_BATCH"),
            ("--timeout-ms", "RTS_SINK_TIMEOUT_MS"),
            ("--max-lag-secs", "RTS_SINK_MAX_LAG_SECS"),
        ] {
            let refused = parse(&["sink", "--url", "http://a/", flag, "0"])
                .err()
                .unwrap_or_default();
            assert!(
                refused.contains(&format!("{env} must be greater than zero")),
                "{refused}"
            );
        }
    }

    #[test]
    fn clamping_the_unauthenticated_cap_keeps_it_above_zero() {
        let mut config = parse(&["--max-connections", "1", "--max-unauthenticated", "1"]).unwrap();
        let warnings = config.clamp();
        assert_eq!(config.max_unauthenticated.get(), 1);
        assert_eq!(warnings.len(), 1);
    }
}
