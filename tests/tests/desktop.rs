//! The desktop app for real (Linux): the `pinchat` binary on a private X server, its tray item on the
//! session bus under a StatusNotifierItem host, its daemon started in-process, a real server.
#![cfg(target_os = "linux")]

use pinchat_ipc::api::{CreateWidget, Login, SetPins, SetPinsParams};
use pinchat_tests::Server;
use pinchat_tests::desktop::{
    ARROW_DOWN, ARROW_UP, App, Dunst, ENTER, ESCAPE, FakeNotifications, WebDriver, Xvfb, busctl,
    changed_area, crop, ensure_tray_host, eventually, focused_window, registered_items, root_window,
    screenshot_root, serial, visible_window, visible_window_titled, window_geometry, window_titles, xdotool,
    xprop,
};

/// Binds the demo account through the same local API the app uses.
async fn bind_demo(client: &pinchat_ipc::Client, server: &Server) -> pinchat_ipc::api::Created {
    client
        .call::<CreateWidget>(Login {
            server: server.url(""),
            account: "demo".into(),
            password: "demo".into(),
        })
        .await
        .unwrap()
}

/// Binds the demo account and pins Alice; returns Alice as the widget sees her.
async fn bind_demo_with_alice(
    client: &pinchat_ipc::Client,
    server: &Server,
) -> pinchat_ipc::api::ContactIdentity {
    let created = bind_demo(client, server).await;
    let alice = created
        .contacts
        .iter()
        .find(|c| c.login == "alice")
        .unwrap()
        .clone();
    client
        .call::<SetPins>(SetPinsParams {
            widget: created.widget.id.clone(),
            pins: vec![alice.id],
        })
        .await
        .unwrap();
    alice
}

/// What the notification tests start from: the real tray app on display `x` with its own daemon, the
/// demo user bound with Alice pinned, and Alice's key to write with.
struct WithAlice {
    server: Server,
    app: App,
    client: pinchat_ipc::Client,
    alice: pinchat_ipc::api::ContactIdentity,
    alice_key: String,
    demo_id: pinchat_proto::AccountId,
    // Last: dropped after the app, whose log (in it) a failed test prints.
    dir: tempfile::TempDir,
}

/// The conversation the account of `key` has with `peer`, as the server lists it (messages, read
/// markers).
async fn conversation(server: &Server, key: &str, peer: pinchat_proto::AccountId) -> serde_json::Value {
    server
        .get(key, &format!("/v1/messages/{}", peer.0))
        .await
        .unwrap()
}

/// The same, asked again until `done` holds: the server has no event a test could await for it.
async fn conversation_until(
    server: &Server,
    key: &str,
    peer: pinchat_proto::AccountId,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + pinchat_tests::DEADLINE;
    loop {
        let c = conversation(server, key, peer).await;
        if done(&c) {
            return c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {c}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The message with this text in a conversation.
fn message<'a>(conversation: &'a serde_json::Value, text: &str) -> Option<&'a serde_json::Value> {
    conversation["messages"]
        .as_array()?
        .iter()
        .find(|m| m["text"] == text)
}

/// Whether a shown notification has the action `key` labelled `label`.
fn has_action(shown: &pinchat_tests::desktop::Shown, key: &str, label: &str) -> bool {
    shown.actions.windows(2).any(|a| a[0] == key && a[1] == label)
}

/// No pinchat panel window is open on the display.
/// Waits for a window titled `title…` to be shown and gives it keyboard focus, as a window manager
/// does with a new window (the bare X server of the tests has none); returns it.
fn shown_with_focus(x: &Xvfb, title: &str) -> u64 {
    let window = eventually("the panel to be shown", || visible_window(&x.display, title));
    focus(x, window);
    window
}

/// Gives `window` keyboard focus and waits until it has it.
fn focus(x: &Xvfb, window: u64) {
    xdotool(&x.display, &["windowfocus", "--sync", &window.to_string()]).expect("xdotool windowfocus");
    eventually("the window to have keyboard focus", || {
        (focused_window(&x.display) == Some(window)).then_some(())
    });
}

/// Waits for a pinned contact's avatar to be fetched into the app's cache (under `dir`); its file.
fn cached_avatar(dir: &std::path::Path) -> std::path::PathBuf {
    let avatars = dir.join("cache").join("pinchat").join("avatars");
    eventually("an avatar in the cache", || {
        std::fs::read_dir(&avatars)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "png"))
    })
}

fn assert_no_panel(x: &Xvfb) {
    assert!(
        !window_titles(&x.display)
            .iter()
            .any(|t| t.starts_with("pinchat — ")),
        "no panel opened"
    );
}

async fn with_alice(x: &Xvfb) -> WithAlice {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(&x.display, dir.path());
    let client = pinchat_ipc::Client::connect(&app.socket).await.unwrap();
    let alice = bind_demo_with_alice(&client, &server).await;
    let alice_key = server.key("alice").await;
    let demo_id = server.id_of(&alice_key, "demo").await;
    WithAlice {
        server,
        dir,
        app,
        client,
        alice,
        alice_key,
        demo_id,
    }
}

#[tokio::test]
async fn the_tray_shows_unread_counts_a_click_opens_the_widget_panel_and_a_second_launch_adds_nothing() {
    let _serial = serial().await;
    let _host = ensure_tray_host();
    let x = Xvfb::start();
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(&x.display, dir.path());
    let tray = app.tray_name();
    eventually("the tray item to register with the host", || {
        registered_items().contains(&tray).then_some(())
    });
    // No account yet: the tooltip says so.
    eventually("the empty tooltip", || {
        app.tray_property("ToolTip").contains("no account").then_some(())
    });

    // Bind the demo account through the same local API the app uses (the app started the daemon).
    let client = pinchat_ipc::Client::connect(&app.socket).await.unwrap();
    bind_demo_with_alice(&client, &server).await;
    eventually("the tooltip to name the account", || {
        app.tray_property("ToolTip").contains("Demo User").then_some(())
    });

    // Alice writes twice: the count reaches the tooltip (and the icon, drawn from the same total).
    let alice_key = server.key("alice").await;
    let demo_id = server.id_of(&alice_key, "demo").await;
    for i in 0..2 {
        server
            .send_text(&alice_key, demo_id, &format!("ui-{i}"), &format!("hello {i}"))
            .await;
    }
    eventually("the tooltip to count 2 unread", || {
        app.tray_property("ToolTip").contains("(2 unread)").then_some(())
    });

    // A click on the tray opens the widget's panel, in a process of its own.
    assert!(
        !window_titles(&x.display)
            .iter()
            .any(|t| t.starts_with("pinchat — "))
    );
    let idle_rss = app.rss_kb();
    app.click_tray();
    eventually("the widget panel to open", || {
        window_titles(&x.display)
            .iter()
            .any(|t| t.starts_with("pinchat — Demo User"))
            .then_some(())
    });

    // The panel's webview runs in a WebKit web process; the next click closes the panel and frees it:
    // the panel's process ends, with its web and network processes.
    let web_processes = |app: &App| {
        app.descendants()
            .iter()
            .filter(|(_, name)| name.starts_with("WebKitWebProces"))
            .count()
    };
    eventually("the panel's web process", || {
        (web_processes(&app) == 1).then_some(())
    });
    shown_with_focus(&x, "pinchat — Demo User");
    let open_rss = app.rss_kb();
    app.click_tray();
    eventually("the panel to close and its processes to end", || {
        (!window_titles(&x.display)
            .iter()
            .any(|t| t.starts_with("pinchat — "))
            && app.descendants().is_empty())
        .then_some(())
    });
    let closed_rss = app.rss_kb();
    eprintln!("app + descendants RSS: idle {idle_rss} kB, panel open {open_rss} kB, closed {closed_rss} kB");
    // Back near idle: the panel took hundreds of megabytes (web engine processes included); what is
    // left is the tray's own small churn.
    assert!(
        closed_rss < idle_rss + 16 * 1024,
        "RSS after closing the panel: {closed_rss} kB, idle: {idle_rss} kB"
    );
    app.click_tray();
    eventually("the panel to open again", || {
        window_titles(&x.display)
            .iter()
            .any(|t| t.starts_with("pinchat — Demo User"))
            .then_some(())
    });

    // A second launch asks the first to show itself and exits: still one tray item.
    let out = App::command(&x.display, dir.path(), &app.socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("already running"));
    assert_eq!(
        registered_items().matches("StatusNotifierItem-").count(),
        1,
        "{}",
        registered_items()
    );
    assert!(!app.log().contains("panicked"), "{}", app.log());
}

