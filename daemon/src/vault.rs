//! Keeping auth keys secret at rest (claim 6, [0057]).
//!
//! A widget's auth key is stored in its database only sealed with ChaCha20-Poly1305. The sealing key is
//! 256 random bits kept in the OS keyring (Secret Service on Linux, the Keychain on macOS, the
//! Credential Manager on Windows) under service `pinchat`, user = the widget id; the widget id is also
//! the associated data, so a sealed key copied into another widget's database does not open. Deleting
//! the keyring entry makes the stored key unreadable for good.
//!
//! Keyring calls block (D-Bus round trips, system dialogs), so every call runs on the blocking pool.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use std::sync::Arc;

/// The keyring service name of every pinchat entry.
pub const SERVICE: &str = "pinchat";

/// Vault failures.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The keyring is missing, locked or refused.
    #[error("the OS keyring is unavailable: {0}")]
    Keyring(String),
    /// The sealed key does not open with the keyring's key (entry deleted or replaced, or data damaged).
    #[error("the stored auth key cannot be decrypted (its keyring entry is gone or does not match)")]
    Undecryptable,
}

/// A sealed secret: what goes to disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// The random nonce.
    pub nonce: Vec<u8>,
    /// Ciphertext and tag.
    pub data: Vec<u8>,
}

/// Opens the keyring store for one operation.
type OpenStore = dyn Fn() -> keyring_core::Result<Arc<keyring_core::CredentialStore>> + Send + Sync;

/// Access to the OS keyring.
///
/// The store is opened for each operation and closed after it. The keyring is needed only when a widget
/// is created, loaded, re-authenticated or removed, and an open store is not free while idle: on Linux
/// it is a D-Bus connection whose worker thread wakes twice a second (measured by `bench/run footprint`).
#[derive(Clone)]
pub struct Vault {
    open: Arc<OpenStore>,
}

impl Vault {
    /// The platform's keyring. Nothing is opened yet: widgets are served from their databases without
    /// it, and an unreachable keyring is reported by the operations that need it.
    pub fn platform() -> Vault {
        Vault {
            open: Arc::new(platform_store),
        }
    }

    /// A vault whose keys live only in this process's memory: for the demo, which must not touch the
    /// user's keyring and whose widgets end with it.
    pub fn memory() -> Result<Vault, VaultError> {
        let store = keyring_core::mock::Store::new()
            .map_err(|e| VaultError::Keyring(format!("cannot create an in-memory key store: {e}")))?;
        Ok(Vault::with_store(store))
    }

    /// A vault over any keyring-core store (tests use `keyring_core::mock::Store`).
    pub fn with_store(store: Arc<keyring_core::CredentialStore>) -> Vault {
        Vault {
            open: Arc::new(move || Ok(store.clone())),
        }
    }

    /// Seals `secret` for `widget`, creating the widget's keyring entry if needed.
    pub async fn seal(&self, widget: &str, secret: &str) -> Result<Sealed, VaultError> {
        let key = self.key(widget, true).await?;
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| VaultError::Keyring(format!("no randomness: {e}")))?;
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&key));
        let data = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: widget.as_bytes(),
                },
            )
            .map_err(|_| VaultError::Undecryptable)?;
        Ok(Sealed {
            nonce: nonce.to_vec(),
            data,
        })
    }

    /// Opens a sealed secret of `widget`.
    pub async fn open(&self, widget: &str, sealed: &Sealed) -> Result<String, VaultError> {
        if sealed.nonce.len() != 12 {
            return Err(VaultError::Undecryptable);
        }
        let key = self.key(widget, false).await?;
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&key));
        let plain = cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.data,
                    aad: widget.as_bytes(),
                },
            )
            .map_err(|_| VaultError::Undecryptable)?;
        String::from_utf8(plain).map_err(|_| VaultError::Undecryptable)
    }

    /// Deletes the widget's keyring entry (nothing to delete is fine).
    pub async fn forget(&self, widget: &str) -> Result<(), VaultError> {
        let (open, widget) = (self.open.clone(), widget.to_owned());
        blocking(move || {
            let entry = keyring_core::Entry::new_in_store(&open()?, SERVICE, &widget)?;
            match entry.delete_credential() {
                Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// The widget's 256-bit sealing key, created on first use when `create` is set.
    async fn key(&self, widget: &str, create: bool) -> Result<[u8; 32], VaultError> {
        let (open, widget) = (self.open.clone(), widget.to_owned());
        let found = blocking(move || {
            let entry = keyring_core::Entry::new_in_store(&open()?, SERVICE, &widget)?;
            match entry.get_secret() {
                Ok(secret) if secret.len() == 32 => Ok(Some(secret)),
                Ok(_) | Err(keyring_core::Error::NoEntry) if create => {
                    let mut key = [0u8; 32];
                    getrandom::fill(&mut key).map_err(|e| {
                        keyring_core::Error::PlatformFailure(Box::new(std::io::Error::other(e.to_string())))
                    })?;
                    entry.set_secret(&key)?;
                    Ok(Some(key.to_vec()))
                }
                Ok(_) | Err(keyring_core::Error::NoEntry) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await?;
        let key = found.ok_or(VaultError::Undecryptable)?;
        key.try_into().map_err(|_| VaultError::Undecryptable)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> keyring_core::Result<T> + Send + 'static,
) -> Result<T, VaultError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| VaultError::Keyring(format!("keyring task failed: {e}")))?
        .map_err(|e| VaultError::Keyring(e.to_string()))
}

#[cfg(target_os = "linux")]
fn platform_store() -> keyring_core::Result<Arc<keyring_core::CredentialStore>> {
    Ok(zbus_secret_service_keyring_store::Store::new()?)
}

#[cfg(target_os = "macos")]
fn platform_store() -> keyring_core::Result<Arc<keyring_core::CredentialStore>> {
    Ok(apple_native_keyring_store::keychain::Store::new()?)
}

#[cfg(windows)]
fn platform_store() -> keyring_core::Result<Arc<keyring_core::CredentialStore>> {
    Ok(windows_native_keyring_store::Store::new()?)
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
fn platform_store() -> keyring_core::Result<Arc<keyring_core::CredentialStore>> {
    Err(keyring_core::Error::NotSupportedByStore(
        "no keyring store for this platform".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn seal_and_open_round_trip_and_bind_to_the_widget() {
        let vault = Vault::with_store(keyring_core::mock::Store::new().unwrap());
        let sealed = vault.seal("w1", "pck1_secret").await.unwrap();
        assert!(!sealed.data.windows(11).any(|w| w == b"pck1_secret"));
        assert_eq!(vault.open("w1", &sealed).await.unwrap(), "pck1_secret");
        // Another widget's entry does not open it; after forgetting, nothing does.
        vault.seal("w2", "other").await.unwrap();
        assert!(vault.open("w2", &sealed).await.is_err());
        vault.forget("w1").await.unwrap();
        assert!(matches!(
            vault.open("w1", &sealed).await,
            Err(VaultError::Undecryptable)
        ));
        vault.forget("w1").await.unwrap();
    }
}
