//! Calls: the server's part of a voice or video call is signalling, and only signalling.
//!
//! [`Calls`] is the state machine of every live call, owned by the hub task (which knows each stream's
//! account and pins, and can reach each stream's queue). It holds no media and no session descriptions:
//! a call exists while it rings or is connected, and is forgotten when it ends, leaving only a
//! [`Finished`] record (who, when, how long, why it ended) for the call history. Its rules, each with
//! the error a client sees when it breaks one:
//!
//! - A call rings only on the callee's streams with a subscription that follows the caller (pinned, or in
//!   a roster subscription) — invariant 1 holds for calls too: a stream hears nothing about an account
//!   it does not follow. No such stream: `call.unavailable`.
//! - An account takes part in one call at a time (ringing or connected): `call.busy`.
//! - Two accounts calling each other at the same moment (glare): the call placed by the account with the
//!   lower id goes on; the other invite is refused with `call.glare`, or, if it was placed first, ended
//!   with [`CallEnd::Glare`].
//! - The first of the callee's streams to accept wins; the others are told
//!   [`CallEnd::AnsweredElsewhere`]. A call nobody answers ends after the ring time with
//!   [`CallEnd::NoAnswer`].
//! - Once connected, the call is between exactly two streams; offers, answers and candidates pass only
//!   between them, bounded in size and in number.
//! - A ringing call ends with the caller's stream ([`CallEnd::Cancelled`] to the callee), or with the
//!   last stream it rings on ([`CallEnd::Unavailable`]).
//! - A connected call outlives a party's stream for the rejoin time: the media flows between the peers
//!   and may well go on, so the peer is told [`CallEvent::Reconnecting`], and the party's next stream
//!   claims the call back ([`CallSignal::Rejoin`], then [`CallEvent::Reconnected`] to the peer). Not
//!   back in time, or both parties gone, the call ends ([`CallEnd::ConnectionLost`]).

use crate::hub::ConnId;
pub use crate::store::Finished;
use crate::util::now_ms;
use pinchat_proto::stream::{
    CallEnd, CallEvent, CallId, CallSignal, MAX_CANDIDATE_BYTES, MAX_SDP_BYTES, ServerFrame,
};
use pinchat_proto::{AccountId, ErrorBody, ErrorCode};
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::time::{DelayQueue, delay_queue};

/// Most signals one call may carry (offers, answers, candidates, …): a real call needs a few dozen.
pub const MAX_SIGNALS_PER_CALL: u32 = 500;

/// A frame for one stream.
pub type Delivery = (ConnId, ServerFrame);

/// Every live call.
pub struct Calls {
    ring: Duration,
    rejoin: Duration,
    next_id: CallId,
    calls: HashMap<CallId, Call>,
    /// The call each account takes part in.
    by_account: HashMap<AccountId, CallId>,
    /// Ring timers of ringing calls and rejoin timers of calls waiting for a party.
    timers: DelayQueue<(CallId, Timer)>,
    /// Calls ended since the owner last took them ([`Calls::take_finished`]).
    finished: Vec<Finished>,
}

struct Call {
    caller: AccountId,
    caller_conn: ConnId,
    callee: AccountId,
    video: bool,
    /// When it was placed and when it was answered, in milliseconds since the Unix epoch.
    placed_ms: i64,
    answered_ms: Option<i64>,
    state: State,
    signals: u32,
    /// A connected call's party whose stream ended, while the call waits for it to rejoin.
    away: Option<Away>,
}

/// What a timer is for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Timer {
    Ring,
    Rejoin,
}

/// A party of a connected call whose stream ended.
struct Away {
    /// `true`: the caller; `false`: the callee.
    caller: bool,
    timer: delay_queue::Key,
}

enum State {
    /// Ringing on these streams of the callee.
    Ringing {
        conns: Vec<ConnId>,
        timer: delay_queue::Key,
    },
    /// Accepted on this stream of the callee.
    Connected { callee_conn: ConnId },
}

/// Who sent a signal.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Caller,
    /// A callee's stream on which the call rings.
    Ringing,
    /// The callee's stream that accepted.
    Callee,
}