/// The patent's flow through the real panel, driven by WebKitWebDriver: log in, pick contacts, the
/// widget shows them; a presence change and a message pushed by the server appear without a reload;
/// unread details; chat; a reply reaches the other account; its read receipt shows.
#[tokio::test]
async fn login_pick_widget_live_updates_details_chat_and_read_state_in_the_real_panel() {
    let _serial = serial().await;
    let _host = ensure_tray_host();
    let x = Xvfb::start();
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let wd = WebDriver::start(&x.display, dir.path()).await;

    // Login (Fig. 2): a wrong password first, in words a person understands.
    wd.type_into("#server", &server.url("")).await;
    wd.type_into("#account", "demo").await;
    wd.type_into("#password", "wrong").await;
    wd.click("#login").await;
    wd.until(
        "the error",
        "return document.querySelector('.error').textContent || null",
    )
    .await;
    assert_eq!(wd.text(".error").await, "Wrong account name or password.");
    wd.type_into("#password", "demo").await;
    wd.click("#login").await;

    // Contact picker (Fig. 3): the full list, searchable, with the limit shown.
    wd.find("#contacts").await;
    let listed = wd
        .js("return document.querySelectorAll('#contacts li').length")
        .await;
    assert_eq!(listed, 30);
    let alice_key = server.key("alice").await;
    let demo_key = server.key("demo").await;
    let alice = server.id_of(&demo_key, "alice").await;
    let bob = server.id_of(&demo_key, "bob").await;
    wd.type_into("#search", "ali").await;
    let filtered = wd
        .js("return document.querySelectorAll('#contacts li').length")
        .await;
    assert_eq!(filtered, 1, "the search narrows the list");
    wd.click(&format!("#c{}", alice.0)).await;
    wd.type_into("#search", "").await;
    wd.click(&format!("#c{}", bob.0)).await;
    let picked = wd.text("#picked").await;
    assert!(picked.starts_with("2 of "), "{picked}");
    wd.click("#done").await;

    // The widget (Fig. 4): identity, pins with state, no unread yet.
    wd.find(&format!("#pins li[data-contact='{}']", alice.0)).await;
    assert!(wd.text("#me").await.contains("Demo User"));
    // Avatars come through the daemon as data URLs: the page itself loads nothing from the network.
    wd.until(
        "Alice's avatar image",
        &format!(
            "return document.querySelector(\"#pins li[data-contact='{}'] .avatar img\")?.src.startsWith('data:image/')",
            alice.0
        ),
    )
    .await;
    assert_eq!(
        wd.js("return document.querySelectorAll('#pins li').length").await,
        2
    );
    let state = format!(
        "return document.querySelector(\"#pins li[data-contact='{}'] .state\").className",
        alice.0
    );
    assert_eq!(wd.js(&state).await, "state offline");
    // The state is a word on hover too, the one pinchatctl uses.
    assert_eq!(
        wd.js(&format!(
            "return document.querySelector(\"#pins li[data-contact='{}'] .state\").title",
            alice.0
        ))
        .await,
        "offline"
    );

    // "Change account" says what it replaces, offers the widget's own server, and can be cancelled.
    wd.click("#change-account").await;
    wd.until(
        "the change-account form",
        "return !!document.querySelector('#replaces')",
    )
    .await;
    assert!(
        wd.text("#replaces").await.contains("demo"),
        "{}",
        wd.text("#replaces").await
    );
    assert_eq!(
        wd.js("return document.querySelector('#server').value").await,
        server.url("")
    );
    wd.click("#cancel").await;
    wd.find(&format!("#pins li[data-contact='{}']", alice.0)).await;

    // Keyboard focus on Bob's row stays there through a live update.
    let bob_row = format!("#pins li[data-contact='{}']", bob.0);
    wd.js(&format!("document.querySelector(\"{bob_row}\").focus()"))
        .await;
    let focused = "return document.activeElement.getAttribute('data-contact')";

    // Alice comes online: the panel shows it without a reload.
    let mut alice_stream = server.stream(&alice_key, pinchat_proto::Encoding::Json).await;
    wd.until("alice online", &format!("{state} === 'state online'"))
        .await;
    assert_eq!(wd.js(focused).await, bob.0.to_string(), "focus stays on Bob");
    // The arrow keys move between rows.
    wd.press(&bob_row, ARROW_UP).await;
    assert_eq!(wd.js(focused).await, alice.0.to_string());
    wd.press(&format!("#pins li[data-contact='{}']", alice.0), ARROW_DOWN)
        .await;
    assert_eq!(wd.js(focused).await, bob.0.to_string());
    // Alice writes: the count appears; the details list the message; a click opens the chat.
    let demo_id = server.id_of(&alice_key, "demo").await;
    server
        .send_text(&alice_key, demo_id, "wd-1", "Lunch at noon?")
        .await;
    let count = format!("[data-unread='{}']", alice.0);
    wd.until(
        "the unread count",
        &format!("return document.querySelector(\"{count}\")?.textContent"),
    )
    .await;
    assert_eq!(wd.text(&count).await, "1");
    wd.click(&count).await;
    wd.find("#unread li").await;
    assert!(wd.text("#unread").await.contains("Lunch at noon?"));
    // Seeing the details marks the message read: Alice's side sees the read marker move.
    conversation_until(
        &server,
        &alice_key,
        demo_id,
        "the details to mark the message read",
        |c| c["peer_read_up_to"].as_u64().unwrap_or(0) > 0,
    )
    .await;
    wd.click("#unread li").await;

    // The chat (Fig. 5): history, then a reply sent with Enter.
    wd.until(
        "the message in the chat",
        "return document.querySelector('#messages')?.textContent.includes('Lunch at noon?')",
    )
    .await;
    // Today's messages under a "Today" separator; a web link is a link (opened by the system's
    // browser, not the panel).
    assert_eq!(wd.text("#messages .day").await, "Today");
    server
        .send_text(
            &alice_key,
            demo_id,
            "wd-link",
            "The menu: https://example.com/menu.",
        )
        .await;
    let href = wd
        .until(
            "the link",
            "return document.querySelector('#messages a.link')?.getAttribute('href')",
        )
        .await;
    assert_eq!(
        href, "https://example.com/menu",
        "the full stop is not part of it"
    );
    wd.type_into("#text", &format!("Yes, see you there{ENTER}")).await;
    // Alice receives it.
    let c = conversation_until(&server, &alice_key, demo_id, "Alice to receive the reply", |c| {
        message(c, "Yes, see you there").is_some()
    })
    .await;
    let sent_id = message(&c, "Yes, see you there").unwrap()["id"].as_u64().unwrap();
    // Alice reads the reply: the panel shows it as read.
    let _: serde_json::Value = server
        .post(
            &alice_key,
            &format!("/v1/messages/{}/read", demo_id.0),
            &serde_json::json!({ "up_to": sent_id }),
        )
        .await
        .unwrap();
    wd.until(
        "the read state",
        &format!("return document.querySelector(\"#messages [data-message='{sent_id}']\")?.dataset.state === 'read'"),
    )
    .await;
    alice_stream.ping().await;

    // Scrolling back through a long conversation: 40 more messages from Alice while the widget shows;
    // opening the chat again shows the newest page, and scrolling to the top brings the older ones,
    // in order, up to the first.
    // Esc goes back from the chat to the widget.
    wd.press("#text", ESCAPE).await;
    wd.find(&format!("#pins li[data-contact='{}']", alice.0)).await;
    for i in 0..40 {
        server
            .send_text(
                &alice_key,
                demo_id,
                &format!("wd-note-{i}"),
                &format!("note {i:02}"),
            )
            .await;
    }
    wd.until(
        "the 40 unread",
        &format!("return document.querySelector(\"{count}\")?.textContent === '40'"),
    )
    .await;
    // A reply from the unread details opens the chat, with the reply at the bottom.
    wd.click(&count).await;
    wd.find("#reply").await;
    wd.type_into("#reply", &format!("Reading them now{ENTER}")).await;
    // The chat's messages, top to bottom.
    let texts = || async {
        let v = wd
            .js("return [...document.querySelectorAll('#messages .msg')].map(m => m.firstChild.textContent)")
            .await;
        serde_json::from_value::<Vec<String>>(v).unwrap()
    };
    // The reply can be shown before the history has come (it is typed as soon as the chat opens):
    // wait for both.
    wd.until(
        "the newest page",
        "return document.querySelector('#messages')?.textContent.includes('Reading them now') \
         && document.querySelectorAll('#messages .msg').length >= 30",
    )
    .await;
    // The newest page of history (30), with the reply at the end (from history, or just sent).
    let page = texts().await;
    assert!((30..=31).contains(&page.len()), "{page:?}");
    assert_eq!(
        page[page.len() - 2..],
        ["note 39", "Reading them now"],
        "{page:?}"
    );
    assert!(!page.contains(&"note 09".to_owned()), "{page:?}");
    wd.js("document.querySelector('#messages').parentElement.scrollTop = 0; return true")
        .await;
    wd.until(
        "the older messages",
        "return document.querySelectorAll('#messages .msg').length === 44",
    )
    .await;
    let all = texts().await;
    // (The link's message shows its text up to the link.)
    let expected: Vec<String> = ["Lunch at noon?", "The menu: ", "Yes, see you there"]
        .map(str::to_owned)
        .into_iter()
        .chain((0..40).map(|i| format!("note {i:02}")))
        .chain(["Reading them now".to_owned()])
        .collect();
    assert_eq!(all, expected);

    // The server stops accepting the widget's key: the panel asks for the password, in place.
    server.admin_ok(&["account", "revoke-keys", "demo"]);
    wd.find("#reauth").await;
    wd.type_into("#password", "not it").await;
    wd.click("#reauth").await;
    wd.until(
        "the error",
        "return document.querySelector('.error').textContent || null",
    )
    .await;
    assert_eq!(wd.text(".error").await, "Wrong account name or password.");
    wd.type_into("#password", "demo").await;
    wd.click("#reauth").await;
    wd.find(&format!("#pins li[data-contact='{}']", alice.0)).await;
    assert_eq!(wd.text("#connection").await, "connected");

    // The full client of the account starts: the panel says the widget uses its connection, and
    // when it goes, that the widget is connected on its own again.
    let mut full =
        pinchat_tests::FullClient::start(&server, "demo", &dir.path().join("run").join("daemon.sock"));
    wd.until(
        "the borrowed connection in words",
        "return document.querySelector('#connection').textContent === 'connected via your pinchat client' || null",
    )
    .await;
    full.kill();
    wd.until(
        "the own connection again",
        "return document.querySelector('#connection').textContent === 'connected' || null",
    )
    .await;

    // Emoji are drawn in colour with the page's own fonts (a colour emoji font is in the stack and
    // installed: the package recommends it), not as outlines or empty boxes.
    let coloured = wd
        .js(
            "const c = document.createElement('canvas'); c.width = c.height = 40;
             const g = c.getContext('2d');
             g.font = '32px ' + getComputedStyle(document.body).fontFamily;
             g.fillText('\u{1F600}', 0, 34);
             const d = g.getImageData(0, 0, 40, 40).data;
             let n = 0;
             for (let i = 0; i < d.length; i += 4) {
               const [r, gr, b, a] = [d[i], d[i + 1], d[i + 2], d[i + 3]];
               if (a > 200 && Math.max(r, gr, b) - Math.min(r, gr, b) > 80) n++;
             }
             return n",
        )
        .await;
    assert!(
        coloured.as_u64().is_some_and(|n| n > 100),
        "the emoji has {coloured} coloured pixels: no colour emoji font"
    );
}

