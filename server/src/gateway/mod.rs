//! The XMPP gateway: a pinchat account links an existing XMPP account, and the server holds that
//! account's XMPP session ([`session`]) so that its roster contacts become pinchat contacts — pinnable
//! like any other, with their presence and messages pushed to a widget only when pinned. The XMPP
//! traffic stays between the two servers; the widget keeps pinchat's protocol and its thrift.
//!
//! Each XMPP contact of a link is a pinchat account only the link's owner has as a contact (login
//! `xmpp:<jid>#<owner>`, unable to log in), so subscriptions, sync, unread counts and history need
//! nothing new. [`Gateway`] owns the links' sessions (one task each); [`Shadows`] lets the change feed
//! ring a session when its owner wrote to one of its contacts. Passwords are sealed at rest with the
//! configured key ([`seal`]). The gateway runs on a server with the embedded SQLite store; a cluster
//! would need one owner per link across nodes, which is not built.

pub mod seal;
pub mod session;

use crate::config::Config;
use crate::store::{ChangeBatch, GatewayLink, Store};
use pinchat_proto::http::{XmppLinkRequest, XmppLinkStatus, XmppState};
use pinchat_proto::{AccountId, ErrorBody, ErrorCode, Presence};
use seal::Sealer;
use session::{LoginError, Session};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_xmpp::jid::BareJid;

/// Longest XMPP password accepted.
const MAX_PASSWORD_BYTES: usize = 1024;
/// How long linking waits for the session to come online (login plus roster) before answering.
const LINK_WAIT: Duration = Duration::from_secs(30);

/// A link's state as `GET /v1/xmpp` reports it.
#[derive(Clone, Debug)]
pub struct LinkState {
    /// The session's state.
    pub state: XmppState,
    /// The last problem, for a person.
    pub error: Option<String>,
    /// Contacts in the roster.
    pub contacts: u32,
}

/// The accounts standing for XMPP contacts, each with the bell of the session that forwards messages
/// written to it. Shared by the sessions (which fill it) and the feed relay (which rings it).
#[derive(Clone, Default)]
pub struct Shadows(Arc<RwLock<HashMap<AccountId, Arc<Notify>>>>);

impl Shadows {
    fn insert(&self, account: AccountId, bell: Arc<Notify>) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(account, bell);
    }

    fn remove_bell(&self, bell: &Arc<Notify>) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, b| !Arc::ptr_eq(b, bell));
    }

    /// Rings the session of every XMPP contact a message in `batch` was written to. Never blocks: a
    /// ring is remembered until the session looks, and the session reads what to send from the store.
    pub fn observe(&self, batch: &ChangeBatch) {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        if map.is_empty() {
            return;
        }
        for change in &batch.changes {
            if let crate::store::Change::Message { to, .. } = change
                && let Some(bell) = map.get(to)
            {
                bell.notify_one();
            }
        }
    }
}

/// The status text XMPP contacts show while their link is not online.
pub fn contact_status(state: XmppState, jid: &BareJid) -> String {
    match state {
        XmppState::Online => String::new(),
        XmppState::Connecting => format!("XMPP: connecting to {}", jid.domain()),
        XmppState::Unreachable => format!("XMPP: cannot reach {}, retrying", jid.domain()),
        XmppState::AuthFailed => format!(
            "XMPP: {} refused the password; link the account again",
            jid.domain()
        ),
    }
}

struct Link {
    jid: String,
    state: watch::Receiver<LinkState>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// The gateway: every link's session.
pub struct Gateway {
    store: Arc<dyn Store>,
    sealer: Option<Sealer>,
    max_text_bytes: usize,
    max_avatar_bytes: usize,
    shadows: Shadows,
    links: Mutex<HashMap<AccountId, Link>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Gateway {
    /// A gateway that is off when `config` has no key; `start` resumes the stored links.
    pub fn new(
        store: Arc<dyn Store>,
        config: &Config,
        shadows: Shadows,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> anyhow::Result<Gateway> {
        let sealer = match &config.gateway_key {
            Some(key) if config.store.is_none() => Some(
                Sealer::from_base64(&key.0)
                    .map_err(|e| anyhow::anyhow!("invalid configuration: gateway_key {e}"))?,
            ),
            _ => None,
        };
        Ok(Gateway {
            store,
            sealer,
            max_text_bytes: config.limits.max_text_bytes as usize,
            max_avatar_bytes: config.limits.max_avatar_bytes,
            shadows,
            links: Mutex::new(HashMap::new()),
            shutdown,
            tracker,
        })
    }

    /// Starts a session for every stored link.
    pub async fn start(&self) -> anyhow::Result<()> {
        let Some(sealer) = &self.sealer else { return Ok(()) };
        for link in self.store.gateway_links().await? {
            let Ok(jid) = BareJid::new(&link.jid) else {
                continue;
            };
            match sealer.open(link.owner, &link.jid, &link.sealed_password) {
                Some(password) => self.spawn(
                    link.owner,
                    jid,
                    password,
                    link.server,
                    link.sent_up_to,
                    link.archive_after,
                ),
                None => tracing::warn!(
                    owner = link.owner.0,
                    jid = %link.jid,
                    "the stored XMPP password does not open with the configured gateway_key (was the key changed?); the owner must link again"
                ),
            }
        }
        Ok(())
    }

    fn sealer(&self) -> Result<&Sealer, ErrorBody> {
        self.sealer.as_ref().ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::XmppUnavailable,
                "this server runs no XMPP gateway: its administrator sets gateway_key (or PINCHAT_GATEWAY_KEY) \
                 on a server with the embedded store",
            )
        })
    }

