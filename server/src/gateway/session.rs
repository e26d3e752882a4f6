//! One linked XMPP account's session: the task that owns its XMPP stream (tokio-xmpp's `StanzaStream`,
//! which reconnects and resumes with XEP-0198 stream management by itself) and maps it onto the store.
//!
//! - Roster → contacts: every roster item gets a pinchat account standing for it
//!   ([`Store::add_gateway_contact`]); an item removed from the roster stays a contact (its history is
//!   kept) but shows offline with a status saying it left the roster.
//! - Presence → state: the best available resource's `<show/>` becomes the contact's state and its
//!   `<status/>` the status text; no available resource means offline.
//! - Messages in → stored as from the contact, with the XMPP message id as the client id, so a message
//!   delivered twice (a resumed stream, offline storage) is stored once.
//! - Messages out ← the owner's messages to XMPP contacts, read from the store
//!   ([`Store::gateway_outbox`]) after the link's `sent_up_to` whenever the feed shows one
//!   ([`super::Tap`]) and after every fresh stream. `sent_up_to` moves only when the XMPP server has
//!   acknowledged a message through stream management, so a message the server never took is sent again
//!   after a reconnect, and one it took is not.

use super::{LinkState, contact_status};
use crate::store::{GatewayContact, Outgoing, Store, StoreError};
use crate::util::now_ms;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use pinchat_proto::http::XmppState;
use pinchat_proto::{AccountId, MessageId, Presence};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_xmpp::connect::{DnsConfig, ServerConnector, StartTlsServerConnector};
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::presence::{self, Presence as XmppPresence};
use tokio_xmpp::parsers::roster::{Roster, Subscription};
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use tokio_xmpp::stanzastream::{
    Connection, Event, StanzaStage, StanzaState, StanzaStream, StanzaToken, StreamEvent,
};
use tokio_xmpp::xmlstream::{StreamHeader, Timeouts};
use tokio_xmpp::{Stanza, parsers::ns};

/// Messages read from the outbox per query.
const OUTBOX_PAGE: u32 = 100;
/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long one login may take before it counts as unreachable.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a login failed.
#[derive(Debug)]
pub enum LoginError {
    /// The server refused the credentials.
    Auth(String),
    /// Anything else: DNS, TCP, TLS, a protocol error, a timeout.
    Unreachable(String),
}

/// The connector for a link: STARTTLS (verified against the system's roots) to `server` when given,
/// else to the domain's `_xmpp-client._tcp` SRV records (port 5222 without them).
pub fn connector(jid: &BareJid, server: Option<&str>) -> StartTlsServerConnector {
    StartTlsServerConnector(match server {
        Some(addr) => DnsConfig::addr(addr),
        None => DnsConfig::srv_default_client(jid.domain().as_str()),
    })
}

/// Connects and authenticates (no resource bound yet), as tokio-xmpp's own c2s login does, but
/// telling a refused password apart from an unreachable server: tokio-xmpp's reconnector retries both
/// forever.
pub async fn login(
    connector: &StartTlsServerConnector,
    jid: &BareJid,
    password: &str,
) -> Result<Connection, LoginError> {
    let attempt = async {
        let jid: Jid = jid.clone().into();
        let unreachable = |e: tokio_xmpp::Error| LoginError::Unreachable(with_causes(&e));
        let (stream, binding) = connector
            .connect(&jid, ns::JABBER_CLIENT, Timeouts::default())
            .await
            .map_err(unreachable)?;
        let (features, stream) = stream
            .recv_features::<tokio_xmpp::xmlstream::FallibleStreamElement>()
            .await
            .map_err(|e| LoginError::Unreachable(with_causes(&e)))?;
        let username = jid.node().map(|n| n.as_str().to_owned()).unwrap_or_default();
        let creds = sasl::common::Credentials::default()
            .with_username(username)
            .with_password(password.to_owned())
            .with_channel_binding(binding);
        let stream = tokio_xmpp::client_login(stream, features.sasl_mechanisms, creds)
            .await
            .map_err(|e| match e {
                tokio_xmpp::Error::Auth(a) => LoginError::Auth(a.to_string()),
                other => unreachable(other),
            })?;
        let stream = stream
            .send_header(StreamHeader {
                to: Some(Cow::Borrowed(jid.domain().as_str())),
                from: None,
                id: None,
            })
            .await
            .map_err(|e| LoginError::Unreachable(with_causes(&e)))?;
        let (features, stream) = stream
            .recv_features()
            .await
            .map_err(|e| LoginError::Unreachable(with_causes(&e)))?;
        Ok(Connection {
            stream: stream.box_stream(),
            features,
            identity: jid,
        })
    };
    match tokio::time::timeout(LOGIN_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(LoginError::Unreachable(format!(
            "no answer within {} s",
            LOGIN_TIMEOUT.as_secs()
        ))),
    }
}