/// Regenerates `docs/screenshots/` (every panel, light and dark, English and Chinese) when
/// `PINCHAT_SCREENSHOTS` names the directory: `ui/screenshots.sh` runs it. Ignored otherwise.
#[tokio::test]
#[ignore = "regenerates the README's screenshots; run ui/screenshots.sh"]
async fn screenshots() {
    let Some(out) = std::env::var_os("PINCHAT_SCREENSHOTS") else {
        return;
    };
    let out = std::path::PathBuf::from(out);
    std::fs::create_dir_all(&out).unwrap();
    let _serial = serial().await;
    let _host = ensure_tray_host();
    let x = Xvfb::start();
    let server = Server::start().await;
    let alice_key = server.key("alice").await;
    let demo_key = server.key("demo").await;
    let demo_id = server.id_of(&alice_key, "demo").await;
    let pins: Vec<_> = futures_util::future::join_all(
        ["alice", "wangwei", "bob", "lina", "carol"].map(|l| server.id_of(&demo_key, l)),
    )
    .await;
    // Alice is online and has written; the others keep their demo states.
    let _alice_stream = server.stream(&alice_key, pinchat_proto::Encoding::Json).await;
    for (lang, theme) in [("en", "light"), ("en", "dark"), ("zh", "light"), ("zh", "dark")] {
        let dir = tempfile::tempdir().unwrap();
        let gtk_theme = if theme == "dark" {
            "Adwaita:dark"
        } else {
            "Adwaita"
        };
        let wd = WebDriver::start_with(
            &x.display,
            dir.path(),
            &[("PINCHAT_LANG", lang), ("GTK_THEME", gtk_theme)],
        )
        .await;
        let shot = |name: &str, png: Vec<u8>| {
            std::fs::write(out.join(format!("{name}-{lang}-{theme}.png")), png).unwrap();
        };
        wd.type_into("#server", &server.url("")).await;
        wd.type_into("#account", "demo").await;
        shot("login", wd.screenshot());
        wd.type_into("#password", "demo").await;
        wd.click("#login").await;
        wd.find("#contacts").await;
        for p in &pins[..3] {
            wd.click(&format!("#c{}", p.0)).await;
        }
        shot("picker", wd.screenshot());
        for p in &pins[3..] {
            wd.click(&format!("#c{}", p.0)).await;
        }
        wd.click("#done").await;
        let text = if lang == "zh" {
            "中午一起吃饭吗？"
        } else {
            "Lunch at noon?"
        };
        server
            .send_text(&alice_key, demo_id, &format!("shot-{lang}-{theme}"), text)
            .await;
        let count = format!("[data-unread='{}']", pins[0].0);
        wd.until(
            "the count",
            &format!("return document.querySelector(\"{count}\")"),
        )
        .await;
        shot("widget", wd.screenshot());
        wd.click(&count).await;
        wd.find("#unread li").await;
        shot("details", wd.screenshot());
        wd.click("#unread li").await;
        wd.find("#text").await;
        let reply = if lang == "zh" {
            "好的，十二点见"
        } else {
            "Yes, see you there"
        };
        wd.type_into("#text", &format!("{reply}{ENTER}")).await;
        wd.until(
            "the reply",
            &format!("return document.querySelector('#messages').textContent.includes('{reply}')"),
        )
        .await;
        shot("chat", wd.screenshot());
    }
}

