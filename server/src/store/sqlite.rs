//! [`Store`] on an embedded SQLite database.
//!
//! One dedicated thread owns the only writing connection. Writes arrive as jobs on a bounded channel;
//! the thread takes every job waiting (up to [`MAX_BATCH`]), runs each in its own savepoint inside one
//! `BEGIN IMMEDIATE` transaction, commits once with `synchronous=FULL`, and only then answers the callers:
//! an acknowledged write is on disk, and a burst of writes costs one fsync (group commit). After each
//! commit the thread reads back everything stamped since it last published and sends it on the change
//! feed, so the feed is in cursor order by construction. When idle it looks for commits by other
//! processes (the admin commands) every `external_poll` and publishes those too.
//!
//! Reads run on a small pool of read-only connections in `spawn_blocking`; WAL lets them proceed while
//! the writer commits.

use super::schema;
use super::*;
use pinchat_proto::http::CallRecord;
use pinchat_proto::stream::{CallEnd, Snapshot};
use pinchat_proto::{ContactUpdate, http::HistoryMessage};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most jobs committed in one transaction.
pub const MAX_BATCH: usize = 512;

/// How the store is opened.
#[derive(Debug)]
pub struct SqliteOptions {
    /// Where committed changes are published; `None` for tools that only write (the admin commands).
    pub feed: Option<mpsc::Sender<ChangeBatch>>,
    /// How often an idle writer looks for commits made by other processes.
    pub external_poll: Duration,
    /// Most read connections open, and reads running, at once.
    pub readers: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            feed: None,
            external_poll: Duration::from_secs(1),
            readers: 4,
        }
    }
}

/// Prepared statements kept per connection: more than the store has fixed statements.
const STATEMENT_CACHE: usize = 96;

/// The SQLite store. Dropping it lets the writer finish the jobs already queued and stop; join the
/// returned [`StoreThreads`] to wait for that.
pub struct SqliteStore {
    jobs: flume::Sender<Box<DynJob>>,
    readers: Arc<ReaderPool>,
    epoch: Epoch,
    /// Why writes fail just now, set and cleared by the writer.
    storage: Arc<Mutex<Option<String>>>,
}

impl SqliteStore {
    /// Opens (creating and migrating as needed) the database at `path`.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<(SqliteStore, StoreThreads), StoreError> {
        let (mut conn, read_only) = match open_writer(path) {
            // SQLite falls back to reading a file it cannot write: the disk is read-only. Serve reads;
            // the writer reopens the database for writing once it can.
            Ok(conn) => {
                let read_only = conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false);
                (conn, read_only)
            }
            // A WAL database on a read-only disk whose shared-memory file is gone (after a clean stop)
            // can only be read as an immutable file.
            Err(e)
                if path.exists()
                    && matches!(
                        e.sqlite_error_code(),
                        Some(rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::ReadOnly)
                    ) =>
            {
                let conn = open_immutable(path)
                    .map_err(|_| StoreError::Db(format!("cannot open database {}: {e}", path.display())))?;
                (conn, true)
            }
            Err(e) => {
                return Err(StoreError::Db(format!(
                    "cannot open database {}: {e}",
                    path.display()
                )));
            }
        };
        schema::migrate(&mut conn)?.map_err(StoreError::Db)?;
        let storage = Arc::new(Mutex::new(None));
        if read_only {
            let why = format!(
                "the database {} is read-only (read-only file system or permissions): reads are served, \
                 every write fails with server.storage_unavailable until it can be written again",
                path.display()
            );
            tracing::error!("{why}");
            *storage.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        }
        let epoch: i64 = conn
            .prepare_cached("SELECT value FROM meta WHERE key = 'epoch'")?
            .query_row([], |r| r.get(0))?;
        let published = read_seq(&conn)?;

        let checkpointer = Checkpointer::start(path)?;
        let (tx, rx) = flume::bounded::<Box<DynJob>>(4 * MAX_BATCH);
        let readers = Arc::new(ReaderPool {
            path: path.to_owned(),
            max: options.readers.max(1),
            permits: Arc::new(tokio::sync::Semaphore::new(options.readers.max(1))),
            idle: Mutex::new(vec![]),
            read_only: std::sync::atomic::AtomicBool::new(read_only),
        });
        let writer = Writer {
            conn,
            path: path.to_owned(),
            storage: storage.clone(),
            readers: readers.clone(),
            checkpointer: Some(checkpointer),
            commits: 0,
            jobs: rx,
            feed: options.feed,
            external_poll: options.external_poll,
            published,
        };
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Db(format!("cannot start the writer thread: {e}")))?;
        Ok((
            SqliteStore {
                jobs: tx,
                readers,
                epoch: epoch as u64,
                storage,
            },
            StoreThreads(vec![thread]),
        ))
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
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let pool = self.readers.clone();
        // At most `max` reads at once: a burst of requests waits here rather than filling the blocking
        // pool with hundreds of threads, each opening its own connection with its own page cache.
        let permit = pool
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = pool
                .take()
                .inspect_err(|e| tracing::debug!(error = %e, "cannot open a read connection"))?;
            let result = f(&conn);
            if let Err(e) = &result {
                tracing::debug!(error = %e, "a read failed");
            }
            pool.put(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Db(format!("read task failed: {e}")))?
    }
}

struct ReaderPool {
    path: PathBuf,
    max: usize,
    /// One per connection that may be in use at once.
    permits: Arc<tokio::sync::Semaphore>,
    idle: Mutex<Vec<Connection>>,
    /// The database is on a disk that cannot be written: connections fall back to reading it as an
    /// immutable file when SQLite cannot share its WAL's shared memory. Cleared once the writer can
    /// write again.
    read_only: std::sync::atomic::AtomicBool,
}

impl ReaderPool {
    fn take(&self) -> StoreResult<Connection> {
        if let Some(conn) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(conn);
        }
        let plain = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )
        .and_then(|c| {
            c.query_row("SELECT 1 FROM meta LIMIT 1", [], |_| Ok(()))
                .map(|()| c)
        });
        let conn = match plain {
            Err(_) if self.read_only.load(std::sync::atomic::Ordering::Relaxed) => {
                open_immutable(&self.path)?
            }
            other => other?,
        };
        conn.busy_timeout(Duration::from_secs(10))?;
        // Every fixed statement is prepared once per connection and reused (see BENCHMARKS.md, latency).
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }

    fn put(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max {
            idle.push(conn);
        }
    }

    /// Closes every read connection, if none is in use; returns the permits that keep new reads out
    /// until they are dropped.
    fn close_all(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let permits = self.permits.try_acquire_many(self.max as u32).ok()?;
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
        Some(permits)
    }
}