/// An error with its causes, which is where TLS and DNS failures say what actually went wrong.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some layers repeat their inner error in their own message.
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// What a session needs.
pub struct Session {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The pinchat account.
    pub owner: AccountId,
    /// The XMPP account.
    pub jid: BareJid,
    /// Its password (only in memory).
    pub password: String,
    /// Where to connect.
    pub server: Option<String>,
    /// Longest message stored, in bytes; longer XMPP messages are cut there.
    pub max_text_bytes: usize,
    /// Largest avatar accepted from a vCard, in bytes.
    pub max_avatar_bytes: usize,
    /// The state, for `GET /v1/xmpp`.
    pub state: watch::Sender<LinkState>,
    /// Rung when the owner wrote to one of this link's contacts.
    pub outbox: Arc<Notify>,
    /// The contacts' accounts, shared with the feed tap.
    pub shadows: super::Shadows,
    /// Ends the session (unlink, shutdown).
    pub cancel: CancellationToken,
}

/// One resource's presence.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Available {
    priority: i8,
    state: Presence,
    status: String,
}

/// The session's working state.
struct Running {
    s: Session,
    stream: StanzaStream,
    /// JID → its account.
    contacts: HashMap<BareJid, AccountId>,
    /// JID → resource → presence.
    presence: HashMap<BareJid, HashMap<String, Available>>,
    /// What each contact shows now, to write only changes.
    shown: HashMap<AccountId, (bool, Presence, String)>,
    /// Messages handed to the stream and not yet acknowledged, by id.
    in_flight: BTreeMap<MessageId, StanzaToken>,
    /// Everything up to here is acknowledged and recorded in the store.
    acked_up_to: MessageId,
    /// Everything up to here has been handed to the stream (or acknowledged).
    queued_up_to: MessageId,
    /// Whether the current stream has stream management (acknowledgements).
    sm: bool,
    /// The id of the roster request in flight.
    roster_request: Option<String>,
    /// The archive id (XEP-0313) of the newest message seen, and the one last recorded in the store.
    archive_after: Option<String>,
    archive_saved: Option<String>,
    /// The id (also the query id) of the archive query in flight.
    archive_request: Option<String>,
    /// vCard requests in flight: id → whose.
    vcard_requests: HashMap<String, BareJid>,
    /// The avatar hash (SHA-1, XEP-0153) each contact last advertised and we fetched.
    photos: HashMap<BareJid, Option<[u8; 20]>>,
    /// Acknowledgements awaited, each resolving to its message and the stage reached.
    acks: Acks,
    /// Whether the stream is bound and the roster loaded.
    online: bool,
    next_id: u64,
}

