//! Server configuration: defaults, a TOML file, then command-line flags and environment variables on top.
//!
//! Unknown keys in the file are errors (a typo should not silently fall back to a default), and every
//! value is validated once at start-up so that a bad configuration stops the server with a message that
//! names the key, instead of failing later.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything the server can be configured with. See `docs/operations.md` for each key.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The SQLite database file.
    pub database: PathBuf,
    /// A PostgreSQL connection string (`postgres://user:password@host/db`, or `host=/run/postgresql
    /// dbname=pinchat`): the data lives there instead of in `database`, and this server is one node of
    /// a cluster sharing it. Also `--store` and `PINCHAT_STORE` (which keep a password out of the file).
    pub store: Option<Secret>,
    /// With `sslmode=require` in `store`: a PEM file of the CA that signed PostgreSQL's certificate,
    /// trusted besides the system's roots (PostgreSQL's certificate is always verified). Also
    /// `--store-ca` and `PINCHAT_STORE_CA`.
    pub store_ca: Option<PathBuf>,
    /// This node's name in the cluster's `nodes` table and its logs (default: the host name and the port).
    pub node_name: Option<String>,
    /// Seconds a cluster node's registration lasts unless renewed (it renews every third of this); a
    /// node silent for longer is dead, and its accounts go offline `presence_grace_secs` later.
    pub node_lease_secs: u16,
    /// TLS certificate and key; without them the server speaks plain HTTP.
    pub tls: Option<TlsConfig>,
    /// Allow plain HTTP on a non-loopback address (development only).
    pub insecure_plaintext: bool,
    /// Serve Prometheus metrics at `/metrics`.
    pub metrics: bool,
    /// Log format: `text` or `json`.
    pub log_format: LogFormat,
    /// Seconds an account stays visibly online after its last stream closed (a reconnect within this
    /// time is invisible to contacts).
    pub presence_grace_secs: u64,
    /// Seconds between client keepalives; a stream silent for three times this long is closed.
    pub keepalive_secs: u16,
    /// Days an unused auth key stays valid.
    pub key_ttl_days: u32,
    /// How often an idle server looks for changes written by admin commands, in milliseconds.
    pub external_poll_ms: u64,
    /// Unread messages per contact included in a full snapshot as hints.
    pub snapshot_hints: u32,
    /// A resume that would carry more messages than this gets a full snapshot instead.
    pub resume_max_messages: u32,
    /// Seconds an unanswered call rings before it ends with `no_answer`.
    pub call_ring_secs: u16,
    /// Seconds a connected call waits for a party whose link dropped to come back before it ends with
    /// `connection_lost`.
    pub call_rejoin_secs: u16,
    /// Size and rate limits.
    pub limits: Limits,
    /// STUN and TURN servers handed to callers (`GET /v1/ice`).
    pub ice: IceSettings,
    /// The XMPP gateway's key: 32 bytes, base64, sealing linked accounts' XMPP passwords at rest. Also
    /// read from `PINCHAT_GATEWAY_KEY`. Without it the gateway is off (`xmpp.unavailable`).
    pub gateway_key: Option<Secret>,
}

/// Where calls' media may go. See docs/operations.md, *Calls: STUN and TURN*.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IceSettings {
    /// STUN URLs (`stun:host:port`).
    pub stun: Vec<String>,
    /// TURN URLs (`turn:host:port?transport=udp`, `turns:…`); they need `turn_secret`.
    pub turn: Vec<String>,
    /// The secret shared with the TURN server (coturn's `static-auth-secret`). Also read from the
    /// environment variable `PINCHAT_TURN_SECRET`, which keeps it out of the file.
    pub turn_secret: Option<Secret>,
    /// How long handed-out TURN credentials stay valid, in seconds.
    pub turn_ttl_secs: u32,
}

impl Default for IceSettings {
    fn default() -> Self {
        IceSettings {
            stun: vec![],
            turn: vec![],
            turn_secret: None,
            turn_ttl_secs: 3600,
        }
    }
}

