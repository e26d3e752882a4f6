//! The widget database's tables, their versions and the migrations between them, and the reading and
//! writing of the model in them.
//!
//! Every value has a column of its own (no JSON of API views): an API change cannot make a stored row
//! unreadable, and a row that cannot be read is an error, never silently defaulted or dropped. The
//! version is `PRAGMA user_version`; opening a database migrates it in one transaction, and a database
//! from a newer pinchat is refused untouched.
//!
//! - **1** (pinchat 0.1, the first release): `meta` key/value pairs, the account and each pin as JSON.
//! - **2**: `widget` and `account` rows and `pins` with a column per field; the JSON of version 1 is
//!   read field by field (a field that is missing or unreadable takes its default, the row stays).

use super::{Change, Stored};
use crate::model::{Account, Pin, Position, Queued, Received, UpdateMode};
use crate::vault::Sealed;
use pinchat_proto::{AccountId, MessageId, Presence};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;

/// The version this daemon writes.
pub const VERSION: u32 = 2;

/// Version 1, as the first release created it.
const V1: &str = r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
CREATE TABLE auth (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    nonce  BLOB NOT NULL,
    sealed BLOB NOT NULL
) STRICT;
CREATE TABLE pins (
    pos     INTEGER PRIMARY KEY,
    contact INTEGER NOT NULL UNIQUE,
    view    TEXT NOT NULL
) STRICT;
CREATE TABLE messages (
    id     INTEGER PRIMARY KEY,
    sender INTEGER NOT NULL,
    ts     INTEGER NOT NULL,
    text   TEXT NOT NULL
) STRICT;
CREATE INDEX messages_sender ON messages (sender, id);
CREATE TABLE outbox (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id TEXT NOT NULL UNIQUE,
    recipient INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    text      TEXT NOT NULL
) STRICT;
"#;

/// Version 2's new tables (`auth`, `messages` and `outbox` are unchanged).
const V2_TABLES: &str = r#"
-- The widget itself: one row.
CREATE TABLE widget (
    id                 INTEGER PRIMARY KEY CHECK (id = 1),
    widget_id          TEXT NOT NULL,
    server             TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    mode               TEXT NOT NULL,
    poll_interval_secs INTEGER NOT NULL,
    max_pins           INTEGER NOT NULL,
    -- Where the widget is in the server's history; NULL before the first sync.
    epoch              INTEGER,
    cursor             INTEGER,
    -- The last successful write check after a storage problem.
    checked_at         INTEGER
) STRICT;
-- The bound account's own identity: one row.
CREATE TABLE account (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    account_id INTEGER NOT NULL,
    login      TEXT NOT NULL,
    name       TEXT NOT NULL,
    avatar     TEXT,
    signature  TEXT NOT NULL,
    state      INTEGER NOT NULL,
    status     TEXT NOT NULL
) STRICT;
-- The pinned contacts in display order, each as the widget last showed it.
CREATE TABLE pins_v2 (
    pos         INTEGER PRIMARY KEY,
    contact     INTEGER NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    avatar      TEXT,
    signature   TEXT NOT NULL,
    description TEXT NOT NULL,
    state       INTEGER NOT NULL,
    status      TEXT NOT NULL,
    unread      INTEGER NOT NULL,
    peer_read   INTEGER NOT NULL
) STRICT;
"#;

fn invalid(why: impl Into<String>) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
        Some(why.into()),
    )
}

/// The version of a database (0 when empty).
pub fn version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Brings a database to [`VERSION`] in one transaction; an empty one is created. A newer one is refused.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current = version(conn)?;
    if current > VERSION {
        return Err(invalid(format!(
            "the widget database has version {current}; this pinchat knows versions up to {VERSION}: \
             use a newer pinchat (the file is left as it is)"
        )));
    }
    if current == VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if current < 1 {
        tx.execute_batch(V1)?;
    }
    if current < 2 {
        v1_to_v2(&tx)?;
    }
    tx.pragma_update(None, "user_version", VERSION)?;
    tx.commit()?;
    if current > 0 {
        tracing::info!(from = current, to = VERSION, "migrated a widget database");
    }
    Ok(())
}

