//! Calls through the widget's stream: requests go to the source (which owns the stream), the server's
//! answer goes straight back to the asker, and what the server says about a call becomes a
//! notification. The widget remembers which calls are live so that, when its link drops, it can tell
//! its clients those calls are over (the server ends them too, for the peer).

use super::{Reply, Widget};
use crate::error::WidgetError;
use crate::events::Event;
use crate::model::Link;
use crate::source::{CallOp, CallRequest, SourceCmd};
use pinchat_proto::AccountId;
use pinchat_proto::stream::{CallEnd, CallEvent, CallId, CallSignal};

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
            if let Some(event) = told {
                let peer = match event {
                    CallEvent::Ended { .. } => self.calls.remove(call),
                    _ => self.calls.get(call).copied(),
                };
                if let Some(peer) = peer {
                    self.notify(Event::Call {
                        widget: self.id.clone(),
                        call: *call,
                        contact: peer,
                        event,
                    });
                }
            }
        }
        let _ = self.source.send(SourceCmd::Call(CallRequest { op, reply }));
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
            CallEvent::Ended { .. } => {
                self.calls.remove(&call);
                self.ringing.remove(&call);
            }
            _ => {}
        }
        self.notify(Event::Call {
            widget: self.id.clone(),
            call,
            contact: peer,
            event,
        });
    }

    /// The widget's link is down: its live calls ended with it.
    pub(super) fn calls_lost(&mut self) {
        self.ringing.clear();
        for (call, peer) in std::mem::take(&mut self.calls) {
            self.notify(Event::Call {
                widget: self.id.clone(),
                call,
                contact: peer,
                event: CallEvent::Ended {
                    reason: CallEnd::ConnectionLost,
                },
            });
        }
    }
}
