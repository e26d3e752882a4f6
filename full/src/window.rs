//! The full client's window: the app's panel page (`pinchat-ui`'s assets) in its full-client mode —
//! a login form, then **every** contact of the account with presence, status and unread count, a
//! search field, and the same chat view as the widget panels (history, sending, read state), in
//! English or Simplified Chinese.
//!
//! The page asks with the local API's method names (`widget.snapshot`, `widget.history`,
//! `widget.send`…) so that one page serves both programs; here they are answered **in-process** by
//! [`WindowBackend`]: the contact list from the session's [`Roster`] (the roster subscription on the
//! account's one stream), conversations, sending and read markers from the server's HTTP API with the
//! account's key. No daemon is involved: this window *is* the account's connection, the one the
//! daemon's widgets borrow. The single pseudo-widget is called [`WIDGET`].
//!
//! One task per request; a session change (log in, log out, password again) is serialised by the
//! session lock. Roster changes reach the page as `widget.changed` (the whole list: it is local and
//! small), a contact's read marker moving on also as `widget.contact_changed` (an open chat shows its
//! messages read), and new messages as `message.received`, as the daemon's notifications would.

use crate::Cli;
use crate::calls::CallRoute;
use crate::roster::Roster;
use crate::session::{self, Command, Session};
use base64::Engine as _;
use pinchat_daemon::remote::{Remote, RemoteError};
use pinchat_ipc::api::{
    AccountView, AvatarParams, AvatarView, Connection, Created, Delivery, HistoryParams, HistoryView, Login,
    MarkReadParams, MessageView, Mode, Notification, ReauthParams, SendParams, UnreadParams, UnreadView, Via,
    WidgetSummary, WidgetView,
};
use pinchat_ipc::api::{CallHangupParams, CallRef, CallSignalParams, CallStartParams, CallView};
use pinchat_proto::stream::{Ack, CallId, CallSignal, ClientFrame};
use pinchat_proto::{AccountId, MessageId};
use pinchat_ui::backend::{PageBackend, Sink, ToUi, error_value};
use pinchat_ui::i18n::Lang;
use pinchat_ui::panel::{self, PanelArgs};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The id the page knows the full client's account by (it speaks of widgets).
pub const WIDGET: &str = "full";

/// Requests queued at most (the page sends a handful at a time).
const QUEUE: usize = 64;

