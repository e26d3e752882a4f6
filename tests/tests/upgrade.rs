//! A widget database written by the first release (schema version 1: JSON views in `meta` and `pins`)
//! opened by today's daemon: migrated to columns with nothing lost — the widget, its account, every pin
//! with its unread count, every received message and every message still waiting to be sent.
//!
//! `tests/fixtures/widget-v1.db` was written by pinchat 0.1's own `pinchatd` (commit a0790d8): a demo
//! account on a server at 127.0.0.1:7499 with Alice and Bob pinned, three messages from Alice, two typed
//! while the server was down, poll mode every 120 s.

use pinchat_ipc::api::*;
use pinchat_tests::Daemon;

const WIDGET: &str = "w3816d1e2e9fe958e";

#[tokio::test]
async fn a_database_written_by_the_first_release_opens_with_nothing_lost() {
    let data = tempfile::tempdir().unwrap();
    let widgets = data.path().join("widgets");
    std::fs::create_dir_all(&widgets).unwrap();
    let db = widgets.join(format!("{WIDGET}.db"));
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/widget-v1.db"), &db).unwrap();

    let d = Daemon::start_in(data.path());
    let c = d.client().await;
    let list = c.call::<ListWidgets>(NoParams {}).await.unwrap();
    assert_eq!(list.len(), 1);
    let v = c
        .call::<Snapshot>(WidgetRef {
            widget: WIDGET.into(),
        })
        .await
        .unwrap();
    assert_eq!(v.server, "http://127.0.0.1:7499");
    assert_eq!((v.account.id, v.account.login.as_str()), (1, "demo"));
    assert_eq!(v.account.name, "Demo User · 演示用户");
    assert_eq!((v.mode, v.poll_interval_secs, v.max_pins), (Mode::Poll, 120, 20));
    let pins: Vec<(u64, &str, u32)> = v.pins.iter().map(|p| (p.id, p.name.as_str(), p.unread)).collect();
    assert_eq!(pins, [(2, "Alice Chen", 3), (4, "Bob Martin", 0)]);
    assert_eq!(v.pins[0].signature, "Coffee first, code second.");
    assert!(v.stale, "served from the database until the server confirms");

    // The sealed key belonged to the keyring of the session that wrote the fixture: this widget asks
    // for the password, and still shows everything it holds.
    let alice = c
        .call::<Unread>(UnreadParams::from(ContactRef {
            widget: WIDGET.into(),
            contact: 2,
        }))
        .await
        .unwrap();
    let texts: Vec<&str> = alice.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "message 1 from Alice, before the upgrade",
            "message 2 from Alice, before the upgrade",
            "message 3 from Alice, before the upgrade"
        ]
    );
    for (contact, text) in [
        (2, "typed offline, before the upgrade"),
        (4, "also typed offline"),
    ] {
        let h = c
            .call::<History>(HistoryParams {
                widget: WIDGET.into(),
                contact,
                before: None,
                limit: None,
            })
            .await
            .unwrap();
        assert_eq!(h.messages[0].text, text);
        assert_eq!(h.messages[0].state, Delivery::Queued, "still waiting to be sent");
    }

    // On disk: version 2, and the same rows.
    drop(c);
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, 2);
    let count = |table: &str| -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(
        (count("pins"), count("messages"), count("outbox"), count("auth")),
        (2, 3, 2, 1)
    );
}