/// The tray menu drives the settings: a widget's update mode (through the daemon), do not disturb
/// (saved in the app's settings) and the language (the tooltip follows).
#[tokio::test]
async fn the_tray_menu_sets_update_mode_do_not_disturb_and_language() {
    let _serial = serial().await;
    let _host = ensure_tray_host();
    let x = Xvfb::start();
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(&x.display, dir.path());
    let client = pinchat_ipc::Client::connect(&app.socket).await.unwrap();
    let created = bind_demo(&client, &server).await;
    let widget = created.widget.id.clone();
    app.wait_for_account_menu("Demo User");
    let toggled = |label: &str| app.menu().iter().find(|(_, l, _)| l == label).map(|(_, _, t)| *t);
    assert_eq!(toggled("Live updates (push)"), Some(1));

    app.click_menu("Check every few minutes (poll)");
    let deadline = std::time::Instant::now() + pinchat_tests::DEADLINE;
    loop {
        let view = client
            .call::<pinchat_ipc::api::Snapshot>(pinchat_ipc::api::WidgetRef {
                widget: widget.clone(),
            })
            .await
            .unwrap();
        if view.mode == pinchat_ipc::api::Mode::Poll {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the mode did not change");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    eventually("the menu to show poll", || {
        (toggled("Check every few minutes (poll)") == Some(1)).then_some(())
    });

    app.click_menu("Do not disturb");
    let settings = dir.path().join("config").join("pinchat").join("settings.json");
    eventually("do not disturb to be saved", || {
        std::fs::read_to_string(&settings)
            .ok()
            .filter(|s| s.contains(&widget))
            .map(|_| ())
    });
    eventually("the menu to show do not disturb", || {
        (toggled("Do not disturb") == Some(1)).then_some(())
    });

    app.click_menu("简体中文");
    eventually("the tooltip in Chinese", || {
        app.tray_property("ToolTip").contains("条未读").then_some(())
    });
    assert!(std::fs::read_to_string(&settings).unwrap().contains("\"zh\""));

    // Start at login: an XDG autostart entry for this app, which `pinchat autostart` reports too; the
    // entry names the program in TryExec, so a removed program is skipped at login.
    let start_at_login = "登录时启动";
    assert_eq!(toggled(start_at_login), Some(0));
    app.click_menu(start_at_login);
    let entry = dir
        .path()
        .join("config")
        .join("autostart")
        .join("pinchat.desktop");
    let text = eventually("the autostart entry", || std::fs::read_to_string(&entry).ok());
    let program = pinchat_tests::desktop::app_binary();
    assert!(
        text.lines()
            .any(|l| l == format!("TryExec={}", program.display())),
        "{text}"
    );
    eventually("the menu to show start at login", || {
        (toggled(start_at_login) == Some(1)).then_some(())
    });
    let report = |dir: &std::path::Path| {
        let out = std::process::Command::new(&program)
            .arg("autostart")
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(report(dir.path()), "start at login: on\n");
    app.click_menu(start_at_login);
    eventually("the autostart entry to go", || (!entry.exists()).then_some(()));
    assert_eq!(report(dir.path()), "start at login: off\n");
}

/// "Do not disturb for 1 hour" is saved with its end, shown in the menu, and keeps a message quiet; a
/// pinned contact let through still raises a notification.
#[tokio::test]
async fn do_not_disturb_for_an_hour_lets_chosen_contacts_through() {
    let _serial = serial().await;
    let _host = ensure_tray_host();
    let notifications = FakeNotifications::start();
    let x = Xvfb::start();
    let WithAlice {
        server,
        dir,
        app,
        client: _client,
        alice,
        alice_key,
        demo_id,
    } = with_alice(&x).await;
    let toggled = |label: &str| app.menu().iter().find(|(_, l, _)| l == label).map(|e| e.2);
    eventually("Alice in the let-through submenu", || {
        toggled(&alice.name).filter(|&t| t == 0)
    });

    let clicked_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    app.click_menu("Do not disturb for 1 hour");
    let settings = dir.path().join("config").join("pinchat").join("settings.json");
    let until = eventually("the end of the quiet hour to be saved", || {
        let text = std::fs::read_to_string(&settings).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["quiet_until"].as_object()?.values().next()?.as_u64()
    });
    let hour = 3_600_000;
    assert!(
        (clicked_at + hour..clicked_at + hour + 60_000).contains(&until),
        "quiet until {until}, clicked at {clicked_at}"
    );
    eventually("the menu to show do not disturb and its end", || {
        (toggled("Do not disturb") == Some(1)
            && app.menu().iter().any(|(_, l, _)| l.starts_with("Quiet until ")))
        .then_some(())
    });
    server.send_text(&alice_key, demo_id, "q-1", "shh").await;
    eventually("the tooltip to count 1 unread", || {
        app.tray_property("ToolTip").contains("(1 unread)").then_some(())
    });
    assert!(notifications.shown().is_empty(), "{:?}", notifications.shown());

    // Alice gets through.
    app.click_menu(&alice.name);
    eventually("Alice to be let through", || {
        (toggled(&alice.name) == Some(1)).then_some(())
    });
    server.send_text(&alice_key, demo_id, "q-2", "It is urgent").await;
    let shown = eventually("a notification", || notifications.shown().first().cloned());
    assert_eq!(shown.body, "It is urgent");
    assert_eq!(notifications.shown().len(), 1);
}

/// A message from a pinned contact raises an OS notification naming the sender (none while the
/// widget is in "do not disturb"); activating it opens the widget's panel on that chat, which marks
/// the message read.
#[tokio::test]
async fn a_message_raises_a_notification_naming_the_sender_and_activating_it_opens_the_chat() {
    let _serial = serial().await;
    let _host = ensure_tray_host();
    let notifications = FakeNotifications::start();
    let x = Xvfb::start();
    let WithAlice {
        server,
        dir,
        app,
        client: _client,
        alice,
        alice_key,
        demo_id,
    } = with_alice(&x).await;

    // Do not disturb: the message is counted, and nothing is shown.
    app.wait_for_account_menu("Demo User");
    let dnd = || {
        app.menu()
            .iter()
            .find(|(_, l, _)| l == "Do not disturb")
            .map(|e| e.2)
    };
    app.click_menu("Do not disturb");
    eventually("do not disturb to be on", || (dnd() == Some(1)).then_some(()));
    server.send_text(&alice_key, demo_id, "n-1", "psst").await;
    // The tray learns of a message (and decides on its notification) before it refreshes the count.
    eventually("the tooltip to count 1 unread", || {
        app.tray_property("ToolTip").contains("(1 unread)").then_some(())
    });
    app.click_menu("Do not disturb");
    eventually("do not disturb to be off", || (dnd() == Some(0)).then_some(()));

    // Alice's avatar is fetched ahead, for her notifications.
    let avatar = cached_avatar(dir.path());
    assert!(std::fs::read(&avatar).unwrap().starts_with(b"\x89PNG"));

    // The next one is shown, naming Alice, with her avatar and a default action (a click on it).
    server
        .send_text(&alice_key, demo_id, "n-2", "Lunch at noon?")
        .await;
    let shown = eventually("a notification", || notifications.shown().first().cloned());
    assert_eq!(notifications.shown().len(), 1, "{:?}", notifications.shown());
    assert_eq!(shown.summary, format!("New message from {}", alice.name));
    assert_eq!(shown.body, "Lunch at noon?");
    assert_eq!(shown.image.as_deref(), avatar.to_str());
    assert!(shown.actions.iter().any(|a| a == "default"), "{shown:?}");

    // A second message from Alice replaces her notification rather than stacking a new one.
    server.send_text(&alice_key, demo_id, "n-3", "Or at one?").await;
    eventually("the notification to be replaced", || {
        notifications
            .shown()
            .first()
            .is_some_and(|n| n.body == "Or at one?")
            .then_some(())
    });
    assert_eq!(notifications.shown().len(), 1, "{:?}", notifications.shown());

    // Clicking it opens the widget's panel on the chat with Alice (clicked again until the app has
    // heard of it: the server records a notification before the app learns its id).
    assert!(
        !window_titles(&x.display)
            .iter()
            .any(|t| t.starts_with("pinchat — "))
    );
    eventually("the panel to open", || {
        notifications.activate(shown.id);
        window_titles(&x.display)
            .iter()
            .any(|t| t.starts_with("pinchat — Demo User"))
            .then_some(())
    });
    // Showing the chat marks Alice's messages read: the count goes and Alice sees the read marker.
    eventually("the tooltip to count 0 unread", || {
        app.tray_property("ToolTip").contains("(0 unread)").then_some(())
    });
    let history = conversation(&server, &alice_key, demo_id).await;
    assert!(history["peer_read_up_to"].as_u64().unwrap_or(0) > 0, "{history}");

    // While the chat with Alice is on screen, her messages raise no notification.
    server.send_text(&alice_key, demo_id, "n-4", "I see you").await;
    eventually("the tray to hold back the notification", || {
        app.log().contains("the chat is on screen").then_some(())
    });
    let now = notifications.shown();
    assert_eq!(now.len(), 1, "{now:?}");
    assert_eq!(now[0].body, "Or at one?");
    assert!(!app.log().contains("panicked"), "{}", app.log());
}

/// A notification's "Mark as read" button marks the chat read without opening a panel.
#[tokio::test]
async fn mark_as_read_on_a_notification_marks_the_chat_read_without_opening_it() {
    let _serial = serial().await;
    let _host = ensure_tray_host();
    let notifications = FakeNotifications::start();
    let x = Xvfb::start();
    let WithAlice {
        server,
        dir: _dir,
        app,
        client: _client,
        alice: _,
        alice_key,
        demo_id,
    } = with_alice(&x).await;
    server.send_text(&alice_key, demo_id, "m-1", "ping").await;
    let shown = eventually("a notification", || notifications.shown().first().cloned());
    assert!(has_action(&shown, "mark-read", "Mark as read"), "{shown:?}");
    eventually("the tooltip to count 1 unread", || {
        app.tray_property("ToolTip").contains("(1 unread)").then_some(())
    });
    notifications.invoke(shown.id, "mark-read");
    eventually("the tooltip to count 0 unread", || {
        app.tray_property("ToolTip").contains("(0 unread)").then_some(())
    });
    let history = conversation(&server, &alice_key, demo_id).await;
    assert!(history["peer_read_up_to"].as_u64().unwrap_or(0) > 0, "{history}");
    assert_no_panel(&x);
    assert!(!app.log().contains("panicked"), "{}", app.log());
}

/// Where the notification server takes replies in the notification (`inline-reply`, as KDE Plasma's
/// does), the notification has a reply field; a reply typed there reaches the contact, and the chat is
/// read, without a panel opening.
#[tokio::test]
async fn a_reply_typed_in_a_notification_reaches_the_contact() {
    let _serial = serial().await;
    let _host = ensure_tray_host();
    let notifications = FakeNotifications::start();
    let x = Xvfb::start();
    let WithAlice {
        server,
        dir: _dir,
        app,
        client: _client,
        alice: _,
        alice_key,
        demo_id,
    } = with_alice(&x).await;
    server.send_text(&alice_key, demo_id, "r-1", "Coffee?").await;
    let shown = eventually("a notification", || notifications.shown().first().cloned());
    assert!(has_action(&shown, "inline-reply", "Reply"), "{shown:?}");
    notifications.reply(shown.id, "Yes, in 5 minutes");
    let history = conversation_until(&server, &alice_key, demo_id, "the reply to reach Alice", |c| {
        message(c, "Yes, in 5 minutes").is_some()
    })
    .await;
    let messages = history["messages"].as_array().unwrap();
    assert_eq!(
        messages
            .iter()
            .filter(|m| m["text"] == "Yes, in 5 minutes")
            .count(),
        1,
        "{history}"
    );
    eventually("the tooltip to count 0 unread", || {
        app.tray_property("ToolTip").contains("(0 unread)").then_some(())
    });
    assert_no_panel(&x);
}

/// The same with a real notification server, dunst: it sends the click (`ActionInvoked`) only to the
/// bus connection that showed the notification, so the app must show and listen on one connection.
#[tokio::test]
async fn a_click_on_a_notification_of_the_real_server_dunst_opens_the_chat() {
    let _serial = serial().await;
    let _host = ensure_tray_host();
    let x = Xvfb::start();
    let dunst = Dunst::start(&x.display);
    let WithAlice {
        server,
        dir,
        app,
        client: _client,
        alice: _,
        alice_key,
        demo_id,
    } = with_alice(&x).await;
    eventually("the account in the tray", || {
        app.tray_property("ToolTip").contains("(0 unread)").then_some(())
    });
    let avatar = cached_avatar(dir.path());

    server
        .send_text(&alice_key, demo_id, "d-1", "Are you there?")
        .await;
    eventually("dunst to show the notification", || {
        (dunst.displayed() == 1).then_some(())
    });
    eventually("the tooltip to count 1 unread", || {
        app.tray_property("ToolTip").contains("(1 unread)").then_some(())
    });
    assert!(
        !window_titles(&x.display)
            .iter()
            .any(|t| t.starts_with("pinchat — "))
    );
    dunst.act_on_newest();
    // Clicked, it is closed; dunst showed it with Alice's picture.
    let icon = eventually("the clicked notification in dunst's history", || {
        dunst.newest_closed_icon()
    });
    assert_eq!(std::path::Path::new(&icon), avatar, "the sender's picture");
    eventually("the panel to open on the chat", || {
        window_titles(&x.display)
            .iter()
            .any(|t| t.starts_with("pinchat — Demo User"))
            .then_some(())
    });
    eventually("the tooltip to count 0 unread", || {
        app.tray_property("ToolTip").contains("(0 unread)").then_some(())
    });
    assert!(!app.log().contains("panicked"), "{}", app.log());
}

/// `pinchat demo` without a display: it says so and shows the demo widget in the terminal, redrawn as
/// the demo world changes; Ctrl-C (SIGINT) stops it cleanly, and the demo's files go with it.
#[test]
fn the_demo_without_a_display_lives_in_the_terminal_and_cleans_up_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(pinchat_tests::desktop::app_binary())
        .args(["demo", "--port", "0", "--every", "1"])
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env("PINCHAT_LANG", "en")
        .env("TMPDIR", dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("demo.log")).unwrap())
        .spawn()
        .unwrap();
    let demo_dirs = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("pinchat-demo-"))
            .count()
    };
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = std::io::BufRead::lines(out).map(|l| l.unwrap());
    let mut next = |what: &str, pred: &dyn Fn(&str) -> bool| -> String {
        lines
            .by_ref()
            .find(|l| pred(l))
            .unwrap_or_else(|| panic!("the demo ended before {what}"))
    };
    next("its banner", &|l: &str| {
        l.starts_with("pinchat demo: demo server at http://127.0.0.1:")
    });
    next("saying there is no display", &|l: &str| {
        l.starts_with("No graphical display found")
    });
    // The widget: the demo user's line, then the five pinned contacts.
    next("the widget", &|l: &str| l.starts_with("Demo User"));
    let pins: Vec<String> = (0..5).map(|_| next("a pin", &|_: &str| true)).collect();
    assert!(
        pins.iter()
            .all(|p| p.starts_with("  ●") || p.starts_with("  ○") || p.starts_with("  ◐")),
        "{pins:?}"
    );
    assert_eq!(
        demo_dirs(),
        1,
        "the demo keeps its data in one temporary directory"
    );
    // The demo world changes every second: the widget is drawn again.
    next("the widget drawn again", &|l: &str| l.starts_with("Demo User"));

    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(dir.path().join("demo.log")).unwrap_or_default();
    assert!(status.success(), "exit {status:?}: {log}");
    assert_eq!(demo_dirs(), 0, "the demo's directory is removed on Ctrl-C");
    assert!(!log.contains("panicked"), "{log}");
}