/// Version 1 kept the widget in `meta` and the account and pins as the API's JSON; version 2 gives
/// each value a column. Every pin row is kept: a field its JSON lacks or has in another type gets the
/// field's default.
fn v1_to_v2(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(V2_TABLES)?;
    let meta = |key: &str| -> rusqlite::Result<Option<String>> {
        tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
    };
    if let Some(widget_id) = meta("id")? {
        let server =
            meta("server")?.ok_or_else(|| invalid("a version 1 widget database without a server"))?;
        let number = |v: Option<String>| v.and_then(|v| v.trim().parse::<i64>().ok());
        // The mode was stored as a JSON string ("\"poll\"").
        let mode = meta("mode")?
            .and_then(|m| UpdateMode::parse(m.trim().trim_matches('"')))
            .unwrap_or_default();
        tx.execute(
            "INSERT INTO widget (id, widget_id, server, created_at, mode, poll_interval_secs, max_pins, epoch, cursor)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                widget_id,
                server,
                number(meta("created_at")?).unwrap_or_else(crate::model::now_ms),
                mode.as_str(),
                number(meta("poll_interval_secs")?).unwrap_or(60),
                number(meta("max_pins")?).unwrap_or(20),
                number(meta("epoch")?),
                number(meta("cursor")?),
            ],
        )?;
        let account = meta("account")?
            .and_then(|j| serde_json::from_str::<Value>(&j).ok())
            .unwrap_or(Value::Null);
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        let state = |v: &Value| {
            v.get("state")
                .and_then(Value::as_str)
                .and_then(|s| Presence::ALL.into_iter().find(|p| p.as_str() == s))
                .unwrap_or_default()
        };
        tx.execute(
            "INSERT INTO account (id, account_id, login, name, avatar, signature, state, status)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                account.get("id").and_then(Value::as_u64).unwrap_or(0) as i64,
                text(&account, "login"),
                text(&account, "name"),
                account.get("avatar").and_then(Value::as_str),
                text(&account, "signature"),
                i64::from(state(&account).to_index()),
                text(&account, "status"),
            ],
        )?;
        let mut pins = tx.prepare("SELECT pos, contact, view FROM pins ORDER BY pos")?;
        let rows: Vec<(i64, i64, String)> = pins
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        drop(pins);
        for (pos, contact, view) in rows {
            let v = serde_json::from_str::<Value>(&view).unwrap_or(Value::Null);
            let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0) as i64;
            tx.execute(
                "INSERT INTO pins_v2 (pos, contact, name, avatar, signature, description, state, status, unread, peer_read)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    pos,
                    contact,
                    text(&v, "name"),
                    v.get("avatar").and_then(Value::as_str),
                    text(&v, "signature"),
                    text(&v, "description"),
                    i64::from(state(&v).to_index()),
                    text(&v, "status"),
                    n("unread"),
                    n("peer_read"),
                ],
            )?;
        }
    }
    tx.execute_batch("DROP TABLE pins; ALTER TABLE pins_v2 RENAME TO pins; DROP TABLE meta;")?;
    Ok(())
}

/// Writes the rows of a new widget (after [`migrate`] created the tables).
pub fn create(tx: &Connection, stored: &Stored) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO widget (id, widget_id, server, created_at, mode, poll_interval_secs, max_pins)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            stored.id,
            stored.server,
            crate::model::now_ms(),
            stored.mode.as_str(),
            stored.poll_interval_secs,
            stored.max_pins,
        ],
    )?;
    write(
        tx,
        &Change {
            account: Some(stored.account.clone()),
            sealed: stored.sealed.clone(),
            replace_pins: Some(stored.pins.clone()),
            ..Change::default()
        },
    )
}

fn sql_id(v: u64) -> i64 {
    v as i64
}

