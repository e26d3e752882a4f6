//! The app's link to the daemon: a tokio runtime on its own thread that owns the local-API client.
//!
//! The app is a client of the same API that gadgets use, with no back door: at start it connects to
//! the running daemon, or — when none runs — starts the daemon inside this process on the usual socket
//! and connects to that. Panels send requests (`method` + `params`, as JSON) through [`Backend::request`];
//! answers, notifications and the widget list come back through the `sink` given to [`Backend::start`],
//! which the GUI turns into event-loop events.

use crate::model::TrayModel;
use base64::Engine as _;
use pinchat_ipc::api::ErrorCode;
use pinchat_ipc::api::{
    Avatar, AvatarParams, CallState, ListWidgets, NoParams, Notification, Snapshot, Subscribe,
    SubscribeParams, WidgetRef, WidgetSummary, WidgetView,
};
use pinchat_ipc::client::{Client, ClientError};
use serde_json::Value;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the backend tells the app.
#[derive(Debug)]
pub enum ToUi {
    /// The answer to a request: the result, or `{code, message}`.
    Reply {
        /// The request's number, as given to [`Backend::request`].
        id: u64,
        /// The result or the error.
        result: Result<Value, Value>,
    },
    /// A notification from the daemon, as JSON (`{method, params}`).
    Notification(Value),
    /// The widgets, whenever they may have changed, with each one's update mode.
    Widgets(Vec<(WidgetSummary, crate::model::TrayDetails)>),
    /// A new message from a pinned contact, for an OS notification.
    Incoming {
        /// The widget.
        widget: String,
        /// The sender's id.
        contact: u64,
        /// The sender's name.
        name: String,
        /// The text.
        text: String,
        /// The sender's avatar as a file, when it has been fetched.
        avatar: Option<std::path::PathBuf>,
    },
    /// A pinned contact calls this widget: the call must ring on screen.
    Ringing {
        /// The widget called.
        widget: String,
        /// The call and the caller.
        ring: crate::control::Ring,
        /// The caller's name.
        name: String,
        /// The caller's avatar as a file, when it has been fetched.
        avatar: Option<std::path::PathBuf>,
    },
    /// A call of this widget stopped ringing (answered here or elsewhere, declined, given up, over).
    RingOver {
        /// The widget.
        widget: String,
        /// The call.
        call: u64,
    },
    /// A pinned contact's picture (this hash) is now in the avatar cache: icons drawn without it can
    /// be drawn again.
    AvatarStored(String),
    /// The daemon went away.
    Lost(String),
    /// Another launch of the app asked this one to show itself.
    Show,
    /// The process was asked to stop (SIGTERM or SIGINT, Ctrl-C): quit cleanly, so that an embedded
    /// daemon finishes its writes and the demo removes its files.
    Stop,
}

/// [`Backend::start`] found another instance of the app and asked it to show itself.
#[derive(Debug, thiserror::Error)]
#[error("pinchat is already running: its panel was opened")]
pub struct AlreadyRunning;

/// Where the daemon is, and where an embedded one keeps its data.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The local API's socket; the default one when `None`.
    pub socket: Option<PathBuf>,
    /// The embedded daemon's data directory; the default one when `None`.
    pub data_dir: Option<PathBuf>,
    /// Be the only instance of the app: listen next to the daemon's socket, and when another instance
    /// already listens there, ask it to show itself and fail with [`AlreadyRunning`].
    pub single_instance: bool,
    /// The demo: keep an embedded daemon's keys in memory, and bind the demo user on this server.
    pub demo: Option<String>,
    /// For a panel process: only attach to a running daemon (never start one), and neither follow
    /// the widget list nor look up senders for OS notifications (the tray does both).
    pub panel: bool,
}

/// How the app reached the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    /// A daemon was already running.
    Running,
    /// The daemon runs inside this process.
    Embedded,
}

struct Request {
    id: u64,
    method: String,
    params: Value,
}

/// The handle the GUI holds.
pub struct Backend {
    requests: mpsc::Sender<Request>,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
    /// How the daemon was reached.
    pub attached: Attached,
    /// The daemon's local API socket.
    pub socket: PathBuf,
}

/// The methods panels may call: the local API, nothing else.
fn allowed(method: &str) -> bool {
    pinchat_ipc::api::METHODS.contains(&method) && method != "subscribe" && method != "unsubscribe"
}