/// A panel whose process stops answering (a hung web engine, here a SIGSTOP) still closes: the tray
/// kills it once its grace period is over, and the next click opens a working one.
#[tokio::test]
async fn a_hung_panel_is_killed_when_closed() {
    let _serial = serial().await;
    let _host = ensure_tray_host();
    let x = Xvfb::start();
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(&x.display, dir.path());
    let client = pinchat_ipc::Client::connect(&app.socket).await.unwrap();
    bind_demo(&client, &server).await;
    eventually("the tooltip to name the account", || {
        app.tray_property("ToolTip").contains("Demo User").then_some(())
    });
    let panel_process = |app: &App| app.panels().first().copied();
    app.click_tray();
    let panel = eventually("the panel's process", || panel_process(&app));
    shown_with_focus(&x, "pinchat — Demo User");
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &panel.to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    app.click_tray();
    eventually("the hung panel to be killed", || {
        (!std::path::Path::new(&format!("/proc/{panel}")).exists()).then_some(())
    });
    app.click_tray();
    let again = eventually("a new panel", || panel_process(&app));
    assert_ne!(again, panel);
    let log = app.log();
    assert!(log.contains("did not end; killing it"), "{log}");
    assert!(
        log.contains("signal: 9"),
        "the tray logs how the panel ended: {log}"
    );
}

/// Notifications are shown and their clicks heard by one thread on one bus connection, not a waiting
/// thread per notification; 40 messages from one contact make one notification (each replaces the
/// one before), and a click on it opens the chat.
#[tokio::test]
async fn forty_messages_from_one_contact_make_one_notification_and_leave_no_thread_behind() {
    let _serial = serial().await;
    let _host = ensure_tray_host();
    let notifications = FakeNotifications::start();
    let x = Xvfb::start();
    let WithAlice {
        server,
        dir: _dir,
        app,
        client: _client,
        alice: _,
        alice_key,
        demo_id,
    } = with_alice(&x).await;
    for i in 0..40 {
        server
            .send_text(&alice_key, demo_id, &format!("b-{i}"), &format!("message {i}"))
            .await;
    }
    eventually("the newest message in the notification", || {
        notifications
            .shown()
            .first()
            .is_some_and(|n| n.body == "message 39")
            .then_some(())
    });
    let shown = notifications.shown();
    assert_eq!(shown.len(), 1, "{shown:?}");
    // One thread shows and listens; none is left per notification.
    assert_eq!(app.threads_named("pinchat-notify"), 1);
    assert_eq!(app.threads_named("pinchat-notifi"), 0);
    assert!(
        !window_titles(&x.display)
            .iter()
            .any(|t| t.starts_with("pinchat — "))
    );
    eventually("the chat to open", || {
        notifications.activate(shown[0].id);
        window_titles(&x.display)
            .iter()
            .any(|t| t.starts_with("pinchat — Demo User"))
            .then_some(())
    });
    eventually("the tooltip to count 0 unread", || {
        app.tray_property("ToolTip").contains("(0 unread)").then_some(())
    });
    assert!(!app.log().contains("panicked"), "{}", app.log());
}

/// The tray's panel is a popover: shown once its page has drawn, with no taskbar entry and with
/// keyboard focus; gone when focus goes to another window (here, the add-account panel the menu
/// opens, which itself stays open when it loses focus, and closes on Esc); and it comes back at the
/// size and place the person gave it.
#[tokio::test]
async fn the_tray_panel_is_a_popover_and_remembers_its_size_and_place() {
    let _serial = serial().await;
    let _host = ensure_tray_host();
    let x = Xvfb::start();
    let s = with_alice(&x).await;
    let app = &s.app;
    let tray = app.tray_name();
    eventually("the tray item to register with the host", || {
        registered_items().contains(&tray).then_some(())
    });
    eventually("the tooltip to name the account", || {
        app.tray_property("ToolTip").contains("Demo User").then_some(())
    });
    app.click_tray();
    let title = "pinchat — Demo User";
    let panel = eventually("the panel to be shown", || visible_window(&x.display, title));
    // No blank frame: the window was mapped only after its page said it had drawn.
    assert!(
        app.log().contains("the panel's page has drawn"),
        "the window was shown before its page had drawn: {}",
        app.log()
    );
    focus(&x, panel);
    let state = xprop(&x.display, panel, "_NET_WM_STATE");
    assert!(
        state.contains("_NET_WM_STATE_SKIP_TASKBAR"),
        "a taskbar entry: {state}"
    );

    // Another window takes the focus: the popover closes itself. The add-account panel stays open
    // while it is left for another window (the person may be looking up a password).
    app.click_menu("Add account…");
    let login = eventually("the add-account panel", || {
        visible_window_titled(&x.display, "pinchat")
    });
    focus(&x, login);
    eventually("the popover to close when it lost focus", || {
        visible_window(&x.display, title).is_none().then_some(())
    });
    focus(&x, root_window(&x.display));
    focus(&x, login);
    assert_eq!(
        visible_window_titled(&x.display, "pinchat"),
        Some(login),
        "the add-account panel stays"
    );
    let login_id = login.to_string();
    // Esc on its first view closes it.
    xdotool(&x.display, &["key", "--window", &login_id, "Escape"]).expect("press Esc");
    eventually("Esc to close the add-account panel", || {
        visible_window_titled(&x.display, "pinchat")
            .is_none()
            .then_some(())
    });

    // The person makes the panel bigger and moves it; a tray click closes it (it has the focus).
    app.click_tray();
    let panel = shown_with_focus(&x, title);
    let shown = window_geometry(&x.display, panel);
    let id = panel.to_string();
    xdotool(&x.display, &["windowsize", "--sync", &id, "430", "620"]).expect("resize");
    xdotool(&x.display, &["windowmove", "--sync", &id, "40", "50"]).expect("move");
    app.click_tray();
    eventually("a click to close the focused panel", || {
        window_titles(&x.display)
            .iter()
            .all(|t| !t.starts_with("pinchat — "))
            .then_some(())
    });
    let settings = eventually("the size and place to be saved", || {
        let s = std::fs::read_to_string(s.dir.path().join("config/pinchat/settings.json")).ok()?;
        s.contains("430").then_some(s)
    });
    assert!(settings.contains("620"), "{settings}");

    // Next time it opens where and as big as the person left it, not next to the icon.
    app.click_tray();
    let panel = eventually("the panel to open a third time", || {
        visible_window(&x.display, title)
    });
    let (x0, y0, w, h) = window_geometry(&x.display, panel);
    assert_eq!(
        (w, h),
        (430, 620),
        "the remembered size (first shown at {shown:?})"
    );
    assert!(
        (x0 - 40).abs() <= 8 && (y0 - 50).abs() <= 8,
        "the remembered place: {x0},{y0} (first shown at {shown:?})"
    );
    assert!(!app.log().contains("panicked"), "{}", app.log());
}