impl Calls {
    /// No calls; unanswered calls stop ringing after `ring`; a connected call waits `rejoin` for a
    /// party whose stream ended.
    pub fn new(ring: Duration, rejoin: Duration) -> Self {
        Calls {
            ring,
            rejoin,
            next_id: 1,
            calls: HashMap::new(),
            by_account: HashMap::new(),
            timers: DelayQueue::new(),
            finished: Vec::new(),
        }
    }

    /// Live calls.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// `true` when no call is live.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Places a call from `caller` (on stream `caller_conn`) to `callee`, ringing on `callee_conns` (the
    /// callee's streams that follow the caller). The caller must have checked that they are contacts.
    pub fn invite(
        &mut self,
        caller: AccountId,
        caller_conn: ConnId,
        callee: AccountId,
        video: bool,
        callee_conns: Vec<ConnId>,
        out: &mut Vec<Delivery>,
    ) -> Result<CallId, ErrorBody> {
        if caller == callee {
            return Err(ErrorBody::new(
                ErrorCode::CallNotContact,
                "you cannot call yourself",
            ));
        }
        if let Some(&existing) = self.by_account.get(&caller) {
            let call = &self.calls[&existing];
            let glare = call.caller == callee && matches!(call.state, State::Ringing { .. });
            if !glare {
                return Err(ErrorBody::new(
                    ErrorCode::CallBusy,
                    "you are in a call already; hang up (or decline the ringing call) first",
                ));
            }
            if callee.0 < caller.0 {
                return Err(ErrorBody::new(
                    ErrorCode::CallGlare,
                    format!(
                        "account {callee} is calling you at this moment (call {existing}); accept that call"
                    ),
                ));
            }
            // This invite wins: the callee's own invite ends.
            self.end(existing, CallEnd::Glare, CallEnd::Glare, out);
        }
        if self.by_account.contains_key(&callee) {
            return Err(ErrorBody::new(
                ErrorCode::CallBusy,
                "the contact is in another call; try again later or send a message",
            ));
        }
        if callee_conns.is_empty() {
            return Err(ErrorBody::new(
                ErrorCode::CallUnavailable,
                "the contact has no window open that follows you (offline, or you are not pinned); \
                 try again later or send a message",
            ));
        }
        let id = self.next_id;
        self.next_id += 1;
        let timer = self.timers.insert((id, Timer::Ring), self.ring);
        for &conn in &callee_conns {
            out.push(frame(conn, id, caller, CallEvent::Incoming { video }));
        }
        out.push(frame(caller_conn, id, callee, CallEvent::Ringing));
        self.calls.insert(
            id,
            Call {
                caller,
                caller_conn,
                callee,
                video,
                placed_ms: now_ms(),
                answered_ms: None,
                state: State::Ringing {
                    conns: callee_conns,
                    timer,
                },
                signals: 0,
                away: None,
            },
        );
        self.by_account.insert(caller, id);
        self.by_account.insert(callee, id);
        Ok(id)
    }