/// A secret from the configuration: never printed, not even by `{:?}`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// TLS files.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Log output format.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Limits; each breach is answered with its own error code.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Most pinned contacts per subscription (the patent's "system limit").
    pub max_pins: u16,
    /// Largest HTTP request body, in bytes (avatars have their own limit).
    pub max_body_bytes: usize,
    /// Largest avatar image, in bytes.
    pub max_avatar_bytes: usize,
    /// Largest stream frame a client may send, in bytes.
    pub max_frame_bytes: usize,
    /// Longest message text, in bytes.
    pub max_text_bytes: u32,
    /// Most simultaneous streams per account.
    pub max_connections_per_account: u32,
    /// Most streams in total.
    pub max_connections: usize,
    /// Most subscriptions per stream.
    pub max_subscriptions_per_connection: u8,
    /// Frames a client may send per second on one stream (bursts up to four times this).
    pub stream_frames_per_second: u32,
    /// Events that may wait for one slow stream before it is resynchronised from the database instead.
    pub stream_queue: usize,
    /// Login attempts per minute per account.
    pub login_per_account_per_minute: u32,
    /// Login attempts per minute per client address.
    pub login_per_address_per_minute: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7420)),
            database: PathBuf::from("pinchat.db"),
            store: None,
            store_ca: None,
            node_name: None,
            node_lease_secs: 15,
            tls: None,
            gateway_key: None,
            insecure_plaintext: false,
            metrics: true,
            log_format: LogFormat::Text,
            presence_grace_secs: 10,
            keepalive_secs: 30,
            key_ttl_days: 90,
            external_poll_ms: 1000,
            snapshot_hints: 3,
            resume_max_messages: 500,
            call_ring_secs: 30,
            call_rejoin_secs: 20,
            ice: IceSettings::default(),
            limits: Limits::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pins: 20,
            max_body_bytes: 64 * 1024,
            max_avatar_bytes: 256 * 1024,
            max_frame_bytes: 64 * 1024,
            max_text_bytes: 4000,
            max_connections_per_account: 8,
            max_connections: 200_000,
            max_subscriptions_per_connection: 4,
            stream_frames_per_second: 50,
            stream_queue: 64,
            login_per_account_per_minute: 10,
            login_per_address_per_minute: 30,
        }
    }
}