/// One panel reaches every account (a tab each, with its unread count; choosing one shows its
/// widget and titles the window with it); a popover pinned open stays when it loses focus, and
/// closes once unpinned.
#[tokio::test]
async fn one_panel_reaches_every_account_and_a_popover_pinned_open_survives_focus_loss() {
    let _serial = serial().await;
    let x = Xvfb::start();
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let wd = WebDriver::start_panel(&x.display, dir.path(), &[], &["--popover"]).await;
    let client = pinchat_ipc::Client::connect(&wd.app.as_ref().expect("the tray app").socket)
        .await
        .unwrap();
    bind_demo_with_alice(&client, &server).await;
    let second = client
        .call::<CreateWidget>(Login {
            server: server.url(""),
            account: "bob".into(),
            password: "demo".into(),
        })
        .await
        .unwrap();
    let bob_name = second.widget.account.name.clone();
    // Alice writes to the demo user: the demo tab counts it.
    let alice_key = server.key("alice").await;
    let demo_id = server.id_of(&alice_key, "demo").await;
    server.send_text(&alice_key, demo_id, "tabs-1", "hello").await;
    let widgets = client
        .call::<pinchat_ipc::api::ListWidgets>(pinchat_ipc::api::NoParams {})
        .await
        .unwrap();
    let demo_widget = widgets.iter().find(|w| w.login == "demo").unwrap().id.clone();
    wd.js(&format!(
        "location.search = '?lang=en&view=widget&widget={demo_widget}'; return true;"
    ))
    .await;
    wd.until(
        "a tab per account",
        "return document.querySelectorAll('#accounts [role=tab]').length === 2 || null;",
    )
    .await;
    wd.until(
        "the demo tab to count the unread message",
        "const t = document.querySelector('#accounts [aria-selected=true]'); return (t && t.textContent.includes('Demo User') && t.textContent.includes('1')) || null;",
    )
    .await;
    wd.click(&format!("#accounts [data-widget='{}']", second.widget.id))
        .await;
    wd.until(
        "the second account's widget",
        &format!(
            "const me = document.getElementById('me'); return (me && me.textContent.includes({bob_name:?})) || null;"
        ),
    )
    .await;
    let title = format!("pinchat — {bob_name}");
    let panel = eventually("the window to be titled with the chosen account", || {
        visible_window(&x.display, &title)
    });
    let state = xprop(&x.display, panel, "_NET_WM_STATE");
    assert!(state.contains("_NET_WM_STATE_SKIP_TASKBAR"), "{state}");

    // Pinned open, it stays when the focus goes elsewhere.
    let root = root_window(&x.display);
    focus(&x, panel);
    wd.until(
        "the page to have the focus",
        "return document.hasFocus() || null;",
    )
    .await;
    wd.click("#keep-open").await;
    wd.until(
        "the pin to show it is on",
        "return document.getElementById('keep-open').getAttribute('aria-pressed') === 'true' || null;",
    )
    .await;
    focus(&x, root);
    wd.until(
        "the page to lose the focus",
        "return !document.hasFocus() || null;",
    )
    .await;
    // The panel handled the focus change before the page saw it; one more round trip, and it is there.
    assert_eq!(wd.js("return 1;").await, serde_json::json!(1));
    assert_eq!(
        visible_window(&x.display, &title),
        Some(panel),
        "a pinned panel stays"
    );

    // Unpinned, it is a popover again.
    wd.click("#keep-open").await;
    focus(&x, panel);
    wd.until(
        "the page to have the focus again",
        "return document.hasFocus() || null;",
    )
    .await;
    focus(&x, root);
    eventually("the unpinned popover to close on focus loss", || {
        visible_window(&x.display, &title).is_none().then_some(())
    });
}

/// What in the page is clipped, wrapped or stray where it should not be: a button whose words wrap or
/// do not fit, a text field whose placeholder does not fit in it, text lying between a view's parts.
/// Empty when the layout holds.
const LAYOUT_PROBLEMS: &str = r#"
const problems = [];
// Stray text between a view's parts (a `null` printed as a word, say).
for (const n of document.getElementById('app').childNodes) {
  if (n.nodeType === Node.TEXT_NODE && n.textContent.trim()) problems.push(`stray text: ${n.textContent}`);
}
const canvas = document.createElement('canvas').getContext('2d');
for (const b of document.querySelectorAll('button')) {
  if (!b.offsetParent) continue;
  const style = getComputedStyle(b);
  const line = parseFloat(style.lineHeight) || parseFloat(style.fontSize) * 1.4;
  const inner = b.clientHeight - parseFloat(style.paddingTop) - parseFloat(style.paddingBottom);
  if (b.scrollWidth > b.clientWidth + 1) problems.push(`button ${b.id || b.textContent} is cut: ${b.scrollWidth} > ${b.clientWidth}`);
  if (inner > line * 1.5) problems.push(`button ${b.id || b.textContent} wraps: ${inner}px for ${line}px lines`);
}
for (const f of document.querySelectorAll('input[placeholder], textarea[placeholder]')) {
  if (!f.offsetParent || !f.placeholder) continue;
  const style = getComputedStyle(f);
  canvas.font = `${style.fontSize} ${style.fontFamily}`;
  const width = f.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  const text = canvas.measureText(f.placeholder).width;
  const line = parseFloat(style.lineHeight) || parseFloat(style.fontSize) * 1.4;
  const height = f.clientHeight - parseFloat(style.paddingTop) - parseFloat(style.paddingBottom);
  const lines = f.tagName === 'TEXTAREA' ? Math.max(1, Math.floor((height + 1) / line)) : 1;
  if (text > width * lines) problems.push(`placeholder of ${f.id} is clipped: ${Math.round(text)}px in ${lines} line(s) of ${Math.round(width)}px`);
}
return problems;
"#;

/// In English and in Chinese, at the panel's default size, no view clips or wraps its buttons or the
/// placeholders of its fields: login, contact picker, widget, chat.
#[tokio::test]
async fn no_view_clips_or_wraps_its_words_in_english_or_chinese() {
    let _serial = serial().await;
    let x = Xvfb::start();
    let server = Server::start().await;
    for lang in ["en", "zh"] {
        let dir = tempfile::tempdir().unwrap();
        let wd = WebDriver::start_with(&x.display, dir.path(), &[("PINCHAT_LANG", lang)]).await;
        let mut problems = vec![];
        let mut look = |view: &str, found: serde_json::Value| {
            for p in found.as_array().into_iter().flatten() {
                problems.push(format!("{lang} {view}: {}", p.as_str().unwrap_or_default()));
            }
        };
        wd.find("#login").await;
        look("login", wd.js(LAYOUT_PROBLEMS).await);
        let client = pinchat_ipc::Client::connect(&wd.app.as_ref().expect("the tray app").socket)
            .await
            .unwrap();
        let alice = bind_demo_with_alice(&client, &server).await;
        let widgets = client
            .call::<pinchat_ipc::api::ListWidgets>(pinchat_ipc::api::NoParams {})
            .await
            .unwrap();
        wd.js(&format!(
            "location.search = '?lang={lang}&view=widget&widget={}'; return true;",
            widgets[0].id
        ))
        .await;
        wd.find(&format!("li[data-contact='{}']", alice.id)).await;
        look("widget", wd.js(LAYOUT_PROBLEMS).await);
        wd.click("#repick").await;
        wd.find("#done").await;
        look("picker", wd.js(LAYOUT_PROBLEMS).await);
        wd.click("#done").await;
        wd.click(&format!("li[data-contact='{}']", alice.id)).await;
        wd.find("#send").await;
        look("chat", wd.js(LAYOUT_PROBLEMS).await);
        assert!(problems.is_empty(), "{problems:#?}");
    }
}