impl Backend {
    /// Connects to (or starts) the daemon and starts forwarding to `sink`.
    pub fn start(options: Options, sink: impl Fn(ToUi) + Send + Sync + 'static) -> anyhow::Result<Backend> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pinchat-backend")
            .enable_all()
            .build()?;
        let shutdown = CancellationToken::new();
        let (requests, rx) = mpsc::channel(256);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stop = shutdown.clone();
        let sink: Arc<dyn Fn(ToUi) + Send + Sync> = Arc::new(sink);
        let thread = std::thread::Builder::new()
            .name("pinchat-backend".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let instance = match options.single_instance {
                        true => match claim_instance(&options).await {
                            Ok(listener) => Some(listener),
                            Err(e) => {
                                let _ = ready_tx.send(Err(e));
                                return;
                            }
                        },
                        false => None,
                    };
                    match connect(&options, stop.clone()).await {
                        Ok((client, attached, daemon, socket)) => {
                            let _ = ready_tx.send(Ok((attached, socket)));
                            {
                                let sink = sink.clone();
                                tokio::spawn(async move {
                                    pinchat_daemon::cli::wait_for_signal().await;
                                    sink(ToUi::Stop);
                                    // A second request while the first is being answered: stop now.
                                    pinchat_daemon::cli::wait_for_signal().await;
                                    std::process::exit(130);
                                });
                            }
                            if let Some(listener) = instance {
                                let sink = sink.clone();
                                tokio::spawn(async move {
                                    while let Ok(mut s) = listener.accept().await {
                                        use tokio::io::AsyncReadExt;
                                        let mut buf = [0u8; 16];
                                        let _ = s.read(&mut buf).await;
                                        sink(ToUi::Show);
                                    }
                                });
                            }
                            if let Some(server) = &options.demo {
                                if let Err(e) = crate::demo::bind(&client, server).await {
                                    sink(ToUi::Lost(format!("{e:#}")));
                                }
                                // A demo contact takes the demo user's calls.
                                #[cfg(all(feature = "demo", target_os = "linux"))]
                                tokio::spawn(crate::demo::answer_calls(server.clone(), stop.clone()));
                            }
                            serve(client, rx, sink, stop, !options.panel).await;
                            if let Some(daemon) = daemon {
                                let _ = daemon.await;
                            }
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })?;
        let (attached, socket) = ready_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the backend thread stopped"))??;
        Ok(Backend {
            requests,
            shutdown,
            thread: Some(thread),
            attached,
            socket,
        })
    }

    /// Sends a request (a method of the local API) numbered `id`; an answer always comes back through
    /// the sink.
    pub fn request(&self, id: u64, method: String, params: Value) -> Result<(), Value> {
        if !allowed(&method) {
            return Err(error_value(
                "rpc.method_not_found",
                &format!("no method {method:?}"),
            ));
        }
        self.requests
            .try_send(Request { id, method, params })
            .map_err(|_| error_value("ui.busy", "too many requests at once; try again"))
    }

    /// Stops the backend (and the embedded daemon, letting it finish its writes).
    pub fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What answers a panel page's requests: the daemon's local API through [`Backend`] for the tray's
/// panels, or another program's own data (the full client's window). Answers and news go to the sink
/// the backend was started with, as [`ToUi`].
pub trait PageBackend {
    /// Sends a request numbered `id`; an answer always comes back through the sink. `Err` is the
    /// answer when the request cannot even be queued (an unknown method, too many at once).
    fn request(&self, id: u64, method: String, params: Value) -> Result<(), Value>;
    /// Stops the backend, letting what it owns finish its writes.
    fn stop(self: Box<Self>);
}

impl PageBackend for Backend {
    fn request(&self, id: u64, method: String, params: Value) -> Result<(), Value> {
        Backend::request(self, id, method, params)
    }

    fn stop(self: Box<Self>) {
        Backend::stop(*self);
    }
}

/// The sink a [`PageBackend`] reports to.
pub type Sink = Box<dyn Fn(ToUi) + Send + Sync>;

/// An error answer, `{code, message}`.
pub fn error_value(code: &str, message: &str) -> Value {
    serde_json::json!({ "code": code, "message": message })
}

type DaemonTask = tokio::task::JoinHandle<anyhow::Result<()>>;

fn socket_of(options: &Options) -> PathBuf {
    options
        .socket
        .clone()
        .unwrap_or_else(pinchat_ipc::transport::default_socket)
}

/// Listens as the app's only instance, or tells the running one to show itself.
async fn claim_instance(options: &Options) -> anyhow::Result<pinchat_ipc::transport::Listener> {
    let path = PathBuf::from(format!("{}-ui", socket_of(options).display()));
    match pinchat_ipc::transport::Listener::bind(&path) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            use tokio::io::AsyncWriteExt;
            let mut s = pinchat_ipc::transport::connect(&path).await?;
            s.write_all(b"show\n").await?;
            Err(AlreadyRunning.into())
        }
        Err(e) => Err(anyhow::anyhow!("cannot listen on {}: {e}", path.display())),
    }
}

