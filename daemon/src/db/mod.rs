//! One SQLite database per widget (claims 7 and 8): everything the widget shows, its cursor, its sealed
//! auth key, the messages it received and the messages waiting to be sent — the daemon's model
//! ([`crate::model`]) in columns, versioned and migrated by [`schema`].
//!
//! The widget actor changes memory and this database in the same step: every change is written (one
//! transaction) before memory is updated and clients are told. After a crash the database holds at
//! least everything that was shown, and the cursor matching it, so resuming from the server fills
//! exactly the gap. WAL with `synchronous=NORMAL` survives a killed process; the outbox is written with
//! `synchronous=FULL`, since a message the user typed must survive even a power cut.
//!
//! Calls run on the blocking pool; the connection sits behind a mutex only the widget's actor uses.
//!
//! The files are private to the user: the data directories are made 0700 and each database is created
//! 0600 before SQLite opens it (SQLite gives its `-wal` and `-shm` files the database's mode); modes
//! left open by older versions are narrowed at start ([`make_private`]). On Windows the per-user
//! `%APPDATA%` already grants access to its user (and SYSTEM and administrators) only.
//!
//! A database that cannot be written (a read-only file system) is still read, so the widget shows what
//! it held; [`WidgetDb::probe`] reopens it for writing once that works again. Failures say which kind
//! of trouble they are ([`Problem`]), because a full disk, a read-only one and a damaged file call for
//! different words to the user.

pub mod schema;

use crate::model::{Account, Pin, Position, Queued, Received, UpdateMode};
use crate::vault::Sealed;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Received messages kept per contact (the newest); the server keeps them all.
pub const KEEP_PER_CONTACT: i64 = 1000;

/// What kind of trouble a database failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// The disk (or the user's quota) is full.
    Full,
    /// The file or its directory cannot be written.
    ReadOnly,
    /// Anything else (damaged file, I/O error…).
    Other,
}

/// Database failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    /// SQLite failed.
    #[error("widget database {path}: {error}")]
    Sqlite {
        /// Which file.
        path: String,
        /// What failed.
        error: String,
        /// What kind of failure.
        problem: Problem,
    },
    /// The file is not a widget database this version understands.
    #[error("widget database {0} is damaged or from a newer pinchat: {1}")]
    Invalid(String, String),
}

impl DbError {
    /// What kind of trouble this is.
    pub fn problem(&self) -> Problem {
        match self {
            DbError::Sqlite { problem, .. } => *problem,
            DbError::Invalid(..) => Problem::Other,
        }
    }
}

/// Sorts a SQLite failure.
fn problem_of(e: &rusqlite::Error) -> Problem {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(C::DiskFull) => Problem::Full,
        Some(C::ReadOnly | C::CannotOpen) => Problem::ReadOnly,
        Some(C::SystemIoFailure) => match e {
            // SQLite reports some out-of-space writes (WAL growth, shared memory) as I/O errors; the
            // operating system's error number says what happened.
            rusqlite::Error::SqliteFailure(f, _) if is_out_of_space(f.extended_code) => Problem::Full,
            _ => Problem::Other,
        },
        _ => Problem::Other,
    }
}

/// The extended I/O error codes SQLite uses when a write or an extension of a file fails, which on a
/// full disk is what they mean.
fn is_out_of_space(extended: std::ffi::c_int) -> bool {
    use rusqlite::ffi;
    [
        ffi::SQLITE_IOERR_WRITE,
        ffi::SQLITE_IOERR_SHMSIZE,
        ffi::SQLITE_IOERR_TRUNCATE,
        ffi::SQLITE_IOERR_FSYNC,
    ]
    .contains(&extended)
}

/// What a widget database holds, as loaded at start-up.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    /// Widget id.
    pub id: String,
    /// Server base URL.
    pub server: String,
    /// The bound account.
    pub account: Account,
    /// Update mode.
    pub mode: UpdateMode,
    /// Poll interval, seconds.
    pub poll_interval_secs: u32,
    /// The server's pin limit.
    pub max_pins: u16,
    /// Where the state is in the server's history.
    pub position: Option<Position>,
    /// The sealed auth key.
    pub sealed: Option<Sealed>,
    /// Pinned contacts, in order.
    pub pins: Vec<Pin>,
    /// Received messages, oldest first (the newest [`KEEP_PER_CONTACT`] per contact).
    pub received: Vec<Received>,
    /// Messages waiting to be sent, in the order typed.
    pub outbox: Vec<Queued>,
}

/// A change to persist in one transaction.
#[derive(Debug, Default)]
pub struct Change {
    /// New position.
    pub position: Option<Position>,
    /// Replace the whole pin list with these (after a full snapshot or a re-pin).
    pub replace_pins: Option<Vec<Pin>>,
    /// Update these pins in place.
    pub update_pins: Vec<Pin>,
    /// Store these received messages.
    pub received: Vec<Received>,
    /// Remove these client ids from the outbox (the server acknowledged them).
    pub sent: Vec<String>,
    /// The account's identity.
    pub account: Option<Account>,
    /// Mode and poll interval.
    pub mode: Option<(UpdateMode, u32)>,
    /// Pin limit.
    pub max_pins: Option<u16>,
    /// A new sealed key.
    pub sealed: Option<Sealed>,
}