impl Config {
    /// Reads a TOML file; a missing `path` gives the defaults.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))
    }

    /// Checks every value; the error names the key and the allowed range.
    pub fn validate(&self) -> anyhow::Result<()> {
        let l = &self.limits;
        let checks: [(bool, &str); 20] = [
            (
                self.store.as_ref().is_none_or(|s| {
                    s.0.starts_with("postgres://") || s.0.starts_with("postgresql://") || s.0.contains('=')
                }),
                "store must be a PostgreSQL connection string: postgres://user:password@host/database, or \
                 key=value pairs such as \"host=/run/postgresql dbname=pinchat\"",
            ),
            (
                self.store_ca.is_none() || self.store.is_some(),
                "store_ca is the CA of PostgreSQL's certificate: it needs store (a connection string with \
                 sslmode=require)",
            ),
            (
                (3..=600).contains(&self.node_lease_secs),
                "node_lease_secs must be between 3 and 600",
            ),
            (
                (1..=1000).contains(&l.max_pins),
                "limits.max_pins must be between 1 and 1000",
            ),
            (
                l.max_body_bytes >= 1024,
                "limits.max_body_bytes must be at least 1024",
            ),
            (
                l.max_avatar_bytes >= 1024,
                "limits.max_avatar_bytes must be at least 1024",
            ),
            (
                l.max_frame_bytes >= 1024,
                "limits.max_frame_bytes must be at least 1024",
            ),
            (
                l.max_text_bytes >= 1 && (l.max_text_bytes as usize) < l.max_frame_bytes,
                "limits.max_text_bytes must be at least 1 and smaller than limits.max_frame_bytes",
            ),
            (
                l.max_connections_per_account >= 1,
                "limits.max_connections_per_account must be at least 1",
            ),
            (
                l.max_connections >= 1,
                "limits.max_connections must be at least 1",
            ),
            (
                l.max_subscriptions_per_connection >= 1,
                "limits.max_subscriptions_per_connection must be at least 1",
            ),
            (
                l.stream_frames_per_second >= 1,
                "limits.stream_frames_per_second must be at least 1",
            ),
            (l.stream_queue >= 4, "limits.stream_queue must be at least 4"),
            (
                l.login_per_account_per_minute >= 1 && l.login_per_address_per_minute >= 1,
                "limits.login_per_account_per_minute and limits.login_per_address_per_minute must be at least 1",
            ),
            (
                (5..=3600).contains(&self.keepalive_secs),
                "keepalive_secs must be between 5 and 3600",
            ),
            (
                (1..=600).contains(&self.call_ring_secs),
                "call_ring_secs must be between 1 and 600",
            ),
            (
                (1..=600).contains(&self.call_rejoin_secs),
                "call_rejoin_secs must be between 1 and 600",
            ),
            (
                self.ice.turn.is_empty() || self.ice.turn_secret.as_ref().is_some_and(|s| s.0.len() >= 16),
                "ice.turn needs ice.turn_secret (or PINCHAT_TURN_SECRET), at least 16 characters",
            ),
            (
                (60..=86_400).contains(&self.ice.turn_ttl_secs),
                "ice.turn_ttl_secs must be between 60 and 86400",
            ),
            (
                self.ice
                    .stun
                    .iter()
                    .all(|u| u.starts_with("stun:") || u.starts_with("stuns:"))
                    && self
                        .ice
                        .turn
                        .iter()
                        .all(|u| u.starts_with("turn:") || u.starts_with("turns:")),
                "ice.stun URLs must start with stun: (or stuns:), ice.turn URLs with turn: (or turns:)",
            ),
        ];
        for (ok, message) in checks {
            anyhow::ensure!(ok, "invalid configuration: {message}");
        }
        if let Some(key) = &self.gateway_key {
            crate::gateway::seal::Sealer::from_base64(&key.0)
                .map_err(|e| anyhow::anyhow!("invalid configuration: gateway_key {e}"))?;
            anyhow::ensure!(
                self.store.is_none(),
                "invalid configuration: gateway_key: the XMPP gateway runs only on a server with an embedded \
                 (SQLite) store, not in cluster mode"
            );
        }
        anyhow::ensure!(
            self.key_ttl_days >= 1,
            "invalid configuration: key_ttl_days must be at least 1"
        );
        anyhow::ensure!(
            self.external_poll_ms >= 10,
            "invalid configuration: external_poll_ms must be at least 10"
        );
        if self.tls.is_none() && !self.listen.ip().is_loopback() && !self.insecure_plaintext {
            anyhow::bail!(
                "refusing to serve plain HTTP on {}: configure [tls] cert and key, listen on a loopback address, \
                 or set insecure_plaintext = true (or --insecure-plaintext) if you really mean it",
                self.listen
            );
        }
        Ok(())
    }

    /// Where the data lives, for the logs: the SQLite file, or "PostgreSQL" (never the connection
    /// string, which may hold a password).
    pub fn store_description(&self) -> String {
        match &self.store {
            Some(_) => "PostgreSQL (cluster mode)".into(),
            None => self.database.display().to_string(),
        }
    }

    /// How long a visible account stays online after its last stream ends.
    pub fn presence_grace(&self) -> Duration {
        Duration::from_secs(self.presence_grace_secs)
    }

    /// Key lifetime without use.
    pub fn key_ttl(&self) -> Duration {
        Duration::from_secs(u64::from(self.key_ttl_days) * 24 * 3600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_files_are_strict() {
        Config::default().validate().unwrap();
        let c: Config = toml::from_str("listen = \"127.0.0.1:9000\"\n[limits]\nmax_pins = 5\n").unwrap();
        assert_eq!(c.limits.max_pins, 5);
        assert_eq!(c.limits.max_text_bytes, 4000);
        let err = toml::from_str::<Config>("lisen = \"x\"").unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{err}");
        let mut c = Config::default();
        c.limits.max_pins = 0;
        assert!(c.validate().unwrap_err().to_string().contains("limits.max_pins"));
        let mut c = Config {
            listen: "0.0.0.0:7420".parse().unwrap(),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("plain HTTP"));
        c.insecure_plaintext = true;
        c.validate().unwrap();
    }
}
