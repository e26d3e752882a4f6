//! Passwords, auth keys and login rate limits.
//!
//! - Passwords are hashed with argon2id. Hashing is deliberately slow, so it runs on the blocking pool and
//!   at most [`Auth::ARGON_PARALLEL`] at a time: a login flood cannot starve the runtime.
//! - An auth key is 256 random bits, given to the client once; the server stores only its SHA-256. (A
//!   slow hash is pointless for a random 256-bit secret, and a fast one keeps every request cheap.)
//! - Keys expire after `key_ttl` without use; using a key pushes its expiry out, at most once a day so
//!   that authentication does not turn every request into a write.
//! - Logins are rate-limited per account and per client address, before any password is checked.

use crate::store::{KeyId, Store, StoreError};
use crate::util::now_ms;
use base64::Engine;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use pinchat_proto::{AccountId, ErrorBody, ErrorCode};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Prefix of every auth key, so that a leaked key is recognisable (secret scanners, logs review).
pub const KEY_PREFIX: &str = "pck1_";

/// A key that checked out.
#[derive(Clone, Copy, Debug)]
pub struct Authed {
    /// Whose key.
    pub account: AccountId,
    /// Which key.
    pub key: KeyId,
    /// When it expires unless used, ms since the Unix epoch.
    pub expires_at: i64,
}

/// Login and key checks, shared by the HTTP handlers and the stream.
pub struct Auth {
    store: Arc<dyn Store>,
    key_ttl: Duration,
    argon: Arc<Semaphore>,
    per_account: DefaultKeyedRateLimiter<String>,
    per_address: DefaultKeyedRateLimiter<IpAddr>,
    limits: LoginLimits,
}

/// Rate limits for login attempts.
#[derive(Clone, Copy, Debug)]
pub struct LoginLimits {
    /// Attempts per minute for one account, from anywhere.
    pub per_account_per_minute: NonZeroU32,
    /// Attempts per minute from one client address, for any account.
    pub per_address_per_minute: NonZeroU32,
}

impl Auth {
    /// How many password hashes may be computed at once.
    pub const ARGON_PARALLEL: usize = 2;

    /// Builds the checker.
    pub fn new(store: Arc<dyn Store>, key_ttl: Duration, limits: LoginLimits) -> Auth {
        Auth {
            store,
            key_ttl,
            argon: Arc::new(Semaphore::new(Self::ARGON_PARALLEL)),
            per_account: RateLimiter::keyed(Quota::per_minute(limits.per_account_per_minute)),
            per_address: RateLimiter::keyed(Quota::per_minute(limits.per_address_per_minute)),
            limits,
        }
    }

    /// Checks account and password and, when they match, issues a new key: `(key, account, expires_at)`.
    pub async fn login(
        &self,
        login: &str,
        password: &str,
        from: IpAddr,
    ) -> Result<(String, AccountId, i64), ErrorBody> {
        let account_key = login.to_lowercase();
        let limited = || {
            ErrorBody::new(
                ErrorCode::RateLimited,
                "too many login attempts; wait a minute and try again",
            )
        };
        if self.per_address.check_key(&from).is_err() || self.per_account.check_key(&account_key).is_err() {
            return Err(limited());
        }
        // In a cluster the same limits hold across every node: the attempt is counted in the database
        // too (this node's own limiter above only spares it a round trip when it alone is over).
        let shared = self
            .store
            .count_login_attempt(vec![format!("account:{account_key}"), format!("address:{from}")])
            .await
            .map_err(internal)?;
        if let Some([account, address]) = shared.as_deref()
            && (*account > self.limits.per_account_per_minute.get()
                || *address > self.limits.per_address_per_minute.get())
        {
            return Err(limited());
        }
        // Forget quiet keys now and then so that the limiters' memory stays bounded.
        if self.per_account.len() > 10_000 || self.per_address.len() > 10_000 {
            self.per_account.retain_recent();
            self.per_address.retain_recent();
        }
        let bad = || ErrorBody::new(ErrorCode::BadCredentials, "wrong account name or password");
        let auth = self.store.account_auth(login).await.map_err(internal)?;
        // Hash even for unknown accounts, so that timing does not tell which accounts exist.
        let hash = auth
            .as_ref()
            .map_or(DUMMY_HASH, |a| a.password_hash.as_str())
            .to_owned();
        let ok = self.verify_password(hash, password.to_owned()).await?;
        let Some(auth) = auth.filter(|_| ok) else {
            return Err(bad());
        };
        if auth.disabled {
            return Err(ErrorBody::new(
                ErrorCode::AccountDisabled,
                "this account is disabled; ask the server's administrator",
            ));
        }
        let (key, hash) = generate_key();
        let expires_at = now_ms() + self.key_ttl.as_millis() as i64;
        self.store
            .insert_key(auth.id, hash, expires_at)
            .await
            .map_err(internal)?;
        Ok((key, auth.id, expires_at))
    }