    /// Applies `signal` from stream `conn` of `account` to call `id`.
    pub fn signal(
        &mut self,
        conn: ConnId,
        account: AccountId,
        id: CallId,
        signal: CallSignal,
        out: &mut Vec<Delivery>,
    ) -> Result<(), ErrorBody> {
        let not_found = || {
            ErrorBody::new(
                ErrorCode::CallNotFound,
                format!("no live call {id} on this stream; it may have ended already"),
            )
        };
        let call = self.calls.get_mut(&id).ok_or_else(not_found)?;
        let role = if conn == call.caller_conn {
            Role::Caller
        } else {
            match &call.state {
                State::Ringing { conns, .. } if conns.contains(&conn) => Role::Ringing,
                State::Connected { callee_conn } if *callee_conn == conn => Role::Callee,
                // A party whose stream ended may hang up from its next one without claiming the call
                // back first (it hung up while it was away).
                _ => match &call.away {
                    Some(away) if matches!(signal, CallSignal::Hangup { .. }) => {
                        let role = if away.caller { Role::Caller } else { Role::Callee };
                        if sender(call, role) != account {
                            return Err(not_found());
                        }
                        role
                    }
                    _ => return Err(not_found()),
                },
            }
        };
        call.signals += 1;
        if call.signals > MAX_SIGNALS_PER_CALL {
            return Err(ErrorBody::new(
                ErrorCode::RateLimited,
                format!("a call may carry at most {MAX_SIGNALS_PER_CALL} signals; hang up and call again"),
            ));
        }
        let connected = matches!(call.state, State::Connected { .. });
        match (role, signal) {
            (Role::Ringing, CallSignal::Accept) => {
                let State::Ringing { conns, timer } =
                    std::mem::replace(&mut call.state, State::Connected { callee_conn: conn })
                else {
                    unreachable!("the role says the call rings");
                };
                self.timers.remove(&timer);
                call.answered_ms = Some(now_ms());
                out.push(frame(call.caller_conn, id, call.callee, CallEvent::Accepted));
                for other in conns.into_iter().filter(|c| *c != conn) {
                    out.push(ended(other, id, call.caller, CallEnd::AnsweredElsewhere));
                }
                Ok(())
            }
            // The party that ends a call is answered with an ack, not told its own ending.
            (Role::Ringing, CallSignal::Decline | CallSignal::Hangup { .. }) => {
                self.end(id, CallEnd::Declined, CallEnd::Declined, out);
                out.retain(|(c, _)| *c != conn);
                Ok(())
            }
            (Role::Caller, CallSignal::Hangup { .. }) if !connected => {
                self.end(id, CallEnd::Cancelled, CallEnd::Cancelled, out);
                out.retain(|(c, _)| *c != conn);
                Ok(())
            }
            (Role::Caller | Role::Callee, CallSignal::Hangup { failed }) => {
                let reason = if failed { CallEnd::Failed } else { CallEnd::Hangup };
                out.push(ended(peer_conn(call, role), id, sender(call, role), reason));
                self.forget(id, reason);
                Ok(())
            }
            (
                Role::Caller | Role::Callee,
                signal @ (CallSignal::Offer { .. } | CallSignal::Answer { .. } | CallSignal::Ice { .. }),
            ) if connected => {
                let event = match signal {
                    CallSignal::Offer { sdp } => CallEvent::Offer { sdp: check_sdp(sdp)? },
                    CallSignal::Answer { sdp } => CallEvent::Answer { sdp: check_sdp(sdp)? },
                    CallSignal::Ice {
                        candidate,
                        mline,
                        mid,
                    } => {
                        if candidate.len() > MAX_CANDIDATE_BYTES || mid.as_ref().is_some_and(|m| m.len() > 64)
                        {
                            return Err(ErrorBody::new(
                                ErrorCode::InvalidRequest,
                                format!(
                                    "an ICE candidate may be at most {MAX_CANDIDATE_BYTES} bytes, its mid 64"
                                ),
                            ));
                        }
                        CallEvent::Ice {
                            candidate,
                            mline,
                            mid,
                        }
                    }
                    _ => unreachable!("matched above"),
                };
                out.push(frame(peer_conn(call, role), id, sender(call, role), event));
                Ok(())
            }
            (_, signal) => Err(ErrorBody::new(
                ErrorCode::Unexpected,
                format!(
                    "{} does not fit call {id} now: it is {}, and you are its {}",
                    signal_name(&signal),
                    if connected { "connected" } else { "ringing" },
                    if role == Role::Caller { "caller" } else { "callee" },
                ),
            )),
        }
    }