/// Opens the window and runs until it is closed.
pub fn run(cli: Cli) -> std::process::ExitCode {
    let lang = cli
        .lang
        .as_deref()
        .and_then(Lang::from_code)
        .unwrap_or_else(Lang::from_os);
    let dir = cli
        .runtime_dir
        .clone()
        .unwrap_or_else(pinchat_ipc::full::default_dir);
    let args = PanelArgs {
        title: "pinchat".into(),
        full: true,
        automation: cli.automation,
        server: cli.server,
        account: cli.account,
        ..PanelArgs::default()
    };
    let started = panel::run_page(lang, args, move |sink| {
        Ok(Box::new(WindowBackend::start(dir, sink)?) as Box<dyn PageBackend>)
    });
    match started {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("error: cannot open the pinchat window: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

struct Request {
    id: u64,
    method: String,
    params: Value,
}

/// The window's backend: a tokio runtime on its own thread answering the page.
pub struct WindowBackend {
    requests: mpsc::Sender<Request>,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WindowBackend {
    /// Starts the backend; the session registers in `dir` for the daemon to find.
    pub fn start(dir: PathBuf, sink: Sink) -> anyhow::Result<WindowBackend> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pinchat-full")
            .enable_all()
            .build()?;
        let (requests, rx) = mpsc::channel(QUEUE);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let thread = std::thread::Builder::new()
            .name("pinchat-full-backend".into())
            .spawn(move || runtime.block_on(serve(dir, rx, Arc::new(sink), stop)))?;
        Ok(WindowBackend {
            requests,
            shutdown,
            thread: Some(thread),
        })
    }
}

impl PageBackend for WindowBackend {
    fn request(&self, id: u64, method: String, params: Value) -> Result<(), Value> {
        self.requests
            .try_send(Request { id, method, params })
            .map_err(|_| error_value("ui.busy", "too many requests at once; try again"))
    }

    fn stop(mut self: Box<Self>) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the requests share: where to register, the sink, and the logged-in session if any.
struct App {
    dir: PathBuf,
    sink: Arc<Sink>,
    live: tokio::sync::Mutex<Option<Arc<Live>>>,
}

/// A logged-in account and its running session.
struct Live {
    remote: Remote,
    key: String,
    /// The window's own calls, on the account's stream.
    calls: Arc<CallRoute>,
    me: Arc<Mutex<AccountView>>,
    roster: watch::Receiver<Roster>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

async fn serve(
    dir: PathBuf,
    mut requests: mpsc::Receiver<Request>,
    sink: Arc<Sink>,
    stop: CancellationToken,
) {
    let app = Arc::new(App {
        dir,
        sink: sink.clone(),
        live: tokio::sync::Mutex::new(None),
    });
    // SIGTERM / Ctrl-C: the window closes, and with it (through `stop`) the session, cleanly.
    let signalled = sink.clone();
    tokio::spawn(async move {
        pinchat_daemon::cli::wait_for_signal().await;
        signalled(ToUi::Stop);
    });
    let tracker = TaskTracker::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            request = requests.recv() => {
                let Some(request) = request else { break };
                let app = app.clone();
                tracker.spawn(async move {
                    let result = app.answer(&request.method, request.params).await;
                    (app.sink)(ToUi::Reply { id: request.id, result });
                });
            }
        }
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(3), tracker.wait()).await;
    if let Some(live) = app.live.lock().await.take() {
        live.end(false).await;
    }
}

/// An error answer for the page.
fn fail(code: &str, message: impl std::fmt::Display) -> Value {
    error_value(code, &message.to_string())
}

/// A server's refusal of a stream request, for the page.
fn server_error(e: pinchat_proto::ErrorBody) -> Value {
    fail(&e.code.to_string(), e.message)
}

fn remote_error(e: RemoteError) -> Value {
    match e {
        RemoteError::Unreachable(why) => {
            fail("server.unreachable", format!("cannot reach the server: {why}"))
        }
        RemoteError::Server(body) => fail(&body.code.to_string(), body.message),
        RemoteError::Decode(why) => fail(
            "server.unreachable",
            format!("not a pinchat server's answer: {why}"),
        ),
    }
}

fn params<T: serde::de::DeserializeOwned>(params: Value) -> Result<T, Value> {
    serde_json::from_value(params).map_err(|e| fail("rpc.invalid_params", format!("invalid parameters: {e}")))
}

fn json<T: serde::Serialize>(value: &T) -> Result<Value, Value> {
    serde_json::to_value(value).map_err(|e| fail("internal", e))
}

impl App {
    async fn answer(&self, method: &str, p: Value) -> Result<Value, Value> {
        match method {
            "widget.list" => {
                let live = self.live.lock().await.clone();
                json(&live.map(|l| vec![l.summary()]).unwrap_or_default())
            }
            "widget.create" => {
                let login: Login = params(p)?;
                let live = self
                    .log_in(&login.server, &login.account, &login.password)
                    .await?;
                json(&Created {
                    widget: live.view(),
                    contacts: vec![],
                    max_pins: 0,
                })
            }
            "widget.reauth" => {
                let again: ReauthParams = params(p)?;
                let (server, account) = {
                    let live = self.current().await?;
                    let login = live.me.lock().unwrap_or_else(|e| e.into_inner()).login.clone();
                    (live.remote.base().to_owned(), login)
                };
                let live = self.log_in(&server, &account, &again.password).await?;
                json(&live.view())
            }
            "widget.remove" => {
                if let Some(live) = self.live.lock().await.take() {
                    live.end(true).await;
                }
                Ok(serde_json::json!({}))
            }
            "widget.snapshot" => json(&self.current().await?.view()),
            "widget.refresh" => {
                let live = self.current().await?;
                if let Ok(me) = live.remote.me(&live.key).await {
                    *live.me.lock().unwrap_or_else(|e| e.into_inner()) = account_view(&me);
                }
                json(&live.view())
            }
            "widget.history" => {
                let q: HistoryParams = params(p)?;
                let live = self.current().await?;
                json(&live.history(q).await?)
            }
            "widget.unread" => {
                let q: UnreadParams = params(p)?;
                let live = self.current().await?;
                json(&live.unread(q).await?)
            }
            "widget.send" => {
                let q: SendParams = params(p)?;
                let live = self.current().await?;
                json(&live.send(q).await?)
            }
            "widget.mark_read" => {
                let q: MarkReadParams = params(p)?;
                let live = self.current().await?;
                let up_to = MessageId(q.up_to.unwrap_or(i64::MAX as u64));
                let r = live
                    .remote
                    .mark_read(&live.key, AccountId(q.contact), up_to)
                    .await
                    .map_err(remote_error)?;
                json(&UnreadView { unread: r.unread })
            }
            "widget.avatar" => {
                let q: AvatarParams = params(p)?;
                let live = self.current().await?;
                let (mime, bytes) = live
                    .remote
                    .avatar(&live.key, &q.hash)
                    .await
                    .map_err(remote_error)?;
                json(&AvatarView {
                    mime,
                    data: base64::engine::general_purpose::STANDARD.encode(bytes),
                })
            }
            "call.start" => {
                let q: CallStartParams = params(p)?;
                let live = self.current().await?;
                let (to, video) = (AccountId(q.contact), q.video);
                let ack = live
                    .calls
                    .ask(|req| ClientFrame::CallInvite { req, to, video })
                    .await
                    .map_err(server_error)?;
                let Ack::Call { call } = ack else {
                    return Err(fail("server.unreachable", "the server answered a call oddly"));
                };
                json(&CallView {
                    call,
                    contact: q.contact,
                    video,
                })
            }
            "call.accept" | "call.decline" => {
                let q: CallRef = params(p)?;
                let signal = if method == "call.accept" {
                    CallSignal::Accept
                } else {
                    CallSignal::Decline
                };
                self.signal(q.call, signal).await
            }
            "call.hangup" => {
                let q: CallHangupParams = params(p)?;
                self.signal(q.call, CallSignal::Hangup { failed: q.failed }).await
            }
            "call.signal" => {
                let q: CallSignalParams = params(p)?;
                match q.signal {
                    signal @ (CallSignal::Offer { .. }
                    | CallSignal::Answer { .. }
                    | CallSignal::Ice { .. }) => self.signal(q.call, signal).await,
                    _ => Err(fail(
                        "rpc.invalid_params",
                        "call.signal carries an offer, an answer or an ICE candidate",
                    )),
                }
            }
            "call.ice" => {
                let live = self.current().await?;
                json(&live.remote.ice(&live.key).await.map_err(remote_error)?)
            }
            "call.history" => {
                let q: HistoryParams = params(p)?;
                let live = self.current().await?;
                let page = live
                    .remote
                    .call_history(
                        &live.key,
                        AccountId(q.contact),
                        q.before,
                        q.limit.unwrap_or(50).clamp(1, 200),
                    )
                    .await
                    .map_err(remote_error)?;
                json(&page)
            }
            other => Err(fail(
                "rpc.method_not_found",
                format!("the full client's window has no method {other:?}"),
            )),
        }
    }

    /// Passes a signal of the window's call `call` to the server; a hang-up or a decline ends the call
    /// for the window once the server has it (the server answers the party that ends a call with an
    /// ack, not an `ended`).
    async fn signal(&self, call: CallId, signal: CallSignal) -> Result<Value, Value> {
        let live = self.current().await?;
        let ends = matches!(signal, CallSignal::Hangup { .. } | CallSignal::Decline);
        let accepts = signal == CallSignal::Accept;
        let result = live
            .calls
            .ask(|req| ClientFrame::CallSignal { req, call, signal })
            .await;
        if ends {
            live.calls.forget(call);
        }
        result.map_err(server_error)?;
        if accepts {
            live.calls.answered_here(call);
        }
        Ok(serde_json::json!({}))
    }

    /// The logged-in session, or the error that asks for a login.
    async fn current(&self) -> Result<Arc<Live>, Value> {
        self.live
            .lock()
            .await
            .clone()
            .ok_or_else(|| fail("widget.not_found", "not logged in: log in first"))
    }

    /// Logs in and starts a session, ending the one before (logged out, unless it is the same account
    /// logging in again with its password).
    async fn log_in(&self, server: &str, account: &str, password: &str) -> Result<Arc<Live>, Value> {
        let remote = Remote::new(server).map_err(|e| fail("widget.invalid", e))?;
        if account.trim().is_empty() {
            return Err(fail("widget.invalid", "the account name is empty"));
        }
        let login = remote.login(account, password).await.map_err(remote_error)?;
        let me = remote.me(&login.key).await.map_err(remote_error)?;
        let mut slot = self.live.lock().await;
        if let Some(old) = slot.take() {
            let same = old.remote.base() == remote.base()
                && old.me.lock().unwrap_or_else(|e| e.into_inner()).id == me.identity.id.0;
            old.end(!same).await;
        }
        let (roster_tx, roster) = watch::channel(Roster::default());
        // The server's call events reach the page as the local API's notifications.
        let sink = self.sink.clone();
        let calls = Arc::new(CallRoute::new(Some(Box::new(move |call, peer, event| {
            send(
                &sink,
                &pinchat_daemon::ipc::call_notification(WIDGET, call, peer, event),
            );
        }))));
        // The window does not print the contact list: its only command is the end (by `stop`).
        let (keep, commands) = mpsc::channel::<Command>(1);
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let session = Session {
            remote: remote.clone(),
            key: login.key.clone(),
            account: account.to_owned(),
            dir: self.dir.clone(),
        };
        let live = Arc::new(Live {
            remote,
            key: login.key,
            calls: calls.clone(),
            me: Arc::new(Mutex::new(account_view(&me))),
            roster,
            stop: stop.clone(),
            tasks: tasks.clone(),
        });
        tasks.spawn(async move {
            // The command sender lives as long as the session: a closed channel would mean "quit".
            let _keep = keep;
            if let Err(e) = session::run(session, roster_tx, calls, commands, stop).await {
                tracing::error!(error = format!("{e:#}"), "the session ended with an error");
            }
        });
        tasks.spawn(notify(live.clone(), self.sink.clone()));
        tasks.close();
        *slot = Some(live.clone());
        Ok(live)
    }
}

fn account_view(me: &pinchat_proto::http::Me) -> AccountView {
    AccountView {
        id: me.identity.id.0,
        login: me.identity.login.clone(),
        name: me.identity.name.clone(),
        avatar: me.identity.avatar.clone(),
        signature: me.identity.signature.clone(),
        state: me.state,
        status: me.status.clone(),
    }
}

/// Tells the page what changes in the roster: the list (`widget.changed`) and new messages
/// (`message.received`). Ends with the session.
async fn notify(live: Arc<Live>, sink: Arc<Sink>) {
    let mut roster = live.roster.clone();
    let mut shown: Option<WidgetView> = None;
    let mut newest = MessageId(0);
    loop {
        tokio::select! {
            () = live.stop.cancelled() => return,
            changed = roster.changed() => if changed.is_err() { return },
        }
        let (view, fresh) = {
            let r = roster.borrow_and_update();
            let fresh: Vec<pinchat_proto::Message> =
                r.recent.iter().filter(|m| m.id > newest).cloned().collect();
            (live.view_of(&r), fresh)
        };
        if shown.as_ref() != Some(&view) {
            // A contact who read my messages further: said as the field that changed too, which is
            // what an open chat follows to show its messages read.
            let read_further: Vec<(u64, u64)> = view
                .pins
                .iter()
                .filter(|c| {
                    shown
                        .as_ref()
                        .and_then(|s| s.pins.iter().find(|p| p.id == c.id))
                        .is_some_and(|before| before.peer_read < c.peer_read)
                })
                .map(|c| (c.id, c.peer_read))
                .collect();
            send(
                &sink,
                &Notification::WidgetChanged {
                    widget: Box::new(view.clone()),
                },
            );
            for (contact, up_to) in read_further {
                send(
                    &sink,
                    &Notification::ContactChanged {
                        widget: WIDGET.into(),
                        contact,
                        fields: vec![pinchat_proto::Field::PeerRead(MessageId(up_to))],
                    },
                );
            }
            shown = Some(view);
        }
        let me = live.me.lock().unwrap_or_else(|e| e.into_inner()).id;
        for m in fresh {
            newest = newest.max(m.id);
            send(
                &sink,
                &Notification::MessageReceived {
                    widget: WIDGET.into(),
                    message: MessageView {
                        id: m.id.0,
                        from: m.from.0,
                        to: me,
                        ts: m.ts,
                        text: m.text,
                        state: Delivery::Received,
                        client_id: None,
                    },
                    backlog: false,
                },
            );
        }
    }
}

fn send(sink: &Sink, n: &Notification) {
    if let Ok(v) = serde_json::to_value(n) {
        sink(ToUi::Notification(v));
    }
}

impl Live {
    /// Ends the session (and logs the key out at the server when `logout`).
    async fn end(&self, logout: bool) {
        self.stop.cancel();
        if tokio::time::timeout(Duration::from_secs(5), self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("the session did not end within 5 s");
        }
        if logout && let Err(e) = self.remote.logout(&self.key).await {
            tracing::info!(error = %e, "the server could not be told about the logout");
        }
    }

    fn view(&self) -> WidgetView {
        self.view_of(&self.roster.borrow())
    }

    /// The page's view of the account: every contact is "pinned" (listed).
    fn view_of(&self, r: &Roster) -> WidgetView {
        let connection = if r.key_refused {
            Connection::AuthRequired
        } else if r.online && r.synced {
            Connection::Online
        } else if r.synced {
            Connection::Offline
        } else {
            Connection::Connecting
        };
        WidgetView {
            id: WIDGET.into(),
            server: self.remote.base().to_owned(),
            account: self.me.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            pins: r.contacts.iter().map(pinchat_daemon::ipc::contact_view).collect(),
            mode: Mode::Push,
            poll_interval_secs: 0,
            connection,
            via: Via::Own,
            stale: !r.online,
            max_pins: 0,
            storage: None,
            ringing: vec![],
        }
    }

    fn summary(&self) -> WidgetSummary {
        let view = self.view();
        WidgetSummary {
            id: view.id,
            server: view.server,
            login: view.account.login,
            name: view.account.name,
            connection: view.connection,
            via: view.via,
            unread: view.pins.iter().map(|p| p.unread).sum(),
            pins: view.pins.len(),
        }
    }

    async fn history(&self, q: HistoryParams) -> Result<HistoryView, Value> {
        let limit = q.limit.unwrap_or(50).clamp(1, 200);
        let page = self
            .remote
            .history(&self.key, AccountId(q.contact), q.before.map(MessageId), limit)
            .await
            .map_err(remote_error)?;
        let me = AccountId(self.me.lock().unwrap_or_else(|e| e.into_inner()).id);
        let messages = page
            .messages
            .into_iter()
            .map(|m| MessageView {
                state: if m.from != me {
                    Delivery::Received
                } else if m.id <= page.peer_read_up_to {
                    Delivery::Read
                } else {
                    Delivery::Sent
                },
                id: m.id.0,
                from: m.from.0,
                to: m.to.0,
                ts: m.ts,
                text: m.text,
                client_id: m.client_id,
            })
            .collect();
        Ok(HistoryView {
            messages,
            more: page.more,
        })
    }

    /// The unread messages from a contact (those after the read marker, on the newest page), oldest
    /// first, before `before`, the newest `limit` of them.
    async fn unread(&self, q: UnreadParams) -> Result<Vec<MessageView>, Value> {
        let contact = AccountId(q.contact);
        let page = self
            .remote
            .history(&self.key, contact, None, 200)
            .await
            .map_err(remote_error)?;
        let me = self.me.lock().unwrap_or_else(|e| e.into_inner()).id;
        let before = q.before.unwrap_or(u64::MAX);
        let mut list: Vec<MessageView> = page
            .messages
            .into_iter()
            .filter(|m| m.from == contact && m.id > page.read_up_to && m.id.0 < before)
            .take(q.limit.map_or(usize::MAX, |l| l as usize))
            .map(|m| MessageView {
                id: m.id.0,
                from: m.from.0,
                to: me,
                ts: m.ts,
                text: m.text,
                state: Delivery::Received,
                client_id: None,
            })
            .collect();
        list.reverse();
        Ok(list)
    }

    async fn send(&self, q: SendParams) -> Result<MessageView, Value> {
        let text = q.text;
        if text.trim().is_empty() {
            return Err(fail("widget.invalid", "the message is empty"));
        }
        let client_id = pinchat_daemon::model::new_client_id().map_err(|e| fail("internal", e))?;
        let sent = self
            .remote
            .send_message(&self.key, AccountId(q.contact), &client_id, &text)
            .await
            .map_err(remote_error)?;
        Ok(MessageView {
            id: sent.id.0,
            from: self.me.lock().unwrap_or_else(|e| e.into_inner()).id,
            to: q.contact,
            ts: sent.ts,
            text,
            state: Delivery::Sent,
            client_id: Some(client_id),
        })
    }
}