/// Writes a change (inside the caller's transaction).
pub fn write(tx: &Connection, c: &Change) -> rusqlite::Result<()> {
    if let Some(p) = c.position {
        tx.execute(
            "UPDATE widget SET epoch = ?1, cursor = ?2 WHERE id = 1",
            params![sql_id(p.epoch), sql_id(p.cursor)],
        )?;
    }
    if let Some(a) = &c.account {
        tx.execute(
            "INSERT INTO account (id, account_id, login, name, avatar, signature, state, status)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (id) DO UPDATE SET account_id = ?1, login = ?2, name = ?3, avatar = ?4,
                 signature = ?5, state = ?6, status = ?7",
            params![
                sql_id(a.id.0),
                a.login,
                a.name,
                a.avatar,
                a.signature,
                a.state.to_index(),
                a.status
            ],
        )?;
    }
    if let Some((mode, interval)) = c.mode {
        tx.execute(
            "UPDATE widget SET mode = ?1, poll_interval_secs = ?2 WHERE id = 1",
            params![mode.as_str(), interval],
        )?;
    }
    if let Some(max) = c.max_pins {
        tx.execute("UPDATE widget SET max_pins = ?1 WHERE id = 1", [max])?;
    }
    if let Some(sealed) = &c.sealed {
        tx.execute(
            "INSERT INTO auth (id, nonce, sealed) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET nonce = ?1, sealed = ?2",
            params![sealed.nonce, sealed.data],
        )?;
    }
    if let Some(pins) = &c.replace_pins {
        tx.execute("DELETE FROM pins", [])?;
        for (pos, pin) in pins.iter().enumerate() {
            put_pin(tx, pos as i64, pin)?;
        }
        // Messages from contacts no longer pinned are not shown any more.
        let ids: Vec<String> = pins.iter().map(|p| p.contact.0.to_string()).collect();
        tx.execute(
            &format!("DELETE FROM messages WHERE sender NOT IN ({})", ids.join(",")),
            [],
        )?;
    }
    for pin in &c.update_pins {
        let pos: Option<i64> = tx
            .query_row(
                "SELECT pos FROM pins WHERE contact = ?1",
                [sql_id(pin.contact.0)],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(pos) = pos {
            put_pin(tx, pos, pin)?;
        }
    }
    for m in &c.received {
        tx.execute(
            "INSERT OR IGNORE INTO messages (id, sender, ts, text) VALUES (?1, ?2, ?3, ?4)",
            params![sql_id(m.id.0), sql_id(m.from.0), m.ts, m.text],
        )?;
    }
    if !c.received.is_empty() {
        // Keep the newest messages of each contact; the server has the rest.
        tx.execute(
            "DELETE FROM messages WHERE id IN (
                 SELECT id FROM (
                     SELECT id, row_number() OVER (PARTITION BY sender ORDER BY id DESC) AS n FROM messages
                 ) WHERE n > ?1
             )",
            [super::KEEP_PER_CONTACT],
        )?;
    }
    for client_id in &c.sent {
        tx.execute("DELETE FROM outbox WHERE client_id = ?1", [client_id])?;
    }
    Ok(())
}

fn put_pin(tx: &Connection, pos: i64, p: &Pin) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT OR REPLACE INTO pins (pos, contact, name, avatar, signature, description, state, status, unread, peer_read)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            pos,
            sql_id(p.contact.0),
            p.name,
            p.avatar,
            p.signature,
            p.description,
            p.state.to_index(),
            p.status,
            p.unread,
            sql_id(p.peer_read.0)
        ],
    )?;
    Ok(())
}

/// Adds a message to the outbox.
pub fn queue(conn: &Connection, q: &Queued) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO outbox (client_id, recipient, ts, text) VALUES (?1, ?2, ?3, ?4)",
        params![q.client_id, sql_id(q.to.0), q.ts, q.text],
    )?;
    Ok(())
}

/// Records a successful write check.
pub fn checked(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE widget SET checked_at = ?1 WHERE id = 1",
        [crate::model::now_ms()],
    )?;
    Ok(())
}