    /// Stream `conn` of `account` ended: so does its call, if it takes part in one.
    pub fn conn_gone(&mut self, conn: ConnId, account: AccountId, out: &mut Vec<Delivery>) {
        let Some(&id) = self.by_account.get(&account) else {
            return;
        };
        let call = self.calls.get_mut(&id).expect("by_account names live calls");
        let party = match &mut call.state {
            State::Ringing { .. } if conn == call.caller_conn => {
                self.end(id, CallEnd::ConnectionLost, CallEnd::Cancelled, out);
                // The caller's stream is gone: nothing to tell it.
                out.retain(|(c, _)| *c != conn);
                return;
            }
            State::Ringing { conns, .. } => {
                conns.retain(|c| *c != conn);
                if conns.is_empty() {
                    self.end(id, CallEnd::Unavailable, CallEnd::Unavailable, out);
                }
                return;
            }
            State::Connected { .. } if conn == call.caller_conn => Role::Caller,
            State::Connected { callee_conn } if *callee_conn == conn => Role::Callee,
            // Another stream of a party's account: not the one in the call.
            State::Connected { .. } => return,
        };
        if call.away.is_some() {
            // Both parties gone: nobody is left to wait or to tell.
            self.forget(id, CallEnd::ConnectionLost);
            return;
        }
        let timer = self.timers.insert((id, Timer::Rejoin), self.rejoin);
        call.away = Some(Away {
            caller: party == Role::Caller,
            timer,
        });
        out.push(frame(
            peer_conn(call, party),
            id,
            sender(call, party),
            CallEvent::Reconnecting { own: false },
        ));
    }

    /// Stream `conn` of `account` claims call `id` back after the account's stream in it ended (or as
    /// it ends: a client may reconnect before the server has noticed its old stream is gone). The peer
    /// is told [`CallEvent::Reconnected`] if it heard the party was away.
    pub fn rejoin(
        &mut self,
        conn: ConnId,
        account: AccountId,
        id: CallId,
        out: &mut Vec<Delivery>,
    ) -> Result<(), ErrorBody> {
        let not_found = || {
            ErrorBody::new(
                ErrorCode::CallNotFound,
                format!(
                    "no connected call {id} of this account to rejoin; it ended (not rejoined in time, \
                     or hung up)"
                ),
            )
        };
        let call = self.calls.get_mut(&id).ok_or_else(not_found)?;
        let State::Connected { callee_conn } = &mut call.state else {
            return Err(not_found());
        };
        let party = if account == call.caller {
            call.caller_conn = conn;
            Role::Caller
        } else if account == call.callee {
            *callee_conn = conn;
            Role::Callee
        } else {
            return Err(not_found());
        };
        if let Some(away) = call.away.take_if(|a| a.caller == (party == Role::Caller)) {
            self.timers.remove(&away.timer);
            out.push(frame(
                peer_conn(call, party),
                id,
                sender(call, party),
                CallEvent::Reconnected,
            ));
        }
        Ok(())
    }

    /// Waits for the next call to ring out unanswered, or to wait in vain for a party to rejoin, and
    /// ends it. Never ready while no timer runs: poll it only when [`Calls::waiting`].
    pub async fn expired(&mut self, out: &mut Vec<Delivery>) {
        if let Some(expired) = futures_util::StreamExt::next(&mut self.timers).await {
            match expired.into_inner() {
                (id, Timer::Ring) => self.end_unanswered(id, out),
                (id, Timer::Rejoin) => self.end_abandoned(id, out),
            }
        }
    }

    /// The calls that ended since the last time, to be recorded.
    pub fn take_finished(&mut self) -> Vec<Finished> {
        std::mem::take(&mut self.finished)
    }

    /// `true` when a call is waiting to ring out, or for a party to rejoin.
    pub fn waiting(&self) -> bool {
        !self.timers.is_empty()
    }

    /// Ends a call whose ring timer fired (its key is spent, so it is not removed again).
    fn end_unanswered(&mut self, id: CallId, out: &mut Vec<Delivery>) {
        let Some(call) = self.calls.remove(&id) else {
            return;
        };
        self.by_account.remove(&call.caller);
        self.by_account.remove(&call.callee);
        self.record(&call, CallEnd::NoAnswer);
        out.push(ended(call.caller_conn, id, call.callee, CallEnd::NoAnswer));
        if let State::Ringing { conns, .. } = call.state {
            for conn in conns {
                out.push(ended(conn, id, call.caller, CallEnd::NoAnswer));
            }
        }
    }