/// A queued write, as this store's writer runs it.
type DynJob = dyn for<'c> Job<WriteCtx<'c>>;

/// What a write job sees: the open transaction and the cursor counter.
pub struct WriteCtx<'c> {
    conn: &'c Connection,
    head: Cursor,
}

impl WriteCtx<'_> {
    /// Takes the next cursor value for a change in this transaction.
    fn stamp(&mut self) -> i64 {
        self.head += 1;
        self.head as i64
    }
}

/// Commits between two checkpoints: the WAL grows by a few pages per commit, so this keeps it near the
/// size SQLite's own auto-checkpoint (1000 pages) would.
const CHECKPOINT_EVERY: u64 = 250;

/// The thread that checkpoints the WAL when the writer asks.
struct Checkpointer {
    wake: flume::Sender<()>,
    /// Set when the writer had to reopen the database (it was read-only): the checkpointer's own
    /// connection, opened read-only then, is replaced before the next checkpoint.
    reopen: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Checkpointer, StoreError> {
        let open = |path: &Path| -> rusqlite::Result<Connection> {
            let conn = Connection::open(path)?;
            conn.busy_timeout(Duration::from_secs(10))?;
            Ok(conn)
        };
        // Opened at the first checkpoint, not before: a connection opened while the disk is read-only
        // would stay read-only (see `Writer::reopen_if_read_only`).
        let mut conn: Option<Connection> = None;
        let path = path.to_owned();
        let reopen = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = reopen.clone();
        let (wake, rx) = flume::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    if flag.swap(false, std::sync::atomic::Ordering::Relaxed) {
                        conn = None;
                    }
                    if conn.is_none() {
                        match open(&path) {
                            Ok(c) => conn = Some(c),
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot open the database for checkpoints");
                                continue;
                            }
                        }
                    }
                    let Some(c) = &conn else { continue };
                    if let Err(e) = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::warn!(error = %e, "WAL checkpoint failed; it is retried later");
                    }
                }
            })
            .map_err(|e| StoreError::Db(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer { wake, reopen, thread })
    }
}

/// Opens a database on a read-only disk as an immutable file (what SQLite can read without its `-shm`).
fn open_immutable(path: &Path) -> rusqlite::Result<Connection> {
    let escaped: String = path
        .to_string_lossy()
        .chars()
        .map(|c| match c {
            '%' => "%25".to_owned(),
            '?' => "%3f".to_owned(),
            '#' => "%23".to_owned(),
            c => c.to_string(),
        })
        .collect();
    let conn = Connection::open_with_flags(
        format!("file:{escaped}?immutable=1"),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Opens the writer's connection: WAL, durable commits, foreign keys. On a file that cannot be written
/// SQLite opens it read-only; the writer notices and reopens it once it can.
fn open_writer(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!("cannot switch to WAL mode (got {mode})")),
        ));
    }
    // FULL: a commit is durable once acknowledged, which is what "stored before acknowledged" needs.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // Every fixed statement is prepared once per connection and reused (see BENCHMARKS.md, latency).
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // The writer never checkpoints: copying the WAL into the database file (and its fsync) would stall
    // the commits waiting behind it. A separate connection does it, PASSIVE, without blocking writes.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    Ok(conn)
}

struct Writer {
    conn: Connection,
    path: PathBuf,
    /// Shared with the store: why writes fail, while they do.
    storage: Arc<Mutex<Option<String>>>,
    readers: Arc<ReaderPool>,
    checkpointer: Option<Checkpointer>,
    commits: u64,
    jobs: flume::Receiver<Box<DynJob>>,
    feed: Option<mpsc::Sender<ChangeBatch>>,
    external_poll: Duration,
    published: Cursor,
}