impl Session {
    /// Runs until cancelled. `sent_up_to` is the link's stored acknowledgement mark, `archive_after`
    /// the archive id of the newest message seen before.
    pub async fn run(self, sent_up_to: MessageId, archive_after: Option<String>) {
        // The reconnector's failures, for the session to show on the contacts.
        let (auth_tx, mut auth_rx) = tokio::sync::mpsc::channel::<LoginError>(4);
        let stream = {
            let connector = connector(&self.jid, self.server.as_deref());
            let (jid, password) = (self.jid.clone(), self.password.clone());
            let cancel = self.cancel.clone();
            let reconnect = move |_: Option<String>, slot: oneshot::Sender<Connection>| {
                let (connector, jid, password) = (connector.clone(), jid.clone(), password.clone());
                let (auth_tx, cancel) = (auth_tx.clone(), cancel.clone());
                tokio::spawn(async move {
                    let mut delay = Duration::from_secs(1);
                    loop {
                        let attempt = tokio::select! {
                            _ = cancel.cancelled() => return,
                            r = login(&connector, &jid, &password) => r,
                        };
                        match attempt {
                            Ok(conn) => {
                                let _ = slot.send(conn);
                                return;
                            }
                            Err(LoginError::Auth(why)) => {
                                // Dropping the slot ends the stream: retrying a refused password only
                                // risks the account being locked.
                                let _ = auth_tx.try_send(LoginError::Auth(why));
                                return;
                            }
                            Err(LoginError::Unreachable(why)) => {
                                tracing::info!(%jid, error = %why, retry_in = ?delay, "XMPP server unreachable");
                                let _ = auth_tx.try_send(LoginError::Unreachable(why));
                                tokio::select! {
                                    _ = cancel.cancelled() => return,
                                    _ = tokio::time::sleep(delay) => {}
                                }
                                delay = (delay * 2).min(MAX_BACKOFF);
                            }
                        }
                    }
                });
            };
            StanzaStream::new(Box::new(reconnect), 64)
        };
        let mut r = Running {
            s: self,
            stream,
            contacts: HashMap::new(),
            presence: HashMap::new(),
            shown: HashMap::new(),
            in_flight: BTreeMap::new(),
            acked_up_to: sent_up_to,
            queued_up_to: sent_up_to,
            sm: false,
            roster_request: None,
            vcard_requests: HashMap::new(),
            archive_saved: archive_after.clone(),
            archive_after,
            archive_request: None,
            photos: HashMap::new(),
            acks: FuturesUnordered::new(),
            online: false,
            next_id: 0,
        };
        if let Err(e) = r.load_contacts().await {
            tracing::warn!(owner = r.s.owner.0, error = %e, "cannot load the XMPP contacts");
        }
        r.run(&mut auth_rx).await;
    }
}

