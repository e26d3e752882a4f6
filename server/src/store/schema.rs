//! The SQLite schema and its migrations, versioned with `PRAGMA user_version`.
//!
//! Migrations only ever get appended. Every mutable column `x` has a companion `x_v`: the cursor of its
//! last change (see the module docs of [`crate::store`]); each table's `v` is the largest of its row's
//! versions and is indexed, so "what changed after cursor c" is a range scan.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE accounts (
        id            INTEGER PRIMARY KEY,
        login         TEXT NOT NULL UNIQUE COLLATE NOCASE,
        password_hash TEXT NOT NULL,
        disabled      INTEGER NOT NULL DEFAULT 0,
        created_at    INTEGER NOT NULL,
        name          TEXT NOT NULL,
        name_v        INTEGER NOT NULL,
        avatar        TEXT,
        avatar_v      INTEGER NOT NULL,
        signature     TEXT NOT NULL DEFAULT '',
        signature_v   INTEGER NOT NULL,
        description   TEXT NOT NULL DEFAULT '',
        description_v INTEGER NOT NULL,
        -- What the account chose, and whether it has a live stream; `state` (what others see) follows
        -- from the two.
        chosen_state  INTEGER NOT NULL DEFAULT 1,
        connected     INTEGER NOT NULL DEFAULT 0,
        state         INTEGER NOT NULL DEFAULT 0,
        state_v       INTEGER NOT NULL,
        status        TEXT NOT NULL DEFAULT '',
        status_v      INTEGER NOT NULL,
        v             INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX accounts_v ON accounts (v);

    CREATE TABLE avatars (
        hash TEXT PRIMARY KEY,
        mime TEXT NOT NULL,
        data BLOB NOT NULL
    ) STRICT;

    CREATE TABLE keys (
        id         INTEGER PRIMARY KEY,
        account    INTEGER NOT NULL REFERENCES accounts (id),
        hash       BLOB NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        revoked_v  INTEGER
    ) STRICT;
    CREATE INDEX keys_account ON keys (account);
    CREATE INDEX keys_revoked_v ON keys (revoked_v) WHERE revoked_v IS NOT NULL;

    CREATE TABLE contacts (
        account INTEGER NOT NULL REFERENCES accounts (id),
        contact INTEGER NOT NULL REFERENCES accounts (id),
        PRIMARY KEY (account, contact)
    ) STRICT, WITHOUT ROWID;

    -- A message's id is the cursor it was stamped with, so ids grow with time and "messages after
    -- cursor c" is a range of ids.
    CREATE TABLE messages (
        id        INTEGER PRIMARY KEY,
        sender    INTEGER NOT NULL REFERENCES accounts (id),
        recipient INTEGER NOT NULL REFERENCES accounts (id),
        client_id TEXT NOT NULL,
        ts        INTEGER NOT NULL,
        text      TEXT NOT NULL,
        UNIQUE (sender, client_id)
    ) STRICT;
    CREATE INDEX messages_conversation ON messages (recipient, sender, id);

    -- One row per (reader, peer) once a message has passed between them: the reader's unread count of
    -- the peer's messages and how far the reader has read them.
    CREATE TABLE unread (
        account    INTEGER NOT NULL REFERENCES accounts (id),
        contact    INTEGER NOT NULL REFERENCES accounts (id),
        unread     INTEGER NOT NULL DEFAULT 0,
        unread_v   INTEGER NOT NULL DEFAULT 0,
        read_up_to INTEGER NOT NULL DEFAULT 0,
        read_v     INTEGER NOT NULL DEFAULT 0,
        v          INTEGER NOT NULL,
        PRIMARY KEY (account, contact)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX unread_v ON unread (v);
    "#,
    // 2: the call history. One row per call that rang, written when it ended; nothing of its media
    // or session descriptions. Not part of the change feed: clients read it on demand.
    r#"
    CREATE TABLE calls (
        id          INTEGER PRIMARY KEY,
        caller      INTEGER NOT NULL REFERENCES accounts (id),
        callee      INTEGER NOT NULL REFERENCES accounts (id),
        video       INTEGER NOT NULL,
        ts          INTEGER NOT NULL,
        duration_ms INTEGER,
        reason      TEXT NOT NULL
    ) STRICT;
    CREATE INDEX calls_pair ON calls (caller, callee, id);
    "#,
    // 3: the XMPP gateway. One link per pinchat account (the XMPP password sealed with the gateway's
    // key), and the roster: which pinchat account stands for which JID of the owner's XMPP roster.
    r#"
    CREATE TABLE gateway_links (
        owner       INTEGER PRIMARY KEY REFERENCES accounts (id),
        jid         TEXT NOT NULL,
        server      TEXT,
        password    BLOB NOT NULL,
        sent_up_to  INTEGER NOT NULL,
        -- The archive id (XEP-0313) of the newest message seen: a reconnect fetches what came after.
        archive_after TEXT
    ) STRICT;
    CREATE TABLE gateway_contacts (
        owner   INTEGER NOT NULL REFERENCES accounts (id),
        jid     TEXT NOT NULL,
        account INTEGER NOT NULL UNIQUE REFERENCES accounts (id),
        PRIMARY KEY (owner, jid)
    ) STRICT, WITHOUT ROWID;
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Brings the database up to [`SCHEMA_VERSION`], creating it when empty. Refuses a database written by a
/// newer build rather than guessing.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<Result<(), String>> {
    // A current database needs no write: so a server on a read-only disk still starts (and says so).
    let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version as usize == MIGRATIONS.len() {
        return Ok(Ok(()));
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > SCHEMA_VERSION {
        return Ok(Err(format!(
            "the database has schema version {current}, but this pinchat-server only knows up to \
             {SCHEMA_VERSION}; use a newer pinchat-server"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as u32 + 1)?;
    }
    if current == 0 {
        let mut epoch = [0u8; 8];
        getrandom::fill(&mut epoch).expect("the operating system's random number generator failed");
        // Keep epochs positive in SQLite's signed integers.
        let epoch = (u64::from_le_bytes(epoch) >> 1) as i64;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('epoch', ?1), ('seq', 0)",
            [epoch],
        )?;
    }
    tx.commit()?;
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database of schema 1 (before the call history) is brought to the current schema on open,
    /// with what it held untouched, and the new table usable.
    #[test]
    fn a_schema_1_database_gains_the_call_history_and_keeps_its_data() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(
            "PRAGMA user_version = 1;
             INSERT INTO meta (key, value) VALUES ('epoch', 7), ('seq', 3);
             INSERT INTO accounts (id, login, password_hash, created_at, name, name_v, avatar_v, signature_v,
                                   description_v, state_v, status_v, v)
             VALUES (1, 'demo', 'x', 0, 'Demo', 1, 1, 1, 1, 1, 1, 1),
                    (2, 'alice', 'x', 0, 'Alice', 2, 2, 2, 2, 2, 2, 2);",
        )
        .unwrap();
        migrate(&mut conn).unwrap().unwrap();
        let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let seq: i64 = conn
            .query_row("SELECT value FROM meta WHERE key = 'seq'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(seq, 3, "the cursor is kept");
        let accounts: i64 = conn
            .query_row("SELECT count(*) FROM accounts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(accounts, 2);
        conn.execute(
            "INSERT INTO calls (caller, callee, video, ts, duration_ms, reason) VALUES (1, 2, 1, 5, NULL, 'no_answer')",
            [],
        )
        .unwrap();
        // Opening it again changes nothing.
        migrate(&mut conn).unwrap().unwrap();
        let calls: i64 = conn
            .query_row("SELECT count(*) FROM calls", [], |r| r.get(0))
            .unwrap();
        assert_eq!(calls, 1);
    }
}
