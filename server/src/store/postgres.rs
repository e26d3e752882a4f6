//! [`Store`] on PostgreSQL: cluster mode, where several `pinchat-server` nodes share one database.
//!
//! The design is the SQLite store's, stretched across processes (ARCHITECTURE.md, *Cluster mode*):
//! - **One cursor for the cluster.** Every write transaction first locks the `meta` row holding the
//!   cursor (`SELECT … FOR UPDATE`) and stamps its changes from it, so writes commit one after another in
//!   cursor order whichever node made them. PostgreSQL makes a commit visible before it releases the
//!   transaction's locks, so a snapshot that sees cursor `c` sees everything stamped before `c`: reading
//!   "what is stamped in `(published, head]`" in one snapshot never skips a change a later read would
//!   find. Each node has one writer thread with group commit, like SQLite's (jobs in savepoints, one
//!   commit per batch).
//! - **A doorbell, not a bus.** The commit also sends `NOTIFY pinchat_feed` (delivered at commit, in
//!   commit order). Each node's publisher thread listens, and on a notification — or every
//!   `external_poll` when nothing rings — reads back what was stamped since it last published and puts it
//!   on its hub's feed. Nothing is carried in the notification, so nothing is lost when one is missed
//!   (a node that reconnects reads back from where it was).
//! - **Presence across nodes.** A node registers itself in `nodes` with a lease it renews every third
//!   of the lease; `node_sessions` holds which accounts have a stream on which node, and an account is
//!   connected when any node has it. One node, the leader (whoever holds a session-level advisory lock,
//!   released by PostgreSQL when that node's connection dies), expires the nodes whose lease ran out
//!   more than the presence grace ago, with their sessions, in one stamped write: their accounts go
//!   offline for their watchers on every node, unless they reconnected elsewhere meanwhile.
//! - **Failures.** A database that cannot be reached turns writes and reads into
//!   [`StoreError::Unavailable`] (`server.storage_unavailable` for clients, 503 at `/healthz`), and every
//!   thread reconnects by itself; nothing is acknowledged before it is committed.
//!
//! Calls and the hub's routing tables stay per node (see ARCHITECTURE.md for what that means).

use super::*;
use ::postgres as pg;
use pg::fallible_iterator::FallibleIterator;
use pg::types::ToSql;
use pg::{Client, NoTls, Row, Statement};
use pinchat_proto::ContactUpdate;
use pinchat_proto::http::{CallRecord, HistoryMessage};
use pinchat_proto::stream::{CallEnd, Snapshot};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Most jobs committed in one transaction.
pub const MAX_BATCH: usize = 512;

/// The channel commits ring.
const CHANNEL: &str = "pinchat_feed";

/// The advisory lock whose holder is the leader (the bytes of "pinchat").
const LEADER_LOCK: i64 = 0x0070_696e_6368_6174;

/// The database's clock in milliseconds since the Unix epoch: leases are compared on one clock, so the
/// nodes' own clocks may disagree.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// How the store is opened.
pub struct PgOptions {
    /// Connection string (`postgres://user:password@host/db` or `host=/run/postgresql dbname=…`).
    pub url: String,
    /// With `sslmode=require`: a PEM file of the CA that signed PostgreSQL's certificate, trusted
    /// besides the system's roots.
    pub ca: Option<std::path::PathBuf>,
    /// This node's name in the `nodes` table and the logs.
    pub node_name: String,
    /// Where committed changes are published. `None` for tools that only write (the admin commands):
    /// they register no node and hold no sessions.
    pub feed: Option<mpsc::Sender<ChangeBatch>>,
    /// How often the publisher reads back when no notification rang (a missed one costs this much).
    pub external_poll: Duration,
    /// Most read connections open, and reads running, at once.
    pub readers: usize,
    /// How long a node's registration lasts without being renewed.
    pub lease: Duration,
    /// How long after a node's lease ran out its accounts go offline (the presence grace period).
    pub grace: Duration,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection string may hold a password.
        f.debug_struct("PgOptions")
            .field("node_name", &self.node_name)
            .field("readers", &self.readers)
            .finish_non_exhaustive()
    }
}

impl From<pg::Error> for StoreError {
    fn from(e: pg::Error) -> Self {
        if unreachable(&e) {
            StoreError::Unavailable(format!(
                "the PostgreSQL server cannot be reached ({})",
                describe(&e)
            ))
        } else {
            StoreError::Db(describe(&e))
        }
    }
}

/// A PostgreSQL error in words: the server's own message when it sent one (the client's `Display`
/// says only "db error" then).
fn describe(e: &pg::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => {
            // The cause is in the chain ("error performing TLS handshake" alone does not say that the
            // certificate was not trusted).
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                let said = cause.to_string();
                if !text.ends_with(&said) {
                    text = format!("{text}: {said}");
                }
                source = cause.source();
            }
            text
        }
    }
}

/// Whether a PostgreSQL failure means "the database is not there just now" rather than a bad query:
/// a lost or refused connection, a server shutting down or starting, or one out of resources.
fn unreachable(e: &pg::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // 08: connection exception; 57P0x: shutting down or starting up; 53: insufficient resources;
        // 25006: a read-only transaction (a standby after a failover).
        return code.starts_with("08")
            || code.starts_with("57P")
            || code.starts_with("53")
            || code == "25006";
    }
    // Not the server's answer: the connection itself failed.
    let text = e.to_string();
    [
        "error connecting",
        "error communicating",
        "timeout",
        "connection closed",
    ]
    .iter()
    .any(|p| text.starts_with(p))
}

/// Where and how the store connects: the parsed connection string, and TLS when it says
/// `sslmode=require`.
#[derive(Clone)]
struct Target {
    config: pg::Config,
    tls: Option<MakeRustlsConnect>,
}

/// Parses a connection string and adds what every pinchat connection needs. With `sslmode=require`
/// the connections are encrypted and PostgreSQL's certificate is verified — against the system's
/// roots and the certificates of the PEM file `ca` — which is stricter than libpq's `require` (it does
/// not verify): an encrypted connection to whoever answers is not worth much. Without it (libpq's
/// default `prefer` included) they are not encrypted, as the operations guide says.
fn connect_config(url: &str, node: &str, ca: Option<&Path>) -> Result<Target, StoreError> {
    let mut config: pg::Config = url.parse().map_err(|e| {
        // The string may hold a password: name the problem, not the string.
        StoreError::Invalid(format!("the PostgreSQL connection string cannot be parsed: {e}"))
    })?;
    let tls = match (config.get_ssl_mode(), ca) {
        (pg::config::SslMode::Require, ca) => Some(MakeRustlsConnect::new(tls_config(ca)?)),
        (_, Some(ca)) => {
            return Err(StoreError::Invalid(format!(
                "store_ca is {} but the PostgreSQL connection string does not ask for TLS: add \
                 sslmode=require to it (or ?sslmode=require to a postgres:// URL)",
                ca.display()
            )));
        }
        (_, None) => None,
    };
    config
        .application_name(&format!("pinchat-server {node}"))
        .connect_timeout(Duration::from_secs(5))
        // A writer stalled while holding the cursor's lock would stall the whole cluster: PostgreSQL
        // ends such a session (and its lock) instead of waiting forever.
        .options("-c idle_in_transaction_session_timeout=30000 -c lock_timeout=30000");
    Ok(Target { config, tls })
}