    fn spawn(
        &self,
        owner: AccountId,
        jid: BareJid,
        password: String,
        server: Option<String>,
        sent_up_to: pinchat_proto::MessageId,
        archive_after: Option<String>,
    ) {
        let (state, rx) = watch::channel(LinkState {
            state: XmppState::Connecting,
            error: None,
            contacts: 0,
        });
        let cancel = self.shutdown.child_token();
        let session = Session {
            store: self.store.clone(),
            owner,
            jid: jid.clone(),
            password,
            server,
            max_text_bytes: self.max_text_bytes,
            max_avatar_bytes: self.max_avatar_bytes,
            state,
            outbox: Arc::new(Notify::new()),
            shadows: self.shadows.clone(),
            cancel: cancel.clone(),
        };
        let bell = session.outbox.clone();
        let shadows = self.shadows.clone();
        let task = self.tracker.spawn(async move {
            session.run(sent_up_to, archive_after).await;
            shadows.remove_bell(&bell);
        });
        let link = Link {
            jid: jid.to_string(),
            state: rx,
            cancel,
            task,
        };
        self.links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(owner, link);
    }

    /// Links `owner` to an XMPP account after logging in once with the credentials, replacing any
    /// link it had; answers once the session is online (or failed), at most [`LINK_WAIT`].
    pub async fn link(&self, owner: AccountId, req: XmppLinkRequest) -> Result<XmppLinkStatus, ErrorBody> {
        let sealer = self.sealer()?.clone();
        let jid = BareJid::new(req.jid.trim())
            .ok()
            .filter(|j| j.node().is_some())
            .ok_or_else(|| invalid("jid must be a bare XMPP address such as alice@example.org"))?;
        if req.password.is_empty() || req.password.len() > MAX_PASSWORD_BYTES {
            return Err(invalid(format!(
                "password must be 1 to {MAX_PASSWORD_BYTES} bytes long"
            )));
        }
        if let Some(server) = &req.server {
            let ok = server
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return Err(invalid("server must be host:port, such as xmpp.example.org:5222"));
            }
        }
        let connector = session::connector(&jid, req.server.as_deref());
        match session::login(&connector, &jid, &req.password).await {
            Ok(conn) => drop(conn),
            Err(LoginError::Auth(why)) => {
                return Err(ErrorBody::new(
                    ErrorCode::XmppAuthFailed,
                    format!(
                        "the XMPP server refused the password of {jid} ({why}); check the address and the password"
                    ),
                ));
            }
            Err(LoginError::Unreachable(why)) => {
                return Err(ErrorBody::new(
                    ErrorCode::XmppUnreachable,
                    format!("cannot reach the XMPP server of {jid}: {why}"),
                ));
            }
        }
        self.stop(owner, "XMPP: the account was linked again").await;
        let sealed = sealer.seal(owner, jid.as_str(), &req.password);
        let sent_up_to = self
            .store
            .put_gateway_link(GatewayLink {
                owner,
                jid: jid.to_string(),
                server: req.server.clone(),
                sealed_password: sealed,
                sent_up_to: pinchat_proto::MessageId(0),
                archive_after: None,
            })
            .await
            .map_err(crate::api::store_error)?;
        tracing::info!(owner = owner.0, %jid, "XMPP account linked");
        self.spawn(owner, jid, req.password, req.server, sent_up_to, None);
        let mut rx = self.watch(owner)?;
        let _ = tokio::time::timeout(LINK_WAIT, rx.wait_for(|s| s.state != XmppState::Connecting)).await;
        self.status(owner)
    }

    fn watch(&self, owner: AccountId) -> Result<watch::Receiver<LinkState>, ErrorBody> {
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links.get(&owner).map(|l| l.state.clone()).ok_or_else(not_linked)
    }

    /// The link's state.
    pub fn status(&self, owner: AccountId) -> Result<XmppLinkStatus, ErrorBody> {
        self.sealer()?;
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        let link = links.get(&owner).ok_or_else(not_linked)?;
        let s = link.state.borrow().clone();
        Ok(XmppLinkStatus {
            jid: link.jid.clone(),
            state: s.state,
            error: s.error,
            contacts: s.contacts,
        })
    }

    /// Closes the session and deletes the credential; the XMPP contacts stay (with their history),
    /// offline, saying the account was unlinked.
    pub async fn unlink(&self, owner: AccountId) -> Result<(), ErrorBody> {
        self.sealer()?;
        let had = self.stop(owner, "XMPP: the account was unlinked").await;
        let deleted = self
            .store
            .delete_gateway_link(owner)
            .await
            .map_err(crate::api::store_error)?;
        if had || deleted {
            tracing::info!(owner = owner.0, "XMPP account unlinked");
            Ok(())
        } else {
            Err(not_linked())
        }
    }

    /// Ends `owner`'s session, if any, and shows `status` on its contacts.
    async fn stop(&self, owner: AccountId, status: &str) -> bool {
        let link = self
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&owner);
        let Some(link) = link else { return false };
        link.cancel.cancel();
        let _ = link.task.await;
        if let Ok(contacts) = self.store.gateway_contacts(owner).await {
            for c in contacts {
                let _ = self
                    .store
                    .set_presence(c.account, Some(Presence::Offline), Some(status.to_owned()))
                    .await;
                let _ = self.store.set_connected(vec![(c.account, false)]).await;
            }
        }
        true
    }
}

fn invalid(message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::InvalidRequest, message)
}

fn not_linked() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::XmppNotLinked,
        "this account has no linked XMPP account: link one with PUT /v1/xmpp",
    )
}
