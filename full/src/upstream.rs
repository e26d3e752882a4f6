//! The full client's one stream to its server, shared by every local link (the widgets borrowing it).
//!
//! One task owns the server WebSocket. Local links attach and send it [`Up`] messages; it forwards
//! their frames with their subscription and request numbers translated to numbers of its own stream
//! (each link numbers from 0, the server sees one stream), and routes every server frame back to the
//! link it belongs to, with the link's numbers restored. A server subscription number is reused only
//! after the server has acknowledged the unsubscribe, so a late frame of a finished subscription can
//! never reach another link. A link that does not keep up loses its place (its channel closes and it
//! goes away) instead of slowing the stream for everyone.

use futures_util::{SinkExt, StreamExt};
use pinchat_daemon::remote::ServerStream;
use pinchat_proto::codec::{self, Encoding};
use pinchat_proto::stream::{
    Ack, CallEvent, CallId, CallSignal, ClientFrame, ReqId, ServerFrame, SubId, Welcome,
};
use pinchat_proto::{AccountId, ErrorBody, ErrorCode};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

/// A local link's number.
pub type LinkId = u64;

/// Frames queued for one link before it counts as not keeping up.
pub const LINK_QUEUE: usize = 512;
/// The longest a keepalive ping may wait for its answer.
const PONG_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one frame may take to leave.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What local links ask of the stream.
#[derive(Debug)]
pub enum Up {
    /// A link said `hello`: it gets the server's `welcome`, or `None` while there is no stream.
    Attach {
        /// The link.
        link: LinkId,
        /// Where its frames go.
        frames: mpsc::Sender<ServerFrame>,
        /// The answer.
        reply: oneshot::Sender<Option<Welcome>>,
    },
    /// A frame from a link.
    Frame {
        /// The link.
        link: LinkId,
        /// The frame, in the link's numbering.
        frame: ClientFrame,
    },
    /// A link went away: its subscriptions end.
    Detach {
        /// The link.
        link: LinkId,
    },
}

/// Why the stream ended.
#[derive(Debug)]
pub enum Ended {
    /// Asked to stop.
    Stopped,
    /// The server refused the key: the account must log in again.
    LoggedOut(String),
    /// The connection broke; connect again.
    Lost(String),
}

/// Answers `Attach` with `None` and drops everything else: there is no stream to carry it.
pub fn refuse(up: Up) {
    if let Up::Attach { reply, .. } = up {
        let _ = reply.send(None);
    }
}

struct Tables {
    links: HashMap<LinkId, mpsc::Sender<ServerFrame>>,
    /// Server subscription → (link, the link's number).
    subs: HashMap<SubId, (LinkId, SubId)>,
    /// Server subscriptions being ended: reusable once the server acknowledges.
    releasing: HashMap<ReqId, SubId>,
    /// Server request → (link, the link's number).
    reqs: HashMap<ReqId, (LinkId, ReqId)>,
    /// Subscribes awaiting their snapshot, per server subscription, oldest first (a subscribe is
    /// answered by a snapshot, not an ack, in the order sent): the request, and whether it created
    /// the subscription (so that a refusal removes it again).
    subscribing: HashMap<SubId, std::collections::VecDeque<(ReqId, bool)>>,
    /// What each server subscription follows: its pins, or `None` for every contact (a roster).
    follows: HashMap<SubId, Option<Vec<AccountId>>>,
    /// Calls and the link that takes part in each (placed by it, or rung on it).
    calls: HashMap<CallId, LinkId>,
    /// Call invites on their way: server request → (link, the link's number).
    inviting: HashMap<ReqId, LinkId>,
    next_req: ReqId,
    max_subs: u8,
}

impl Tables {
    fn new(max_subs: u8) -> Tables {
        Tables {
            links: HashMap::new(),
            subs: HashMap::new(),
            releasing: HashMap::new(),
            reqs: HashMap::new(),
            subscribing: HashMap::new(),
            follows: HashMap::new(),
            calls: HashMap::new(),
            inviting: HashMap::new(),
            next_req: 1,
            max_subs,
        }
    }

    /// A server request number for a link's request `req`, remembered so the answer finds its way back.
    fn ask(&mut self, link: LinkId, req: ReqId) -> ReqId {
        let r = self.req();
        self.reqs.insert(r, (link, req));
        r
    }