/// The TLS client configuration for PostgreSQL: the system's roots and those of `ca`.
fn tls_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, StoreError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    // Certificates of the system's store that rustls cannot use are skipped.
    let (mut added, _) = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(ca) = ca {
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| StoreError::Invalid(format!("cannot read store_ca {}: {e}", ca.display())))?;
        let (valid, _) = roots.add_parsable_certificates(certs);
        if valid == 0 {
            return Err(StoreError::Invalid(format!(
                "store_ca {} holds no certificate (it should be a PEM file of the CA that signed \
                 PostgreSQL's certificate)",
                ca.display()
            )));
        }
        added += valid;
    }
    if added == 0 {
        return Err(StoreError::Invalid(
            "sslmode=require, but there is no certificate to verify PostgreSQL's against: install the \
             system's CA certificates or set store_ca to the CA that signed PostgreSQL's certificate"
                .into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Invalid(format!("TLS for PostgreSQL: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A connection with its prepared statements.
struct Conn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl Conn {
    fn open(target: &Target) -> Result<Conn, StoreError> {
        let client = match &target.tls {
            Some(tls) => target.config.connect(tls.clone()),
            None => target.config.connect(NoTls),
        }
        .map_err(|e| {
            let why = describe(&e);
            // A certificate that does not verify will not verify on the next try either: say what fixes it.
            let hint = if why.contains("invalid peer certificate") {
                " (set store_ca to a PEM file of the CA that signed PostgreSQL's certificate, and connect by a \
                 host name or address the certificate names)"
            } else {
                ""
            };
            StoreError::Unavailable(format!("cannot connect to PostgreSQL: {why}{hint}"))
        })?;
        Ok(Conn {
            client,
            statements: HashMap::new(),
        })
    }

    /// The statement for `sql`, prepared once per connection.
    fn prepared(&mut self, sql: &'static str) -> Result<Statement, pg::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }

    fn query(&mut self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>, pg::Error> {
        let s = self.prepared(sql)?;
        self.client.query(&s, params)
    }

    fn opt(&mut self, sql: &'static str, params: Params<'_>) -> Result<Option<Row>, pg::Error> {
        let s = self.prepared(sql)?;
        self.client.query_opt(&s, params)
    }

    fn one(&mut self, sql: &'static str, params: Params<'_>) -> Result<Row, pg::Error> {
        let s = self.prepared(sql)?;
        self.client.query_one(&s, params)
    }

    fn exec(&mut self, sql: &'static str, params: Params<'_>) -> Result<u64, pg::Error> {
        let s = self.prepared(sql)?;
        self.client.execute(&s, params)
    }

    fn batch(&mut self, sql: &str) -> Result<(), pg::Error> {
        self.client.batch_execute(sql)
    }

    /// Runs `f` in one read-only snapshot: what it reads describes one instant.
    fn snapshot<T>(&mut self, f: impl FnOnce(&mut Conn) -> StoreResult<T>) -> StoreResult<T> {
        self.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
        let result = f(self);
        match &result {
            Ok(_) => self.batch("COMMIT")?,
            Err(_) => {
                let _ = self.batch("ROLLBACK");
            }
        }
        result
    }
}

/// The schema, in migrations that only ever get appended; the version is `meta.schema_version`.
const MIGRATIONS: &[&str] = &[
    // 1: the SQLite store's schema (see schema.rs for what each column means), plus the nodes of the
    // cluster and which accounts have streams on which node.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value BIGINT NOT NULL
    );

    CREATE TABLE accounts (
        id            BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        login         TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        disabled      BOOLEAN NOT NULL DEFAULT false,
        created_at    BIGINT NOT NULL,
        name          TEXT NOT NULL,
        name_v        BIGINT NOT NULL,
        avatar        TEXT,
        avatar_v      BIGINT NOT NULL,
        signature     TEXT NOT NULL DEFAULT '',
        signature_v   BIGINT NOT NULL,
        description   TEXT NOT NULL DEFAULT '',
        description_v BIGINT NOT NULL,
        chosen_state  SMALLINT NOT NULL DEFAULT 1,
        state         SMALLINT NOT NULL DEFAULT 0,
        state_v       BIGINT NOT NULL,
        status        TEXT NOT NULL DEFAULT '',
        status_v      BIGINT NOT NULL,
        v             BIGINT NOT NULL
    );
    CREATE UNIQUE INDEX accounts_login ON accounts (lower(login));
    CREATE INDEX accounts_v ON accounts (v);

    CREATE TABLE avatars (
        hash TEXT PRIMARY KEY,
        mime TEXT NOT NULL,
        data BYTEA NOT NULL
    );

    CREATE TABLE keys (
        id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        account    BIGINT NOT NULL REFERENCES accounts (id),
        hash       BYTEA NOT NULL UNIQUE,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        revoked_v  BIGINT
    );
    CREATE INDEX keys_account ON keys (account);
    CREATE INDEX keys_revoked_v ON keys (revoked_v) WHERE revoked_v IS NOT NULL;

    CREATE TABLE contacts (
        account BIGINT NOT NULL REFERENCES accounts (id),
        contact BIGINT NOT NULL REFERENCES accounts (id),
        PRIMARY KEY (account, contact)
    );

    CREATE TABLE messages (
        id        BIGINT PRIMARY KEY,
        sender    BIGINT NOT NULL REFERENCES accounts (id),
        recipient BIGINT NOT NULL REFERENCES accounts (id),
        client_id TEXT NOT NULL,
        ts        BIGINT NOT NULL,
        text      TEXT NOT NULL,
        UNIQUE (sender, client_id)
    );
    CREATE INDEX messages_conversation ON messages (recipient, sender, id);

    CREATE TABLE unread (
        account    BIGINT NOT NULL REFERENCES accounts (id),
        contact    BIGINT NOT NULL REFERENCES accounts (id),
        unread     BIGINT NOT NULL DEFAULT 0,
        unread_v   BIGINT NOT NULL DEFAULT 0,
        read_up_to BIGINT NOT NULL DEFAULT 0,
        read_v     BIGINT NOT NULL DEFAULT 0,
        v          BIGINT NOT NULL,
        PRIMARY KEY (account, contact)
    );
    CREATE INDEX unread_v ON unread (v);

    CREATE TABLE calls (
        id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        caller      BIGINT NOT NULL REFERENCES accounts (id),
        callee      BIGINT NOT NULL REFERENCES accounts (id),
        video       BOOLEAN NOT NULL,
        ts          BIGINT NOT NULL,
        duration_ms BIGINT,
        reason      TEXT NOT NULL
    );
    CREATE INDEX calls_pair ON calls (caller, callee, id);

    CREATE TABLE nodes (
        id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        name        TEXT NOT NULL,
        started_at  BIGINT NOT NULL,
        lease_until BIGINT NOT NULL
    );

    CREATE TABLE node_sessions (
        account BIGINT NOT NULL REFERENCES accounts (id),
        node    BIGINT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
        PRIMARY KEY (account, node)
    );
    CREATE INDEX node_sessions_node ON node_sessions (node);

    -- Login attempts per bucket (an account, an address) and minute, shared by the nodes so that the
    -- rate limits hold cluster-wide. Unlogged: losing it in a crash only forgets recent attempts.
    CREATE UNLOGGED TABLE login_attempts (
        bucket TEXT NOT NULL,
        minute BIGINT NOT NULL,
        n      BIGINT NOT NULL,
        PRIMARY KEY (bucket, minute)
    );
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`SCHEMA_VERSION`], creating it when empty; nodes starting together take
/// turns (a transaction-level advisory lock). Refuses a database written by a newer build.
fn migrate(conn: &mut Conn) -> StoreResult<()> {
    conn.batch("BEGIN")?;
    let result = (|| {
        conn.client
            .execute("SELECT pg_advisory_xact_lock($1)", &[&(LEADER_LOCK + 1)])?;
        let exists: bool = conn
            .client
            .query_one("SELECT to_regclass('meta') IS NOT NULL", &[])?
            .get(0);
        let current: i64 = if exists {
            conn.client
                .query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])?
                .map_or(0, |r| r.get(0))
        } else {
            0
        };
        if current > SCHEMA_VERSION {
            return Err(StoreError::Db(format!(
                "the database has schema version {current}, but this pinchat-server only knows up to \
                 {SCHEMA_VERSION}; use a newer pinchat-server"
            )));
        }
        for sql in MIGRATIONS.iter().skip(current as usize) {
            conn.batch(sql)?;
        }
        if current == 0 {
            let mut epoch = [0u8; 8];
            getrandom::fill(&mut epoch).expect("the operating system's random number generator failed");
            let epoch = (u64::from_le_bytes(epoch) >> 1) as i64;
            conn.client.execute(
                "INSERT INTO meta (key, value) VALUES ('epoch', $1), ('seq', 0), ('schema_version', $2)",
                &[&epoch, &SCHEMA_VERSION],
            )?;
        } else if current < SCHEMA_VERSION {
            conn.client.execute(
                "UPDATE meta SET value = $1 WHERE key = 'schema_version'",
                &[&SCHEMA_VERSION],
            )?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(conn.batch("COMMIT")?),
        Err(e) => {
            let _ = conn.batch("ROLLBACK");
            Err(e)
        }
    }
}

/// The PostgreSQL store. Dropping it lets the writer finish the jobs already queued and stop; join the
/// returned [`StoreThreads`] to wait for that and for the node to give up its lease.
pub struct PgStore {
    jobs: flume::Sender<Box<DynJob>>,
    reads: flume::Sender<ReadJob>,
    /// Counts the outages noticed: a read connection opened before the latest one is not trusted (its
    /// server may have gone and come back) and is replaced before its next read.
    outages: Arc<AtomicU64>,
    epoch: Epoch,
    /// This node's id in `nodes`; `None` for the admin tools.
    node: Option<i64>,
    /// The accounts this node has streams for, as last asked: the keeper writes them back should the
    /// node's registration have been expired under it (a node paused longer than its lease).
    sessions: Arc<Mutex<HashSet<i64>>>,
    /// Why the database cannot be used just now, set and cleared by the writer.
    storage: Arc<Mutex<Option<String>>>,
    /// Dropped with the store: tells the keeper to stop.
    _keeper: Option<flume::Sender<()>>,
}

impl PgStore {
    /// Connects, migrates, registers this node (when it serves) and starts the threads.
    ///
    /// The synchronous client drives each connection with a runtime of its own, which tokio forbids on
    /// the runtime's threads, `spawn_blocking`'s included: every connection of this store lives on a
    /// thread the store started, and so does this set-up.
    pub async fn open(options: PgOptions) -> Result<(PgStore, StoreThreads), StoreError> {
        let (tx, rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("pg-open".into())
            .spawn(move || {
                let _ = tx.send(PgStore::open_blocking(options));
            })
            .map_err(|e| StoreError::Db(format!("cannot start a thread: {e}")))?;
        rx.await
            .map_err(|_| StoreError::Db("opening the store failed (see the log)".into()))?
    }

    fn open_blocking(options: PgOptions) -> Result<(PgStore, StoreThreads), StoreError> {
        let target = connect_config(&options.url, &options.node_name, options.ca.as_deref())?;
        let mut conn = Conn::open(&target)?;
        migrate(&mut conn)?;
        let epoch: i64 = conn
            .one("SELECT value FROM meta WHERE key = 'epoch'", &[])?
            .get(0);
        let lease_ms = options.lease.as_millis() as i64;
        let node: Option<i64> = match options.feed {
            Some(_) => Some(
                conn.client
                    .query_one(
                        &format!(
                            "INSERT INTO nodes (name, started_at, lease_until) VALUES ($1, {NOW_MS}, {NOW_MS} + $2) \
                             RETURNING id"
                        ),
                        &[&options.node_name, &lease_ms],
                    )?
                    .get(0),
            ),
            None => None,
        };
        let storage = Arc::new(Mutex::new(None));
        let sessions = Arc::new(Mutex::new(HashSet::new()));
        let (tx, rx) = flume::bounded::<Box<DynJob>>(4 * MAX_BATCH);
        let (read_tx, read_rx) = flume::bounded::<ReadJob>(4 * MAX_BATCH);
        let stopping = Arc::new(AtomicBool::new(false));
        let mut threads = vec![];
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| StoreError::Db(format!("cannot start the {name} thread: {e}")))
        };
        let head: i64 = conn.one("SELECT value FROM meta WHERE key = 'seq'", &[])?.get(0);
        // Any thread that finds the database gone counts an outage; the others then replace their
        // connections before using them (one that predates an outage looks fine until used).
        let outages = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            target: target.clone(),
            conn: Some(conn),
            opened_after: 0,
            outages: outages.clone(),
            storage: storage.clone(),
            jobs: rx,
            poll: options.external_poll,
            stopping: stopping.clone(),
        };
        threads.push(spawn("pg-writer", Box::new(move || writer.run()))?);
        for _ in 0..options.readers.max(1) {
            let reader = Reader {
                target: target.clone(),
                conn: None,
                opened_after: 0,
                outages: outages.clone(),
                jobs: read_rx.clone(),
            };
            threads.push(spawn("pg-reader", Box::new(move || reader.run()))?);
        }
        if let Some(feed) = options.feed {
            let publisher = Publisher {
                target: target.clone(),
                conn: None,
                feed,
                published: head as Cursor,
                outages: outages.clone(),
                poll: options.external_poll,
                stopping,
                failing: false,
            };
            threads.push(spawn("pg-publisher", Box::new(move || publisher.run()))?);
        }
        let keeper_stop = match node {
            Some(node) => {
                let (stop, stopped) = flume::bounded::<()>(1);
                let keeper = Keeper {
                    target,
                    conn: None,
                    node,
                    name: options.node_name.clone(),
                    lease_ms,
                    grace_ms: options.grace.as_millis() as i64,
                    leader: false,
                    connected_at: std::time::Instant::now(),
                    sessions: sessions.clone(),
                    stopped,
                };
                threads.push(spawn("pg-keeper", Box::new(move || keeper.run()))?);
                tracing::info!(node, name = %options.node_name, "joined the cluster");
                Some(stop)
            }
            None => None,
        };
        Ok((
            PgStore {
                jobs: tx,
                reads: read_tx,
                outages,
                epoch: epoch as u64,
                node,
                sessions,
                storage,
                _keeper: keeper_stop,
            },
            StoreThreads(threads),
        ))
    }

    /// This node's id in the cluster (`None` for the admin tools).
    pub fn node(&self) -> Option<i64> {
        self.node
    }

    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_>) -> StoreResult<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(WriteJob {
            f: Some(f),
            result: None,
            reply,
        });
        self.jobs.send_async(job).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn) -> StoreResult<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let result = conn.and_then(f);
            if let Err(e) = &result {
                tracing::debug!(error = %e, "a read failed");
            }
            let _ = reply.send(result);
        });
        self.reads.send_async(job).await.map_err(|_| StoreError::Closed)?;
        let result = rx.await.map_err(|_| StoreError::Closed)?;
        if let Err(StoreError::Unavailable(why)) = &result {
            self.outages.fetch_add(1, Ordering::AcqRel);
            // A read that cannot reach the database makes /healthz fail too; the writer's probe clears
            // it once the database answers again.
            let mut storage = self.storage.lock().unwrap_or_else(|e| e.into_inner());
            if storage.is_none() {
                tracing::error!(reason = %why, "PostgreSQL cannot be reached; requests fail with server.storage_unavailable until it can");
                *storage = Some(why.clone());
            }
        }
        result
    }
}