impl Writer {
    fn run(mut self) {
        loop {
            let first = match self.jobs.recv_timeout(self.external_poll) {
                Ok(job) => job,
                Err(flume::RecvTimeoutError::Timeout) => {
                    // While writes fail, probe once per poll interval so that /healthz recovers even
                    // when nobody writes; when all is well this costs nothing.
                    if self.troubled() {
                        self.probe();
                    }
                    self.publish();
                    continue;
                }
                Err(flume::RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = vec![first];
            batch.extend(self.jobs.try_iter().take(MAX_BATCH - 1));
            self.reopen_if_read_only();
            let commit = self.commit(&mut batch);
            self.note(&commit);
            for job in batch {
                job.finish(commit.clone());
            }
            self.publish();
            self.commits += 1;
            if self.commits.is_multiple_of(CHECKPOINT_EVERY)
                && let Some(c) = &self.checkpointer
            {
                // Full means a checkpoint is already due: nothing is lost by not asking twice.
                let _ = c.wake.try_send(());
            }
        }
        self.publish();
        if let Some(c) = self.checkpointer.take() {
            drop(c.wake);
            let _ = c.thread.join();
        }
        // Closing the writer's connection checkpoints what is left.
    }

    fn troubled(&self) -> bool {
        self.storage.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Records whether writes work: the first failure and the recovery are logged once each.
    fn note(&self, commit: &Result<(), StoreError>) {
        let mut storage = self.storage.lock().unwrap_or_else(|e| e.into_inner());
        match commit {
            Ok(()) => {
                if storage.take().is_some() {
                    tracing::info!(database = %self.path.display(), "the database can be written again");
                }
            }
            Err(StoreError::Unavailable(why)) => {
                if storage.is_none() {
                    tracing::error!(database = %self.path.display(), reason = %why,
                        "the database cannot be written; writes are refused with server.storage_unavailable until it can");
                }
                *storage = Some(format!("{why}: {}", self.path.display()));
            }
            Err(_) => {}
        }
    }

    /// A connection SQLite opened read-only stays so; once the file system allows writing again, a new
    /// one replaces it. Tried before each batch and each probe while read-only (an open that fails on a
    /// read-only disk costs well under a millisecond).
    ///
    /// Every connection of the process to the file is closed first, because SQLite shares a WAL
    /// database's shared memory between them: one that mapped it read-only would keep the new one
    /// read-only too. So this waits for a moment with no read in flight.
    fn reopen_if_read_only(&mut self) {
        if !self.conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
            return;
        }
        let readers = self.readers.clone();
        let Some(_no_reads) = readers.close_all() else {
            return;
        };
        let Ok(placeholder) = Connection::open_in_memory() else {
            return;
        };
        drop(std::mem::replace(&mut self.conn, placeholder));
        match open_writer(&self.path) {
            Ok(conn) if !conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) => {
                tracing::info!(database = %self.path.display(), "reopened the database for writing");
                self.conn = conn;
                readers
                    .read_only
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                if let Some(c) = &self.checkpointer {
                    c.reopen.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Ok(still_read_only) => self.conn = still_read_only,
            Err(e) => {
                tracing::debug!(error = %e, "the database still cannot be opened for writing");
                match open_immutable(&self.path) {
                    Ok(conn) => self.conn = conn,
                    Err(e) => tracing::error!(error = %e, "cannot reopen the database for reading"),
                }
            }
        }
    }

    /// A write that changes nothing, to learn whether writes work again.
    fn probe(&mut self) {
        self.reopen_if_read_only();
        let result = self
            .conn
            .execute_batch(
                "BEGIN IMMEDIATE; UPDATE meta SET value = value WHERE key = 'epoch'; COMMIT;",
            )
            .map_err(|e| {
                tracing::debug!(error = %e, code = ?e.sqlite_error_code(), "the database still cannot be written");
                let _ = self.conn.execute_batch("ROLLBACK");
                StoreError::from(e)
            });
        self.note(&result);
    }

    fn commit(&self, batch: &mut [Box<DynJob>]) -> Result<(), StoreError> {
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let result = (|| {
            let mut ctx = WriteCtx {
                conn: &self.conn,
                head: read_seq(&self.conn)?,
            };
            for job in batch.iter_mut() {
                self.conn.prepare_cached("SAVEPOINT job")?.execute([])?;
                if job.run(&mut ctx) {
                    self.conn.prepare_cached("RELEASE job")?.execute([])?;
                } else {
                    self.conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
                }
            }
            self.conn
                .prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'seq'")?
                .execute([ctx.head as i64])?;
            self.conn.prepare_cached("COMMIT")?.execute([]).map(|_| ())
        })();
        if let Err(e) = &result {
            tracing::error!(error = %e, "database commit failed; the batch is rolled back");
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        result.map_err(StoreError::from)
    }

    /// Publishes everything stamped after `published`, whoever wrote it.
    fn publish(&mut self) {
        let Some(feed) = &self.feed else { return };
        match collect_changes(&self.conn, self.published) {
            Ok(None) => {}
            Ok(Some(batch)) => {
                self.published = batch.head;
                // Blocking is right here: if the hub falls behind, writes wait rather than the feed
                // dropping changes. The hub never waits on the store, so this cannot deadlock.
                let _ = feed.blocking_send(batch);
            }
            Err(e) => tracing::error!(error = %e, "cannot read committed changes for the feed"),
        }
    }
}

/// Whether `contact` is in `account`'s contact list: messages go only to, and are read only from,
/// contacts.
fn is_contact(conn: &Connection, account: i64, contact: i64) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM contacts WHERE account = ?1 AND contact = ?2")?
        .query_row([account, contact], |_| Ok(()))
        .optional()?
        .is_some())
}

fn read_seq(conn: &Connection) -> rusqlite::Result<Cursor> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = 'seq'")?
        .query_row([], |r| r.get::<_, i64>(0))
        .map(|v| v as u64)
}

fn now_ms() -> i64 {
    crate::util::now_ms()
}

/// The identity and presence columns of `accounts`, in the order [`AccountRow::read`] expects.
const ACCOUNT_COLS: &str = "id, name, name_v, avatar, avatar_v, signature, signature_v, description, \
                            description_v, state, state_v, status, status_v";

/// An account's visible fields with the cursor of each one's last change.
struct AccountRow {
    id: AccountId,
    fields: [(Cursor, Field); 6],
}

impl AccountRow {
    fn read(r: &Row<'_>) -> rusqlite::Result<AccountRow> {
        let v = |i: usize| r.get::<_, i64>(i).map(|v| v as u64);
        Ok(AccountRow {
            id: AccountId(r.get::<_, i64>(0)? as u64),
            fields: [
                (v(2)?, Field::Name(r.get(1)?)),
                (v(4)?, Field::Avatar(r.get(3)?)),
                (v(6)?, Field::Signature(r.get(5)?)),
                (v(8)?, Field::Description(r.get(7)?)),
                (v(10)?, Field::State(Presence::from_index(r.get(9)?))),
                (v(12)?, Field::Status(r.get(11)?)),
            ],
        })
    }

