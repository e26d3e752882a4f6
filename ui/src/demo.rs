//! `pinchat demo`: the whole product on one machine. The demo server (the demo world: a user with 30
//! contacts who change state and write now and then) runs inside this process on loopback, the daemon
//! runs inside this process too, with its data in a temporary directory and its keys in memory — the
//! demo never touches the user's keyring or real widgets — and the app binds the demo user and pins
//! five contacts, so the tray and the widget come alive at once.
//!
//! The demo server is linked in only with the `demo` feature (on by default, so `./run demo` and
//! `cargo run -p pinchat-ui -- demo` work from a checkout). Installed packages leave it out: the server
//! is most of the app's code and no user of an installed app needs a server inside it.

use pinchat_ipc::api::{CreateWidget, Login, SetPins, SetPinsParams};
use pinchat_ipc::client::Client;
#[cfg(feature = "demo")]
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Contacts the demo pins, by login.
const PINS: [&str; 5] = ["alice", "wangwei", "bob", "lina", "carol"];

/// The demo server, running on its own thread.
pub struct DemoServer {
    /// Its base URL.
    pub url: String,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DemoServer {
    /// Starts the demo server with its database in `dir`, on 127.0.0.1:`port` (0: any free port), with
    /// demo events every `every` seconds (0: none).
    #[cfg(feature = "demo")]
    pub fn start(dir: &Path, port: u16, every: u64) -> anyhow::Result<DemoServer> {
        let config = pinchat_server::config::Config {
            database: dir.join("server.db"),
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            ..Default::default()
        };
        let listener = std::net::TcpListener::bind(config.listen).map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {} ({e}): is another demo running? Pick another port with --port",
                config.listen
            )
        })?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let stop = CancellationToken::new();
        let token = stop.clone();
        let options = pinchat_server::RunOptions {
            demo: true,
            animate: (every > 0).then(|| Duration::from_secs(every)),
        };
        let thread = std::thread::Builder::new()
            .name("pinchat-demo-server".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => return eprintln!("error: cannot start the demo server: {e}"),
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => return eprintln!("error: cannot start the demo server: {e}"),
                    };
                    if let Err(e) = pinchat_server::run(config, listener, token, options).await {
                        eprintln!("error: the demo server stopped: {e:#}");
                    }
                });
            })?;
        Ok(DemoServer {
            url,
            stop,
            thread: Some(thread),
        })
    }

    /// Without the `demo` feature there is no server to start: says so, and what to do instead.
    #[cfg(not(feature = "demo"))]
    pub fn start(_dir: &Path, _port: u16, _every: u64) -> anyhow::Result<DemoServer> {
        anyhow::bail!(
            "this build of pinchat has no demo server (installed packages leave it out). \
             Add your account from the tray icon instead, or try the demo from a source checkout: ./run demo"
        )
    }

    /// Stops the server, letting it finish its writes.
    pub fn stop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds the demo user on `server` and pins five contacts (the app's first steps, done for the user).
pub async fn bind(client: &Client, server: &str) -> anyhow::Result<()> {
    // The server seeds the demo world as it starts; logging in may race with that for a moment.
    let mut tries = 0;
    let created = loop {
        let login = Login {
            server: server.to_owned(),
            account: "demo".into(),
            password: "demo".into(),
        };
        match client.call::<CreateWidget>(login).await {
            Ok(c) => break c,
            Err(e) if tries < 50 && e.code() == Some("auth.bad_credentials") => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(anyhow::anyhow!("cannot log in to the demo server: {e}")),
        }
    };
    let pins = PINS
        .iter()
        .filter_map(|login| created.contacts.iter().find(|c| &c.login == login))
        .map(|c| c.id)
        .collect();
    client
        .call::<SetPins>(SetPinsParams {
            widget: created.widget.id,
            pins,
        })
        .await?;
    Ok(())
}

/// The demo contact who takes calls.
#[cfg(all(feature = "demo", target_os = "linux"))]
const ANSWERS: &str = "alice";

/// How long the demo contact lets a call ring before answering: a moment, as a person would.
#[cfg(all(feature = "demo", target_os = "linux"))]
const RING_FOR: Duration = Duration::from_secs(2);

/// In the demo, Alice takes calls: she follows the demo user on a stream of her own (a call rings only
/// where the caller is pinned), answers after a moment with the native engine sending a colour and a
/// tone (she has no camera), and hangs up when the caller does. Linux only: elsewhere the demo's calls
/// to her are refused as *unavailable*, since she has no window open.
#[cfg(all(feature = "demo", target_os = "linux"))]
pub async fn answer_calls(server: String, stop: CancellationToken) {
    loop {
        let result = tokio::select! {
            () = stop.cancelled() => return,
            r = take_calls(&server) => r,
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "the demo's calling contact lost her stream; again shortly");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

#[cfg(all(feature = "demo", target_os = "linux"))]
async fn take_calls(server: &str) -> anyhow::Result<()> {
    use futures_util::{SinkExt, StreamExt};
    use pinchat_media::{Engine, EngineEvent, Options, Source};
    use pinchat_proto::stream::{CallEvent, CallSignal, ClientFrame, ServerFrame};
    use pinchat_proto::{Encoding, codec};
    use tokio_tungstenite::tungstenite::Message as Ws;

    let remote = pinchat_daemon::remote::Remote::new(server).map_err(anyhow::Error::msg)?;
    let key = remote.login(ANSWERS, "demo").await?.key;
    let demo = remote
        .contacts(&key)
        .await?
        .contacts
        .into_iter()
        .find(|c| c.login == "demo")
        .ok_or_else(|| anyhow::anyhow!("the demo user is not among {ANSWERS}'s contacts"))?
        .id;
    let mut ws = remote
        .open_stream(&key)
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let frame =
        |f: &ClientFrame| Ws::text(String::from_utf8_lossy(&codec::encode(Encoding::Json, f)).into_owned());
    ws.send(frame(&ClientFrame::Hello {
        version: pinchat_proto::PROTOCOL_VERSION,
    }))
    .await?;
    ws.send(frame(&ClientFrame::Subscribe {
        req: 1,
        sub: 0,
        pins: vec![demo],
        resume: None,
    }))
    .await?;
    let mut req = 1;
    // The call in progress: its number, the engine, and the engine's events.
    let mut call: Option<(u64, Engine, tokio::sync::mpsc::UnboundedReceiver<EngineEvent>)> = None;
    let mut ringing: Option<(u64, bool)> = None;
    let answer_at = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(answer_at);
    loop {
        tokio::select! {
            msg = ws.next() => {
                let bytes = match msg {
                    Some(Ok(Ws::Text(t))) => t.as_bytes().to_vec(),
                    Some(Ok(Ws::Binary(b))) => b.to_vec(),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.into()),
                    None => anyhow::bail!("the server closed the stream"),
                };
                let Ok(ServerFrame::Call { call: id, event, .. }) = codec::decode_server(Encoding::Json, &bytes) else {
                    continue;
                };
                match event {
                    CallEvent::Incoming { video } if call.is_none() => {
                        ringing = Some((id, video));
                        answer_at.as_mut().reset(tokio::time::Instant::now() + RING_FOR);
                    }
                    CallEvent::Ended { .. } => {
                        if ringing.is_some_and(|(r, _)| r == id) {
                            ringing = None;
                        }
                        if call.as_ref().is_some_and(|(c, _, _)| *c == id) {
                            call = None;
                        }
                    }
                    event => {
                        if let (Some((c, engine, _)), Some(signal)) = (call.as_mut(), event.into_signal())
                            && *c == id
                            && let Err(e) = engine.remote(signal)
                        {
                            tracing::warn!(error = %e, "the demo contact cannot use the caller's signal");
                        }
                    }
                }
            }
            () = &mut answer_at, if ringing.is_some() => {
                let Some((id, video)) = ringing.take() else { continue };
                let options = Options {
                    video,
                    source: Source::TestPattern { rgb: 0x2f80ed },
                    ..Options::default()
                };
                match Engine::new(&options) {
                    Ok(mut engine) => {
                        let events = engine.events().ok_or_else(|| anyhow::anyhow!("no engine events"))?;
                        req += 1;
                        ws.send(frame(&ClientFrame::CallSignal { req, call: id, signal: CallSignal::Accept })).await?;
                        call = Some((id, engine, events));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the demo contact cannot take calls here");
                        req += 1;
                        ws.send(frame(&ClientFrame::CallSignal { req, call: id, signal: CallSignal::Decline })).await?;
                    }
                }
            }
            Some(event) = async {
                match call.as_mut() {
                    Some((_, _, events)) => events.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                let Some(id) = call.as_ref().map(|(c, _, _)| *c) else { continue };
                match event {
                    EngineEvent::Signal(signal) => {
                        req += 1;
                        ws.send(frame(&ClientFrame::CallSignal { req, call: id, signal })).await?;
                    }
                    EngineEvent::Failed(why) => {
                        tracing::warn!(%why, "the demo contact's call failed");
                        req += 1;
                        let signal = CallSignal::Hangup { failed: true };
                        ws.send(frame(&ClientFrame::CallSignal { req, call: id, signal })).await?;
                        call = None;
                    }
                    _ => {}
                }
            }
        }
    }
}