/// A read: given the reader's connection (or why there is none), it answers its caller itself.
type ReadJob = Box<dyn FnOnce(StoreResult<&mut Conn>) + Send>;

/// One of the node's read connections, on a thread of its own; the readers share one queue of reads.
struct Reader {
    target: Target,
    conn: Option<Conn>,
    /// The outage count when `conn` was opened.
    opened_after: u64,
    outages: Arc<AtomicU64>,
    jobs: flume::Receiver<ReadJob>,
}

impl Reader {
    fn run(mut self) {
        while let Ok(job) = self.jobs.recv() {
            // A connection that broke, or that predates an outage (it looks fine until used), is
            // replaced: the first read after the database returns works.
            let outages = self.outages.load(Ordering::Acquire);
            if self
                .conn
                .as_ref()
                .is_some_and(|c| c.client.is_closed() || self.opened_after != outages)
            {
                self.conn = None;
            }
            if self.conn.is_none() {
                match Conn::open(&self.target) {
                    Ok(conn) => {
                        self.conn = Some(conn);
                        self.opened_after = outages;
                    }
                    Err(e) => {
                        job(Err(e));
                        continue;
                    }
                }
            }
            let conn = self.conn.as_mut().expect("just opened");
            // A panic in one read is a bug; the caller gets an error (its reply is dropped) and the
            // reader goes on with a fresh connection.
            if std::panic::catch_unwind(AssertUnwindSafe(|| job(Ok(conn)))).is_err() {
                self.conn = None;
            }
        }
    }
}

/// A queued write, as this store's writer runs it.
type DynJob = dyn for<'c> Job<WriteCtx<'c>>;

/// What a write job sees: the open transaction (on the writer's connection) and the cursor counter.
pub struct WriteCtx<'c> {
    c: &'c mut Conn,
    head: Cursor,
}

impl WriteCtx<'_> {
    /// Takes the next cursor value for a change in this transaction.
    fn stamp(&mut self) -> i64 {
        self.head += 1;
        self.head as i64
    }
}

/// Runs `f` in a write transaction on `conn`: takes the cursor's lock, lets `f` stamp, stores the new
/// cursor and rings the doorbell, commits. Used by the writer for each batch and by the keeper.
fn in_write_transaction<T>(
    conn: &mut Conn,
    f: impl FnOnce(&mut WriteCtx<'_>) -> StoreResult<T>,
) -> StoreResult<T> {
    conn.batch("BEGIN")?;
    let result = (|| {
        let head: i64 = conn
            .one("SELECT value FROM meta WHERE key = 'seq' FOR UPDATE", &[])?
            .get(0);
        let mut ctx = WriteCtx {
            c: conn,
            head: head as Cursor,
        };
        let value = f(&mut ctx)?;
        let new_head = ctx.head as i64;
        if new_head != head {
            conn.exec("UPDATE meta SET value = $1 WHERE key = 'seq'", &[&new_head])?;
            conn.exec("SELECT pg_notify($1, $2)", &[&CHANNEL, &new_head.to_string()])?;
        }
        conn.batch("COMMIT")?;
        Ok(value)
    })();
    if result.is_err() && !conn.client.is_closed() {
        let _ = conn.batch("ROLLBACK");
    }
    result
}

/// The node's one writing connection: batches of jobs, one transaction each.
struct Writer {
    target: Target,
    conn: Option<Conn>,
    /// The outage count when `conn` was opened.
    opened_after: u64,
    outages: Arc<AtomicU64>,
    storage: Arc<Mutex<Option<String>>>,
    jobs: flume::Receiver<Box<DynJob>>,
    poll: Duration,
    /// Set when the writer stops: the publisher stops after one more read-back.
    stopping: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self) {
        loop {
            let first = match self.jobs.recv_timeout(self.poll) {
                Ok(job) => job,
                Err(flume::RecvTimeoutError::Timeout) => {
                    // While the database is away, try it once per poll interval so that /healthz
                    // recovers even when nobody writes.
                    if self.troubled() {
                        let probe = self.connection().and_then(|c| Ok(c.batch("SELECT 1")?));
                        self.note(&probe);
                    }
                    continue;
                }
                Err(flume::RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = vec![first];
            batch.extend(self.jobs.try_iter().take(MAX_BATCH - 1));
            let commit = self.commit(&mut batch);
            self.note(&commit);
            for job in batch {
                job.finish(commit.clone());
            }
        }
        self.stopping.store(true, Ordering::Release);
    }

    /// The open connection, reconnecting when there is none or it broke.
    fn connection(&mut self) -> StoreResult<&mut Conn> {
        let outages = self.outages.load(Ordering::Acquire);
        if self
            .conn
            .as_ref()
            .is_some_and(|c| c.client.is_closed() || self.opened_after != outages)
        {
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = Some(Conn::open(&self.target)?);
            self.opened_after = outages;
        }
        Ok(self.conn.as_mut().expect("just opened"))
    }

    fn commit(&mut self, batch: &mut [Box<DynJob>]) -> StoreResult<()> {
        let conn = self.connection()?;
        let result = in_write_transaction(conn, |ctx| {
            for job in batch.iter_mut() {
                ctx.c.batch("SAVEPOINT job")?;
                if job.run(ctx) {
                    ctx.c.batch("RELEASE job")?;
                } else {
                    ctx.c.batch("ROLLBACK TO job; RELEASE job")?;
                }
            }
            Ok(())
        });
        if let Err(e) = &result {
            tracing::error!(error = %e, "database commit failed; the batch is rolled back");
        }
        result
    }

    fn troubled(&self) -> bool {
        self.storage.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Records whether the database can be used: the first failure and the recovery are logged once.
    fn note(&self, commit: &StoreResult<()>) {
        let mut storage = self.storage.lock().unwrap_or_else(|e| e.into_inner());
        match commit {
            Ok(()) => {
                if storage.take().is_some() {
                    tracing::info!("PostgreSQL can be written again");
                }
            }
            Err(StoreError::Unavailable(why)) => {
                self.outages.fetch_add(1, Ordering::AcqRel);
                if storage.is_none() {
                    tracing::error!(reason = %why,
                        "PostgreSQL cannot be written; writes are refused with server.storage_unavailable until it can");
                }
                *storage = Some(why.clone());
            }
            Err(_) => {}
        }
    }
}

/// Reads back what was committed (by any node) and publishes it to this node's hub, in cursor order.
struct Publisher {
    target: Target,
    /// The listening connection.
    conn: Option<Conn>,
    feed: mpsc::Sender<ChangeBatch>,
    published: Cursor,
    outages: Arc<AtomicU64>,
    poll: Duration,
    stopping: Arc<AtomicBool>,
    /// Logged once per outage.
    failing: bool,
}

impl Publisher {
    fn run(mut self) {
        loop {
            let last = self.stopping.load(Ordering::Acquire);
            match self.read_back() {
                Ok(Some(batch)) => {
                    self.published = batch.head;
                    // Blocking is right here, as in the SQLite store: if the hub falls behind, the feed
                    // waits rather than dropping changes.
                    if self.feed.blocking_send(batch).is_err() {
                        return;
                    }
                    self.recovered();
                    // More may have been committed meanwhile: look again before waiting.
                    continue;
                }
                Ok(None) => self.recovered(),
                Err(e) => {
                    if matches!(e, StoreError::Unavailable(_)) {
                        self.outages.fetch_add(1, Ordering::AcqRel);
                    }
                    if !self.failing {
                        tracing::error!(error = %e, "cannot read committed changes for the feed; retrying");
                        self.failing = true;
                    }
                    self.conn = None;
                }
            }
            if last {
                return;
            }
            self.wait();
        }
    }

    fn recovered(&mut self) {
        if std::mem::take(&mut self.failing) {
            tracing::info!("reading committed changes for the feed again");
        }
    }

    fn read_back(&mut self) -> StoreResult<Option<ChangeBatch>> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let mut conn = Conn::open(&self.target)?;
            conn.batch(&format!("LISTEN {CHANNEL}"))?;
            self.conn = Some(conn);
        }
        let published = self.published;
        let conn = self.conn.as_mut().expect("just opened");
        conn.snapshot(|c| collect_changes(c, published))
    }

    /// Waits for a commit's notification, or the poll interval.
    fn wait(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            std::thread::sleep(self.poll.min(Duration::from_secs(1)));
            return;
        };
        let mut notifications = conn.client.notifications();
        let rang = notifications.timeout_iter(self.poll).next();
        let broken = match rang {
            Ok(_) => {
                // Several commits may have rung: one read-back covers them all.
                let mut pending = notifications.iter();
                while let Ok(Some(_)) = pending.next() {}
                false
            }
            Err(_) => true,
        };
        drop(notifications);
        if broken {
            self.outages.fetch_add(1, Ordering::AcqRel);
            self.conn = None;
        }
    }
}