    /// The fields changed after `after` (all of them for `None`).
    fn since(self, after: Option<Cursor>) -> impl Iterator<Item = (Cursor, Field)> {
        self.fields
            .into_iter()
            .filter(move |(v, _)| after.is_none_or(|a| *v > a))
    }
}

/// Reads every change stamped in `(after, head]` in one read transaction, ordered by cursor. `None` when
/// nothing new was committed.
fn collect_changes(conn: &Connection, after: Cursor) -> rusqlite::Result<Option<ChangeBatch>> {
    let tx = conn.unchecked_transaction()?;
    let head = read_seq(&tx)?;
    if head <= after {
        return Ok(None);
    }
    let (lo, hi) = (after as i64, head as i64);
    let mut changes = Vec::new();

    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {ACCOUNT_COLS} FROM accounts WHERE v > ?1 AND v <= ?2"
    ))?;
    let rows = stmt.query_map([lo, hi], AccountRow::read)?;
    for row in rows {
        let row = row?;
        let account = row.id;
        // Fields changed by different writes carry different cursors and become separate changes, so
        // that a client's cursor never claims a change it has not seen.
        let mut by_cursor: BTreeMap<Cursor, Vec<Field>> = BTreeMap::new();
        for (v, field) in row.since(Some(after)) {
            by_cursor.entry(v).or_default().push(field);
        }
        changes.extend(by_cursor.into_iter().map(|(cursor, fields)| Change::Fields {
            account,
            cursor,
            fields,
        }));
    }

    let mut stmt = tx.prepare_cached(
        "SELECT account, contact, unread, unread_v, read_up_to, read_v FROM unread WHERE v > ?1 AND v <= ?2",
    )?;
    let rows = stmt.query_map([lo, hi], |r| {
        Ok((
            AccountId(r.get::<_, i64>(0)? as u64),
            AccountId(r.get::<_, i64>(1)? as u64),
            r.get::<_, u32>(2)?,
            r.get::<_, i64>(3)? as u64,
            MessageId(r.get::<_, i64>(4)? as u64),
            r.get::<_, i64>(5)? as u64,
        ))
    })?;
    for row in rows {
        let (owner, contact, unread, unread_v, up_to, read_v) = row?;
        if unread_v > after {
            changes.push(Change::Unread {
                owner,
                contact,
                cursor: unread_v,
                unread,
            });
        }
        if read_v > after {
            changes.push(Change::PeerRead {
                reader: owner,
                peer: contact,
                cursor: read_v,
                up_to,
            });
        }
    }

    let mut stmt = tx.prepare_cached(
        "SELECT id, sender, recipient, ts, text FROM messages WHERE id > ?1 AND id <= ?2 ORDER BY id",
    )?;
    let rows = stmt.query_map([lo, hi], |r| {
        let id = r.get::<_, i64>(0)? as u64;
        Ok(Change::Message {
            to: AccountId(r.get::<_, i64>(2)? as u64),
            cursor: id,
            message: Message {
                id: MessageId(id),
                from: AccountId(r.get::<_, i64>(1)? as u64),
                ts: r.get(3)?,
                text: r.get(4)?,
            },
        })
    })?;
    for row in rows {
        changes.push(row?);
    }

    let mut stmt = tx.prepare_cached(
        "SELECT account, revoked_v, id FROM keys WHERE revoked_v > ?1 AND revoked_v <= ?2 ORDER BY revoked_v",
    )?;
    let rows = stmt.query_map([lo, hi], |r| {
        Ok((
            AccountId(r.get::<_, i64>(0)? as u64),
            r.get::<_, i64>(1)? as u64,
            KeyId(r.get(2)?),
        ))
    })?;
    let mut revoked: BTreeMap<(Cursor, AccountId), Vec<KeyId>> = BTreeMap::new();
    for row in rows {
        let (account, cursor, key) = row?;
        revoked.entry((cursor, account)).or_default().push(key);
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

/// A client-supplied id as an SQLite integer. Ids above `i64::MAX` cannot exist in the database, so they
/// saturate: "up to message u64::MAX" means "up to the newest" instead of wrapping to a negative number.
fn sql_id(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

fn aid(r: &Row<'_>, i: usize) -> rusqlite::Result<AccountId> {
    Ok(AccountId(r.get::<_, i64>(i)? as u64))
}

fn account_exists(conn: &Connection, account: AccountId) -> StoreResult<()> {
    conn.prepare_cached("SELECT 1 FROM accounts WHERE id = ?1")?
        .query_row([account.0 as i64], |_| Ok(()))
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("account {account}")))
}

/// Recomputes an account's visible state from its chosen state and connection; stamps it if it changed.
fn refresh_state(ctx: &mut WriteCtx<'_>, account: AccountId) -> StoreResult<()> {
    let (chosen, connected, state): (u8, bool, u8) = ctx
        .conn
        .prepare_cached("SELECT chosen_state, connected, state FROM accounts WHERE id = ?1")?
        .query_row([account.0 as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("account {account}")))?;
    let visible = if connected {
        chosen
    } else {
        Presence::Offline.to_index()
    };
    if visible != state {
        let s = ctx.stamp();
        ctx.conn
            .prepare_cached("UPDATE accounts SET state = ?2, state_v = ?3, v = max(v, ?3) WHERE id = ?1")?
            .execute(params![account.0 as i64, visible, s])?;
    }
    Ok(())
}

fn revoke_keys(ctx: &mut WriteCtx<'_>, account: AccountId) -> StoreResult<usize> {
    let s = ctx.stamp();
    Ok(ctx
        .conn
        .prepare_cached("UPDATE keys SET revoked_v = ?2 WHERE account = ?1 AND revoked_v IS NULL")?
        .execute(params![account.0 as i64, s])?)
}

#[async_trait]
impl Store for SqliteStore {
    async fn head(&self) -> StoreResult<(Epoch, Cursor)> {
        let epoch = self.epoch;
        self.read(move |c| Ok((epoch, read_seq(c)?))).await
    }

