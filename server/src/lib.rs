//! `pinchat-server`: accounts, auth keys, contacts, presence, messages, and per-widget subscriptions that
//! push only the pinned contacts' changes.
//!
//! Code map (see `ARCHITECTURE.md` for the invariants):
//! - [`store`]: durable state behind the [`store::Store`] trait; [`store::sqlite`] is the embedded
//!   implementation. Every change is stamped with a global cursor and published, in order, on a feed.
//! - [`hub`]: the one task that knows every open stream and its pins, and routes each change to exactly the
//!   subscriptions that pinned it; also derives presence from connections.
//! - [`stream`]: one task per WebSocket stream: handshake, subscriptions, commands, delivery, catch-up.
//! - [`http`]: the HTTP endpoints; [`api`]: the operations and validation both share.
//! - [`calls`]: the signalling of voice and video calls (the hub owns it; media never passes here).
//! - [`ice`]: the STUN and TURN servers (with TURN-REST credentials) handed to callers.
//! - [`auth`]: passwords, keys, login rate limits. [`tls`]: rustls termination.
//! - [`gateway`]: the XMPP gateway (a linked XMPP account's roster as contacts).
//! - [`config`], [`metrics`], [`admin`] and [`demo`]: operations.
//!
//! The binary is a thin wrapper: the caller binds the listener and owns the shutdown token, so tests run
//! the real server on an ephemeral port.

#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod auth;
pub mod calls;
pub mod cli;
pub mod config;
pub mod demo;
pub mod gateway;
pub mod http;
pub mod hub;
pub mod ice;
pub mod metrics;
pub mod store;
pub mod stream;
pub mod tls;
mod util;

use crate::api::Api;
use crate::auth::{Auth, LoginLimits};
use crate::config::Config;
use crate::hub::{HubConfig, HubHandle};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::StoreThreads;
use crate::store::postgres::{PgOptions, PgStore};
use crate::store::sqlite::{SqliteOptions, SqliteStore};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Everything a request handler or stream task needs.
pub struct App {
    /// Operations and shared state.
    pub api: Api,
    /// The subscription registry.
    pub hub: HubHandle,
    /// Linked XMPP accounts' sessions.
    pub gateway: Arc<gateway::Gateway>,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Tracks stream tasks so that shutdown can wait for them.
    pub tracker: TaskTracker,
}

/// Opens the store off the async runtime: PostgreSQL when `config.store` names one (cluster mode),
/// else the SQLite file at `config.database`.
pub async fn open_store(
    config: &Config,
    feed: Option<tokio::sync::mpsc::Sender<store::ChangeBatch>>,
) -> anyhow::Result<(Arc<dyn Store>, StoreThreads)> {
    let external_poll = Duration::from_millis(config.external_poll_ms);
    if let Some(url) = &config.store {
        let options = PgOptions {
            url: url.0.clone(),
            ca: config.store_ca.clone(),
            node_name: config
                .node_name
                .clone()
                .unwrap_or_else(|| default_node_name(config)),
            feed,
            external_poll,
            readers: 4,
            lease: Duration::from_secs(config.node_lease_secs.into()),
            grace: config.presence_grace(),
        };
        let (store, threads) = PgStore::open(options).await?;
        return Ok((Arc::new(store), threads));
    }
    let path = config.database.clone();
    let options = SqliteOptions {
        feed,
        external_poll,
        readers: 4,
    };
    let (store, writer) = tokio::task::spawn_blocking(move || SqliteStore::open(&path, options)).await??;
    Ok((Arc::new(store), writer))
}

/// A cluster node's name when none is configured: the host's name and the port it serves.
fn default_node_name(config: &Config) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_else(|| "pinchat".into());
    format!("{host}:{}", config.listen.port())
}

/// What [`run`] can be asked to do besides serving.
#[derive(Default)]
pub struct RunOptions {
    /// Seed the demo world (the `demo` subcommand).
    pub demo: bool,
    /// With `demo`: let contacts change state and write at this interval.
    pub animate: Option<Duration>,
}