/// Keeps this node's registration alive, and, on the leader, expires the nodes that died.
struct Keeper {
    target: Target,
    conn: Option<Conn>,
    node: i64,
    name: String,
    lease_ms: i64,
    grace_ms: i64,
    /// Holds the advisory lock on its connection.
    leader: bool,
    /// When its connection was opened.
    connected_at: std::time::Instant,
    sessions: Arc<Mutex<HashSet<i64>>>,
    stopped: flume::Receiver<()>,
}

impl Keeper {
    fn run(mut self) {
        let every = Duration::from_millis((self.lease_ms / 3).max(100) as u64);
        let mut failing = false;
        loop {
            match self.tick() {
                Ok(()) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!(node = self.node, "this node's lease is renewed again");
                    }
                }
                Err(e) => {
                    // Once per outage: the writer and the readers say the rest.
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(error = %e, node = self.node, "cannot renew this node's lease; retrying");
                    }
                    self.conn = None;
                    self.leader = false;
                }
            }
            match self.stopped.recv_timeout(every) {
                Err(flume::RecvTimeoutError::Timeout) => {}
                _ => break,
            }
        }
        // A clean stop: the lease ends now, so the leader expires this node's sessions after the grace
        // period instead of after the whole lease.
        let node = self.node;
        if let Ok(conn) = self.connection() {
            let _ = conn.client.execute(
                &format!("UPDATE nodes SET lease_until = {NOW_MS} WHERE id = $1"),
                &[&node],
            );
        }
    }

    fn connection(&mut self) -> StoreResult<&mut Conn> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
            self.leader = false;
        }
        if self.conn.is_none() {
            self.conn = Some(Conn::open(&self.target)?);
            self.connected_at = std::time::Instant::now();
        }
        Ok(self.conn.as_mut().expect("just opened"))
    }

    fn tick(&mut self) -> StoreResult<()> {
        let (node, lease_ms) = (self.node, self.lease_ms);
        let conn = self.connection()?;
        let renewed = conn.client.execute(
            &format!("UPDATE nodes SET lease_until = {NOW_MS} + $2 WHERE id = $1"),
            &[&node, &lease_ms],
        )?;
        if renewed == 0 {
            self.rejoin()?;
        }
        if !self.leader {
            let conn = self.connection()?;
            self.leader = conn
                .client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])?
                .get(0);
            if self.leader {
                tracing::info!(
                    node = self.node,
                    "this node is the cluster's leader: it expires dead nodes"
                );
            }
        }
        // A leader that has just (re)connected waits one lease before expiring anyone: after an outage
        // of the database every lease has run out, and the other nodes need that long to renew theirs —
        // their accounts must not flicker offline meanwhile.
        let settled = self.connected_at.elapsed() >= Duration::from_millis(self.lease_ms as u64);
        if self.leader && settled {
            self.expire_dead_nodes()?;
            let conn = self.connection()?;
            conn.client.execute(
                "DELETE FROM login_attempts WHERE minute < (extract(epoch from now()) * 1000)::bigint / 60000 - 1",
                &[],
            )?;
        }
        Ok(())
    }

    /// The leader expired this node (it was paused, or cut off, for longer than its lease): register it
    /// again under the same id and put back the sessions it holds.
    fn rejoin(&mut self) -> StoreResult<()> {
        let (node, lease_ms, name) = (self.node, self.lease_ms, self.name.clone());
        let sessions: Vec<i64> = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        tracing::warn!(
            node,
            sessions = sessions.len(),
            "this node's registration had expired; registering again"
        );
        let conn = self.connection()?;
        in_write_transaction(conn, |ctx| {
            ctx.c.client.execute(
                &format!(
                    "INSERT INTO nodes (id, name, started_at, lease_until) VALUES ($1, $2, {NOW_MS}, {NOW_MS} + $3)"
                ),
                &[&node, &name, &lease_ms],
            )?;
            for account in sessions {
                ctx.c.exec(
                    "INSERT INTO node_sessions (account, node) SELECT $1, $2 WHERE EXISTS (SELECT 1 FROM accounts WHERE id = $1) \
                     ON CONFLICT DO NOTHING",
                    &[&account, &node],
                )?;
                refresh_state(ctx, AccountId(account as u64))?;
            }
            Ok(())
        })
    }

    /// Expires the nodes whose lease ran out more than the grace period ago, with their sessions.
    fn expire_dead_nodes(&mut self) -> StoreResult<()> {
        let grace_ms = self.grace_ms;
        let conn = self.connection()?;
        // Cheap check first: the write transaction (and its lock on the cursor) only when there is work.
        let due: bool = conn
            .client
            .query_one(
                &format!("SELECT EXISTS (SELECT 1 FROM nodes WHERE lease_until + $1 < {NOW_MS})"),
                &[&grace_ms],
            )?
            .get(0);
        if !due {
            return Ok(());
        }
        let (nodes, accounts) = in_write_transaction(conn, |ctx| {
            let dead: Vec<i64> = ctx
                .c
                .client
                .query(
                    &format!("DELETE FROM nodes WHERE lease_until + $1 < {NOW_MS} RETURNING id"),
                    &[&grace_ms],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            // The sessions went with their nodes (ON DELETE CASCADE); their accounts' states follow.
            let accounts: Vec<i64> = ctx
                .c
                .query(
                    "SELECT id FROM accounts a WHERE state != 0 AND NOT EXISTS \
                     (SELECT 1 FROM node_sessions s WHERE s.account = a.id)",
                    &[],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            for &account in &accounts {
                refresh_state(ctx, AccountId(account as u64))?;
            }
            Ok((dead, accounts.len()))
        })?;
        if !nodes.is_empty() {
            tracing::info!(
                ?nodes,
                accounts,
                "expired nodes whose lease ran out; their accounts are offline unless connected elsewhere"
            );
        }
        Ok(())
    }
}

fn now_ms() -> i64 {
    crate::util::now_ms()
}

/// An account's visible fields (the columns `id, name, name_v, avatar, avatar_v, signature,
/// signature_v, description, description_v, state, state_v, status, status_v`) with the cursor of each one's last change.
fn account_row(r: &Row) -> (AccountId, [(Cursor, Field); 6]) {
    let v = |i: usize| r.get::<_, i64>(i) as Cursor;
    (
        AccountId(r.get::<_, i64>(0) as u64),
        [
            (v(2), Field::Name(r.get(1))),
            (v(4), Field::Avatar(r.get(3))),
            (v(6), Field::Signature(r.get(5))),
            (v(8), Field::Description(r.get(7))),
            (v(10), Field::State(presence(r, 9))),
            (v(12), Field::Status(r.get(11))),
        ],
    )
}

fn presence(r: &Row, i: usize) -> Presence {
    Presence::from_index(u8::try_from(r.get::<_, i16>(i)).unwrap_or(0))
}

fn aid(r: &Row, i: usize) -> AccountId {
    AccountId(r.get::<_, i64>(i) as u64)
}

/// A client-supplied id as a database integer, saturating (see the SQLite store's `sql_id`).
fn sql_id(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

/// Reads every change stamped in `(after, head]`, ordered by cursor; `None` when nothing new was
/// committed. Call it inside [`Conn::snapshot`].
fn collect_changes(c: &mut Conn, after: Cursor) -> StoreResult<Option<ChangeBatch>> {
    let head = c
        .one("SELECT value FROM meta WHERE key = 'seq'", &[])?
        .get::<_, i64>(0) as Cursor;
    if head <= after {
        return Ok(None);
    }
    let (lo, hi) = (after as i64, head as i64);
    let mut changes = Vec::new();

    const ACCOUNTS: &str = "SELECT id, name, name_v, avatar, avatar_v, signature, signature_v, description, \
                            description_v, state, state_v, status, status_v FROM accounts WHERE v > $1 AND v <= $2";
    for row in c.query(ACCOUNTS, &[&lo, &hi])? {
        let (account, fields) = account_row(&row);
        // Fields changed by different writes carry different cursors and become separate changes, so
        // that a client's cursor never claims a change it has not seen.
        let mut by_cursor: BTreeMap<Cursor, Vec<Field>> = BTreeMap::new();
        for (v, field) in fields.into_iter().filter(|(v, _)| *v > after) {
            by_cursor.entry(v).or_default().push(field);
        }
        changes.extend(by_cursor.into_iter().map(|(cursor, fields)| Change::Fields {
            account,
            cursor,
            fields,
        }));
    }

    for r in c.query(
        "SELECT account, contact, unread, unread_v, read_up_to, read_v FROM unread WHERE v > $1 AND v <= $2",
        &[&lo, &hi],
    )? {
        let (owner, contact) = (aid(&r, 0), aid(&r, 1));
        let (unread_v, read_v) = (r.get::<_, i64>(3) as Cursor, r.get::<_, i64>(5) as Cursor);
        if unread_v > after {
            changes.push(Change::Unread {
                owner,
                contact,
                cursor: unread_v,
                unread: r.get::<_, i64>(2) as u32,
            });
        }
        if read_v > after {
            changes.push(Change::PeerRead {
                reader: owner,
                peer: contact,
                cursor: read_v,
                up_to: MessageId(r.get::<_, i64>(4) as u64),
            });
        }
    }

    for r in c.query(
        "SELECT id, sender, recipient, ts, text FROM messages WHERE id > $1 AND id <= $2 ORDER BY id",
        &[&lo, &hi],
    )? {
        let id = r.get::<_, i64>(0) as u64;
        changes.push(Change::Message {
            to: aid(&r, 2),
            cursor: id,
            message: Message {
                id: MessageId(id),
                from: aid(&r, 1),
                ts: r.get(3),
                text: r.get(4),
            },
        });
    }

    let mut revoked: BTreeMap<(Cursor, AccountId), Vec<KeyId>> = BTreeMap::new();
    for r in c.query(
        "SELECT account, revoked_v, id FROM keys WHERE revoked_v > $1 AND revoked_v <= $2 ORDER BY revoked_v",
        &[&lo, &hi],
    )? {
        revoked
            .entry((r.get::<_, i64>(1) as Cursor, aid(&r, 0)))
            .or_default()
            .push(KeyId(r.get(2)));
    }
    changes.extend(
        revoked
            .into_iter()
            .map(|((cursor, account), keys)| Change::KeysRevoked {
                account,
                cursor,
                keys,
            }),
    );

    changes.sort_by_key(Change::cursor);
    Ok(Some(ChangeBatch { head, changes }))
}

fn is_contact(c: &mut Conn, account: i64, contact: i64) -> StoreResult<bool> {
    Ok(c.opt(
        "SELECT 1 FROM contacts WHERE account = $1 AND contact = $2",
        &[&account, &contact],
    )?
    .is_some())
}

fn account_exists(c: &mut Conn, account: AccountId) -> StoreResult<()> {
    c.opt("SELECT 1 FROM accounts WHERE id = $1", &[&(account.0 as i64)])?
        .map(|_| ())
        .ok_or_else(|| StoreError::NotFound(format!("account {account}")))
}

/// Recomputes an account's visible state from its chosen state and whether any node has a stream of
/// it; stamps it if it changed.
fn refresh_state(ctx: &mut WriteCtx<'_>, account: AccountId) -> StoreResult<()> {
    let id = account.0 as i64;
    let row = ctx
        .c
        .opt(
            "SELECT chosen_state, state, EXISTS (SELECT 1 FROM node_sessions WHERE account = $1) \
             FROM accounts WHERE id = $1",
            &[&id],
        )?
        .ok_or_else(|| StoreError::NotFound(format!("account {account}")))?;
    let (chosen, state, connected): (i16, i16, bool) = (row.get(0), row.get(1), row.get(2));
    let visible = if connected {
        chosen
    } else {
        i16::from(Presence::Offline.to_index())
    };
    if visible != state {
        let s = ctx.stamp();
        ctx.c.exec(
            "UPDATE accounts SET state = $2, state_v = $3, v = GREATEST(v, $3) WHERE id = $1",
            &[&id, &visible, &s],
        )?;
    }
    Ok(())
}

fn revoke_keys(ctx: &mut WriteCtx<'_>, account: AccountId) -> StoreResult<usize> {
    let s = ctx.stamp();
    Ok(ctx.c.exec(
        "UPDATE keys SET revoked_v = $2 WHERE account = $1 AND revoked_v IS NULL",
        &[&(account.0 as i64), &s],
    )? as usize)
}

#[async_trait]
impl Store for PgStore {
    async fn head(&self) -> StoreResult<(Epoch, Cursor)> {
        let epoch = self.epoch;
        self.read(move |c| {
            let seq: i64 = c.one("SELECT value FROM meta WHERE key = 'seq'", &[])?.get(0);
            Ok((epoch, seq as Cursor))
        })
        .await
    }

    fn storage_problem(&self) -> Option<String> {
        self.storage.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn create_account(&self, login: &str, password_hash: &str, name: &str) -> StoreResult<AccountId> {
        let (login, hash, name) = (login.to_owned(), password_hash.to_owned(), name.to_owned());
        self.write(move |ctx| {
            if ctx
                .c
                .opt("SELECT 1 FROM accounts WHERE lower(login) = lower($1)", &[&login])?
                .is_some()
            {
                return Err(StoreError::AccountExists(login));
            }
            let s = ctx.stamp();
            let id: i64 = ctx
                .c
                .one(
                    "INSERT INTO accounts (login, password_hash, created_at, name, name_v, avatar_v, signature_v,
                                           description_v, state_v, status_v, v)
                     VALUES ($1, $2, $3, $4, $5, $5, $5, $5, $5, $5, $5) RETURNING id",
                    &[&login, &hash, &now_ms(), &name, &s],
                )?
                .get(0);
            Ok(AccountId(id as u64))
        })
        .await
    }

    async fn account_auth(&self, login: &str) -> StoreResult<Option<AccountAuth>> {
        let login = login.to_owned();
        self.read(move |c| {
            Ok(c.opt(
                "SELECT id, password_hash, disabled FROM accounts WHERE lower(login) = lower($1)",
                &[&login],
            )?
            .map(|r| AccountAuth {
                id: aid(&r, 0),
                password_hash: r.get(1),
                disabled: r.get(2),
            }))
        })
        .await
    }

    async fn account_id(&self, login: &str) -> StoreResult<Option<AccountId>> {
        Ok(self.account_auth(login).await?.map(|a| a.id))
    }

    async fn set_password(&self, account: AccountId, password_hash: &str) -> StoreResult<()> {
        let hash = password_hash.to_owned();
        self.write(move |ctx| {
            account_exists(ctx.c, account)?;
            ctx.c.exec(
                "UPDATE accounts SET password_hash = $2 WHERE id = $1",
                &[&(account.0 as i64), &hash],
            )?;
            revoke_keys(ctx, account)?;
            Ok(())
        })
        .await
    }

    async fn set_disabled(&self, account: AccountId, disabled: bool) -> StoreResult<()> {
        self.write(move |ctx| {
            account_exists(ctx.c, account)?;
            ctx.c.exec(
                "UPDATE accounts SET disabled = $2 WHERE id = $1",
                &[&(account.0 as i64), &disabled],
            )?;
            if disabled {
                revoke_keys(ctx, account)?;
            }
            Ok(())
        })
        .await
    }

    async fn me(&self, account: AccountId) -> StoreResult<Me> {
        self.read(move |c| {
            let r = c
                .opt(
                    "SELECT id, login, name, avatar, signature, description, state, chosen_state, status
                     FROM accounts WHERE id = $1",
                    &[&(account.0 as i64)],
                )?
                .ok_or_else(|| StoreError::NotFound(format!("account {account}")))?;
            Ok(Me {
                identity: Identity {
                    id: aid(&r, 0),
                    login: r.get(1),
                    name: r.get(2),
                    avatar: r.get(3),
                    signature: r.get(4),
                    description: r.get(5),
                },
                state: presence(&r, 6),
                chosen_state: presence(&r, 7),
                status: r.get(8),
            })
        })
        .await
    }

    async fn update_profile(&self, account: AccountId, change: ProfileChange) -> StoreResult<()> {
        self.write(move |ctx| {
            let r = ctx
                .c
                .opt(
                    "SELECT name, avatar, signature, description FROM accounts WHERE id = $1",
                    &[&(account.0 as i64)],
                )?
                .ok_or_else(|| StoreError::NotFound(format!("account {account}")))?;
            let (name, avatar, signature, description): (String, Option<String>, String, String) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            // Only values that differ are written, so that a widget is told about real changes only.
            let mut sets: Vec<(&str, Box<dyn ToSql + Sync + Send>)> = vec![];
            if let Some(v) = change.name.filter(|v| *v != name) {
                sets.push(("name", Box::new(v)));
            }
            if let Some(v) = change.avatar.filter(|v| *v != avatar) {
                sets.push(("avatar", Box::new(v)));
            }
            if let Some(v) = change.signature.filter(|v| *v != signature) {
                sets.push(("signature", Box::new(v)));
            }
            if let Some(v) = change.description.filter(|v| *v != description) {
                sets.push(("description", Box::new(v)));
            }
            if sets.is_empty() {
                return Ok(());
            }
            let s = ctx.stamp();
            let id = account.0 as i64;
            let assignments: Vec<String> = sets
                .iter()
                .enumerate()
                .map(|(i, (col, _))| format!("{col} = ${}, {col}_v = $1", i + 3))
                .collect();
            let sql = format!(
                "UPDATE accounts SET {}, v = $1 WHERE id = $2",
                assignments.join(", ")
            );
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&s, &id];
            params.extend(sets.iter().map(|(_, v)| v.as_ref() as &(dyn ToSql + Sync)));
            ctx.c.client.execute(&sql, &params)?;
            Ok(())
        })
        .await
    }

    async fn put_avatar(&self, hash: &str, mime: &str, bytes: Vec<u8>) -> StoreResult<()> {
        let (hash, mime) = (hash.to_owned(), mime.to_owned());
        self.write(move |ctx| {
            ctx.c.exec(
                "INSERT INTO avatars (hash, mime, data) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&hash, &mime, &bytes],
            )?;
            Ok(())
        })
        .await
    }

    async fn avatar(&self, hash: &str) -> StoreResult<Option<(String, Vec<u8>)>> {
        let hash = hash.to_owned();
        self.read(move |c| {
            Ok(c.opt("SELECT mime, data FROM avatars WHERE hash = $1", &[&hash])?
                .map(|r| (r.get(0), r.get(1))))
        })
        .await
    }

    async fn set_presence(
        &self,
        account: AccountId,
        state: Option<Presence>,
        status: Option<String>,
    ) -> StoreResult<()> {
        self.write(move |ctx| {
            let id = account.0 as i64;
            account_exists(ctx.c, account)?;
            if let Some(state) = state {
                ctx.c.exec(
                    "UPDATE accounts SET chosen_state = $2 WHERE id = $1",
                    &[&id, &i16::from(state.to_index())],
                )?;
                refresh_state(ctx, account)?;
            }
            if let Some(status) = status {
                let current: String = ctx
                    .c
                    .one("SELECT status FROM accounts WHERE id = $1", &[&id])?
                    .get(0);
                if current != status {
                    let s = ctx.stamp();
                    ctx.c.exec(
                        "UPDATE accounts SET status = $2, status_v = $3, v = $3 WHERE id = $1",
                        &[&id, &status, &s],
                    )?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn set_connected(&self, accounts: Vec<(AccountId, bool)>) -> StoreResult<()> {
        let Some(node) = self.node else {
            return Err(StoreError::Invalid(
                "only a serving node records connections".into(),
            ));
        };
        {
            let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            for &(account, connected) in &accounts {
                if connected {
                    sessions.insert(account.0 as i64);
                } else {
                    sessions.remove(&(account.0 as i64));
                }
            }
        }
        self.write(move |ctx| {
            for (account, connected) in accounts {
                let id = account.0 as i64;
                if connected {
                    ctx.c.exec(
                        "INSERT INTO node_sessions (account, node) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                        &[&id, &node],
                    )?;
                } else {
                    ctx.c.exec(
                        "DELETE FROM node_sessions WHERE account = $1 AND node = $2",
                        &[&id, &node],
                    )?;
                }
                refresh_state(ctx, account)?;
            }
            Ok(())
        })
        .await
    }

    async fn visible_accounts(&self) -> StoreResult<Vec<AccountId>> {
        // A node that just started has no sessions. Accounts other nodes have streams of stay visible;
        // those of dead nodes are the leader's to expire. What is left — visible with no stream on any
        // node — gets the grace period like a restarted single server's accounts.
        self.read(|c| {
            Ok(c.query(
                "SELECT id FROM accounts a WHERE state != 0 AND NOT EXISTS \
                 (SELECT 1 FROM node_sessions s WHERE s.account = a.id)",
                &[],
            )?
            .iter()
            .map(|r| aid(r, 0))
            .collect())
        })
        .await
    }

    async fn count_login_attempt(&self, buckets: Vec<String>) -> StoreResult<Option<Vec<u32>>> {
        // Not a change of the feed: no cursor, no writer; any connection counts it (autocommit). The
        // estimate slides over the last minute: this minute's count plus the previous minute's, weighed
        // by how much of it still lies within the last sixty seconds.
        self.read(move |c| {
            let mut counts = Vec::with_capacity(buckets.len());
            for bucket in &buckets {
                let r = c.one(
                    "WITH m AS (SELECT (extract(epoch from now()) * 1000)::bigint AS ms),
                          w AS (SELECT ms / 60000 AS minute, ms % 60000 AS into_ms FROM m),
                          up AS (INSERT INTO login_attempts (bucket, minute, n) SELECT $1, minute, 1 FROM w
                                 ON CONFLICT (bucket, minute) DO UPDATE SET n = login_attempts.n + 1 RETURNING n)
                     SELECT (SELECT n FROM up),
                            coalesce((SELECT a.n FROM login_attempts a, w WHERE a.bucket = $1 AND a.minute = w.minute - 1), 0),
                            (SELECT into_ms FROM w)",
                    &[bucket],
                )?;
                let (now, before, into_ms): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
                let estimate = now as f64 + before as f64 * (60_000 - into_ms) as f64 / 60_000.0;
                counts.push(estimate.ceil() as u32);
            }
            Ok(Some(counts))
        })
        .await
    }

    async fn insert_key(
        &self,
        account: AccountId,
        key_hash: [u8; 32],
        expires_at: i64,
    ) -> StoreResult<KeyId> {
        self.write(move |ctx| {
            let id: i64 = ctx
                .c
                .one(
                    "INSERT INTO keys (account, hash, created_at, expires_at) VALUES ($1, $2, $3, $4) RETURNING id",
                    &[&(account.0 as i64), &&key_hash[..], &now_ms(), &expires_at],
                )?
                .get(0);
            Ok(KeyId(id))
        })
        .await
    }

    async fn key(&self, key_hash: [u8; 32]) -> StoreResult<Option<KeyRecord>> {
        self.read(move |c| {
            Ok(c.opt(
                "SELECT id, account, expires_at, revoked_v IS NOT NULL FROM keys WHERE hash = $1",
                &[&&key_hash[..]],
            )?
            .map(|r| KeyRecord {
                id: KeyId(r.get(0)),
                account: aid(&r, 1),
                expires_at: r.get(2),
                revoked: r.get(3),
            }))
        })
        .await
    }

    async fn touch_key(&self, key: KeyId, expires_at: i64) -> StoreResult<()> {
        self.write(move |ctx| {
            ctx.c.exec(
                "UPDATE keys SET expires_at = GREATEST(expires_at, $2) WHERE id = $1",
                &[&key.0, &expires_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn revoke_key(&self, key: KeyId) -> StoreResult<()> {
        self.write(move |ctx| {
            let s = ctx.stamp();
            ctx.c.exec(
                "UPDATE keys SET revoked_v = $2 WHERE id = $1 AND revoked_v IS NULL",
                &[&key.0, &s],
            )?;
            Ok(())
        })
        .await
    }

    async fn revoke_all_keys(&self, account: AccountId) -> StoreResult<usize> {
        self.write(move |ctx| {
            account_exists(ctx.c, account)?;
            revoke_keys(ctx, account)
        })
        .await
    }

    async fn link(&self, a: AccountId, b: AccountId) -> StoreResult<()> {
        if a == b {
            return Err(StoreError::Invalid("an account cannot be its own contact".into()));
        }
        self.write(move |ctx| {
            account_exists(ctx.c, a)?;
            account_exists(ctx.c, b)?;
            ctx.c.exec(
                "INSERT INTO contacts (account, contact) VALUES ($1, $2), ($2, $1) ON CONFLICT DO NOTHING",
                &[&(a.0 as i64), &(b.0 as i64)],
            )?;
            Ok(())
        })
        .await
    }

    async fn contacts(&self, account: AccountId) -> StoreResult<Vec<Identity>> {
        self.read(move |c| {
            Ok(c.query(
                "SELECT a.id, a.login, a.name, a.avatar, a.signature, a.description
                 FROM contacts c JOIN accounts a ON a.id = c.contact
                 WHERE c.account = $1 ORDER BY lower(a.name), a.id",
                &[&(account.0 as i64)],
            )?
            .iter()
            .map(|r| Identity {
                id: aid(r, 0),
                login: r.get(1),
                name: r.get(2),
                avatar: r.get(3),
                signature: r.get(4),
                description: r.get(5),
            })
            .collect())
        })
        .await
    }

    async fn send_message(
        &self,
        from: AccountId,
        to: AccountId,
        client_id: &str,
        text: &str,
        ts: i64,
    ) -> StoreResult<Sent> {
        let (client_id, text) = (client_id.to_owned(), text.to_owned());
        self.write(move |ctx| {
            let (me, them) = (from.0 as i64, to.0 as i64);
            if let Some(r) = ctx.c.opt(
                "SELECT id, recipient, ts, text FROM messages WHERE sender = $1 AND client_id = $2",
                &[&me, &client_id],
            )? {
                let (id, recipient, ts, stored): (i64, AccountId, i64, String) =
                    (r.get(0), aid(&r, 1), r.get(2), r.get(3));
                if recipient != to || stored != text {
                    return Err(StoreError::Invalid(format!(
                        "client_id {client_id:?} was already used for a different message; use a new client_id \
                         for each new message"
                    )));
                }
                return Ok(Sent {
                    id: MessageId(id as u64),
                    ts,
                    duplicate: true,
                });
            }
            if !is_contact(ctx.c, me, them)? {
                return Err(StoreError::MessageNotContact(to));
            }
            let id = ctx.stamp();
            ctx.c.exec(
                "INSERT INTO messages (id, sender, recipient, client_id, ts, text) VALUES ($1, $2, $3, $4, $5, $6)",
                &[&id, &me, &them, &client_id, &ts, &text],
            )?;
            // The unread count changes under its own cursor, after the message's (see the SQLite store).
            let s = ctx.stamp();
            ctx.c.exec(
                "INSERT INTO unread (account, contact, unread, unread_v, v) VALUES ($1, $2, 1, $3, $3)
                 ON CONFLICT (account, contact) DO UPDATE SET unread = unread.unread + 1, unread_v = $3, v = $3",
                &[&them, &me, &s],
            )?;
            Ok(Sent {
                id: MessageId(id as u64),
                ts,
                duplicate: false,
            })
        })
        .await
    }

    async fn mark_read(&self, account: AccountId, contact: AccountId, up_to: MessageId) -> StoreResult<u32> {
        self.write(move |ctx| {
            let (me, them) = (account.0 as i64, contact.0 as i64);
            if !is_contact(ctx.c, me, them)? {
                return Err(StoreError::MessageNotContact(contact));
            }
            let (unread, read_up_to): (i64, i64) = ctx
                .c
                .opt(
                    "SELECT unread, read_up_to FROM unread WHERE account = $1 AND contact = $2",
                    &[&me, &them],
                )?
                .map_or((0, 0), |r| (r.get(0), r.get(1)));
            // The marker moves to the newest real message at or before `up_to`, and only forward.
            let newest: Option<i64> = ctx
                .c
                .one(
                    "SELECT max(id) FROM messages WHERE recipient = $1 AND sender = $2 AND id <= $3",
                    &[&me, &them, &sql_id(up_to.0)],
                )?
                .get(0);
            let Some(newest) = newest.filter(|n| *n > read_up_to) else {
                return Ok(unread as u32);
            };
            let left: i64 = ctx
                .c
                .one(
                    "SELECT count(*) FROM messages WHERE recipient = $1 AND sender = $2 AND id > $3",
                    &[&me, &them, &newest],
                )?
                .get(0);
            let s = ctx.stamp();
            ctx.c.exec(
                "UPDATE unread SET read_up_to = $3, read_v = $5, v = $5,
                    unread_v = CASE WHEN unread != $4 THEN $5 ELSE unread_v END, unread = $4
                 WHERE account = $1 AND contact = $2",
                &[&me, &them, &newest, &left, &s],
            )?;
            Ok(left as u32)
        })
        .await
    }

    async fn history(
        &self,
        account: AccountId,
        contact: AccountId,
        before: Option<MessageId>,
        limit: u32,
    ) -> StoreResult<HistoryPage> {
        self.read(move |c| {
            c.snapshot(|c| {
                let (me, them) = (account.0 as i64, contact.0 as i64);
                if !is_contact(c, me, them)? {
                    return Err(StoreError::MessageNotContact(contact));
                }
                let before = before.map_or(i64::MAX, |b| sql_id(b.0));
                let mut messages: Vec<HistoryMessage> = c
                    .query(
                        "SELECT id, sender, recipient, ts, text, NULL::text FROM messages
                           WHERE recipient = $1 AND sender = $2 AND id < $3
                         UNION ALL
                         SELECT id, sender, recipient, ts, text, client_id FROM messages
                           WHERE recipient = $2 AND sender = $1 AND id < $3
                         ORDER BY id DESC LIMIT $4",
                        &[&me, &them, &before, &(i64::from(limit) + 1)],
                    )?
                    .iter()
                    .map(|r| HistoryMessage {
                        id: MessageId(r.get::<_, i64>(0) as u64),
                        from: aid(r, 1),
                        to: aid(r, 2),
                        ts: r.get(3),
                        text: r.get(4),
                        client_id: r.get(5),
                    })
                    .collect();
                let more = messages.len() > limit as usize;
                messages.truncate(limit as usize);
                let mut row = |a: i64, b: i64| -> StoreResult<(u32, u64)> {
                    Ok(c.opt(
                        "SELECT unread, read_up_to FROM unread WHERE account = $1 AND contact = $2",
                        &[&a, &b],
                    )?
                    .map_or((0, 0), |r| (r.get::<_, i64>(0) as u32, r.get::<_, i64>(1) as u64)))
                };
                let (unread, read_up_to) = row(me, them)?;
                let (_, peer_read_up_to) = row(them, me)?;
                Ok(HistoryPage {
                    messages,
                    more,
                    read_up_to: MessageId(read_up_to),
                    peer_read_up_to: MessageId(peer_read_up_to),
                    unread,
                })
            })
        })
        .await
    }

    async fn record_calls(&self, calls: Vec<Finished>) -> StoreResult<()> {
        self.write(move |ctx| {
            for call in &calls {
                ctx.c.exec(
                    "INSERT INTO calls (caller, callee, video, ts, duration_ms, reason) VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        &(call.caller.0 as i64),
                        &(call.callee.0 as i64),
                        &call.video,
                        &call.placed_ms,
                        &call.duration_ms.map(|d| d as i64),
                        &call.reason.as_str(),
                    ],
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn calls(
        &self,
        account: AccountId,
        contact: AccountId,
        before: Option<u64>,
        limit: u32,
    ) -> StoreResult<CallHistoryPage> {
        self.read(move |c| {
            c.snapshot(|c| {
                let (me, them) = (account.0 as i64, contact.0 as i64);
                if !is_contact(c, me, them)? {
                    return Err(StoreError::MessageNotContact(contact));
                }
                let before = before.map_or(i64::MAX, sql_id);
                let mut calls: Vec<CallRecord> = c
                    .query(
                        "SELECT id, caller, callee, video, ts, duration_ms, reason FROM calls
                           WHERE caller = $1 AND callee = $2 AND id < $3
                         UNION ALL
                         SELECT id, caller, callee, video, ts, duration_ms, reason FROM calls
                           WHERE caller = $2 AND callee = $1 AND id < $3
                         ORDER BY id DESC LIMIT $4",
                        &[&me, &them, &before, &(i64::from(limit) + 1)],
                    )?
                    .iter()
                    .map(|r| CallRecord {
                        id: r.get::<_, i64>(0) as u64,
                        caller: aid(r, 1),
                        callee: aid(r, 2),
                        video: r.get(3),
                        ts: r.get(4),
                        duration_ms: r.get::<_, Option<i64>>(5).map(|d| d as u64),
                        // Written by this code from the same list; an unknown name would be a newer
                        // build's, and reads as the plainest ending.
                        reason: CallEnd::from_name(r.get(6)).unwrap_or(CallEnd::Hangup),
                    })
                    .collect();
                let more = calls.len() > limit as usize;
                calls.truncate(limit as usize);
                Ok(CallHistoryPage { calls, more })
            })
        })
        .await
    }

    async fn sync(
        &self,
        account: AccountId,
        pins: &[AccountId],
        since: Option<Since>,
        limits: SyncLimits,
    ) -> StoreResult<Snapshot> {
        let pins = pins.to_vec();
        let epoch = self.epoch;
        self.read(move |c| c.snapshot(|c| sync(c, epoch, account, &pins, since, limits)))
            .await
    }
}

/// The state of `pins` for `account` (see [`Store::sync`]); call it inside [`Conn::snapshot`] so that
/// the snapshot and its cursor describe the same instant.
fn sync(
    c: &mut Conn,
    epoch: Epoch,
    account: AccountId,
    pins: &[AccountId],
    since: Option<Since>,
    limits: SyncLimits,
) -> StoreResult<Snapshot> {
    let head = c
        .one("SELECT value FROM meta WHERE key = 'seq'", &[])?
        .get::<_, i64>(0) as Cursor;
    let me = account.0 as i64;

    let contacts: HashSet<AccountId> = c
        .query("SELECT contact FROM contacts WHERE account = $1", &[&me])?
        .iter()
        .map(|r| aid(r, 0))
        .collect();
    let strangers: Vec<AccountId> = pins.iter().copied().filter(|p| !contacts.contains(p)).collect();
    if !strangers.is_empty() {
        return Err(StoreError::PinNotContact(strangers));
    }

    // A resume is usable when its cursor is from this database and not from its future, and when it
    // would not drag an unbounded backlog of messages along.
    let mut resume = since.filter(|s| s.epoch == epoch && s.cursor <= head);
    if let Some(s) = &resume {
        let mut missed = 0u64;
        for pin in pins.iter().filter(|p| !s.fresh.contains(p)) {
            let n: i64 = c
                .one(
                    "SELECT count(*) FROM messages WHERE recipient = $1 AND sender = $2 AND id > $3",
                    &[&me, &(pin.0 as i64), &(s.cursor as i64)],
                )?
                .get(0);
            missed += n as u64;
        }
        if missed > u64::from(limits.resume_messages) {
            resume = None;
        }
    }

    let mut updates = Vec::new();
    let mut messages = Vec::new();
    for &pin in pins {
        let them = pin.0 as i64;
        // `None`: the client holds nothing for this pin and gets everything.
        let after = resume
            .as_ref()
            .filter(|s| !s.fresh.contains(&pin))
            .map(|s| s.cursor);
        let row = c.one(
            "SELECT id, name, name_v, avatar, avatar_v, signature, signature_v, description, \
             description_v, state, state_v, status, status_v FROM accounts WHERE id = $1",
            &[&them],
        )?;
        let (_, fields) = account_row(&row);
        let mut fields: Vec<Field> = fields
            .into_iter()
            .filter(|(v, _)| after.is_none_or(|a| *v > a))
            .map(|(_, f)| f)
            .collect();

        let mut unread_row = |a: i64, b: i64| -> StoreResult<(u32, u64, u64, u64)> {
            Ok(c.opt(
                "SELECT unread, unread_v, read_up_to, read_v FROM unread WHERE account = $1 AND contact = $2",
                &[&a, &b],
            )?
            .map_or((0, 0, 0, 0), |r| {
                (
                    r.get::<_, i64>(0) as u32,
                    r.get::<_, i64>(1) as u64,
                    r.get::<_, i64>(2) as u64,
                    r.get::<_, i64>(3) as u64,
                )
            }))
        };
        let (unread, unread_v, read_up_to, _) = unread_row(me, them)?;
        let (_, _, peer_read, peer_read_v) = unread_row(them, me)?;
        if after.is_none_or(|a| unread_v > a) {
            fields.push(Field::Unread(unread));
        }
        if after.is_none_or(|a| peer_read_v > a) {
            fields.push(Field::PeerRead(MessageId(peer_read)));
        }

        let rows = match after {
            None => c.query(
                "SELECT id, ts, text FROM messages WHERE recipient = $1 AND sender = $2 AND id > $3 \
                 ORDER BY id DESC LIMIT $4",
                &[&me, &them, &(read_up_to as i64), &i64::from(limits.hints_per_contact)],
            )?,
            Some(a) => c.query(
                "SELECT id, ts, text FROM messages WHERE recipient = $1 AND sender = $2 AND id > $3 ORDER BY id",
                &[&me, &them, &(a as i64)],
            )?,
        };
        messages.extend(rows.iter().map(|r| Message {
            id: MessageId(r.get::<_, i64>(0) as u64),
            from: pin,
            ts: r.get(1),
            text: r.get(2),
        }));
        if !fields.is_empty() {
            updates.push(ContactUpdate { id: pin, fields });
        }
    }
    messages.sort_by_key(|m| m.id);
    Ok(Snapshot {
        sub: 0,
        cursor: head,
        full: resume.is_none(),
        contacts: updates,
        messages,
    })
}

/// What [`import_sqlite`] copied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Imported {
    /// Accounts.
    pub accounts: u64,
    /// Messages.
    pub messages: u64,
    /// Rows of every table together.
    pub rows: u64,
    /// The cursor the database continues from.
    pub cursor: Cursor,
}

/// Copies a SQLite database (of the current schema, the server stopped) into an empty PostgreSQL
/// database, in one transaction: ids, cursors, versions and the epoch are kept, so keys stay valid and
/// clients resume from their cursors on the cluster. Refuses a PostgreSQL database that holds data.
/// Blocking, on a thread of its own (see [`PgStore::open`]).
pub async fn import_sqlite(url: &str, ca: Option<&Path>, path: &Path) -> StoreResult<Imported> {
    let (url, ca, path) = (url.to_owned(), ca.map(Path::to_owned), path.to_owned());
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("pg-import".into())
        .spawn(move || {
            let _ = tx.send(import_blocking(&url, ca.as_deref(), &path));
        })
        .map_err(|e| StoreError::Db(format!("cannot start a thread: {e}")))?;
    rx.await
        .map_err(|_| StoreError::Db("the import failed (see the log)".into()))?
}

fn import_blocking(url: &str, ca: Option<&Path>, path: &Path) -> StoreResult<Imported> {
    use rusqlite::OpenFlags;
    let lite = rusqlite::Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| StoreError::Invalid(format!("cannot open {}: {e}", path.display())))?;
    let version: u32 = lite.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version != super::schema::SCHEMA_VERSION {
        return Err(StoreError::Invalid(format!(
            "{} has schema version {version}; this pinchat-server imports version {} only: start this \
             version of pinchat-server on the file once (it migrates it), stop it, then import",
            path.display(),
            super::schema::SCHEMA_VERSION
        )));
    }
    let target = connect_config(url, "import", ca)?;
    let mut pg = Conn::open(&target)?;
    migrate(&mut pg)?;
    in_write_transaction(&mut pg, |ctx| {
        let held: i64 = ctx.c.one("SELECT count(*) FROM accounts", &[])?.get(0);
        if held > 0 || ctx.head > 0 {
            return Err(StoreError::Invalid(
                "the PostgreSQL database already holds data: import into an empty database".into(),
            ));
        }
        let mut done = Imported::default();
        let meta = |key: &str| -> rusqlite::Result<i64> {
            lite.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        };
        let (epoch, seq) = (meta("epoch")?, meta("seq")?);

        // Each table: the SQLite columns, read as SQLite stores them, and the PostgreSQL insert.
        let mut rows = lite.prepare(
            "SELECT id, login, password_hash, disabled, created_at, name, name_v, avatar, avatar_v, signature,
                    signature_v, description, description_v, chosen_state, state, state_v, status, status_v, v
             FROM accounts ORDER BY id",
        )?;
        let mut q = rows.query([])?;
        while let Some(r) = q.next()? {
            let small = |i: usize| -> rusqlite::Result<i16> { Ok(r.get::<_, i64>(i)? as i16) };
            ctx.c.exec(
                "INSERT INTO accounts (id, login, password_hash, disabled, created_at, name, name_v, avatar,
                     avatar_v, signature, signature_v, description, description_v, chosen_state, state, state_v,
                     status, status_v, v)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
                &[
                    &r.get::<_, i64>(0)?,
                    &r.get::<_, String>(1)?,
                    &r.get::<_, String>(2)?,
                    &r.get::<_, bool>(3)?,
                    &r.get::<_, i64>(4)?,
                    &r.get::<_, String>(5)?,
                    &r.get::<_, i64>(6)?,
                    &r.get::<_, Option<String>>(7)?,
                    &r.get::<_, i64>(8)?,
                    &r.get::<_, String>(9)?,
                    &r.get::<_, i64>(10)?,
                    &r.get::<_, String>(11)?,
                    &r.get::<_, i64>(12)?,
                    &small(13)?,
                    &small(14)?,
                    &r.get::<_, i64>(15)?,
                    &r.get::<_, String>(16)?,
                    &r.get::<_, i64>(17)?,
                    &r.get::<_, i64>(18)?,
                ],
            )?;
            done.accounts += 1;
        }
        drop(q);

        let mut rows = lite.prepare("SELECT hash, mime, data FROM avatars")?;
        let mut q = rows.query([])?;
        while let Some(r) = q.next()? {
            ctx.c.exec(
                "INSERT INTO avatars (hash, mime, data) VALUES ($1, $2, $3)",
                &[
                    &r.get::<_, String>(0)?,
                    &r.get::<_, String>(1)?,
                    &r.get::<_, Vec<u8>>(2)?,
                ],
            )?;
            done.rows += 1;
        }
        drop(q);

        let mut rows = lite
            .prepare("SELECT id, account, hash, created_at, expires_at, revoked_v FROM keys ORDER BY id")?;
        let mut q = rows.query([])?;
        while let Some(r) = q.next()? {
            ctx.c.exec(
                "INSERT INTO keys (id, account, hash, created_at, expires_at, revoked_v) VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &r.get::<_, i64>(0)?,
                    &r.get::<_, i64>(1)?,
                    &r.get::<_, Vec<u8>>(2)?,
                    &r.get::<_, i64>(3)?,
                    &r.get::<_, i64>(4)?,
                    &r.get::<_, Option<i64>>(5)?,
                ],
            )?;
            done.rows += 1;
        }
        drop(q);

        let mut rows = lite.prepare("SELECT account, contact FROM contacts")?;
        let mut q = rows.query([])?;
        while let Some(r) = q.next()? {
            ctx.c.exec(
                "INSERT INTO contacts (account, contact) VALUES ($1, $2)",
                &[&r.get::<_, i64>(0)?, &r.get::<_, i64>(1)?],
            )?;
            done.rows += 1;
        }
        drop(q);

        let mut rows =
            lite.prepare("SELECT id, sender, recipient, client_id, ts, text FROM messages ORDER BY id")?;
        let mut q = rows.query([])?;
        while let Some(r) = q.next()? {
            ctx.c.exec(
                "INSERT INTO messages (id, sender, recipient, client_id, ts, text) VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &r.get::<_, i64>(0)?,
                    &r.get::<_, i64>(1)?,
                    &r.get::<_, i64>(2)?,
                    &r.get::<_, String>(3)?,
                    &r.get::<_, i64>(4)?,
                    &r.get::<_, String>(5)?,
                ],
            )?;
            done.messages += 1;
        }
        drop(q);

        let mut rows =
            lite.prepare("SELECT account, contact, unread, unread_v, read_up_to, read_v, v FROM unread")?;
        let mut q = rows.query([])?;
        while let Some(r) = q.next()? {
            ctx.c.exec(
                "INSERT INTO unread (account, contact, unread, unread_v, read_up_to, read_v, v)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &r.get::<_, i64>(0)?,
                    &r.get::<_, i64>(1)?,
                    &r.get::<_, i64>(2)?,
                    &r.get::<_, i64>(3)?,
                    &r.get::<_, i64>(4)?,
                    &r.get::<_, i64>(5)?,
                    &r.get::<_, i64>(6)?,
                ],
            )?;
            done.rows += 1;
        }
        drop(q);

        let mut rows =
            lite.prepare("SELECT id, caller, callee, video, ts, duration_ms, reason FROM calls ORDER BY id")?;
        let mut q = rows.query([])?;
        while let Some(r) = q.next()? {
            ctx.c.exec(
                "INSERT INTO calls (id, caller, callee, video, ts, duration_ms, reason) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &r.get::<_, i64>(0)?,
                    &r.get::<_, i64>(1)?,
                    &r.get::<_, i64>(2)?,
                    &r.get::<_, bool>(3)?,
                    &r.get::<_, i64>(4)?,
                    &r.get::<_, Option<i64>>(5)?,
                    &r.get::<_, String>(6)?,
                ],
            )?;
            done.rows += 1;
        }
        drop(q);

        // Identity columns continue after the copied ids.
        ctx.c.batch(
            "SELECT setval(pg_get_serial_sequence('accounts', 'id'), coalesce(max(id), 0) + 1, false) FROM accounts;
             SELECT setval(pg_get_serial_sequence('keys', 'id'), coalesce(max(id), 0) + 1, false) FROM keys;
             SELECT setval(pg_get_serial_sequence('calls', 'id'), coalesce(max(id), 0) + 1, false) FROM calls;",
        )?;
        // The epoch is the SQLite database's: clients' cursors stay valid.
        ctx.c
            .exec("UPDATE meta SET value = $1 WHERE key = 'epoch'", &[&epoch])?;
        ctx.head = seq as Cursor;
        done.rows += done.accounts + done.messages;
        done.cursor = ctx.head;
        Ok(done)
    })
}