/// A widget's database.
#[derive(Clone)]
pub struct WidgetDb {
    /// `None` once destroyed.
    conn: Arc<Mutex<Option<Connection>>>,
    writable: Arc<AtomicBool>,
    /// Why the database had to be opened for reading only, if it had to.
    opened_read_only: Option<Problem>,
    path: PathBuf,
}

impl WidgetDb {
    /// Creates a new database for widget `id` at `path` (which must not exist).
    pub async fn create(path: &Path, stored: Stored) -> Result<WidgetDb, DbError> {
        let path = path.to_owned();
        let p = path.clone();
        let conn = blocking(&path, move || {
            create_private(&p)?;
            let mut conn = Connection::open(&p)?;
            configure(&conn)?;
            schema::migrate(&mut conn)?;
            let tx = conn.transaction()?;
            schema::create(&tx, &stored)?;
            tx.commit()?;
            Ok(conn)
        })
        .await?;
        Ok(WidgetDb {
            conn: Arc::new(Mutex::new(Some(conn))),
            writable: Arc::new(AtomicBool::new(true)),
            opened_read_only: None,
            path,
        })
    }

    /// Opens an existing database and loads everything. When the database cannot be written, it is
    /// opened read-only ([`WidgetDb::opened_read_only`] says so) and [`WidgetDb::probe`] retries later.
    pub async fn open(path: &Path) -> Result<(WidgetDb, Stored), DbError> {
        let path = path.to_owned();
        let p = path.clone();
        let (conn, stored, problem) = blocking(&path, move || {
            make_private(&p);
            match open_writable(&p) {
                Ok(mut conn) => {
                    schema::migrate(&mut conn)?;
                    let stored = schema::load(&conn)?;
                    // Loading read every page once; the actor holds the state now, so the pages
                    // need not stay cached.
                    let _ = conn.execute_batch("PRAGMA shrink_memory");
                    Ok((conn, stored, None))
                }
                // A full or read-only disk: show what the database holds; writing is retried.
                Err(e) => {
                    tracing::warn!(file = %p.display(), error = %e, "cannot open the widget database for writing; reading it");
                    let problem = problem_of(&e);
                    let conn = open_read_only(&p).map_err(|_| e)?;
                    let stored = load_read_only(&conn, &p)?;
                    Ok((conn, stored, Some(problem)))
                }
            }
        })
        .await?;
        if stored.id.is_empty() || stored.server.is_empty() {
            return Err(DbError::Invalid(
                path.display().to_string(),
                "no widget id or server".into(),
            ));
        }
        Ok((
            WidgetDb {
                conn: Arc::new(Mutex::new(Some(conn))),
                writable: Arc::new(AtomicBool::new(problem.is_none())),
                opened_read_only: problem,
                path,
            },
            stored,
        ))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why the database could only be opened for reading (a full or read-only disk), if it was.
    pub fn opened_read_only(&self) -> Option<Problem> {
        self.opened_read_only
    }

    /// Checks that the database can be written again: reopens it for writing if it was opened
    /// read-only (then returns what it holds, which may be newer than what a read-only open could
    /// see), and commits a small write.
    pub async fn probe(&self) -> Result<Option<Stored>, DbError> {
        let conn = self.conn.clone();
        let writable = self.writable.clone();
        let path = self.path.clone();
        blocking(&self.path, move || {
            let mut guard = conn.lock().unwrap_or_else(|e| e.into_inner());
            let mut reloaded = None;
            if !writable.load(Ordering::Relaxed) {
                // Close the read-only connection first: SQLite shares a WAL database's shared memory
                // between the connections of one process, and a read-only mapping kept alive would make
                // the new connection read-only too. Until writing works, there is no connection (the
                // widget's state is in memory; every write fails as read-only).
                guard.take();
                let mut fresh = open_writable(&path)?;
                schema::migrate(&mut fresh)?;
                reloaded = Some(schema::load(&fresh)?);
                *guard = Some(fresh);
                writable.store(true, Ordering::Relaxed);
            }
            let conn = guard.as_mut().ok_or_else(closed)?;
            schema::checked(conn)?;
            Ok(reloaded)
        })
        .await
    }

    /// Writes a change in one transaction.
    pub async fn apply(&self, change: Change) -> Result<(), DbError> {
        let conn = self.conn.clone();
        blocking(&self.path, move || {
            let mut guard = conn.lock().unwrap_or_else(|e| e.into_inner());
            let conn = guard.as_mut().ok_or_else(closed)?;
            let tx = conn.transaction()?;
            schema::write(&tx, &change)?;
            tx.commit()
        })
        .await
    }

    /// Adds a message to the outbox, durably (`synchronous=FULL` for this commit).
    pub async fn queue(&self, message: Queued) -> Result<(), DbError> {
        let conn = self.conn.clone();
        blocking(&self.path, move || {
            let guard = conn.lock().unwrap_or_else(|e| e.into_inner());
            let conn = guard.as_ref().ok_or_else(closed)?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            let result = schema::queue(conn, &message);
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            result
        })
        .await
    }

    /// Closes the connection and deletes the database files.
    pub async fn destroy(self) -> Result<(), DbError> {
        let path = self.path.clone();
        // Other clones of this handle may live a little longer; the connection goes now.
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).take();
        tokio::task::spawn_blocking(move || {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let mut p = path.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        })
        .await
        .map_err(|e| DbError::Sqlite {
            path: String::new(),
            error: e.to_string(),
            problem: Problem::Other,
        })
    }
}