async fn connect(
    options: &Options,
    shutdown: CancellationToken,
) -> anyhow::Result<(Client, Attached, Option<DaemonTask>, PathBuf)> {
    let mut config = pinchat_daemon::config::DaemonConfig::load(None)?;
    if let Some(s) = &options.socket {
        config.socket.clone_from(s);
    }
    if let Some(d) = &options.data_dir {
        config.data_dir.clone_from(d);
    }
    match Client::connect(&config.socket).await {
        Ok(client) => return Ok((client, Attached::Running, None, config.socket)),
        Err(ClientError::NotRunning(_)) if !options.panel => {}
        Err(e) => return Err(e.into()),
    }
    let listener = pinchat_ipc::transport::Listener::bind(&config.socket)
        .map_err(|e| anyhow::anyhow!("cannot start the daemon on {}: {e}", config.socket.display()))?;
    let socket = config.socket.clone();
    let vault = match options.demo {
        Some(_) => pinchat_daemon::vault::Vault::memory()?,
        None => pinchat_daemon::vault::Vault::platform(),
    };
    let daemon = tokio::spawn(pinchat_daemon::run_with_vault(config, listener, shutdown, vault));
    let client = Client::connect(&socket).await?;
    Ok((client, Attached::Embedded, Some(daemon), socket))
}

