//! Calls through the widget's stream: requests go to the source (which owns the stream), the server's
//! answer goes straight back to the asker, and what the server says about a call becomes a
//! notification. The widget remembers which calls are live, and which were answered, for when its
//! link drops: a call that still rings is over (the server ends it too, for the peer), an answered one
//! goes on — its media flows between the peers, not through the link — and is claimed back from the
//! server ([`CallSignal::Rejoin`]) when the link is up again, within the server's rejoin time.

use super::{Reply, Widget};
use crate::error::WidgetError;
use crate::events::Event;
use crate::model::Link;
use crate::source::{CallOp, CallRequest, SourceCmd};
use pinchat_proto::AccountId;
use pinchat_proto::ErrorCode;
use pinchat_proto::stream::{CallEnd, CallEvent, CallId, CallSignal};

/// What the server is owed for an answered call whose link dropped, once the link is back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Owed {
    /// A claim of the call back.
    Rejoin,
    /// The claim is on its way.
    Claiming,
    /// The call was hung up meanwhile: the peer is told so, if the server still holds the call.
    Hangup {
        /// Something failed here.
        failed: bool,
    },
}

/// A claim's call and the server's answer.
pub(super) type Rejoined = (CallId, Result<Option<CallId>, WidgetError>);

impl Widget {
    /// Places a call to a pinned contact, or passes a signal on; the answer comes from the server.
    pub(super) fn call(&mut self, op: CallOp, reply: Reply<Option<CallId>>) {
        if let CallOp::Invite { to, .. } = &op
            && !self.pins.iter().any(|p| p.contact == *to)
        {
            let _ = reply.send(Err(WidgetError::NotContact(format!(
                "account {to} is not pinned on this widget; a widget calls its pinned contacts"
            ))));
            return;
        }
        // A call this widget placed is live from the server's answer to the invite, which goes to
        // the asker directly; the widget learns of it from the ringing that follows. A hang-up in
        // between (a gadget that placed a call and went away at once) must still reach the server,
        // which knows whether the call exists.
        if let CallOp::Signal { call, signal } = &op
            && !self.calls.contains_key(call)
            && !matches!(signal, CallSignal::Hangup { .. } | CallSignal::Decline)
        {
            let _ = reply.send(Err(WidgetError::Call(
                pinchat_proto::ErrorCode::CallNotFound,
                format!("no live call {call} on this widget; it may have ended already"),
            )));
            return;
        }
        if self.link != Link::Online {
            // An answered call whose link dropped can still be hung up: it ends here at once, and the
            // server hears it when the link is back (or ends it itself when the rejoin time is over).
            if let CallOp::Signal {
                call,
                signal: CallSignal::Hangup { failed },
            } = &op
                && self.owed.contains_key(call)
            {
                self.owed.insert(*call, Owed::Hangup { failed: *failed });
                self.connected.remove(call);
                if let Some(peer) = self.calls.remove(call) {
                    let reason = if *failed { CallEnd::Failed } else { CallEnd::Hangup };
                    self.tell(*call, peer, CallEvent::Ended { reason });
                }
                let _ = reply.send(Ok(None));
                return;
            }
            CallRequest { op, reply }.unavailable();
            return;
        }
        // The server answers the party that ends a call with an ack, not an `ended`: whatever the
        // answer, the call is over for this widget (a refusal means it was over already). Every
        // client of the widget hears it — another panel of the account that still rings, too — as it
        // hears an accept, after which the call rings nowhere else.
        if let CallOp::Signal { call, signal } = &op {
            let told = match signal {
                CallSignal::Decline => Some(CallEvent::Ended {
                    reason: CallEnd::Declined,
                }),
                CallSignal::Hangup { failed } => Some(CallEvent::Ended {
                    reason: if *failed { CallEnd::Failed } else { CallEnd::Hangup },
                }),
                CallSignal::Accept => Some(CallEvent::Accepted),
                _ => None,
            };
            if told.is_some() {
                self.ringing.remove(call);
            }
            match told {
                Some(CallEvent::Accepted) => {
                    self.connected.insert(*call);
                }
                Some(CallEvent::Ended { .. }) => {
                    self.connected.remove(call);
                }
                _ => {}
            }
            if let Some(event) = told {
                let peer = match event {
                    CallEvent::Ended { .. } => self.calls.remove(call),
                    _ => self.calls.get(call).copied(),
                };
                if let Some(peer) = peer {
                    self.tell(*call, peer, event);
                }
            }
        }
        let _ = self.source.send(SourceCmd::Call(CallRequest { op, reply }));
    }

