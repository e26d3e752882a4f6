//! Administrative operations behind the `account` and `contacts` subcommands.
//!
//! They open the database directly, so they work with or without a server running on it: SQLite's WAL
//! lets both write, and a running server publishes the changes to its streams within its
//! `external_poll_ms` (see [`crate::store`]).

use crate::api::{MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS, MAX_SIGNATURE_CHARS};
use crate::auth;
use crate::store::{ProfileChange, Store};
use anyhow::{Context, bail};
use pinchat_proto::{AccountId, Presence};

/// Login names: 2–32 characters of lower-case ASCII letters, digits, `.`, `_` and `-`.
pub fn validate_login(login: &str) -> anyhow::Result<()> {
    let ok = (2..=32).contains(&login.len())
        && login
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c));
    if !ok {
        bail!("invalid login {login:?}: use 2 to 32 lower-case letters, digits, '.', '_' or '-'");
    }
    Ok(())
}

/// Passwords: at least 4 characters (the demo's is "demo"); a real deployment should ask for more.
pub fn validate_password(password: &str) -> anyhow::Result<()> {
    if password.chars().count() < 4 {
        bail!("the password is too short: use at least 4 characters");
    }
    Ok(())
}

/// Resolves a login to an account id, with an error that names it.
pub async fn account(store: &dyn Store, login: &str) -> anyhow::Result<AccountId> {
    store
        .account_id(login)
        .await?
        .with_context(|| format!("no account named {login:?}"))
}

/// Creates an account.
pub async fn create_account(
    store: &dyn Store,
    login: &str,
    password: &str,
    name: Option<&str>,
) -> anyhow::Result<AccountId> {
    validate_login(login)?;
    validate_password(password)?;
    let name = name.unwrap_or(login).trim();
    check_len("name", name, 1, MAX_NAME_CHARS)?;
    let password = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password)).await?;
    Ok(store.create_account(login, &hash, name).await?)
}

/// Sets a new password (and revokes every key, which logs out every device).
pub async fn set_password(store: &dyn Store, login: &str, password: &str) -> anyhow::Result<()> {
    validate_password(password)?;
    let id = account(store, login).await?;
    let password = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password)).await?;
    Ok(store.set_password(id, &hash).await?)
}

/// Profile changes from the command line.
#[derive(Debug, Default)]
pub struct ProfileArgs {
    /// New display name.
    pub name: Option<String>,
    /// New signature.
    pub signature: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// Avatar image bytes.
    pub avatar: Option<Vec<u8>>,
    /// New chosen presence state.
    pub state: Option<Presence>,
    /// New status text.
    pub status: Option<String>,
}

/// Applies profile changes.
pub async fn set_profile(store: &dyn Store, login: &str, args: ProfileArgs) -> anyhow::Result<()> {
    let id = account(store, login).await?;
    if let Some(n) = &args.name {
        check_len("name", n.trim(), 1, MAX_NAME_CHARS)?;
    }
    if let Some(s) = &args.signature {
        check_len("signature", s, 0, MAX_SIGNATURE_CHARS)?;
    }
    if let Some(d) = &args.description {
        check_len("description", d, 0, MAX_DESCRIPTION_CHARS)?;
    }
    if let Some(s) = &args.status {
        check_len("status", s, 0, MAX_SIGNATURE_CHARS)?;
    }
    let avatar = match args.avatar {
        Some(bytes) => {
            let mime = crate::http::sniff_image(&bytes)
                .context("the avatar must be a PNG, JPEG, GIF or WebP image")?;
            let hash = crate::http::avatar_hash(&bytes);
            store.put_avatar(&hash, mime, bytes).await?;
            Some(Some(hash))
        }
        None => None,
    };
    let change = ProfileChange {
        name: args.name.map(|n| n.trim().to_owned()),
        avatar,
        signature: args.signature,
        description: args.description,
    };
    store.update_profile(id, change).await?;
    if args.state.is_some() || args.status.is_some() {
        store.set_presence(id, args.state, args.status).await?;
    }
    Ok(())
}

/// The same rules as the HTTP API, so that an administrator cannot store what a user could not.
fn check_len(what: &str, value: &str, min: usize, max: usize) -> anyhow::Result<()> {
    crate::api::check_chars(what, value, min, max).map_err(|e| anyhow::anyhow!(e.message))
}
