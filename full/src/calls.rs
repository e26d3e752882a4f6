//! The full client's own calls: the window places and answers calls on the account's one stream, as a
//! widget does on its own.
//!
//! The roster's link (`roster::follow`) follows every contact, so the server rings it for a call from
//! any contact that no borrowing widget pinned (`upstream` rings a widget that pinned the caller
//! first). [`CallRoute`] is how the window reaches that link: it numbers the window's call requests,
//! hands the server's answers back to whoever asked, and passes the server's call events to the
//! window (which shows them as the local API's notifications). It lives as long as the session;
//! the link under it changes with each connection. When a connection ends, requests in flight are
//! answered with `call.unavailable`, calls that still ring end for the window (`connection_lost`), and
//! answered ones go on — their media flows between the peers — and are claimed back on the next
//! connection (`rejoin`), as the daemon's widgets do.

use crate::upstream::{LinkId, Up};
use pinchat_proto::stream::{Ack, CallEnd, CallEvent, CallId, CallSignal, ClientFrame, ReqId};
use pinchat_proto::{AccountId, ErrorBody, ErrorCode};
use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// The first request number of the window's call requests on the roster's link (the roster's own
/// subscribe is request 1).
const FIRST_REQ: ReqId = 1000;

/// Where the server's call events go: `(call, peer, event)`.
pub type Listener = Box<dyn Fn(CallId, AccountId, CallEvent) + Send + Sync>;

/// The window's way to the account's stream for calls.
pub struct CallRoute {
    state: Mutex<State>,
    listener: Option<Listener>,
}

struct State {
    /// The roster's link on the current connection, and the way to the stream.
    link: Option<(LinkId, mpsc::Sender<Up>)>,
    next_req: ReqId,
    /// Requests awaiting the server's answer.
    pending: HashMap<ReqId, oneshot::Sender<Result<Ack, ErrorBody>>>,
    /// Live calls on the link, with their peers.
    live: HashMap<CallId, AccountId>,
    /// The live calls that were answered.
    connected: HashSet<CallId>,
    /// Answered calls waiting for the next connection to be claimed back.
    away: HashSet<CallId>,
}

impl CallRoute {
    /// A route whose call events go to `listener`; with none (`--headless`), calls that ring here
    /// ring out unanswered.
    pub fn new(listener: Option<Listener>) -> Self {
        CallRoute {
            state: Mutex::new(State {
                link: None,
                next_req: FIRST_REQ,
                pending: HashMap::new(),
                live: HashMap::new(),
                connected: HashSet::new(),
                away: HashSet::new(),
            }),
            listener,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends the frame `make` builds for a fresh request number, and waits for the server's answer.
    pub async fn ask(&self, make: impl FnOnce(ReqId) -> ClientFrame) -> Result<Ack, ErrorBody> {
        let unavailable = || {
            ErrorBody::new(
                ErrorCode::CallUnavailable,
                "not connected to the server right now; calls need the connection",
            )
        };
        let (frame, link, up, answer) = {
            let mut s = self.state();
            let Some((link, up)) = s.link.clone() else {
                return Err(unavailable());
            };
            let req = s.next_req;
            s.next_req = s.next_req.checked_add(1).unwrap_or(FIRST_REQ);
            let (tx, rx) = oneshot::channel();
            s.pending.insert(req, tx);
            (make(req), link, up, rx)
        };
        if up.send(Up::Frame { link, frame }).await.is_err() {
            return Err(unavailable());
        }
        answer.await.unwrap_or_else(|_| Err(unavailable()))
    }

    /// The roster's link on a new connection: the answered calls that waited for it are claimed back.
    pub(crate) fn attached(self: &Arc<Self>, link: LinkId, up: mpsc::Sender<Up>) {
        let away: Vec<CallId> = {
            let mut s = self.state();
            s.link = Some((link, up));
            s.away.drain().collect()
        };
        for call in away {
            let route = self.clone();
            tokio::spawn(async move {
                let claimed = route
                    .ask(|req| ClientFrame::CallSignal {
                        req,
                        call,
                        signal: CallSignal::Rejoin,
                    })
                    .await;
                let peer = {
                    let mut s = route.state();
                    let peer = s.live.get(&call).copied();
                    if claimed.is_err() {
                        s.live.remove(&call);
                        s.connected.remove(&call);
                    }
                    peer
                };
                let event = match claimed {
                    Ok(_) => CallEvent::Reconnected,
                    Err(e) => {
                        tracing::info!(call, code = %e.code, "a call could not be claimed back");
                        CallEvent::Ended {
                            reason: CallEnd::ConnectionLost,
                        }
                    }
                };
                if let Some(peer) = peer {
                    route.tell(call, peer, event);
                }
            });
        }
    }

    /// The connection ended: its requests are unanswered, its ringing calls over for the window, its
    /// answered calls waiting for the next connection.
    pub(crate) fn detached(&self, link: LinkId) {
        let (ended, waiting) = {
            let mut s = self.state();
            if s.link.as_ref().is_some_and(|(l, _)| *l == link) {
                s.link = None;
            }
            s.pending.clear();
            let State {
                live,
                connected,
                away,
                ..
            } = &mut *s;
            let ended: Vec<(CallId, AccountId)> = live
                .iter()
                .filter(|(call, _)| !connected.contains(call))
                .map(|(c, p)| (*c, *p))
                .collect();
            for (call, _) in &ended {
                live.remove(call);
            }
            let waiting: Vec<(CallId, AccountId)> = live
                .iter()
                .filter(|(call, _)| away.insert(**call))
                .map(|(c, p)| (*c, *p))
                .collect();
            (ended, waiting)
        };
        for (call, peer) in ended {
            self.tell(
                call,
                peer,
                CallEvent::Ended {
                    reason: CallEnd::ConnectionLost,
                },
            );
        }
        for (call, peer) in waiting {
            self.tell(call, peer, CallEvent::Reconnecting { own: true });
        }
    }

    /// The server's answer to request `req`; `false` when it was not a call request.
    pub(crate) fn answered(&self, req: ReqId, result: Result<Ack, ErrorBody>) -> bool {
        let Some(tx) = self.state().pending.remove(&req) else {
            return false;
        };
        let _ = tx.send(result);
        true
    }

    /// A call event from the server.
    pub(crate) fn event(&self, call: CallId, peer: AccountId, event: CallEvent) {
        {
            let mut s = self.state();
            match &event {
                CallEvent::Incoming { .. } | CallEvent::Ringing => {
                    s.live.insert(call, peer);
                }
                CallEvent::Accepted => {
                    s.connected.insert(call);
                }
                CallEvent::Ended { .. } => {
                    s.live.remove(&call);
                    s.connected.remove(&call);
                }
                _ => {}
            }
        }
        self.tell(call, peer, event);
    }

    /// The window answered call `call`.
    pub fn answered_here(&self, call: CallId) {
        self.state().connected.insert(call);
    }

    /// The window ended call `call` itself (a hang-up or a decline).
    pub fn forget(&self, call: CallId) {
        let mut s = self.state();
        s.live.remove(&call);
        s.connected.remove(&call);
        s.away.remove(&call);
    }

    fn tell(&self, call: CallId, peer: AccountId, event: CallEvent) {
        match &self.listener {
            Some(listener) => listener(call, peer, event),
            None if matches!(event, CallEvent::Incoming { .. }) => {
                tracing::info!(
                    call,
                    peer = peer.0,
                    "a call rings; this client has no window to answer it"
                );
            }
            None => {}
        }
    }
}