/// Serves on `listener` until `shutdown` is cancelled, then closes every stream, lets queued writes
/// commit and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    options: RunOptions,
) -> anyhow::Result<()> {
    config.validate()?;
    let config = Arc::new(config);
    let local = listener.local_addr()?;
    let (feed_tx, mut store_feed) = tokio::sync::mpsc::channel::<store::ChangeBatch>(256);
    let (store, writer) = open_store(&config, Some(feed_tx)).await?;
    let tracker = TaskTracker::new();
    // The feed passes the gateway on its way to the hub: a message written to an XMPP contact rings
    // the session that forwards it (without blocking, and without a copy).
    let shadows = gateway::Shadows::default();
    let (hub_feed, feed_rx) = tokio::sync::mpsc::channel(256);
    {
        let shadows = shadows.clone();
        let shutdown = shutdown.clone();
        // It ends with the hub, at shutdown: the store, which holds the feed's sender, outlives the
        // tracked tasks, so waiting for the feed to end would wait for ever.
        tracker.spawn(async move {
            loop {
                let batch = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    batch = store_feed.recv() => batch,
                };
                let Some(batch) = batch else { break };
                shadows.observe(&batch);
                if hub_feed.send(batch).await.is_err() {
                    break;
                }
            }
        });
    }
    let metrics = Arc::new(Metrics::default());
    let hub_config = HubConfig {
        max_per_account: config.limits.max_connections_per_account,
        max_total: config.limits.max_connections,
        queue: config.limits.stream_queue,
        grace: config.presence_grace(),
        keepalive: Duration::from_secs(config.keepalive_secs.into()),
        key_ttl: config.key_ttl(),
        ring: Duration::from_secs(config.call_ring_secs.into()),
        rejoin: Duration::from_secs(config.call_rejoin_secs.into()),
    };
    let hub = hub::spawn(
        store.clone(),
        feed_rx,
        hub_config,
        metrics.clone(),
        shutdown.clone(),
        &tracker,
    )
    .await?;
    if options.demo {
        let world = demo::seed(store.as_ref()).await?;
        if let Some(every) = options.animate {
            tracker.spawn(demo::animate(store.clone(), world, every, shutdown.clone()));
        }
    }
    let limits = LoginLimits {
        per_account_per_minute: NonZeroU32::new(config.limits.login_per_account_per_minute)
            .unwrap_or(NonZeroU32::MIN),
        per_address_per_minute: NonZeroU32::new(config.limits.login_per_address_per_minute)
            .unwrap_or(NonZeroU32::MIN),
    };
    let auth = Auth::new(store.clone(), config.key_ttl(), limits);
    let gateway = Arc::new(gateway::Gateway::new(
        store.clone(),
        &config,
        shadows,
        shutdown.clone(),
        tracker.clone(),
    )?);
    gateway.start().await?;
    let app = Arc::new(App {
        api: Api {
            store,
            auth,
            config: config.clone(),
            metrics,
        },
        hub,
        gateway,
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
    });
    let router = http::router(app.clone()).into_make_service_with_connect_info::<http::PeerAddr>();
    let stop = shutdown.clone().cancelled_owned();
    match &config.tls {
        Some(tls) => {
            let tls_config = tls::load_config(&tls.cert, &tls.key)?;
            tracing::info!(address = %local, store = %config.store_description(), "serving HTTPS");
            let listener = tls::TlsListener::new(listener, tls_config, shutdown.clone())?;
            axum::serve(listener, router).with_graceful_shutdown(stop).await?;
        }
        None => {
            if local.ip().is_loopback() {
                tracing::info!(address = %local, store = %config.store_description(), "serving plain HTTP on loopback (no TLS configured)");
            } else {
                tracing::warn!(address = %local, "serving PLAIN HTTP on a non-loopback address: keys and messages cross the network unencrypted; configure [tls] for production");
            }
            axum::serve(listener, router).with_graceful_shutdown(stop).await?;
        }
    }
    tracker.close();
    tracker.wait().await;
    drop(app);
    tokio::task::spawn_blocking(move || writer.join()).await?;
    tracing::info!("stopped");
    Ok(())
}