    /// Checks a presented key. Unknown, expired and revoked keys all get [`ErrorCode::InvalidKey`].
    pub async fn check_key(&self, key: &str) -> Result<Authed, ErrorBody> {
        let invalid = || {
            ErrorBody::new(
                ErrorCode::InvalidKey,
                "the auth key is invalid, expired or revoked; log in again to get a new one",
            )
        };
        if !key.starts_with(KEY_PREFIX) || key.len() > 128 {
            return Err(invalid());
        }
        let record = self
            .store
            .key(hash_key(key))
            .await
            .map_err(internal)?
            .ok_or_else(invalid)?;
        let now = now_ms();
        if record.revoked || record.expires_at <= now {
            return Err(invalid());
        }
        let ttl = self.key_ttl.as_millis() as i64;
        let mut expires_at = record.expires_at;
        if expires_at - now < ttl - DAY_MS.min(ttl / 2) {
            expires_at = now + ttl;
            let store = self.store.clone();
            // Extending the expiry is not worth delaying the request for.
            tokio::spawn(async move {
                if let Err(e) = store.touch_key(record.id, expires_at).await {
                    tracing::warn!(error = %e, "cannot extend a key's expiry");
                }
            });
        }
        Ok(Authed {
            account: record.account,
            key: record.id,
            expires_at,
        })
    }

    /// Hashes a password on the blocking pool.
    pub async fn hash_password(&self, password: String) -> Result<String, ErrorBody> {
        let _permit = self.argon.acquire().await.map_err(|_| shutting_down())?;
        tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| internal(StoreError::Db(e.to_string())))
    }

    async fn verify_password(&self, hash: String, password: String) -> Result<bool, ErrorBody> {
        let _permit = self.argon.acquire().await.map_err(|_| shutting_down())?;
        tokio::task::spawn_blocking(move || verify_password(&hash, &password))
            .await
            .map_err(|e| internal(StoreError::Db(e.to_string())))
    }
}

const DAY_MS: i64 = 24 * 3600 * 1000;

/// A valid argon2id hash of a random password, checked against when the account does not exist.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Fz6qkQ0Mq5ULUxkZ1QwCnOKOyN7H/8BKRz4m0Zg6cmQ";

fn internal(e: StoreError) -> ErrorBody {
    if let StoreError::Unavailable(_) = e {
        // A full or read-only disk: say so, with its own code, so that clients retry later.
        return crate::api::store_error(e);
    }
    tracing::error!(error = %e, "store failure during authentication");
    ErrorBody::new(
        ErrorCode::Internal,
        "the server could not check the credentials; try again",
    )
}

fn shutting_down() -> ErrorBody {
    ErrorBody::new(ErrorCode::ShuttingDown, "the server is shutting down")
}

/// Hashes a password with argon2id and a random salt, as a PHC string. Blocking and slow by design.
pub fn hash_password(password: &str) -> String {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .expect("argon2 with default parameters and a random salt cannot fail")
        .to_string()
}

/// Checks a password against a PHC string. Blocking and slow by design.
pub fn verify_password(hash: &str, password: &str) -> bool {
    use argon2::password_hash::{PasswordVerifier, phc::PasswordHash};
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A new random key and the hash to store.
pub fn generate_key() -> (String, [u8; 32]) {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).expect("the operating system's random number generator failed");
    let key = format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let hash = hash_key(&key);
    (key, hash)
}

/// The stored form of a key.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_and_dummy_hash_parses() {
        let h = hash_password("correct horse");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "wrong"));
        assert!(!verify_password(DUMMY_HASH, "anything"));
        assert!(argon2::password_hash::phc::PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn keys_are_random_and_hashed() {
        let (a, ha) = generate_key();
        let (b, hb) = generate_key();
        assert_ne!(a, b);
        assert_ne!(ha, hb);
        assert_eq!(hash_key(&a), ha);
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 43);
    }
}