impl Running {
    async fn run(mut self, auth: &mut tokio::sync::mpsc::Receiver<LoginError>) {
        let cancel = self.s.cancel.clone();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(failure) = auth.recv() => match failure {
                    LoginError::Auth(why) => {
                        tracing::warn!(jid = %self.s.jid, "the XMPP server refused the password");
                        self.set_state(XmppState::AuthFailed, Some(format!(
                            "the XMPP server refused the password of {} ({why}): link the account again with its current password",
                            self.s.jid
                        ))).await;
                    }
                    LoginError::Unreachable(why) => {
                        self.online = false;
                        self.set_state(XmppState::Unreachable, Some(why)).await;
                    }
                },
                event = self.stream.next() => match event {
                    Some(Event::Stream(StreamEvent::Reset { features, .. })) => {
                        self.sm = features.stream_management.is_some();
                        self.on_fresh_stream().await;
                    }
                    Some(Event::Stream(StreamEvent::Suspended)) => {
                        self.online = false;
                        // The reconnector may have failed already (its report can come first); that
                        // is the more useful thing to show.
                        if self.s.state.borrow().state != XmppState::Unreachable {
                            self.set_state(XmppState::Connecting, None).await;
                        }
                    }
                    Some(Event::Stream(StreamEvent::Resumed)) => {
                        self.online = true;
                        self.set_state(XmppState::Online, None).await;
                    }
                    Some(Event::Stanza(stanza)) => self.on_stanza(stanza).await,
                    // The stream ended for good (a refused password): wait for unlink or shutdown.
                    None => {
                        cancel.cancelled().await;
                        break;
                    }
                },
                _ = self.s.outbox.notified(), if self.online => self.flush().await,
                Some((id, state)) = self.acks.next() => self.on_ack(id, state).await,
            }
        }
        self.save_archive_mark().await;
        self.stream.close().await;
    }

    /// Records the archive mark when it moved. Losing a recent mark (a crash) costs only a longer
    /// fetch next time: what is fetched again is recognised by its client id and not stored twice.
    async fn save_archive_mark(&mut self) {
        if self.archive_after == self.archive_saved {
            return;
        }
        let Some(after) = self.archive_after.clone() else {
            return;
        };
        match self.s.store.set_gateway_archive(self.s.owner, after).await {
            Ok(()) => self.archive_saved = self.archive_after.clone(),
            Err(e) => tracing::warn!(error = %e, "cannot record the XMPP archive mark"),
        }
    }

    /// Asks the account's archive (XEP-0313) for what came after the newest message seen: messages
    /// another client of the account received or sent while the gateway was away. Without a mark
    /// (nothing seen yet) there is nothing to anchor the query to, and nothing is fetched.
    async fn query_archive(&mut self) {
        use tokio_xmpp::parsers::mam::{Query, QueryId};
        use tokio_xmpp::parsers::rsm::SetQuery;
        let Some(after) = self.archive_after.clone() else {
            return;
        };
        let id = self.id("mam");
        self.archive_request = Some(id.clone());
        let query = Query {
            queryid: Some(QueryId(id.clone())),
            node: None,
            form: None,
            set: Some(SetQuery {
                max: Some(100),
                after: Some(after),
                before: None,
                index: None,
            }),
            flip_page: false,
        };
        self.stream.send(Box::new(Iq::from_set(id, query).into())).await;
    }

    /// Notes the archive id the account's server gave a live message.
    fn note_archive_id(&mut self, m: &Message) {
        use tokio_xmpp::parsers::stanza_id::StanzaId;
        for p in m.payloads.iter().filter(|p| p.is("stanza-id", ns::SID)) {
            if let Ok(sid) = StanzaId::try_from(p.clone())
                && sid.by.to_bare() == self.s.jid
            {
                self.archive_after = Some(sid.id);
            }
        }
    }

    /// A new stream (first login, or a reconnect without resumption): nothing sent earlier and not
    /// acknowledged can be trusted to have arrived, and presences must be learnt again.
    async fn on_fresh_stream(&mut self) {
        self.online = false;
        self.in_flight.clear();
        self.acks.clear();
        self.queued_up_to = self.acked_up_to;
        self.presence.clear();
        let id = self.id("roster");
        self.roster_request = Some(id.clone());
        let iq = Iq::from_get(
            id,
            Roster {
                ver: None,
                items: vec![],
            },
        );
        self.stream.send(Box::new(iq.into())).await;
    }

    /// A roster arrived (`full`: the answer to our request; else a push of changed items): contacts
    /// are in place, so presences and messages can be mapped.
    async fn on_roster(&mut self, roster: Roster, full: bool) {
        let known: Vec<BareJid> = roster.items.iter().map(|i| i.jid.clone()).collect();
        let adds = roster
            .items
            .iter()
            .filter(|i| i.subscription != Subscription::Remove)
            .map(|i| {
                let name = i
                    .name
                    .clone()
                    .filter(|n| !n.trim().is_empty())
                    .unwrap_or_else(|| i.jid.to_string());
                let store = self.s.store.clone();
                let (owner, jid) = (self.s.owner, i.jid.clone());
                async move {
                    (
                        jid.clone(),
                        store.add_gateway_contact(owner, jid.as_str(), &name).await,
                    )
                }
            })
            .collect::<Vec<_>>();
        // Concurrently, so that the store's writer commits a whole roster in a few transactions.
        for (jid, result) in futures_util::future::join_all(adds).await {
            match result {
                Ok(account) => {
                    self.contacts.insert(jid, account);
                    self.s.shadows.insert(account, self.s.outbox.clone());
                }
                Err(e) => tracing::warn!(jid = %jid, error = %e, "cannot add an XMPP contact"),
            }
        }
        for item in roster
            .items
            .iter()
            .filter(|i| i.subscription == Subscription::Remove)
        {
            self.removed(&item.jid).await;
        }
        if full {
            // A full roster: whoever is not in it any more has left it.
            let gone: Vec<BareJid> = self
                .contacts
                .keys()
                .filter(|j| !known.contains(j))
                .cloned()
                .collect();
            for jid in gone {
                self.removed(&jid).await;
            }
        }
        let contacts = self.contacts.len() as u32;
        self.s.state.send_modify(|s| s.contacts = contacts);
        if full {
            // Announce ourselves: the server then sends the contacts' presences and any messages it
            // stored while the account was offline. Priority 0, not negative: a resource of negative
            // priority is never given messages sent to the bare JID (RFC 6121 §8.5.2.1.1).
            // Carbons (XEP-0280): copies of what the account's other clients exchange, so the history
            // here stays in step with theirs.
            let carbons = Iq::from_set(self.id("carbons"), tokio_xmpp::parsers::carbons::Enable);
            self.stream.send(Box::new(carbons.into())).await;
            let presence = XmppPresence::available().with_priority(0);
            self.stream.send(Box::new(presence.into())).await;
            self.online = true;
            self.set_state(XmppState::Online, None).await;
            self.query_archive().await;
            self.flush().await;
        }
    }

    /// A contact left the roster: it stays a contact, offline, saying so.
    async fn removed(&mut self, jid: &BareJid) {
        self.presence.remove(jid);
        if let Some(&account) = self.contacts.get(jid) {
            self.show(
                account,
                false,
                Presence::Offline,
                "no longer in your XMPP roster".into(),
            )
            .await;
        }
    }

    async fn on_stanza(&mut self, stanza: Stanza) {
        match stanza {
            Stanza::Message(m) => self.on_message(m).await,
            Stanza::Presence(p) => self.on_presence(p).await,
            Stanza::Iq(iq) => self.on_iq(iq).await,
        }
    }

    async fn on_iq(&mut self, iq: Iq) {
        match iq {
            Iq::Result { id, payload, .. } if self.roster_request.as_deref() == Some(id.as_str()) => {
                self.roster_request = None;
                let roster = payload.and_then(|p| Roster::try_from(p).ok()).unwrap_or(Roster {
                    ver: None,
                    items: vec![],
                });
                self.on_roster(roster, true).await;
            }
            Iq::Result { id, payload, .. } if self.archive_request.as_deref() == Some(id.as_str()) => {
                self.archive_request = None;
                let complete = payload
                    .and_then(|p| tokio_xmpp::parsers::mam::Fin::try_from(p).ok())
                    .is_none_or(|fin| fin.complete);
                self.save_archive_mark().await;
                if !complete {
                    self.query_archive().await;
                }
            }
            Iq::Error { id, .. } if self.archive_request.as_deref() == Some(id.as_str()) => {
                // No archive on this server (or an expired mark): live delivery and offline storage remain.
                tracing::info!(jid = %self.s.jid, "the XMPP server did not answer the archive query");
                self.archive_request = None;
            }
            Iq::Result { id, payload, .. } if self.vcard_requests.contains_key(&id) => {
                let jid = self.vcard_requests.remove(&id).expect("checked");
                if let Some(payload) = payload {
                    self.on_vcard(jid, payload).await;
                }
            }
            Iq::Error { id, .. } if self.vcard_requests.contains_key(&id) => {
                // No vCard (or none we may read): the contact keeps the avatar it has.
                self.vcard_requests.remove(&id);
            }
            Iq::Set {
                from, id, payload, ..
            } => {
                // Roster pushes come from the account itself (RFC 6121 §2.1.6); anything else is refused.
                let own = from.as_ref().is_none_or(|f| f.to_bare() == self.s.jid);
                if own && payload.is("query", ns::ROSTER) {
                    if let Ok(roster) = Roster::try_from(payload) {
                        self.on_roster(roster, false).await;
                    }
                    self.answer(from, id).await;
                } else {
                    self.refuse(from, id, payload).await;
                }
            }
            Iq::Get {
                from, id, payload, ..
            } => {
                if payload.is("ping", ns::PING) {
                    self.answer(from, id).await;
                } else {
                    self.refuse(from, id, payload).await;
                }
            }
            Iq::Result { .. } | Iq::Error { .. } => {}
        }
    }

    /// An empty result: a roster push taken, a ping answered.
    async fn answer(&mut self, to: Option<Jid>, id: String) {
        let reply = Iq::Result {
            from: None,
            to,
            id,
            payload: None,
        };
        self.stream.send(Box::new(reply.into())).await;
    }

    async fn refuse(&mut self, to: Option<Jid>, id: String, payload: Element) {
        let error = StanzaError::new(ErrorType::Cancel, DefinedCondition::ServiceUnavailable, "en", "");
        let reply = Iq::Error {
            from: None,
            to,
            id,
            error,
            payload: Some(payload),
        };
        self.stream.send(Box::new(reply.into())).await;
    }

    async fn on_presence(&mut self, p: XmppPresence) {
        let Some(from) = p.from.clone() else { return };
        let bare = from.to_bare();
        let Some(&account) = self.contacts.get(&bare) else {
            // Presence from outside the roster (a subscription request, our own other resources).
            return;
        };
        let resource = from.resource().map(|r| r.as_str().to_owned()).unwrap_or_default();
        match p.type_ {
            presence::Type::None => {
                self.avatar_advertised(&bare, &p).await;
                let resources = self.presence.entry(bare.clone()).or_default();
                let state = match p.show {
                    None | Some(presence::Show::Chat) => Presence::Online,
                    Some(presence::Show::Away) | Some(presence::Show::Xa) => Presence::Idle,
                    Some(presence::Show::Dnd) => Presence::DoNotDisturb,
                };
                let status = p
                    .statuses
                    .get("")
                    .or_else(|| p.statuses.values().next())
                    .cloned()
                    .unwrap_or_default();
                resources.insert(
                    resource,
                    Available {
                        priority: p.priority.0,
                        state,
                        status,
                    },
                );
            }
            presence::Type::Unavailable | presence::Type::Error => {
                self.presence.entry(bare.clone()).or_default().remove(&resource);
            }
            _ => return,
        }
        let best = self
            .presence
            .entry(bare.clone())
            .or_default()
            .values()
            .max_by_key(|a| (a.priority, a.state == Presence::Online))
            .cloned();
        match best {
            Some(a) => self.show(account, true, a.state, truncate(&a.status, 140)).await,
            None => self.show(account, false, Presence::Offline, String::new()).await,
        }
    }

    /// A presence that advertises an avatar (XEP-0153): fetch the vCard when the hash is new, or drop
    /// the avatar when the contact advertises none.
    async fn avatar_advertised(&mut self, jid: &BareJid, p: &XmppPresence) {
        use tokio_xmpp::parsers::vcard_update::VCardUpdate;
        let Some(update) = p
            .payloads
            .iter()
            .find(|e| e.is("x", ns::VCARD_UPDATE))
            .and_then(|e| VCardUpdate::try_from(e.clone()).ok())
        else {
            return;
        };
        // No <photo/> at all: the client has not looked yet, which says nothing.
        let Some(photo) = update.photo else { return };
        if self.photos.get(jid) == Some(&photo.data) {
            return;
        }
        self.photos.insert(jid.clone(), photo.data);
        match photo.data {
            None => {
                if let Some(&account) = self.contacts.get(jid) {
                    self.set_avatar(account, None).await;
                }
            }
            Some(_) => {
                let id = self.id("vcard");
                self.vcard_requests.insert(id.clone(), jid.clone());
                let iq =
                    Iq::from_get(id, tokio_xmpp::parsers::vcard::VCardQuery).with_to(Jid::from(jid.clone()));
                self.stream.send(Box::new(iq.into())).await;
            }
        }
    }

    /// A contact's vCard arrived: its photo, checked like an uploaded avatar, becomes the avatar.
    async fn on_vcard(&mut self, jid: BareJid, payload: Element) {
        let Some(&account) = self.contacts.get(&jid) else {
            return;
        };
        let Ok(vcard) = tokio_xmpp::parsers::vcard::VCard::try_from(payload) else {
            tracing::debug!(%jid, "an unreadable vCard");
            return;
        };
        let Some(photo) = vcard.photo else {
            self.set_avatar(account, None).await;
            return;
        };
        let bytes = photo.binval.data;
        if bytes.len() > self.s.max_avatar_bytes {
            tracing::info!(%jid, bytes = bytes.len(), "an XMPP avatar over max_avatar_bytes is not taken");
            return;
        }
        let Some(mime) = crate::http::sniff_image(&bytes) else {
            tracing::info!(%jid, "an XMPP avatar that is not a PNG, JPEG, GIF or WebP image is not taken");
            return;
        };
        let checked =
            tokio::task::spawn_blocking(move || crate::http::check_image(&bytes, mime).map(|()| bytes)).await;
        let bytes = match checked {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(why)) => {
                tracing::info!(%jid, %why, "an XMPP avatar is not taken");
                return;
            }
            Err(_) => return,
        };
        let hash = crate::http::avatar_hash(&bytes);
        if let Err(e) = self.s.store.put_avatar(&hash, mime, bytes).await {
            tracing::warn!(error = %e, "cannot store an XMPP avatar");
            return;
        }
        self.set_avatar(account, Some(hash)).await;
    }

    async fn set_avatar(&mut self, account: AccountId, hash: Option<String>) {
        let change = crate::store::ProfileChange {
            avatar: Some(hash),
            ..Default::default()
        };
        if let Err(e) = self.s.store.update_profile(account, change).await {
            tracing::warn!(error = %e, "cannot set an XMPP contact's avatar");
        }
    }

    async fn on_message(&mut self, m: Message) {
        use tokio_xmpp::parsers::carbons::{Received, Sent};
        // Only the account's own server sends carbons (from the bare JID of the account, or without
        // `from`); one from anybody else is a forgery, treated as an ordinary message (it has no body).
        let own = m.from.as_ref().is_none_or(|f| f.to_bare() == self.s.jid);
        if own {
            for p in m.payloads.iter().filter(|p| p.is("result", ns::MAM)) {
                let Ok(result) = tokio_xmpp::parsers::mam::Result_::try_from(p.clone()) else {
                    continue;
                };
                if result.queryid.as_ref().map(|q| q.0.as_str()) != self.archive_request.as_deref() {
                    continue;
                }
                self.archive_after = Some(result.id);
                let inner = result.forwarded.message;
                let mine = inner.from.as_ref().is_some_and(|f| f.to_bare() == self.s.jid);
                if mine {
                    self.sent_elsewhere(inner).await;
                } else {
                    self.inbound(inner).await;
                }
                return;
            }
        }
        self.note_archive_id(&m);
        if own {
            for p in &m.payloads {
                if p.is("received", ns::CARBONS)
                    && let Ok(r) = Received::try_from(p.clone())
                {
                    self.note_archive_id(&r.forwarded.message);
                    return self.inbound(r.forwarded.message).await;
                }
                if p.is("sent", ns::CARBONS)
                    && let Ok(sent) = Sent::try_from(p.clone())
                {
                    self.note_archive_id(&sent.forwarded.message);
                    return self.sent_elsewhere(sent.forwarded.message).await;
                }
            }
        }
        self.inbound(m).await;
    }

    /// The account's contact for `jid`, added when it is not in the roster (so that nothing is dropped).
    async fn contact_for(&mut self, jid: &BareJid) -> Option<AccountId> {
        if let Some(&a) = self.contacts.get(jid) {
            return Some(a);
        }
        match self
            .s
            .store
            .add_gateway_contact(self.s.owner, jid.as_str(), jid.as_str())
            .await
        {
            Ok(a) => {
                self.contacts.insert(jid.clone(), a);
                self.s.shadows.insert(a, self.s.outbox.clone());
                Some(a)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot add an XMPP contact");
                None
            }
        }
    }

    /// A message another client of the account sent to a contact: stored as the owner's, with a client
    /// id the outbox skips (it is on the XMPP network already).
    async fn sent_elsewhere(&mut self, m: Message) {
        let Some(text) = body(&m) else {
            return;
        };
        let Some(to) = m.to.as_ref().map(|t| t.to_bare()) else {
            return;
        };
        if to == self.s.jid {
            return;
        }
        // The gateway's own messages come back from the archive: they are stored already.
        if m.id.as_ref().is_some_and(|id| id.0.starts_with("pinchat-")) {
            return;
        }
        let Some(account) = self.contact_for(&to).await else {
            return;
        };
        let key = match &m.id {
            Some(id) => format!("sent\0{to}\0{}", id.0),
            None => format!("sent\0{}", random_u64()),
        };
        self.store_message(self.s.owner, account, &key, &text).await;
    }

    /// Stores a message from the XMPP network, cut to `max_text_bytes`, under a client id derived from
    /// `key` (so that the same message seen again — carbon, archive, redelivery — is stored once).
    async fn store_message(&mut self, from: AccountId, to: AccountId, key: &str, text: &str) {
        let text = truncate(text, self.s.max_text_bytes);
        if let Err(e) = self
            .s
            .store
            .send_message(from, to, &client_id(key), &text, now_ms())
            .await
        {
            tracing::warn!(error = %e, "cannot store a message from XMPP");
        }
    }

    /// A message from a contact (or a carbon of one).
    async fn inbound(&mut self, m: Message) {
        if !matches!(m.type_, MessageType::Chat | MessageType::Normal) {
            return;
        }
        let Some(text) = body(&m) else {
            // Chat states and receipts carry no body.
            return;
        };
        let Some(from) = m.from.as_ref().map(|f| f.to_bare()) else {
            return;
        };
        if from == self.s.jid {
            return;
        }
        let Some(account) = self.contact_for(&from).await else {
            return;
        };
        let key = match &m.id {
            Some(id) => format!("{from}\0{}", id.0),
            None => random_u64().to_string(),
        };
        self.store_message(account, self.s.owner, &key, &text).await;
    }

    /// Hands the owner's unsent messages to the stream.
    async fn flush(&mut self) {
        loop {
            let page = match self
                .s
                .store
                .gateway_outbox(self.s.owner, self.queued_up_to, OUTBOX_PAGE)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the XMPP outbox");
                    return;
                }
            };
            let full = page.len() as u32 == OUTBOX_PAGE;
            for Outgoing { id, jid, text } in page {
                let Ok(to) = BareJid::new(&jid) else {
                    self.queued_up_to = id;
                    continue;
                };
                let mut message = Message::new(Some(Jid::from(to))).with_body(Lang::from(""), text);
                message.type_ = MessageType::Chat;
                // The id stays the same when the message is sent again after a reconnect.
                message.id = Some(tokio_xmpp::parsers::message::Id(format!("pinchat-{}", id.0)));
                let token = self.stream.send(Box::new(message.into())).await;
                self.queued_up_to = id;
                self.in_flight.insert(id, token.clone());
                let stage = if self.sm {
                    StanzaStage::Acked
                } else {
                    StanzaStage::Sent
                };
                let mut token = token;
                self.acks
                    .push(Box::pin(async move { (id, token.wait_for(stage).await) }));
            }
            if !full {
                return;
            }
        }
    }

    /// Message `id` reached `state`; the mark moves over every message acknowledged in order (stream
    /// management acknowledges in order, so a gap is only a failure, sent again after the next fresh
    /// stream).
    async fn on_ack(&mut self, id: MessageId, state: Option<StanzaState>) {
        tracing::trace!(id = id.0, ?state, "XMPP message progress");
        let mut mark = self.acked_up_to;
        while let Some((&first, token)) = self.in_flight.first_key_value() {
            let taken = match token.state() {
                StanzaState::Acked { .. } => true,
                StanzaState::Sent { .. } => !self.sm,
                _ => false,
            };
            if !taken {
                break;
            }
            mark = first;
            self.in_flight.pop_first();
        }
        if mark > self.acked_up_to {
            match self.s.store.set_gateway_sent(self.s.owner, mark).await {
                Ok(()) => self.acked_up_to = mark,
                Err(e) => tracing::warn!(error = %e, "cannot record XMPP acknowledgements"),
            }
        }
    }

    async fn load_contacts(&mut self) -> Result<(), StoreError> {
        for GatewayContact { jid, account } in self.s.store.gateway_contacts(self.s.owner).await? {
            if let Ok(jid) = BareJid::new(&jid) {
                self.contacts.insert(jid, account);
                self.s.shadows.insert(account, self.s.outbox.clone());
            }
        }
        let contacts = self.contacts.len() as u32;
        self.s.state.send_modify(|s| s.contacts = contacts);
        Ok(())
    }

    /// Records the link's state, and shows it on every contact while the link is not online (their
    /// presence is unknown then, and a widget pinning one says why).
    async fn set_state(&mut self, state: XmppState, error: Option<String>) {
        self.s.state.send_modify(|s| {
            s.state = state;
            s.error = error.clone();
        });
        if state != XmppState::Online {
            self.presence.clear();
            let status = contact_status(state, &self.s.jid);
            let accounts: Vec<AccountId> = self.contacts.values().copied().collect();
            for account in accounts {
                self.show(account, false, Presence::Offline, status.clone()).await;
            }
        }
    }

    /// Writes a contact's presence when it differs from what it shows.
    async fn show(&mut self, account: AccountId, connected: bool, state: Presence, status: String) {
        let now = (connected, state, status.clone());
        if self.shown.get(&account) == Some(&now) {
            return;
        }
        let store = &self.s.store;
        let result = async {
            store.set_presence(account, Some(state), Some(status)).await?;
            store.set_connected(vec![(account, connected)]).await
        }
        .await;
        match result {
            Ok(()) => {
                self.shown.insert(account, now);
            }
            Err(e) => tracing::warn!(error = %e, "cannot record an XMPP contact's presence"),
        }
    }

    fn id(&mut self, what: &str) -> String {
        self.next_id += 1;
        format!("pinchat-{what}-{}", self.next_id)
    }
}

type Acks = FuturesUnordered<
    std::pin::Pin<Box<dyn std::future::Future<Output = (MessageId, Option<StanzaState>)> + Send>>,
>;

/// A message's text: its body without a language, else its first.
fn body(m: &Message) -> Option<String> {
    m.bodies.get("").or_else(|| m.bodies.values().next()).cloned()
}

/// A client id for the store (at most 64 bytes): a hash of the XMPP sender and message id.
fn client_id(key: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("xmpp:{hex}")
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the operating system's random number generator failed");
    u64::from_le_bytes(b)
}

/// `text` cut to at most `max` bytes on a character boundary.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}
