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