/// A pinned contact can have a tray icon of their own (as Windows 10's My People put people on the
/// taskbar): chosen in the account's menu, it shows their name, state and unread count, a click on it
/// opens the chat with them (which reads their messages), and its menu takes it away again.
#[tokio::test]
async fn a_contact_pinned_to_the_tray_has_an_icon_that_counts_and_opens_their_chat() {
    let _serial = serial().await;
    let _host = ensure_tray_host();
    let x = Xvfb::start();
    let WithAlice {
        server,
        dir: _dir,
        app,
        alice,
        alice_key,
        demo_id,
        ..
    } = with_alice(&x).await;
    app.wait_for_account_menu("Demo User");
    let contact_item = app.item_name(2);
    assert!(!registered_items().contains(&contact_item));
    app.click_menu_in("Own icon in the tray", &alice.name);
    eventually("Alice's own tray item", || {
        registered_items().contains(&contact_item).then_some(())
    });
    let tooltip = app.item_property(2, "ToolTip");
    assert!(tooltip.contains(&format!("{} — ", alice.name)), "{tooltip}");
    // Her picture is drawn in it: an icon of the app's size.
    let pixmap = app.item_property(2, "IconPixmap");
    assert!(pixmap.contains("[64,64,"), "{}", &pixmap[..pixmap.len().min(200)]);

    // A message from Alice: her icon counts it.
    server.send_text(&alice_key, demo_id, "own-1", "ping").await;
    eventually("Alice's icon to count 1 unread", || {
        app.item_property(2, "ToolTip")
            .contains("(1 unread)")
            .then_some(())
    });

    // A click on her icon opens the chat with her: the message is read, the counts go.
    app.click_item(2);
    eventually("the panel on Alice's chat", || {
        visible_window(&x.display, "pinchat — Demo User")
    });
    eventually("Alice's icon to count nothing", || {
        (!app.item_property(2, "ToolTip").contains("unread")).then_some(())
    });
    eventually("the app's tooltip to count 0 unread", || {
        app.tray_property("ToolTip").contains("(0 unread)").then_some(())
    });

    // Her icon's menu takes it away.
    let entries: Vec<String> = app.item_menu(2).into_iter().map(|(_, l, _)| l).collect();
    assert!(
        entries.iter().any(|l| l == "Open chat") && entries.iter().any(|l| l == "Remove from the tray"),
        "{entries:?}"
    );
    app.click_menu_in("Own icon in the tray", &alice.name);
    eventually("Alice's own tray item to go", || {
        (!registered_items().contains(&contact_item)).then_some(())
    });
    assert!(!app.log().contains("panicked"), "{}", app.log());
}