async fn blocking<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, DbError> {
    let name = path.display().to_string();
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(DbError::Sqlite {
            path: name,
            problem: problem_of(&e),
            error: e.to_string(),
        }),
        Err(e) => Err(DbError::Sqlite {
            path: name,
            error: format!("task failed: {e}"),
            problem: Problem::Other,
        }),
    }
}

/// Loads a database that can only be read. One from an older version cannot be migrated in place:
/// a copy in the temporary directory is migrated and read instead (the real migration happens once the
/// disk can be written, in [`WidgetDb::probe`]).
fn load_read_only(conn: &Connection, path: &Path) -> rusqlite::Result<Stored> {
    if schema::version(conn)? == schema::VERSION {
        return schema::load(conn);
    }
    let copy = tempfile::Builder::new()
        .prefix("pinchat-widget-")
        .suffix(".db")
        .tempfile()
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    std::fs::copy(path, copy.path()).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    let mut migrated = Connection::open(copy.path())?;
    schema::migrate(&mut migrated)?;
    schema::load(&migrated)
}

/// The error of a write while there is no connection (the database is waiting to be writable again,
/// or was destroyed).
fn closed() -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
        Some("the widget database is not open for writing".into()),
    )
}

fn open_writable(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    configure(&conn)?;
    // Opening succeeds on a read-only file system; the first write would not. Find out now.
    conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")?;
    Ok(conn)
}

/// Opens a database that cannot be written. SQLite reads a WAL database read-only only if it can
/// share its `-shm` file; failing that, the file is read as it is (`immutable`), without the most
/// recent changes still in the WAL — [`WidgetDb::probe`] reloads those once writing works.
fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    use rusqlite::OpenFlags as F;
    let flags = F::SQLITE_OPEN_READ_ONLY | F::SQLITE_OPEN_NO_MUTEX;
    if let Ok(conn) = Connection::open_with_flags(path, flags)
        && conn
            .query_row("SELECT count(*) FROM meta", [], |r| r.get::<_, i64>(0))
            .is_ok()
    {
        return Ok(conn);
    }
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
    Connection::open_with_flags(format!("file:{escaped}?immutable=1"), flags | F::SQLITE_OPEN_URI)
}

/// Creates the database file readable and writable by its user only, before SQLite opens it.
fn create_private(path: &Path) -> rusqlite::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop).map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::StorageFull {
            rusqlite::ffi::SQLITE_FULL
        } else if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem
            || e.kind() == std::io::ErrorKind::PermissionDenied
        {
            rusqlite::ffi::SQLITE_READONLY
        } else {
            rusqlite::ffi::SQLITE_CANTOPEN
        };
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            Some(format!("cannot create {}: {e}", path.display())),
        )
    })
}

/// Narrows the modes of a database and its `-wal`/`-shm`/`-journal` files to the user (0600), for
/// files written by versions that left them readable by others. Best effort: a read-only file
/// system keeps its modes, and says so in the log.
pub fn make_private(path: &Path) {
    #[cfg(unix)]
    for suffix in ["", "-wal", "-shm", "-journal"] {
        use std::os::unix::fs::PermissionsExt;
        let mut p = path.to_owned().into_os_string();
        p.push(suffix);
        let p = PathBuf::from(p);
        if let Ok(meta) = std::fs::metadata(&p)
            && meta.permissions().mode() & 0o077 != 0
        {
            match std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)) {
                Ok(()) => tracing::info!(file = %p.display(), "made the file private to its user"),
                Err(e) => tracing::warn!(file = %p.display(), error = %e, "cannot make the file private"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Creates a data directory (and its parents) private to the user, and narrows its mode if an older
/// version left it open to others.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            tracing::info!(dir = %dir.display(), "made the directory private to its user");
        }
        Ok(())
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // A widget's database is small and its writes are appends: a 256 KiB page cache holds what is
    // hot, and bounds what a daemon that runs for months keeps per widget (SQLite's default is 2 MB).
    conn.pragma_update(None, "cache_size", -256)?;
    Ok(())
}