    /// Tells the widget's clients that something happened to call `call` with `peer`.
    fn tell(&self, call: CallId, peer: AccountId, event: CallEvent) {
        self.notify(Event::Call {
            widget: self.id.clone(),
            call,
            contact: peer,
            event,
        });
    }

    /// Something happened to a call on the widget's stream.
    pub(super) fn call_event(&mut self, call: CallId, peer: AccountId, event: CallEvent) {
        match &event {
            CallEvent::Incoming { video } => {
                self.calls.insert(call, peer);
                self.ringing.insert(call, (peer, *video));
            }
            CallEvent::Ringing => {
                self.calls.insert(call, peer);
            }
            CallEvent::Accepted => {
                self.connected.insert(call);
            }
            CallEvent::Ended { .. } => {
                self.calls.remove(&call);
                self.connected.remove(&call);
                self.owed.remove(&call);
                self.ringing.remove(&call);
            }
            _ => {}
        }
        self.tell(call, peer, event);
    }

    /// The widget's link is down: the calls that still ring ended with it; answered ones wait for
    /// the link to come back (their clients are told `away` once), unless it cannot come back without
    /// a new login (`ending`).
    pub(super) fn calls_lost(&mut self, ending: bool) {
        self.ringing.clear();
        for (call, peer) in std::mem::take(&mut self.calls) {
            if self.connected.contains(&call) && !ending {
                self.calls.insert(call, peer);
                if let std::collections::hash_map::Entry::Vacant(e) = self.owed.entry(call) {
                    e.insert(Owed::Rejoin);
                    self.tell(call, peer, CallEvent::Reconnecting { own: true });
                }
                continue;
            }
            self.connected.remove(&call);
            self.owed.remove(&call);
            self.tell(
                call,
                peer,
                CallEvent::Ended {
                    reason: CallEnd::ConnectionLost,
                },
            );
        }
    }

    /// The link is up: the calls that waited for it are claimed back, and the hang-ups made while it
    /// was down are passed on.
    pub(super) fn claim_calls(&mut self) {
        for (&call, owed) in &mut self.owed {
            let signal = match *owed {
                Owed::Rejoin => {
                    *owed = Owed::Claiming;
                    CallSignal::Rejoin
                }
                Owed::Claiming => continue,
                Owed::Hangup { failed } => CallSignal::Hangup { failed },
            };
            let claim = signal == CallSignal::Rejoin;
            let (reply, answer) = tokio::sync::oneshot::channel();
            let _ = self.source.send(SourceCmd::Call(CallRequest {
                op: CallOp::Signal { call, signal },
                reply,
            }));
            if claim {
                self.rejoins.spawn(async move {
                    let result = answer.await.unwrap_or_else(|_| {
                        Err(WidgetError::Call(
                            ErrorCode::CallUnavailable,
                            "the connection went away".into(),
                        ))
                    });
                    (call, result)
                });
            }
        }
        self.owed.retain(|_, owed| *owed == Owed::Claiming);
    }

    /// The server answered a claim of `call`: it goes on, or it is over.
    pub(super) fn rejoined(&mut self, call: CallId, result: Result<Option<CallId>, WidgetError>) {
        if self.owed.get(&call) != Some(&Owed::Claiming) {
            // Hung up meanwhile.
            return;
        }
        let event = match result {
            Ok(_) => {
                self.owed.remove(&call);
                CallEvent::Reconnected
            }
            // The link dropped again before the claim went out: claimed at the next one.
            Err(WidgetError::Call(ErrorCode::CallUnavailable, _)) if self.link != Link::Online => {
                self.owed.insert(call, Owed::Rejoin);
                return;
            }
            Err(e) => {
                tracing::info!(widget = %self.id, call, error = %e, "a call could not be claimed back");
                self.owed.remove(&call);
                self.connected.remove(&call);
                CallEvent::Ended {
                    reason: CallEnd::ConnectionLost,
                }
            }
        };
        let peer = match event {
            CallEvent::Ended { .. } => self.calls.remove(&call),
            _ => self.calls.get(&call).copied(),
        };
        if let Some(peer) = peer {
            self.tell(call, peer, event);
        }
    }
}