/// Reads everything. Every row must be readable: a damaged one is an error, not a silent gap.
pub fn load(conn: &Connection) -> rusqlite::Result<Stored> {
    let v = version(conn)?;
    if v != VERSION {
        return Err(invalid(format!(
            "widget database version {v}, expected {VERSION}"
        )));
    }
    let id = |r: &rusqlite::Row<'_>, i: usize| r.get::<_, i64>(i).map(|v| v as u64);
    let (widget_id, server, mode, poll_interval_secs, max_pins, epoch, cursor) = conn
        .query_row(
            "SELECT widget_id, server, mode, poll_interval_secs, max_pins, epoch, cursor FROM widget WHERE id = 1",
            [],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, u32>(3)?,
                    r.get::<_, u16>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                ))
            },
        )
        .optional()?
        .ok_or_else(|| invalid("the widget database has no widget row"))?;
    let mode = UpdateMode::parse(&mode).ok_or_else(|| invalid(format!("unknown update mode {mode:?}")))?;
    let account = conn
        .query_row(
            "SELECT account_id, login, name, avatar, signature, state, status FROM account WHERE id = 1",
            [],
            |r| {
                Ok(Account {
                    id: AccountId(id(r, 0)?),
                    login: r.get(1)?,
                    name: r.get(2)?,
                    avatar: r.get(3)?,
                    signature: r.get(4)?,
                    state: Presence::from_index(r.get(5)?),
                    status: r.get(6)?,
                })
            },
        )
        .optional()?
        .unwrap_or_default();
    let sealed = conn
        .query_row("SELECT nonce, sealed FROM auth WHERE id = 1", [], |r| {
            Ok(Sealed {
                nonce: r.get(0)?,
                data: r.get(1)?,
            })
        })
        .optional()?;
    let mut stmt = conn.prepare(
        "SELECT contact, name, avatar, signature, description, state, status, unread, peer_read FROM pins ORDER BY pos",
    )?;
    let pins = stmt
        .query_map([], |r| {
            Ok(Pin {
                contact: AccountId(id(r, 0)?),
                name: r.get(1)?,
                avatar: r.get(2)?,
                signature: r.get(3)?,
                description: r.get(4)?,
                state: Presence::from_index(r.get(5)?),
                status: r.get(6)?,
                unread: r.get(7)?,
                peer_read: MessageId(id(r, 8)?),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare("SELECT id, sender, ts, text FROM messages ORDER BY id")?;
    let received = stmt
        .query_map([], |r| {
            Ok(Received {
                id: MessageId(id(r, 0)?),
                from: AccountId(id(r, 1)?),
                ts: r.get(2)?,
                text: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare("SELECT client_id, recipient, ts, text FROM outbox ORDER BY seq")?;
    let outbox = stmt
        .query_map([], |r| {
            Ok(Queued {
                client_id: r.get(0)?,
                to: AccountId(id(r, 1)?),
                ts: r.get(2)?,
                text: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Stored {
        id: widget_id,
        server,
        account,
        mode,
        poll_interval_secs,
        max_pins,
        position: epoch.zip(cursor).map(|(e, c)| Position {
            epoch: e as u64,
            cursor: c as u64,
        }),
        sealed,
        pins,
        received,
        outbox,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 1 database as the first release wrote it, migrated: nothing lost.
    #[test]
    fn version_one_migrates_with_every_pin_message_and_queued_send() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(V1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            r#"
            INSERT INTO meta VALUES ('id','w1'), ('server','http://127.0.0.1:7420'), ('created_at','1700000000000'),
              ('account','{"id":1,"login":"demo","name":"Demo","avatar":null,"signature":"hi","state":"busy","status":"s"}'),
              ('mode','"poll"'), ('poll_interval_secs','120'), ('max_pins','20'), ('epoch','99'), ('cursor','42');
            INSERT INTO auth VALUES (1, x'0102', x'0304');
            INSERT INTO pins VALUES
              (0, 2, '{"id":2,"name":"Alice","avatar":"h","signature":"s","description":"d","state":"online","status":"","unread":3,"peer_read":7}'),
              (1, 4, '{"id":4,"name":"Bob","state":"a state from the future","unread":"not a number"}'),
              (2, 5, 'not JSON at all');
            INSERT INTO messages VALUES (10, 2, 1, 'one'), (11, 2, 2, 'two');
            INSERT INTO outbox (client_id, recipient, ts, text) VALUES ('c1', 2, 3, 'queued one'), ('c2', 4, 4, 'queued two');
            "#,
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let s = load(&conn).unwrap();
        assert_eq!(
            (s.id.as_str(), s.server.as_str()),
            ("w1", "http://127.0.0.1:7420")
        );
        assert_eq!(
            (s.mode, s.poll_interval_secs, s.max_pins),
            (UpdateMode::Poll, 120, 20)
        );
        assert_eq!(
            s.position,
            Some(Position {
                epoch: 99,
                cursor: 42
            })
        );
        assert_eq!(
            (s.account.id, s.account.state, s.account.name.as_str()),
            (AccountId(1), Presence::Busy, "Demo")
        );
        assert_eq!(
            s.sealed.as_ref().map(|k| (k.nonce.clone(), k.data.clone())),
            Some((vec![1, 2], vec![3, 4]))
        );
        let pins: Vec<u64> = s.pins.iter().map(|p| p.contact.0).collect();
        assert_eq!(pins, [2, 4, 5], "every pin row is kept, readable or not");
        assert_eq!(
            (s.pins[0].unread, s.pins[0].peer_read, s.pins[0].state),
            (3, MessageId(7), Presence::Online)
        );
        assert_eq!(
            (s.pins[1].name.as_str(), s.pins[1].unread, s.pins[1].state),
            ("Bob", 0, Presence::Offline)
        );
        assert_eq!(s.received.len(), 2);
        let queued: Vec<&str> = s.outbox.iter().map(|q| q.client_id.as_str()).collect();
        assert_eq!(queued, ["c1", "c2"], "in the order typed");
        // Migrating again is a no-op; a newer version is refused and left alone.
        migrate(&mut conn).unwrap();
        conn.pragma_update(None, "user_version", VERSION + 1).unwrap();
        let e = migrate(&mut conn).unwrap_err().to_string();
        assert!(e.contains("use a newer pinchat"), "{e}");
        assert_eq!(version(&conn).unwrap(), VERSION + 1);
    }
}