    fn storage_problem(&self) -> Option<String> {
        self.storage.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn create_account(&self, login: &str, password_hash: &str, name: &str) -> StoreResult<AccountId> {
        let (login, hash, name) = (login.to_owned(), password_hash.to_owned(), name.to_owned());
        self.write(move |ctx| {
            let taken = ctx
                .conn
                .prepare_cached("SELECT 1 FROM accounts WHERE login = ?1")?.query_row( [&login], |_| Ok(()))
                .optional()?
                .is_some();
            if taken {
                return Err(StoreError::AccountExists(login));
            }
            let s = ctx.stamp();
            ctx.conn.prepare_cached("INSERT INTO accounts (login, password_hash, created_at, name, name_v, avatar_v, signature_v,
                                       description_v, state_v, status_v, v)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?5, ?5, ?5, ?5, ?5)")?.execute(
                params![login, hash, now_ms(), name, s],
            )?;
            Ok(AccountId(ctx.conn.last_insert_rowid() as u64))
        })
        .await
    }

    async fn account_auth(&self, login: &str) -> StoreResult<Option<AccountAuth>> {
        let login = login.to_owned();
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT id, password_hash, disabled FROM accounts WHERE login = ?1")?
                    .query_row([login], |r| {
                        Ok(AccountAuth {
                            id: aid(r, 0)?,
                            password_hash: r.get(1)?,
                            disabled: r.get(2)?,
                        })
                    })
                    .optional()?,
            )
        })
        .await
    }

    async fn account_id(&self, login: &str) -> StoreResult<Option<AccountId>> {
        Ok(self.account_auth(login).await?.map(|a| a.id))
    }

    async fn set_password(&self, account: AccountId, password_hash: &str) -> StoreResult<()> {
        let hash = password_hash.to_owned();
        self.write(move |ctx| {
            account_exists(ctx.conn, account)?;
            ctx.conn
                .prepare_cached("UPDATE accounts SET password_hash = ?2 WHERE id = ?1")?
                .execute(params![account.0 as i64, hash])?;
            revoke_keys(ctx, account)?;
            Ok(())
        })
        .await
    }

    async fn set_disabled(&self, account: AccountId, disabled: bool) -> StoreResult<()> {
        self.write(move |ctx| {
            account_exists(ctx.conn, account)?;
            ctx.conn
                .prepare_cached("UPDATE accounts SET disabled = ?2 WHERE id = ?1")?
                .execute(params![account.0 as i64, disabled])?;
            if disabled {
                revoke_keys(ctx, account)?;
            }
            Ok(())
        })
        .await
    }

    async fn me(&self, account: AccountId) -> StoreResult<Me> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT id, login, name, avatar, signature, description, state, chosen_state, status
                 FROM accounts WHERE id = ?1",
            )?
            .query_row([account.0 as i64], |r| {
                Ok(Me {
                    identity: Identity {
                        id: aid(r, 0)?,
                        login: r.get(1)?,
                        name: r.get(2)?,
                        avatar: r.get(3)?,
                        signature: r.get(4)?,
                        description: r.get(5)?,
                    },
                    state: Presence::from_index(r.get(6)?),
                    chosen_state: Presence::from_index(r.get(7)?),
                    status: r.get(8)?,
                })
            })
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("account {account}")))
        })
        .await
    }

    async fn update_profile(&self, account: AccountId, change: ProfileChange) -> StoreResult<()> {
        self.write(move |ctx| {
            let (name, avatar, signature, description): (String, Option<String>, String, String) = ctx
                .conn
                .prepare_cached("SELECT name, avatar, signature, description FROM accounts WHERE id = ?1")?
                .query_row([account.0 as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()?
                .ok_or_else(|| StoreError::NotFound(format!("account {account}")))?;
            // Only values that differ are written, so that a widget is told about real changes only.
            let mut sets: Vec<(&str, rusqlite::types::Value)> = vec![];
            if let Some(v) = change.name.filter(|v| *v != name) {
                sets.push(("name", v.into()));
            }
            if let Some(v) = change.avatar.filter(|v| *v != avatar) {
                sets.push(("avatar", v.map_or(rusqlite::types::Value::Null, Into::into)));
            }
            if let Some(v) = change.signature.filter(|v| *v != signature) {
                sets.push(("signature", v.into()));
            }
            if let Some(v) = change.description.filter(|v| *v != description) {
                sets.push(("description", v.into()));
            }
            if sets.is_empty() {
                return Ok(());
            }
            let s = ctx.stamp();
            let assignments: Vec<String> = sets
                .iter()
                .enumerate()
                .map(|(i, (col, _))| format!("{col} = ?{}, {col}_v = ?1", i + 3))
                .collect();
            let sql = format!(
                "UPDATE accounts SET {}, v = ?1 WHERE id = ?2",
                assignments.join(", ")
            );
            let mut values: Vec<rusqlite::types::Value> = vec![s.into(), (account.0 as i64).into()];
            values.extend(sets.into_iter().map(|(_, v)| v));
            ctx.conn.execute(&sql, rusqlite::params_from_iter(values))?;
            Ok(())
        })
        .await
    }

    async fn put_avatar(&self, hash: &str, mime: &str, bytes: Vec<u8>) -> StoreResult<()> {
        let (hash, mime) = (hash.to_owned(), mime.to_owned());
        self.write(move |ctx| {
            ctx.conn
                .prepare_cached("INSERT OR IGNORE INTO avatars (hash, mime, data) VALUES (?1, ?2, ?3)")?
                .execute(params![hash, mime, bytes])?;
            Ok(())
        })
        .await
    }

    async fn avatar(&self, hash: &str) -> StoreResult<Option<(String, Vec<u8>)>> {
        let hash = hash.to_owned();
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT mime, data FROM avatars WHERE hash = ?1")?
                    .query_row([hash], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?,
            )
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
            account_exists(ctx.conn, account)?;
            if let Some(state) = state {
                ctx.conn
                    .prepare_cached("UPDATE accounts SET chosen_state = ?2 WHERE id = ?1")?
                    .execute(params![account.0 as i64, state.to_index()])?;
                refresh_state(ctx, account)?;
            }
            if let Some(status) = status {
                let current: String = ctx
                    .conn
                    .prepare_cached("SELECT status FROM accounts WHERE id = ?1")?
                    .query_row([account.0 as i64], |r| r.get(0))?;
                if current != status {
                    let s = ctx.stamp();
                    ctx.conn
                        .prepare_cached(
                            "UPDATE accounts SET status = ?2, status_v = ?3, v = ?3 WHERE id = ?1",
                        )?
                        .execute(params![account.0 as i64, status, s])?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn set_connected(&self, accounts: Vec<(AccountId, bool)>) -> StoreResult<()> {
        self.write(move |ctx| {
            for (account, connected) in accounts {
                ctx.conn
                    .prepare_cached("UPDATE accounts SET connected = ?2 WHERE id = ?1")?
                    .execute(params![account.0 as i64, connected])?;
                refresh_state(ctx, account)?;
            }
            Ok(())
        })
        .await
    }

    async fn visible_accounts(&self) -> StoreResult<Vec<AccountId>> {
        self.read(|c| {
            let mut stmt = c.prepare("SELECT id FROM accounts WHERE state != 0 OR connected != 0")?;
            let ids = stmt
                .query_map([], |r| aid(r, 0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(ids)
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
            ctx.conn
                .prepare_cached(
                    "INSERT INTO keys (account, hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![account.0 as i64, key_hash, now_ms(), expires_at])?;
            Ok(KeyId(ctx.conn.last_insert_rowid()))
        })
        .await
    }

    async fn key(&self, key_hash: [u8; 32]) -> StoreResult<Option<KeyRecord>> {
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT id, account, expires_at, revoked_v IS NOT NULL FROM keys WHERE hash = ?1",
            )?
            .query_row([key_hash], |r| {
                Ok(KeyRecord {
                    id: KeyId(r.get(0)?),
                    account: aid(r, 1)?,
                    expires_at: r.get(2)?,
                    revoked: r.get(3)?,
                })
            })
            .optional()?)
        })
        .await
    }

    async fn touch_key(&self, key: KeyId, expires_at: i64) -> StoreResult<()> {
        self.write(move |ctx| {
            ctx.conn
                .prepare_cached("UPDATE keys SET expires_at = max(expires_at, ?2) WHERE id = ?1")?
                .execute(params![key.0, expires_at])?;
            Ok(())
        })
        .await
    }

    async fn revoke_key(&self, key: KeyId) -> StoreResult<()> {
        self.write(move |ctx| {
            let s = ctx.stamp();
            ctx.conn
                .prepare_cached("UPDATE keys SET revoked_v = ?2 WHERE id = ?1 AND revoked_v IS NULL")?
                .execute(params![key.0, s])?;
            Ok(())
        })
        .await
    }

    async fn revoke_all_keys(&self, account: AccountId) -> StoreResult<usize> {
        self.write(move |ctx| {
            account_exists(ctx.conn, account)?;
            revoke_keys(ctx, account)
        })
        .await
    }

    async fn link(&self, a: AccountId, b: AccountId) -> StoreResult<()> {
        if a == b {
            return Err(StoreError::Invalid("an account cannot be its own contact".into()));
        }
        self.write(move |ctx| {
            account_exists(ctx.conn, a)?;
            account_exists(ctx.conn, b)?;
            ctx.conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO contacts (account, contact) VALUES (?1, ?2), (?2, ?1)",
                )?
                .execute(params![a.0 as i64, b.0 as i64])?;
            Ok(())
        })
        .await
    }

    async fn contacts(&self, account: AccountId) -> StoreResult<Vec<Identity>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT a.id, a.login, a.name, a.avatar, a.signature, a.description
                 FROM contacts c JOIN accounts a ON a.id = c.contact
                 WHERE c.account = ?1 ORDER BY a.name COLLATE NOCASE, a.id",
            )?;
            let rows = stmt.query_map([account.0 as i64], |r| {
                Ok(Identity {
                    id: aid(r, 0)?,
                    login: r.get(1)?,
                    name: r.get(2)?,
                    avatar: r.get(3)?,
                    signature: r.get(4)?,
                    description: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
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
            let existing = ctx
                .conn
                .prepare_cached("SELECT id, recipient, ts, text FROM messages WHERE sender = ?1 AND client_id = ?2")?.query_row(
                    params![from.0 as i64, client_id],
                    |r| Ok((r.get::<_, i64>(0)?, aid(r, 1)?, r.get::<_, i64>(2)?, r.get::<_, String>(3)?)),
                )
                .optional()?;
            if let Some((id, recipient, ts, stored)) = existing {
                if recipient != to || stored != text {
                    return Err(StoreError::Invalid(format!(
                        "client_id {client_id:?} was already used for a different message; use a new client_id \
                         for each new message"
                    )));
                }
                return Ok(Sent { id: MessageId(id as u64), ts, duplicate: true });
            }
            if !is_contact(ctx.conn, from.0 as i64, to.0 as i64)? {
                return Err(StoreError::MessageNotContact(to));
            }
            let id = ctx.stamp();
            ctx.conn.prepare_cached("INSERT INTO messages (id, sender, recipient, client_id, ts, text) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?.execute(
                params![id, from.0 as i64, to.0 as i64, client_id, ts, text],
            )?;
            // The unread count changes under its own cursor, after the message's: a client that applied
            // the message but not the count resumes from the message's cursor and still gets the count.
            let s = ctx.stamp();
            ctx.conn.prepare_cached("INSERT INTO unread (account, contact, unread, unread_v, v) VALUES (?1, ?2, 1, ?3, ?3)
                 ON CONFLICT (account, contact) DO UPDATE SET unread = unread + 1, unread_v = ?3, v = ?3")?.execute(
                params![to.0 as i64, from.0 as i64, s],
            )?;
            Ok(Sent { id: MessageId(id as u64), ts, duplicate: false })
        })
        .await
    }

    async fn mark_read(&self, account: AccountId, contact: AccountId, up_to: MessageId) -> StoreResult<u32> {
        self.write(move |ctx| {
            let (me, them) = (account.0 as i64, contact.0 as i64);
            if !is_contact(ctx.conn, me, them)? {
                return Err(StoreError::MessageNotContact(contact));
            }
            let (unread, read_up_to): (u32, i64) = ctx
                .conn
                .prepare_cached("SELECT unread, read_up_to FROM unread WHERE account = ?1 AND contact = ?2")?
                .query_row([me, them], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
                .unwrap_or((0, 0));
            // The marker moves to the newest real message at or before `up_to`, and only forward.
            let newest: Option<i64> = ctx
                .conn
                .prepare_cached(
                    "SELECT max(id) FROM messages WHERE recipient = ?1 AND sender = ?2 AND id <= ?3",
                )?
                .query_row(params![me, them, sql_id(up_to.0)], |r| r.get(0))?;
            let Some(newest) = newest.filter(|n| *n > read_up_to) else {
                return Ok(unread);
            };
            let left: u32 = ctx
                .conn
                .prepare_cached(
                    "SELECT count(*) FROM messages WHERE recipient = ?1 AND sender = ?2 AND id > ?3",
                )?
                .query_row(params![me, them, newest], |r| r.get(0))?;
            let s = ctx.stamp();
            ctx.conn
                .prepare_cached(
                    "UPDATE unread SET read_up_to = ?3, read_v = ?5, v = ?5,
                        unread_v = CASE WHEN unread != ?4 THEN ?5 ELSE unread_v END, unread = ?4
                 WHERE account = ?1 AND contact = ?2",
                )?
                .execute(params![me, them, newest, left, s])?;
            Ok(left)
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
            let tx = c.unchecked_transaction()?;
            let (me, them) = (account.0 as i64, contact.0 as i64);
            if !is_contact(&tx, me, them)? {
                return Err(StoreError::MessageNotContact(contact));
            }
            let before = before.map_or(i64::MAX, |b| sql_id(b.0));
            let mut stmt = tx.prepare_cached(
                "SELECT id, sender, recipient, ts, text, NULL FROM messages WHERE recipient = ?1 AND sender = ?2 AND id < ?3
                 UNION ALL
                 SELECT id, sender, recipient, ts, text, client_id FROM messages WHERE recipient = ?2 AND sender = ?1 AND id < ?3
                 ORDER BY id DESC LIMIT ?4",
            )?;
            let mut messages = stmt
                .query_map(params![me, them, before, i64::from(limit) + 1], |r| {
                    Ok(HistoryMessage {
                        id: MessageId(r.get::<_, i64>(0)? as u64),
                        from: aid(r, 1)?,
                        to: aid(r, 2)?,
                        ts: r.get(3)?,
                        text: r.get(4)?,
                        client_id: r.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let more = messages.len() > limit as usize;
            messages.truncate(limit as usize);
            let row = |a: i64, b: i64| -> rusqlite::Result<(u32, u64)> {
                Ok(tx
                    .prepare_cached("SELECT unread, read_up_to FROM unread WHERE account = ?1 AND contact = ?2")?.query_row( [a, b], |r| {
                        Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
                    })
                    .optional()?
                    .unwrap_or((0, 0)))
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
        .await
    }

    async fn record_calls(&self, calls: Vec<Finished>) -> StoreResult<()> {
        self.write(move |ctx| {
            let mut stmt = ctx.conn.prepare_cached(
                "INSERT INTO calls (caller, callee, video, ts, duration_ms, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for c in &calls {
                stmt.execute(params![
                    c.caller.0 as i64,
                    c.callee.0 as i64,
                    c.video,
                    c.placed_ms,
                    c.duration_ms.map(|d| d as i64),
                    c.reason.as_str(),
                ])?;
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
            let tx = c.unchecked_transaction()?;
            let (me, them) = (account.0 as i64, contact.0 as i64);
            if !is_contact(&tx, me, them)? {
                return Err(StoreError::MessageNotContact(contact));
            }
            let before = before.map_or(i64::MAX, sql_id);
            let mut stmt = tx.prepare_cached(
                "SELECT id, caller, callee, video, ts, duration_ms, reason FROM calls WHERE caller = ?1 AND callee = ?2 AND id < ?3
                 UNION ALL
                 SELECT id, caller, callee, video, ts, duration_ms, reason FROM calls WHERE caller = ?2 AND callee = ?1 AND id < ?3
                 ORDER BY id DESC LIMIT ?4",
            )?;
            let mut calls = stmt
                .query_map(params![me, them, before, i64::from(limit) + 1], |r| {
                    let reason: String = r.get(6)?;
                    Ok(CallRecord {
                        id: r.get::<_, i64>(0)? as u64,
                        caller: aid(r, 1)?,
                        callee: aid(r, 2)?,
                        video: r.get(3)?,
                        ts: r.get(4)?,
                        duration_ms: r.get::<_, Option<i64>>(5)?.map(|d| d as u64),
                        // Written by this code from the same list; an unknown name would be a newer
                        // build's, and reads as the plainest ending.
                        reason: CallEnd::from_name(&reason).unwrap_or(CallEnd::Hangup),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let more = calls.len() > limit as usize;
            calls.truncate(limit as usize);
            Ok(CallHistoryPage { calls, more })
        })
        .await
    }

    async fn gateway_links(&self) -> StoreResult<Vec<GatewayLink>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT owner, jid, server, password, sent_up_to, archive_after FROM gateway_links",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(GatewayLink {
                    owner: aid(r, 0)?,
                    jid: r.get(1)?,
                    server: r.get(2)?,
                    sealed_password: r.get(3)?,
                    sent_up_to: MessageId(r.get::<_, i64>(4)? as u64),
                    archive_after: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn put_gateway_link(&self, link: GatewayLink) -> StoreResult<MessageId> {
        self.write(move |ctx| {
            account_exists(ctx.conn, link.owner)?;
            ctx.conn
                .prepare_cached(
                    "INSERT OR REPLACE INTO gateway_links (owner, jid, server, password, sent_up_to)
                     VALUES (?1, ?2, ?3, ?4, (SELECT coalesce(max(id), 0) FROM messages))",
                )?
                .execute(params![
                    link.owner.0 as i64,
                    link.jid,
                    link.server,
                    link.sealed_password
                ])?;
            let mark: i64 = ctx
                .conn
                .prepare_cached("SELECT sent_up_to FROM gateway_links WHERE owner = ?1")?
                .query_row([link.owner.0 as i64], |r| r.get(0))?;
            Ok(MessageId(mark as u64))
        })
        .await
    }

    async fn delete_gateway_link(&self, owner: AccountId) -> StoreResult<bool> {
        self.write(move |ctx| {
            let n = ctx
                .conn
                .prepare_cached("DELETE FROM gateway_links WHERE owner = ?1")?
                .execute([owner.0 as i64])?;
            ctx.conn
                .prepare_cached("DELETE FROM gateway_contacts WHERE owner = ?1")?
                .execute([owner.0 as i64])?;
            Ok(n > 0)
        })
        .await
    }

    async fn set_gateway_sent(&self, owner: AccountId, up_to: MessageId) -> StoreResult<()> {
        self.write(move |ctx| {
            ctx.conn
                .prepare_cached("UPDATE gateway_links SET sent_up_to = max(sent_up_to, ?2) WHERE owner = ?1")?
                .execute(params![owner.0 as i64, sql_id(up_to.0)])?;
            Ok(())
        })
        .await
    }

    async fn set_gateway_archive(&self, owner: AccountId, after: String) -> StoreResult<()> {
        self.write(move |ctx| {
            ctx.conn
                .prepare_cached("UPDATE gateway_links SET archive_after = ?2 WHERE owner = ?1")?
                .execute(params![owner.0 as i64, after])?;
            Ok(())
        })
        .await
    }

    async fn gateway_contacts(&self, owner: AccountId) -> StoreResult<Vec<GatewayContact>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached("SELECT jid, account FROM gateway_contacts WHERE owner = ?1")?;
            let rows = stmt.query_map([owner.0 as i64], |r| {
                Ok(GatewayContact {
                    jid: r.get(0)?,
                    account: aid(r, 1)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn add_gateway_contact(&self, owner: AccountId, jid: &str, name: &str) -> StoreResult<AccountId> {
        let (jid, name) = (jid.to_owned(), name.to_owned());
        self.write(move |ctx| {
            account_exists(ctx.conn, owner)?;
            let login = gateway_login(owner, &jid);
            let existing: Option<(i64, String)> = ctx
                .conn
                .prepare_cached("SELECT id, name FROM accounts WHERE login = ?1")?
                .query_row([&login], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let id = match existing {
                Some((id, current)) => {
                    if current != name {
                        let s = ctx.stamp();
                        ctx.conn
                            .prepare_cached("UPDATE accounts SET name = ?2, name_v = ?3, v = ?3 WHERE id = ?1")?
                            .execute(params![id, name, s])?;
                    }
                    id
                }
                None => {
                    let s = ctx.stamp();
                    ctx.conn
                        .prepare_cached(
                            "INSERT INTO accounts (login, password_hash, disabled, created_at, name, name_v, avatar_v,
                                                   signature, signature_v, description_v, state_v, status_v, v)
                             VALUES (?1, ?2, 1, ?3, ?4, ?5, ?5, ?6, ?5, ?5, ?5, ?5, ?5)",
                        )?
                        .execute(params![login, NO_PASSWORD, now_ms(), name, s, format!("XMPP: {jid}")])?;
                    ctx.conn.last_insert_rowid()
                }
            };
            ctx.conn
                .prepare_cached("INSERT OR IGNORE INTO contacts (account, contact) VALUES (?1, ?2), (?2, ?1)")?
                .execute(params![owner.0 as i64, id])?;
            ctx.conn
                .prepare_cached("INSERT OR REPLACE INTO gateway_contacts (owner, jid, account) VALUES (?1, ?2, ?3)")?
                .execute(params![owner.0 as i64, jid, id])?;
            Ok(AccountId(id as u64))
        })
        .await
    }

    async fn gateway_outbox(
        &self,
        owner: AccountId,
        after: MessageId,
        limit: u32,
    ) -> StoreResult<Vec<Outgoing>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT m.id, g.jid, m.text FROM gateway_contacts g
                 JOIN messages m ON m.recipient = g.account AND m.sender = g.owner AND m.id > ?2
                 WHERE g.owner = ?1 AND m.client_id NOT LIKE 'xmpp:%' ORDER BY m.id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![owner.0 as i64, sql_id(after.0), i64::from(limit)], |r| {
                Ok(Outgoing {
                    id: MessageId(r.get::<_, i64>(0)? as u64),
                    jid: r.get(1)?,
                    text: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
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
        self.read(move |c| sync(c, epoch, account, &pins, since, limits))
            .await
    }
}

fn sync(
    c: &Connection,
    epoch: Epoch,
    account: AccountId,
    pins: &[AccountId],
    since: Option<Since>,
    limits: SyncLimits,
) -> StoreResult<Snapshot> {
    // One read transaction: the snapshot and its cursor describe the same instant.
    let tx = c.unchecked_transaction()?;
    let head = read_seq(&tx)?;
    let me = account.0 as i64;

    let contacts: HashSet<AccountId> = tx
        .prepare_cached("SELECT contact FROM contacts WHERE account = ?1")?
        .query_map([me], |r| aid(r, 0))?
        .collect::<rusqlite::Result<_>>()?;
    let strangers: Vec<AccountId> = pins.iter().copied().filter(|p| !contacts.contains(p)).collect();
    if !strangers.is_empty() {
        return Err(StoreError::PinNotContact(strangers));
    }

    // A resume is usable when its cursor is from this database and not from its future, and when it
    // would not drag an unbounded backlog of messages along.
    let mut resume = since.filter(|s| s.epoch == epoch && s.cursor <= head);
    if let Some(s) = &resume {
        let mut missed = 0u64;
        let mut stmt = tx.prepare_cached(
            "SELECT count(*) FROM messages WHERE recipient = ?1 AND sender = ?2 AND id > ?3",
        )?;
        for pin in pins.iter().filter(|p| !s.fresh.contains(p)) {
            missed +=
                stmt.query_row(params![me, pin.0 as i64, s.cursor as i64], |r| r.get::<_, i64>(0))? as u64;
        }
        if missed > u64::from(limits.resume_messages) {
            resume = None;
        }
    }

    let mut updates = Vec::new();
    let mut messages = Vec::new();
    let mut account_stmt =
        tx.prepare_cached(&format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE id = ?1"))?;
    let mut unread_stmt = tx.prepare_cached(
        "SELECT unread, unread_v, read_up_to, read_v FROM unread WHERE account = ?1 AND contact = ?2",
    )?;
    let mut hints_stmt = tx.prepare_cached(
        "SELECT id, ts, text FROM messages WHERE recipient = ?1 AND sender = ?2 AND id > ?3 ORDER BY id DESC LIMIT ?4",
    )?;
    let mut missed_stmt = tx.prepare_cached(
        "SELECT id, ts, text FROM messages WHERE recipient = ?1 AND sender = ?2 AND id > ?3 ORDER BY id",
    )?;
    for &pin in pins {
        let them = pin.0 as i64;
        // `None`: the client holds nothing for this pin and gets everything.
        let after = resume
            .as_ref()
            .filter(|s| !s.fresh.contains(&pin))
            .map(|s| s.cursor);
        let row = account_stmt.query_row([them], AccountRow::read)?;
        let mut fields: Vec<Field> = row.since(after).map(|(_, f)| f).collect();

        let mut unread_row = |a: i64, b: i64| -> rusqlite::Result<(u32, u64, u64, u64)> {
            Ok(unread_stmt
                .query_row([a, b], |r| {
                    Ok((
                        r.get(0)?,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, i64>(2)? as u64,
                        r.get::<_, i64>(3)? as u64,
                    ))
                })
                .optional()?
                .unwrap_or_default())
        };
        let (unread, unread_v, read_up_to, _) = unread_row(me, them)?;
        let (_, _, peer_read, peer_read_v) = unread_row(them, me)?;
        if after.is_none_or(|a| unread_v > a) {
            fields.push(Field::Unread(unread));
        }
        if after.is_none_or(|a| peer_read_v > a) {
            fields.push(Field::PeerRead(MessageId(peer_read)));
        }

        let to_message = |r: &Row<'_>| -> rusqlite::Result<Message> {
            Ok(Message {
                id: MessageId(r.get::<_, i64>(0)? as u64),
                from: pin,
                ts: r.get(1)?,
                text: r.get(2)?,
            })
        };
        match after {
            None => {
                let hints = hints_stmt.query_map(
                    params![me, them, read_up_to as i64, limits.hints_per_contact],
                    to_message,
                )?;
                messages.extend(hints.collect::<rusqlite::Result<Vec<_>>>()?);
            }
            Some(a) => {
                let missed = missed_stmt.query_map(params![me, them, a as i64], to_message)?;
                messages.extend(missed.collect::<rusqlite::Result<Vec<_>>>()?);
            }
        }
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
