//! The command line and configuration of the real binary: TLS, refusals, admin commands, bad input.

use pinchat_tests::{Server, server_binary};
use std::process::Command;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn serves_https_with_the_configured_certificate() {
    let tls = pinchat_tests::TlsFiles::generate();
    let s = Server::start_with(&tls.config()).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(tls.cert.cert.der().clone()).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let mut tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tls.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"status\":\"ok\""), "{response}");
    assert!(s.log().contains("serving HTTPS"), "{}", s.log());

    // Plain HTTP on the TLS port does not get through.
    let r = reqwest::Client::new().get(s.url("/healthz")).send().await;
    assert!(r.is_err() || !r.unwrap().status().is_success());
}

#[test]
fn refuses_plain_http_on_a_public_address_and_bad_configs_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let out = Command::new(server_binary())
        .args([
            "--database",
            db.to_str().unwrap(),
            "serve",
            "--listen",
            "0.0.0.0:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve plain HTTP") && err.contains("--insecure-plaintext"),
        "{err}"
    );

    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\n[limits]\nmax_pinz = 3\n").unwrap();
    let out = Command::new(server_binary())
        .args(["--config", config.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `max_pinz`"), "{err}");

    std::fs::write(&config, "[limits]\nmax_pins = 0\n").unwrap();
    let out = Command::new(server_binary())
        .args(["--config", config.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("limits.max_pins must be between 1 and 1000"));

    let out = Command::new(server_binary())
        .args(["--config", "/nonexistent/pinchat.toml", "serve"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the config file"));
}

#[tokio::test]
async fn admin_commands_validate_their_input() {
    let s = Server::start().await;
    let out = s.admin(
        &["account", "create", "Bad Name", "--password-stdin"],
        Some("longenough\n"),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid login"));
    let out = s.admin(
        &["account", "create", "shorty", "--password-stdin"],
        Some("abc\n"),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("too short"));
    let out = s.admin(
        &["account", "create", "alice", "--password-stdin"],
        Some("longenough\n"),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    // Without --password-stdin and without a terminal, the password is not taken from anywhere else.
    let out = s.admin(&["account", "create", "newbie"], Some("longenough\n"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--password-stdin"));
    let out = s.admin(&["contacts", "link", "alice", "nobody"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no account named \"nobody\""));
    let out = s.admin(&["account", "set-profile", "alice", "--state", "sleepy"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown presence state"));

    // A new account, linked, with a password change that logs its devices out.
    s.create_account("zoe");
    s.admin_ok(&["contacts", "link", "zoe", "alice"]);
    assert!(s.admin_ok(&["contacts", "list", "zoe"]).contains("alice"));
    let key = s.key("zoe").await;
    let out = s.admin(
        &["account", "set-password", "zoe", "--password-stdin"],
        Some("another-one\n"),
    );
    assert!(out.status.success());
    assert!(s.get::<serde_json::Value>(&key, "/v1/me").await.is_err());
    assert!(s.login("zoe", "another-one").await.is_ok());
    assert!(
        s.admin_ok(&["account", "show", "zoe"])
            .contains("\"login\": \"zoe\"")
    );
    // Seeding twice is harmless.
    assert!(s.admin_ok(&["seed-demo"]).contains("already exists"));
}

#[tokio::test]
async fn admin_commands_end_quietly_when_their_reader_goes_away() {
    let s = Server::start().await;
    // `pinchat-server contacts list demo | head -0`: the reader is gone before the first line.
    let mut child = s
        .admin_command(&["contacts", "list", "demo"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    // With a reader, all 30 contacts.
    let listed = s.admin_ok(&["contacts", "list", "demo"]);
    assert_eq!(listed.lines().count(), 30);
}
