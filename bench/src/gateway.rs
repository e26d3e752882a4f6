//! The gateway configuration of the traffic benchmark: the same seeded schedule replayed by the contacts
//! as XMPP clients of a private Prosody; the observer's XMPP account linked to a real `pinchat-server`
//! (STARTTLS to Prosody, verified), and the widget — pinning the schedule's pins, as in configuration
//! (a) — behind a byte-counting proxy. What reaches the widget is compared with what the XMPP client
//! connected directly receives (configuration (c), `bench/xmpp/traffic.py`).

use crate::prosody::{Prosody, contact};
use crate::scale::ServerProcess;
use crate::schedule::Schedule;
use crate::traffic::{self, ContactCmd, Measured};
use futures_util::StreamExt;
use pinchat_proto::http::{ContactList, LoginResponse, XmppLinkRequest, XmppLinkStatus, XmppState};
use pinchat_proto::{AccountId, Presence};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::presence::{Presence as XmppPresence, Show};
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event};

/// A key for the run's gateway (it seals only the benchmark's own password).
const KEY: &str = "YmVuY2htYXJrLWdhdGV3YXkta2V5LTMyLWJ5dGVzISE=";

/// Runs the gateway configuration with the server binary `bin`.
pub async fn run(bin: &Path, schedule: &Schedule, scale: f64) -> anyhow::Result<Measured> {
    let prosody = tokio::task::spawn_blocking({
        let n = schedule.contacts;
        move || Prosody::start(n)
    })
    .await??;
    let dir = tempfile::tempdir()?;
    let config = format!(
        "database = {:?}\ngateway_key = {KEY:?}\n[limits]\nmax_pins = 1000\nstream_frames_per_second = 10000\nstream_queue = 4096\n",
        dir.path().join("pinchat.db").display().to_string()
    );
    std::fs::write(dir.path().join("server.toml"), &config)?;
    let seeded = tokio::process::Command::new(bin)
        .arg("--config")
        .arg(dir.path().join("server.toml"))
        .arg("seed-demo")
        .output()
        .await?;
    anyhow::ensure!(seeded.status.success(), "seed-demo failed");
    let server = ServerProcess::spawn_with(
        bin,
        dir.path(),
        &config,
        &[("SSL_CERT_FILE", prosody.certificate().as_os_str())],
    )?;
    let url = |p: &str| format!("http://{}{p}", server.addr);
    let http = reqwest::Client::builder().no_proxy().build()?;
    let login: LoginResponse = http
        .post(url("/v1/login"))
        .json(&serde_json::json!({"account": "demo", "password": "demo"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let key = login.key;
    let linked: XmppLinkStatus = http
        .put(url("/v1/xmpp"))
        .bearer_auth(&key)
        .json(&XmppLinkRequest {
            jid: format!("owner@{}", Prosody::DOMAIN),
            password: Prosody::PASSWORD.into(),
            server: Some(prosody.address()),
        })
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    anyhow::ensure!(
        linked.state == XmppState::Online && linked.contacts as usize == schedule.contacts,
        "the link did not come online with the whole roster: {linked:?}"
    );
    let list: ContactList = http
        .get(url("/v1/contacts"))
        .bearer_auth(&key)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let by_jid: HashMap<String, AccountId> = list
        .contacts
        .iter()
        .filter_map(|c| Some((c.login.strip_prefix("xmpp:")?.split('#').next()?.to_owned(), c.id)))
        .collect();
    let ids: Vec<AccountId> = (0..schedule.contacts)
        .map(|i| {
            by_jid
                .get(&format!("{}@{}", contact(i), Prosody::DOMAIN))
                .copied()
        })
        .collect::<Option<_>>()
        .ok_or_else(|| anyhow::anyhow!("a roster contact is missing from the pinchat contacts"))?;

    // The contacts log in to Prosody and announce themselves (so, through the gateway, come online).
    let sent_at: Arc<Mutex<HashMap<u32, Instant>>> = Arc::default();
    let clients =
        futures_util::future::try_join_all((0..schedule.contacts).map(|i| online(&prosody, i))).await?;
    let mut drivers = Vec::with_capacity(clients.len());
    for mut client in clients {
        let (tx, mut rx) = mpsc::channel::<ContactCmd>(64);
        drivers.push(tx);
        let sent_at = sent_at.clone();
        tokio::spawn(async move {
            let owner = Jid::new(&format!("owner@{}", Prosody::DOMAIN)).expect("a JID");
            loop {
                tokio::select! {
                    cmd = rx.recv() => {
                        let stanza = match cmd {
                            None => break,
                            Some(ContactCmd::State(state)) => presence(state).into(),
                            Some(ContactCmd::Message(seq)) => {
                                sent_at.lock().unwrap_or_else(|e| e.into_inner()).insert(seq, Instant::now());
                                let mut m = Message::new(Some(owner.clone())).with_body(Lang::from(""), format!("m{seq}"));
                                m.type_ = MessageType::Chat;
                                m.into()
                            }
                        };
                        if client.send_stanza(stanza).await.is_err() {
                            break;
                        }
                    }
                    // Keep the client's stream read.
                    e = client.next() => if e.is_none() { break },
                }
            }
            let _ = client.send_end().await;
        });
    }
    traffic::wait_all_online(server.addr, &key, &ids).await?;

    let pins: Vec<AccountId> = schedule.pins.iter().map(|&i| ids[i]).collect();
    let (observed, observe, stop) =
        traffic::observe(server.addr, &key, pins, schedule, scale, sent_at.clone()).await?;
    let mut m = traffic::replay(schedule, scale, &drivers, stop, observe).await?;
    m.name = format!("(e) pinchat via the gateway, {} pins", schedule.pins.len());
    m.initial_bytes = observed.initial;
    m.run_bytes = observed.proxy.bytes_down() - observed.initial;
    m.window_minutes = schedule.window_secs / 60.0;
    drop(drivers);
    drop(server);
    drop(prosody);
    Ok(m)
}

/// Contact `i`'s XMPP client, online and available.
async fn online(prosody: &Prosody, i: usize) -> anyhow::Result<Client> {
    let mut client = Client::new_plaintext(
        BareJid::new(&format!("{}@{}", contact(i), Prosody::DOMAIN))?,
        Prosody::PASSWORD,
        DnsConfig::addr(&prosody.address()),
        Timeouts::tight(),
    );
    loop {
        match tokio::time::timeout(Duration::from_secs(60), client.next()).await {
            Ok(Some(Event::Online { .. })) => break,
            Ok(Some(_)) => {}
            other => anyhow::bail!("contact {i} did not come online: {other:?}"),
        }
    }
    client.send_stanza(XmppPresence::available().into()).await?;
    Ok(client)
}

/// A state as XMPP presence, mapped as the XMPP half of the benchmark maps it (and the gateway back).
fn presence(state: Presence) -> XmppPresence {
    let mut p = XmppPresence::available();
    let (show, status) = match state {
        Presence::Busy => (Some(Show::Dnd), "busy"),
        Presence::DoNotDisturb => (Some(Show::Dnd), "do not disturb"),
        Presence::Idle => (Some(Show::Away), "idle"),
        Presence::Online | Presence::Offline => (None, ""),
    };
    p.show = show;
    if !status.is_empty() {
        p.set_status("", status);
    }
    p
}