    fn req(&mut self) -> ReqId {
        let r = self.next_req;
        self.next_req = self.next_req.wrapping_add(1).max(1);
        r
    }

    fn server_sub(&self, link: LinkId, sub: SubId) -> Option<SubId> {
        self.subs
            .iter()
            .find(|(_, v)| **v == (link, sub))
            .map(|(k, _)| *k)
    }

    fn free_sub(&self) -> Option<SubId> {
        (0..self.max_subs).find(|s| !self.subs.contains_key(s) && !self.releasing.values().any(|r| r == s))
    }

    /// Hands `frame` to `link`; a link that does not keep up is dropped.
    fn deliver(&mut self, link: LinkId, frame: ServerFrame) {
        let Some(tx) = self.links.get(&link) else { return };
        if tx.try_send(frame).is_err() {
            tracing::warn!(link, "a local link does not keep up; closing it");
            self.links.remove(&link);
        }
    }

    fn refuse(&mut self, link: LinkId, req: ReqId, code: ErrorCode, message: &str) {
        let error = ErrorBody::new(code, message);
        self.deliver(
            link,
            ServerFrame::Error {
                req: Some(req),
                error,
            },
        );
    }

    /// Translates a link's frame for the server; `None` when it was answered here.
    fn outgoing(&mut self, link: LinkId, frame: ClientFrame) -> Option<ClientFrame> {
        match frame {
            ClientFrame::Hello { .. } => None,
            ClientFrame::Subscribe {
                req,
                sub,
                pins,
                resume,
            } => {
                let (req, sub) = self.subscribing(link, req, sub)?;
                self.follows.insert(sub, Some(pins.clone()));
                Some(ClientFrame::Subscribe {
                    req,
                    sub,
                    pins,
                    resume,
                })
            }
            ClientFrame::SubscribeRoster { req, sub, resume } => {
                let (req, sub) = self.subscribing(link, req, sub)?;
                self.follows.insert(sub, None);
                Some(ClientFrame::SubscribeRoster { req, sub, resume })
            }
            ClientFrame::Unsubscribe { req, sub } => match self.server_sub(link, sub) {
                Some(server) => {
                    self.subs.remove(&server);
                    self.follows.remove(&server);
                    self.subscribing.remove(&server);
                    let r = self.ask(link, req);
                    self.releasing.insert(r, server);
                    Some(ClientFrame::Unsubscribe { req: r, sub: server })
                }
                None => {
                    self.deliver(
                        link,
                        ServerFrame::Ack {
                            req,
                            result: Ack::Done,
                        },
                    );
                    None
                }
            },
            ClientFrame::Send {
                req,
                to,
                client_id,
                text,
            } => Some(ClientFrame::Send {
                req: self.ask(link, req),
                to,
                client_id,
                text,
            }),
            ClientFrame::MarkRead { req, contact, up_to } => Some(ClientFrame::MarkRead {
                req: self.ask(link, req),
                contact,
                up_to,
            }),
            ClientFrame::SetPresence { req, state, status } => Some(ClientFrame::SetPresence {
                req: self.ask(link, req),
                state,
                status,
            }),
            ClientFrame::CallInvite { req, to, video } => {
                let r = self.ask(link, req);
                self.inviting.insert(r, link);
                Some(ClientFrame::CallInvite { req: r, to, video })
            }
            ClientFrame::CallSignal { req, call, signal } => {
                // A widget whose own link dropped claims its call back through this stream: the
                // call is the link's from now on (the server refuses a claim that is not the
                // account's).
                if signal == CallSignal::Rejoin {
                    self.calls.insert(call, link);
                }
                if self.calls.get(&call) != Some(&link) {
                    let message = format!("no live call {call} on this link; it may have ended already");
                    self.refuse(link, req, ErrorCode::CallNotFound, &message);
                    return None;
                }
                Some(ClientFrame::CallSignal {
                    req: self.ask(link, req),
                    call,
                    signal,
                })
            }
        }
    }

    /// The link that should ring for a call from `peer` (the server rang this stream because one of
    /// its subscriptions follows `peer`): the first that pinned `peer` — a widget the user set up for
    /// that contact — else the first that follows every contact.
    fn follower(&self, peer: AccountId) -> Option<LinkId> {
        let mut subs: Vec<_> = self.follows.iter().collect();
        subs.sort_by_key(|(sub, pins)| (pins.is_none(), **sub));
        subs.into_iter()
            .filter(|(_, pins)| pins.as_ref().is_none_or(|p| p.contains(&peer)))
            .find_map(|(sub, _)| self.subs.get(sub).map(|(link, _)| *link))
    }