/// Regenerates the screenshots of the tray in docs/screenshots: the icon with its count in a real
/// Xfce panel (xfce4-panel, its default layout, whose notification area is a StatusNotifierItem host),
/// the menu that panel shows on a right click, and a notification shown by the real server dunst.
/// Run by ui/screenshots.sh; needs `xfce4-panel` besides what the suite installs.
#[tokio::test]
#[ignore = "regenerates the README's tray screenshots; run ui/screenshots.sh"]
async fn tray_screenshots() {
    let Some(out) = std::env::var_os("PINCHAT_SCREENSHOTS") else {
        return;
    };
    let out = std::path::PathBuf::from(out);
    let _serial = serial().await;
    let x = Xvfb::start();
    let work = tempfile::tempdir().unwrap();
    // The panel with its default layout, in a configuration of its own.
    let mut panel = std::process::Command::new("xfce4-panel")
        .env("DISPLAY", &x.display)
        .env("XDG_CONFIG_HOME", work.path().join("xfce"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("xfce4-panel (Debian's xfce4-panel)");
    eventually("the panel's tray to host items", || {
        busctl(&["--user", "status", "org.kde.StatusNotifierWatcher"]).map(|_| ())
    });
    let (before, after) = (work.path().join("before.png"), work.path().join("after.png"));
    // The panel draws itself a moment after it takes the name: wait for a stable picture.
    let mut last = work.path().join("0.png");
    screenshot_root(&x.display, &last);
    for i in 1.. {
        let now = work.path().join(format!("{i}.png"));
        screenshot_root(&x.display, &now);
        if changed_area(&last, &now).is_none() {
            std::fs::rename(&now, &before).unwrap();
            break;
        }
        last = now;
        assert!(i < 100, "the panel never settled");
    }
    let dunst = Dunst::start(&x.display);
    let s = with_alice(&x).await;
    let app = &s.app;
    // Messages that arrive once the account is in step raise notifications (not a backlog).
    eventually("the account in the tray", || {
        app.tray_property("ToolTip").contains("(0 unread)").then_some(())
    });
    for (i, text) in ["Lunch at noon?", "Or at one?", "I'll book a table."]
        .iter()
        .enumerate()
    {
        s.server
            .send_text(&s.alice_key, s.demo_id, &format!("tray-{i}"), text)
            .await;
    }
    eventually("dunst to show the notification", || {
        (dunst.displayed() > 0).then_some(())
    });
    eventually("the tooltip to count 3 unread", || {
        app.tray_property("ToolTip").contains("(3 unread)").then_some(())
    });
    // What changed since the panel settled: the icon in the panel's row, the notification below it.
    let part = |from: &std::path::Path, name: &str, area| {
        let to = work.path().join(name);
        crop(from, &to, area, 100);
        to
    };
    let (row, below) = ((0, 0, 1024, 30), (0, 30, 1024, 738));
    let (row_before, below_before) = (part(&before, "row0.png", row), part(&before, "below0.png", below));
    let (icon, notification) = eventually("the icon and the notification on screen", || {
        screenshot_root(&x.display, &after);
        let icon = changed_area(&row_before, &part(&after, "row1.png", row))?;
        let shown = changed_area(&below_before, &part(&after, "below1.png", below))?;
        Some((icon, shown))
    });
    let (ix, _, iw, _) = icon;
    let left = (ix - 200).max(0);
    crop(
        &after,
        &out.join("tray-icon.png"),
        (left, 0, (1024 - left) as u32, 30),
        200,
    );
    let (nx, ny, nw, nh) = notification;
    crop(
        &after,
        &out.join("notification.png"),
        ((nx - 8).max(0), ny + 30 - 8, nw + 16, nh + 16),
        100,
    );
    // A right click on the icon: the panel shows the app's menu.
    let cx = (ix + iw as i32 / 2).to_string();
    xdotool(&x.display, &["mousemove", &cx, "12", "click", "3"]).expect("right click");
    let menu = work.path().join("menu.png");
    let area = eventually("the menu", || {
        screenshot_root(&x.display, &menu);
        changed_area(&after, &menu).filter(|&(_, _, _, h)| h > 100)
    });
    let (mx, my, mw, mh) = area;
    crop(
        &menu,
        &out.join("tray-menu.png"),
        (mx - 8, my.max(0), mw + 16, mh + 8),
        100,
    );
    let _ = xdotool(&x.display, &["key", "Escape"]);
    let _ = panel.kill();
    let _ = panel.wait();
}

/// Choosing another language in the tray menu applies to a panel that is open at once: its page comes
/// back in that language, on the same widget, and the menu speaks it too.
#[tokio::test]
async fn a_language_chosen_in_the_tray_reaches_the_open_panel_at_once() {
    let _serial = serial().await;
    let _host = ensure_tray_host();
    let x = Xvfb::start();
    let s = with_alice(&x).await;
    let app = &s.app;
    eventually("the account in the tray", || {
        app.tray_property("ToolTip").contains("Demo User").then_some(())
    });
    app.click_tray();
    let panel = eventually("the panel to be shown", || {
        visible_window(&x.display, "pinchat — Demo User")
    });
    let drawn = |lang: &str| app.log().matches(&format!("lang=\"{lang}\"")).count();
    eventually("the page to be drawn in English", || {
        (drawn("en") > 0).then_some(())
    });
    assert_eq!(drawn("zh"), 0);
    app.click_menu("简体中文");
    eventually("the open panel's page to come back in Chinese", || {
        (drawn("zh") > 0).then_some(())
    });
    // The same panel (not a new one), still on the same widget; the menu in Chinese.
    assert_eq!(visible_window(&x.display, "pinchat — Demo User"), Some(panel));
    eventually("the menu in Chinese", || {
        app.menu()
            .iter()
            .any(|(_, l, _)| l == "退出 pinchat")
            .then_some(())
    });
}

/// The full client's window (issue 12): `pinchat-full` without `--headless`, driven by WebKitWebDriver
/// under Xvfb — log in, every contact listed with presence and unread counts, search, a chat with
/// history, sending and reading — while a daemon's widget of the same account borrows the window's
/// connection. Then the window in Chinese.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_client_window_lists_every_contact_searches_chats_and_lends_its_connection() {
    use pinchat_ipc::api::{Refresh, Via, WidgetRef};
    let _serial = serial().await;
    let x = Xvfb::start();
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A daemon with a widget of demo pinning alice, on its own connection until the window logs in.
    let d = pinchat_tests::Daemon::start();
    let mut client = d.client().await;
    let mut events = client.notifications().unwrap();
    client
        .call::<pinchat_ipc::api::Subscribe>(pinchat_ipc::api::SubscribeParams::default())
        .await
        .unwrap();
    let demo_key = server.key("demo").await;
    let alice_key = server.key("alice").await;
    let alice = server.id_of(&demo_key, "alice").await;
    let created = pinchat_tests::create_widget(&client, &server, "demo").await;
    let widget = created.widget.id.clone();
    client
        .call::<SetPins>(SetPinsParams {
            widget: widget.clone(),
            pins: vec![alice.0],
        })
        .await
        .unwrap();
    let contacts: pinchat_proto::http::ContactList = server.get(&demo_key, "/v1/contacts").await.unwrap();
    assert!(
        contacts.contacts.len() > usize::from(contacts.max_pins),
        "the demo account has more contacts than a widget may pin"
    );

    let run = d.socket.parent().unwrap().to_str().unwrap().to_owned();
    let url = server.url("");
    let wd = WebDriver::start_full(
        &x.display,
        dir.path(),
        &[],
        &["--server", &url, "--account", "demo", "--runtime-dir", &run],
    )
    .await;

    // The login form starts with the server and account it was given; a wrong password is said so.
    wd.find("#login").await;
    assert_eq!(wd.text("h1").await, "Log in to pinchat");
    assert_eq!(wd.js("return document.querySelector('#server').value").await, url);
    assert_eq!(
        wd.js("return document.querySelector('#account').value").await,
        "demo"
    );
    wd.type_into("#password", "wrong").await;
    wd.click("#login").await;
    wd.until(
        "the error",
        "return document.querySelector('.error').textContent || null",
    )
    .await;
    assert_eq!(wd.text(".error").await, "Wrong account name or password.");
    wd.type_into("#password", "demo").await;
    wd.click("#login").await;

    // Every contact, not a widget's few, in the server's order (by name), connected.
    let rows = "return [...document.querySelectorAll('#pins li[data-contact]')].map((li) => Number(li.dataset.contact))";
    let listed = wd
        .until(
            "the whole contact list",
            &format!(
                "const ids = (() => {{ {rows} }})(); return ids.length === {} && ids",
                contacts.contacts.len()
            ),
        )
        .await;
    let expected: Vec<u64> = contacts.contacts.iter().map(|c| c.id.0).collect();
    assert_eq!(listed, serde_json::json!(expected));
    wd.until(
        "connected",
        "return document.querySelector('#connection').textContent === 'connected'",
    )
    .await;
    assert!(wd.text("#me").await.contains("Demo User"));

    // The daemon's widget of the same account now borrows the window's connection.
    until_online_via(&mut events, &widget, |v| matches!(v, Via::FullClient { .. })).await;
    let view = client
        .call::<Refresh>(WidgetRef {
            widget: widget.clone(),
        })
        .await
        .unwrap();
    assert!(matches!(view.via, Via::FullClient { .. }), "{:?}", view.via);

    // Search narrows the list as it is typed and gives it back when cleared.
    wd.type_into("#search", "ali").await;
    let narrowed = wd
        .until(
            "the search to narrow the list",
            &format!(
                "const ids = (() => {{ {rows} }})(); return ids.length < {} && ids",
                expected.len()
            ),
        )
        .await;
    assert!(
        narrowed.as_array().unwrap().contains(&serde_json::json!(alice.0)),
        "{narrowed}"
    );
    wd.type_into("#search", "zzz-nobody").await;
    wd.until(
        "no match",
        "return document.querySelector('#no-contacts')?.textContent === 'No contact matches.'",
    )
    .await;
    wd.type_into("#search", "").await;
    wd.until(
        "the whole list again",
        &format!(
            "return document.querySelectorAll('#pins li[data-contact]').length === {}",
            expected.len()
        ),
    )
    .await;

    // Alice comes online and writes: the window shows her state and an unread count live.
    let mut alice_stream = server.stream(&alice_key, pinchat_proto::Encoding::Json).await;
    let row = format!("#pins li[data-contact='{}']", alice.0);
    wd.until(
        "alice online",
        &format!("return document.querySelector(\"{row} .state\").className === 'state online'"),
    )
    .await;
    let demo = pinchat_proto::AccountId(created.widget.account.id);
    let hello = server
        .send_text(&alice_key, demo, "full-1", "Hello from Alice")
        .await;
    wd.until(
        "alice's unread count",
        &format!("return document.querySelector(\"{row} .count\")?.textContent === '1'"),
    )
    .await;

    // Her chat: the message in the history; opening it reads it (on the server too).
    wd.click(&row).await;
    wd.until(
        "the message in the chat",
        &format!(
            "return !!document.querySelector(\"#messages .msg[data-message='{}']\")",
            hello.id.0
        ),
    )
    .await;
    assert!(wd.text("#messages").await.contains("Hello from Alice"));
    // The borrowing widget hears of it through the window's connection.
    pinchat_tests::until(&mut events, |n| match n {
        pinchat_ipc::api::Notification::UnreadChanged {
            contact, unread: 0, ..
        } if *contact == alice.0 => Some(()),
        _ => None,
    })
    .await;
    let page: pinchat_proto::http::HistoryPage = server
        .get(&demo_key, &format!("/v1/messages/{}?limit=1", alice.0))
        .await
        .unwrap();
    assert_eq!(page.unread, 0, "read on the server");

    // A reply typed in the window reaches Alice once; a new message of hers appears in the open chat.
    wd.type_into("#text", "Hi Alice, from the full client").await;
    wd.press("#text", ENTER).await;
    wd.until("the reply shown as sent", "return [...document.querySelectorAll('#messages .msg.mine')].some((m) => m.textContent.includes('from the full client') && m.dataset.state === 'sent')")
        .await;
    let theirs: pinchat_proto::http::HistoryPage = server
        .get(&alice_key, &format!("/v1/messages/{}?limit=50", demo.0))
        .await
        .unwrap();
    let copies = theirs
        .messages
        .iter()
        .filter(|m| m.text == "Hi Alice, from the full client")
        .count();
    assert_eq!(copies, 1, "the reply reached Alice once");
    // Alice reads it: the open chat shows it read.
    let reply = theirs
        .messages
        .iter()
        .find(|m| m.text == "Hi Alice, from the full client")
        .unwrap();
    let _: pinchat_proto::http::MarkReadResponse = server
        .post(
            &alice_key,
            &format!("/v1/messages/{}/read", demo.0),
            &pinchat_proto::http::MarkReadRequest { up_to: reply.id },
        )
        .await
        .unwrap();
    wd.until(
        "the reply shown as read",
        &format!(
            "return document.querySelector(\"#messages .msg[data-message='{}']\")?.dataset.state === 'read'",
            reply.id.0
        ),
    )
    .await;
    let again = server.send_text(&alice_key, demo, "full-2", "Got it").await;
    wd.until(
        "her answer in the open chat",
        &format!(
            "return !!document.querySelector(\"#messages .msg[data-message='{}']\")",
            again.id.0
        ),
    )
    .await;
    alice_stream.ping().await;

    // Logging out gives the connection back to the widget, and the login form back to the window.
    wd.press("#text", ESCAPE).await;
    wd.click("#log-out").await;
    wd.find("#login").await;
    until_online_via(&mut events, &widget, |v| matches!(v, Via::Own)).await;
    drop(wd);

    // The same window in Simplified Chinese.
    // (In a directory of its own: the first window's program may still be exiting.)
    let zh = dir.path().join("zh");
    std::fs::create_dir(&zh).unwrap();
    let wd = WebDriver::start_full(
        &x.display,
        &zh,
        &[("PINCHAT_LANG", "zh")],
        &["--server", &url, "--runtime-dir", &run],
    )
    .await;
    wd.find("#login").await;
    assert_eq!(wd.text("h1").await, "登录 pinchat");
    wd.type_into("#account", "demo").await;
    wd.type_into("#password", "demo").await;
    wd.click("#login").await;
    wd.until(
        "the list in Chinese",
        "return document.querySelector('#connection').textContent === '已连接'",
    )
    .await;
    assert_eq!(
        wd.js("return document.querySelector('#search').placeholder")
            .await,
        "搜索联系人"
    );
    assert_eq!(wd.text("#log-out").await, "退出登录");
}

/// Screenshots of the full client's window (`full-<lang>-light.png`: every contact, one with unread
/// messages) when `PINCHAT_SCREENSHOTS` names the directory: `ui/screenshots.sh` runs it.
#[tokio::test]
#[ignore = "regenerates the README's screenshots; run ui/screenshots.sh"]
async fn full_client_screenshots() {
    let Some(out) = std::env::var_os("PINCHAT_SCREENSHOTS") else {
        return;
    };
    let out = std::path::PathBuf::from(out);
    std::fs::create_dir_all(&out).unwrap();
    let _serial = serial().await;
    let x = Xvfb::start();
    let server = Server::start().await;
    let alice_key = server.key("alice").await;
    let demo_id = server.id_of(&alice_key, "demo").await;
    let _alice_stream = server.stream(&alice_key, pinchat_proto::Encoding::Json).await;
    for lang in ["en", "zh"] {
        let dir = tempfile::tempdir().unwrap();
        let wd = WebDriver::start_full(
            &x.display,
            dir.path(),
            &[("PINCHAT_LANG", lang)],
            &["--server", &server.url(""), "--account", "demo"],
        )
        .await;
        wd.type_into("#password", "demo").await;
        wd.click("#login").await;
        wd.until(
            "the contact list",
            "return document.querySelectorAll('#pins li[data-contact]').length > 10",
        )
        .await;
        let text = if lang == "zh" {
            "晚上见？"
        } else {
            "See you tonight?"
        };
        server
            .send_text(&alice_key, demo_id, &format!("full-shot-{lang}"), text)
            .await;
        wd.until("the count", "return document.querySelector('#pins .count')")
            .await;
        std::fs::write(out.join(format!("full-{lang}-light.png")), wd.screenshot()).unwrap();
    }
}

/// Waits until `widget` is online with a source `via` accepts.
async fn until_online_via(
    events: &mut tokio::sync::mpsc::Receiver<pinchat_ipc::api::Notification>,
    widget: &str,
    via: impl Fn(&pinchat_ipc::api::Via) -> bool,
) {
    use pinchat_ipc::api::{Connection, Notification};
    pinchat_tests::until(events, |n| match n {
        Notification::ConnectionChanged {
            widget: w,
            connection: Connection::Online,
            via: v,
            ..
        } if w == widget && via(v) => Some(()),
        _ => None,
    })
    .await;
}