    /// Ends a call whose away party did not rejoin in time (its timer is spent): the party still there
    /// is told [`CallEnd::ConnectionLost`].
    fn end_abandoned(&mut self, id: CallId, out: &mut Vec<Delivery>) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(away) = call.away.take() else {
            return;
        };
        let present = if away.caller { Role::Callee } else { Role::Caller };
        out.push(ended(
            conn_of(call, present),
            id,
            sender(call, peer_role(present)),
            CallEnd::ConnectionLost,
        ));
        self.forget(id, CallEnd::ConnectionLost);
    }

    /// Ends call `id`, telling the caller `to_caller` and the callee's streams `to_callee` (which is also
    /// what the record says: the caller's side of an ending it caused is a plain acknowledgement).
    fn end(&mut self, id: CallId, to_caller: CallEnd, to_callee: CallEnd, out: &mut Vec<Delivery>) {
        let Some(call) = self.forget(id, to_callee) else {
            return;
        };
        out.push(ended(call.caller_conn, id, call.callee, to_caller));
        match call.state {
            State::Ringing { conns, .. } => {
                for conn in conns {
                    out.push(ended(conn, id, call.caller, to_callee));
                }
            }
            State::Connected { callee_conn } => out.push(ended(callee_conn, id, call.caller, to_callee)),
        }
    }

    /// Removes call `id` and its ring timer, and records that it ended for `reason`.
    fn forget(&mut self, id: CallId, reason: CallEnd) -> Option<Call> {
        let call = self.calls.remove(&id)?;
        self.by_account.remove(&call.caller);
        self.by_account.remove(&call.callee);
        if let State::Ringing { timer, .. } = &call.state {
            self.timers.remove(timer);
        }
        if let Some(away) = &call.away {
            self.timers.remove(&away.timer);
        }
        self.record(&call, reason);
        Some(call)
    }

    /// Keeps the record of an ended call. A call ended by glare is not one the users placed knowingly
    /// (the other call goes on): it leaves no record.
    fn record(&mut self, call: &Call, reason: CallEnd) {
        if reason == CallEnd::Glare {
            return;
        }
        self.finished.push(Finished {
            caller: call.caller,
            callee: call.callee,
            video: call.video,
            placed_ms: call.placed_ms,
            duration_ms: call.answered_ms.map(|a| u64::try_from(now_ms() - a).unwrap_or(0)),
            reason,
        });
    }
}

/// The other party's stream, from `role`'s side of a connected call.
fn peer_conn(call: &Call, role: Role) -> ConnId {
    match (role, &call.state) {
        (Role::Caller, State::Connected { callee_conn }) => *callee_conn,
        _ => call.caller_conn,
    }
}

/// The stream of the party in `role` (a connected call's).
fn conn_of(call: &Call, role: Role) -> ConnId {
    peer_conn(call, peer_role(role))
}

/// The other party's role in a connected call.
fn peer_role(role: Role) -> Role {
    if role == Role::Caller {
        Role::Callee
    } else {
        Role::Caller
    }
}

/// The account of the party in `role`: the peer its frames name for the other side.
fn sender(call: &Call, role: Role) -> AccountId {
    if role == Role::Caller {
        call.caller
    } else {
        call.callee
    }
}

fn check_sdp(sdp: String) -> Result<String, ErrorBody> {
    if sdp.is_empty() || sdp.len() > MAX_SDP_BYTES {
        return Err(ErrorBody::new(
            ErrorCode::InvalidRequest,
            format!(
                "a session description must be 1 to {MAX_SDP_BYTES} bytes long; this one is {}",
                sdp.len()
            ),
        ));
    }
    Ok(sdp)
}

fn signal_name(signal: &CallSignal) -> &'static str {
    match signal {
        CallSignal::Accept => "accept",
        CallSignal::Decline => "decline",
        CallSignal::Offer { .. } => "an offer",
        CallSignal::Answer { .. } => "an answer",
        CallSignal::Ice { .. } => "an ICE candidate",
        CallSignal::Hangup { .. } => "hangup",
        CallSignal::Rejoin => "rejoin",
    }
}

fn frame(conn: ConnId, call: CallId, peer: AccountId, event: CallEvent) -> Delivery {
    (conn, ServerFrame::Call { call, peer, event })
}

fn ended(conn: ConnId, call: CallId, peer: AccountId, reason: CallEnd) -> Delivery {
    frame(conn, call, peer, CallEvent::Ended { reason })
}