    /// The server's request and subscription numbers for a link's subscribe (a new server subscription
    /// when the link's `sub` has none); `None`, with the link told why, when none is free.
    fn subscribing(&mut self, link: LinkId, req: ReqId, sub: SubId) -> Option<(ReqId, SubId)> {
        let (server, created) = match self.server_sub(link, sub) {
            Some(s) => (s, false),
            None => {
                let Some(s) = self.free_sub() else {
                    let message = format!(
                        "this full client carries {} subscriptions already; use your own connection",
                        self.max_subs
                    );
                    self.refuse(link, req, ErrorCode::TooManySubscriptions, &message);
                    return None;
                };
                self.subs.insert(s, (link, sub));
                (s, true)
            }
        };
        let r = self.ask(link, req);
        self.subscribing
            .entry(server)
            .or_default()
            .push_back((r, created));
        Some((r, server))
    }

    /// Ends a link's subscriptions; gives the unsubscribes to send.
    fn detach(&mut self, link: LinkId) -> Vec<ClientFrame> {
        self.links.remove(&link);
        self.reqs.retain(|_, (l, _)| *l != link);
        let mine: Vec<SubId> = self
            .subs
            .iter()
            .filter(|(_, (l, _))| *l == link)
            .map(|(s, _)| *s)
            .collect();
        self.inviting.retain(|_, l| *l != link);
        self.calls.retain(|_, l| *l != link);
        mine.into_iter()
            .map(|sub| {
                self.follows.remove(&sub);
                self.subs.remove(&sub);
                self.subscribing.remove(&sub);
                let req = self.req();
                self.releasing.insert(req, sub);
                ClientFrame::Unsubscribe { req, sub }
            })
            .collect()
    }

    /// Routes a server frame to its link.
    fn incoming(&mut self, frame: ServerFrame) -> Result<(), Ended> {
        match frame {
            ServerFrame::Snapshot(mut s) => {
                // It answers the oldest subscribe of that subscription.
                if let Some((req, _)) = self.subscribing.get_mut(&s.sub).and_then(|q| q.pop_front()) {
                    self.reqs.remove(&req);
                }
                if let Some(&(link, sub)) = self.subs.get(&s.sub) {
                    s.sub = sub;
                    self.deliver(link, ServerFrame::Snapshot(s));
                }
            }
            ServerFrame::Delta {
                sub,
                cursor,
                contact,
                fields,
            } => {
                if let Some(&(link, sub)) = self.subs.get(&sub) {
                    let frame = ServerFrame::Delta {
                        sub,
                        cursor,
                        contact,
                        fields,
                    };
                    self.deliver(link, frame);
                }
            }
            ServerFrame::Message { sub, cursor, message } => {
                if let Some(&(link, sub)) = self.subs.get(&sub) {
                    self.deliver(link, ServerFrame::Message { sub, cursor, message });
                }
            }
            ServerFrame::Ack { req, result } => {
                self.releasing.remove(&req);
                if let (Some(link), Ack::Call { call }) = (self.inviting.remove(&req), &result) {
                    self.calls.insert(*call, link);
                }
                if let Some((link, req)) = self.reqs.remove(&req) {
                    self.deliver(link, ServerFrame::Ack { req, result });
                }
            }
            ServerFrame::Call { call, peer, event } => {
                let link = match &event {
                    CallEvent::Incoming { .. } => self.follower(peer).inspect(|link| {
                        self.calls.insert(call, *link);
                    }),
                    CallEvent::Ended { .. } => self.calls.remove(&call),
                    _ => self.calls.get(&call).copied(),
                };
                match link {
                    Some(link) => self.deliver(link, ServerFrame::Call { call, peer, event }),
                    // Nobody here follows the caller any more (the link left): the call cannot ring.
                    None if matches!(event, CallEvent::Incoming { .. }) => {
                        tracing::info!(call, "a call rang for a link that is gone");
                    }
                    None => {}
                }
            }
            ServerFrame::Error {
                req: Some(req),
                error,
            } => {
                self.releasing.remove(&req);
                self.inviting.remove(&req);
                // A refused subscribe that would have created a subscription leaves none behind.
                for (sub, queue) in &mut self.subscribing {
                    if let Some(at) = queue.iter().position(|(r, _)| *r == req) {
                        if queue.remove(at).is_some_and(|(_, created)| created) {
                            self.subs.remove(sub);
                            self.follows.remove(sub);
                        }
                        break;
                    }
                }
                if let Some((link, req)) = self.reqs.remove(&req) {
                    self.deliver(
                        link,
                        ServerFrame::Error {
                            req: Some(req),
                            error,
                        },
                    );
                }
            }
            ServerFrame::Error { req: None, error } => {
                if error.code.needs_login() {
                    return Err(Ended::LoggedOut(error.message));
                }
                tracing::warn!(code = %error.code, message = %error.message, "stream error");
            }
            ServerFrame::Welcome(_) => {}
        }
        Ok(())
    }
}