async fn serve(
    mut client: Client,
    mut requests: mpsc::Receiver<Request>,
    sink: Arc<dyn Fn(ToUi) + Send + Sync>,
    shutdown: CancellationToken,
    tray: bool,
) {
    let mut notifications = client.notifications().expect("taken once, here");
    let client = Arc::new(client);
    if let Err(e) = client.call::<Subscribe>(SubscribeParams { widgets: None }).await {
        sink(ToUi::Lost(e.to_string()));
        return;
    }
    // The tray's copy of the widgets: loaded once (after subscribing, so that nothing is missed
    // between the two), then kept current from notifications (`model.rs`).
    let mut model = TrayModel::default();
    if tray {
        match load(&client).await {
            Ok(views) => {
                model.replace(views);
            }
            Err(e) => return sink(ToUi::Lost(e.to_string())),
        }
        sink(ToUi::Widgets(model.summaries()));
    }
    // Widgets fetched again because their copy may be wrong; answered into the loop, which owns the
    // model (the fetching task waits on this loop, never the other way round).
    let (resynced_tx, mut resynced) = mpsc::channel::<(String, Result<WidgetView, ClientError>)>(16);
    let resync = |widget: String| {
        let (client, tx) = (client.clone(), resynced_tx.clone());
        tokio::spawn(async move {
            let view = client
                .call::<Snapshot>(WidgetRef {
                    widget: widget.clone(),
                })
                .await;
            let _ = tx.send((widget, view)).await;
        });
    };
    // Pinned contacts' avatars as files for notifications, fetched ahead (see `avatars.rs`).
    let avatars = if tray {
        crate::avatars::Avatars::in_cache()
    } else {
        None
    };
    let mut fetched: HashSet<String> = HashSet::new();
    let mut fetch_avatars = |model: &TrayModel| {
        let Some(avatars) = &avatars else { return };
        for (widget, hash) in model.avatars() {
            if !fetched.insert(hash.clone()) || avatars.cached(&hash).is_some() {
                continue;
            }
            let (client, avatars, sink) = (client.clone(), avatars.clone(), sink.clone());
            tokio::spawn(async move {
                let stored: Result<(), String> = async {
                    let params = AvatarParams {
                        widget,
                        hash: hash.clone(),
                    };
                    let hash = hash.clone();
                    let image = client.call::<Avatar>(params).await.map_err(|e| e.to_string())?;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(&image.data)
                        .map_err(|e| e.to_string())?;
                    tokio::task::spawn_blocking(move || avatars.store(&hash, &image.mime, &bytes))
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| e.to_string())?;
                    Ok(())
                }
                .await;
                match stored {
                    Ok(()) => sink(ToUi::AvatarStored(hash)),
                    Err(e) => tracing::debug!(error = %e, "no avatar for notifications"),
                }
            });
        }
    };
    fetch_avatars(&model);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            request = requests.recv() => {
                let Some(r) = request else { return };
                let (client, sink) = (client.clone(), sink.clone());
                tokio::spawn(async move {
                    let result = client.call_raw(&r.method, r.params).await.map_err(|e| {
                        let code = e.code().unwrap_or("ui.daemon_unreachable").to_owned();
                        error_value(&code, &e.to_string())
                    });
                    sink(ToUi::Reply { id: r.id, result });
                });
            }
            Some((widget, view)) = resynced.recv() => {
                let changed = match view {
                    Ok(view) => model.set(view),
                    Err(e) if e.code() == Some(ErrorCode::WidgetNotFound.as_str()) => model.remove(&widget),
                    Err(e) => {
                        tracing::warn!(widget, error = %e, "could not fetch a widget again");
                        false
                    }
                };
                if changed {
                    sink(ToUi::Widgets(model.summaries()));
                }
                fetch_avatars(&model);
            }
            n = notifications.recv() => {
                let Some(n) = n else {
                    sink(ToUi::Lost("the daemon closed the connection".into()));
                    return;
                };
                if let Ok(v) = serde_json::to_value(&n) {
                    sink(ToUi::Notification(v));
                }
                if !tray {
                    continue;
                }
                match &n {
                    Notification::CallIncoming { widget, call, contact, video } => {
                        let ring = crate::control::Ring { call: *call, contact: *contact, video: *video, answer: false };
                        let name = model
                            .sender(widget, *contact)
                            .map_or_else(|| contact.to_string(), str::to_owned);
                        let avatar = model
                            .avatar(widget, *contact)
                            .and_then(|hash| avatars.as_ref()?.cached(hash));
                        sink(ToUi::Ringing { widget: widget.clone(), ring, name, avatar });
                    }
                    Notification::CallEnded { widget, call, .. }
                    | Notification::CallChanged { widget, call, state: CallState::Accepted, .. } => {
                        sink(ToUi::RingOver { widget: widget.clone(), call: *call });
                    }
                    _ => {}
                }
                let applied = model.apply(&n);
                // Messages that were waiting when their contact was pinned are listed, not announced.
                if let Notification::MessageReceived { widget, message, backlog: false } = n {
                    // Sent before the new unread count reaches the tray (it comes with the
                    // `unread.changed` that follows), so that do-not-disturb decisions stay in order.
                    let name = model
                        .sender(&widget, message.from)
                        .map_or_else(|| message.from.to_string(), str::to_owned);
                    let avatar = model
                        .avatar(&widget, message.from)
                        .and_then(|hash| avatars.as_ref()?.cached(hash));
                    sink(ToUi::Incoming { widget, contact: message.from, name, text: message.text, avatar });
                }
                fetch_avatars(&model);
                if applied.tray_changed {
                    sink(ToUi::Widgets(model.summaries()));
                }
                if let Some(widget) = applied.resync {
                    resync(widget);
                }
            }
        }
    }
}

/// Every widget, whole: the list, then each one's snapshot.
async fn load(client: &Client) -> Result<Vec<WidgetView>, ClientError> {
    let list = client.call::<ListWidgets>(NoParams {}).await?;
    let mut views = Vec::with_capacity(list.len());
    for w in list {
        match client.call::<Snapshot>(WidgetRef { widget: w.id }).await {
            Ok(view) => views.push(view),
            // Removed in between: its `widget.removed` is on its way.
            Err(e) if e.code() == Some(ErrorCode::WidgetNotFound.as_str()) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(views)
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn panels_reach_the_api_only() {
        assert!(allowed("widget.snapshot"));
        assert!(allowed("widget.create"));
        assert!(!allowed("subscribe"), "the backend owns the subscription");
        assert!(!allowed("shell.exec"));
        assert!(!allowed(""));
    }
}
