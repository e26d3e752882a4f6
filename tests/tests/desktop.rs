//! The desktop app for real (Linux): the `pinchat` binary on a private X server, its tray item on the
//! session bus under a StatusNotifierItem host, its daemon started in-process, a real server.
#![cfg(target_os = "linux")]

use pinchat_ipc::api::{CreateWidget, Login, SetPins, SetPinsParams};
use pinchat_tests::Server;
use pinchat_tests::desktop::{App, Xvfb, ensure_tray_host, eventually, registered_items, window_titles};

#[tokio::test]
async fn the_tray_shows_unread_counts_a_click_opens_the_widget_panel_and_a_second_launch_adds_nothing() {
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
    let created = client
        .call::<CreateWidget>(Login {
            server: server.url(""),
            account: "demo".into(),
            password: "demo".into(),
        })
        .await
        .unwrap();
    let widget = created.widget.id.clone();
    let alice = created.contacts.iter().find(|c| c.login == "alice").unwrap().id;
    client
        .call::<SetPins>(SetPinsParams {
            widget: widget.clone(),
            pins: vec![alice],
        })
        .await
        .unwrap();
    eventually("the tooltip to name the account", || {
        app.tray_property("ToolTip").contains("Demo User").then_some(())
    });

    // Alice writes twice: the count reaches the tooltip (and the icon, drawn from the same total).
    let alice_key = server.key("alice").await;
    let demo_id = server.id_of(&alice_key, "demo").await;
    for i in 0..2 {
        server
            .post::<_, pinchat_proto::http::SendResponse>(
                &alice_key,
                "/v1/messages",
                &pinchat_proto::http::SendRequest {
                    to: demo_id,
                    client_id: format!("ui-{i}"),
                    text: format!("hello {i}"),
                },
            )
            .await
            .unwrap();
    }
    eventually("the tooltip to count 2 unread", || {
        app.tray_property("ToolTip").contains("(2 unread)").then_some(())
    });

    // A click on the tray opens the widget's panel.
    assert!(
        !window_titles(&x.display)
            .iter()
            .any(|t| t.starts_with("pinchat — "))
    );
    app.click_tray();
    eventually("the widget panel to open", || {
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