/// Carries the links' traffic over `ws` until it ends or `stop` is cancelled. When it returns, every
/// link's channel is closed, which tells the links to go away.
pub async fn run(
    mut ws: ServerStream,
    welcome: &Welcome,
    up: &mut mpsc::Receiver<Up>,
    stop: &CancellationToken,
) -> Ended {
    let mut t = Tables::new(welcome.limits.max_subscriptions);
    let keepalive = Duration::from_secs(u64::from(welcome.keepalive_secs.max(5)));
    let mut ping = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
    let mut answer_due: Option<Instant> = None;
    let ended = loop {
        let due = async {
            match answer_due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => break Ended::Stopped,
            incoming = ws.next() => {
                answer_due = None;
                match incoming {
                    Some(Ok(WsMessage::Binary(b))) => match codec::decode_server(Encoding::Binary, &b) {
                        Ok(frame) => {
                            if let Err(e) = t.incoming(frame) {
                                break e;
                            }
                        }
                        Err(e) => break Ended::Lost(format!("the server sent an unreadable frame: {e}")),
                    },
                    Some(Ok(WsMessage::Close(frame))) => {
                        let (code, reason) = frame
                            .map(|f| (u16::from(f.code), f.reason.to_string()))
                            .unwrap_or((1005, String::new()));
                        if pinchat_proto::error::close_needs_login(code) {
                            break Ended::LoggedOut(reason);
                        }
                        break Ended::Lost(format!("closed by the server ({code} {reason})"));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break Ended::Lost(e.to_string()),
                    None => break Ended::Lost("the server closed the stream".into()),
                }
            }
            asked = up.recv() => {
                let Some(asked) = asked else { break Ended::Stopped };
                let frames = match asked {
                    Up::Attach { link, frames, reply } => {
                        t.links.insert(link, frames);
                        let _ = reply.send(Some(welcome.clone()));
                        vec![]
                    }
                    Up::Frame { link, frame } => t.outgoing(link, frame).into_iter().collect(),
                    Up::Detach { link } => t.detach(link),
                };
                for frame in frames {
                    let bytes = codec::encode(Encoding::Binary, &frame);
                    match tokio::time::timeout(WRITE_TIMEOUT, ws.send(WsMessage::Binary(bytes.into()))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return finish(ws, Ended::Lost(e.to_string())).await,
                        Err(_) => return finish(ws, Ended::Lost("the server accepts nothing".into())).await,
                    }
                }
            }
            _ = ping.tick() => {
                match tokio::time::timeout(WRITE_TIMEOUT, ws.send(WsMessage::Ping(Vec::new().into()))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break Ended::Lost(e.to_string()),
                    Err(_) => break Ended::Lost("the server accepts nothing (keepalive not sent)".into()),
                }
                answer_due.get_or_insert(Instant::now() + PONG_TIMEOUT);
            }
            () = due => break Ended::Lost("no answer to a keepalive; the connection is dead".into()),
        }
    };
    // The links go first (their channels close with `t`), so they hand back before the stream ends.
    drop(t);
    finish(ws, ended).await
}

async fn finish(mut ws: ServerStream, ended: Ended) -> Ended {
    let _ = tokio::time::timeout(WRITE_TIMEOUT, ws.close(None)).await;
    ended
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinchat_proto::AccountId;

    fn tables() -> Tables {
        Tables::new(2)
    }

    fn subscribe(req: ReqId, sub: SubId) -> ClientFrame {
        ClientFrame::Subscribe {
            req,
            sub,
            pins: vec![AccountId(2)],
            resume: None,
        }
    }

    #[test]
    fn links_get_their_own_numbers_back_and_a_freed_subscription_waits_for_its_ack() {
        let mut t = tables();
        let (a, mut a_rx) = mpsc::channel(8);
        let (b, mut b_rx) = mpsc::channel(8);
        t.links.insert(1, a);
        t.links.insert(2, b);
        // Both links use their sub 0 and request 1; the server sees two of each.
        let Some(ClientFrame::Subscribe { req: ra, sub: sa, .. }) = t.outgoing(1, subscribe(1, 0)) else {
            panic!()
        };
        let Some(ClientFrame::Subscribe { req: rb, sub: sb, .. }) = t.outgoing(2, subscribe(1, 0)) else {
            panic!()
        };
        assert_ne!(sa, sb);
        assert_ne!(ra, rb);
        // A third subscription does not fit: refused here, with the link's request number.
        assert!(t.outgoing(1, subscribe(2, 1)).is_none());
        let Ok(ServerFrame::Error { req: Some(2), error }) = a_rx.try_recv() else {
            panic!()
        };
        assert_eq!(error.code, ErrorCode::TooManySubscriptions);
        // The server's message on b's subscription reaches b as its sub 0.
        let message = pinchat_proto::Message {
            id: pinchat_proto::MessageId(9),
            from: AccountId(2),
            ts: 0,
            text: "hi".into(),
        };
        t.incoming(ServerFrame::Message {
            sub: sb,
            cursor: 5,
            message,
        })
        .unwrap();
        assert!(matches!(
            b_rx.try_recv(),
            Ok(ServerFrame::Message {
                sub: 0,
                cursor: 5,
                ..
            })
        ));
        assert!(a_rx.try_recv().is_err());
        // b leaves: its subscription is ended, and not reused before the server acknowledges.
        let bye = t.detach(2);
        let [ClientFrame::Unsubscribe { req: bye_req, sub }] = bye.as_slice() else {
            panic!()
        };
        assert_eq!(*sub, sb);
        assert_eq!(t.free_sub(), None);
        t.incoming(ServerFrame::Message {
            sub: sb,
            cursor: 6,
            message: pinchat_proto::Message {
                id: pinchat_proto::MessageId(10),
                from: AccountId(2),
                ts: 0,
                text: "late".into(),
            },
        })
        .unwrap();
        assert!(
            a_rx.try_recv().is_err(),
            "a late frame of b's subscription reached a"
        );
        t.incoming(ServerFrame::Ack {
            req: *bye_req,
            result: Ack::Done,
        })
        .unwrap();
        assert_eq!(t.free_sub(), Some(sb));
    }

    #[test]
    fn answered_subscribes_leave_nothing_behind_and_a_refused_one_frees_its_number() {
        let mut t = tables();
        let (a, mut a_rx) = mpsc::channel(64);
        t.links.insert(1, a);
        // A thousand re-subscribes (refreshes over months) keep no request around once answered.
        for i in 0..1000 {
            let Some(ClientFrame::Subscribe { sub, .. }) = t.outgoing(1, subscribe(i, 0)) else {
                panic!()
            };
            let snapshot = pinchat_proto::stream::Snapshot {
                sub,
                cursor: u64::from(i),
                full: true,
                contacts: vec![],
                messages: vec![],
            };
            t.incoming(ServerFrame::Snapshot(snapshot)).unwrap();
            assert!(matches!(a_rx.try_recv(), Ok(ServerFrame::Snapshot(s)) if s.sub == 0));
        }
        assert!(t.reqs.is_empty() && t.subscribing.values().all(|q| q.is_empty()));
        // A new subscription the server refuses (too many pins, say) leaves no number taken.
        let Some(ClientFrame::Subscribe { req, sub, .. }) = t.outgoing(1, subscribe(5000, 1)) else {
            panic!()
        };
        let error = ErrorBody::new(ErrorCode::TooManyPins, "too many");
        t.incoming(ServerFrame::Error {
            req: Some(req),
            error,
        })
        .unwrap();
        assert!(matches!(
            a_rx.try_recv(),
            Ok(ServerFrame::Error { req: Some(5000), .. })
        ));
        assert!(
            !t.subs.contains_key(&sub),
            "the refused subscription's number is free again"
        );
        assert_eq!(t.subs.len(), 1, "the first subscription stays");
    }
}
