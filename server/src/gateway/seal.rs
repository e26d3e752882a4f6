//! Sealing linked accounts' XMPP passwords at rest: ChaCha20-Poly1305 under the gateway's key (from the
//! configuration or `PINCHAT_GATEWAY_KEY`, never from the database), a random nonce per seal, and the
//! owner and JID as associated data so that a sealed password copied onto another row does not open.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use pinchat_proto::AccountId;

const NONCE: usize = 12;

/// Seals and opens passwords with one key.
#[derive(Clone)]
pub struct Sealer(ChaCha20Poly1305);

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(…)")
    }
}

impl Sealer {
    /// The key as configured: 32 bytes in standard base64 (`openssl rand -base64 32`).
    pub fn from_base64(text: &str) -> Result<Sealer, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| "must be 32 random bytes in base64 (openssl rand -base64 32)".to_owned())?;
        if bytes.len() != 32 {
            return Err(format!(
                "must be 32 bytes in base64 (openssl rand -base64 32); this one is {} bytes",
                bytes.len()
            ));
        }
        Ok(Sealer(ChaCha20Poly1305::new(Key::from_slice(&bytes))))
    }

    /// `nonce ‖ ciphertext ‖ tag`.
    pub fn seal(&self, owner: AccountId, jid: &str, password: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE];
        getrandom::fill(&mut nonce).expect("the operating system's random number generator failed");
        let aad = associated(owner, jid);
        let sealed = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: password.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("ChaCha20-Poly1305 encryption of a short buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    /// The password, or `None` when the bytes were not sealed with this key for this owner and JID
    /// (the key was changed: the user links again).
    pub fn open(&self, owner: AccountId, jid: &str, sealed: &[u8]) -> Option<String> {
        if sealed.len() < NONCE {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE);
        let aad = associated(owner, jid);
        let plain = self
            .0
            .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad: &aad })
            .ok()?;
        String::from_utf8(plain).ok()
    }
}

fn associated(owner: AccountId, jid: &str) -> Vec<u8> {
    format!("pinchat-gateway\0{}\0{jid}", owner.0).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn a_password_opens_only_with_its_key_owner_and_jid() {
        let s = Sealer::from_base64(KEY).unwrap();
        let sealed = s.seal(AccountId(7), "alice@example.org", "hunter2 secret");
        assert!(
            !sealed.windows(6).any(|w| w == b"hunter"),
            "the password is not in clear"
        );
        assert_eq!(
            s.open(AccountId(7), "alice@example.org", &sealed).as_deref(),
            Some("hunter2 secret")
        );
        assert_eq!(s.open(AccountId(8), "alice@example.org", &sealed), None);
        assert_eq!(s.open(AccountId(7), "bob@example.org", &sealed), None);
        let other = Sealer::from_base64("HwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
        assert_eq!(other.open(AccountId(7), "alice@example.org", &sealed), None);
        assert_ne!(
            sealed,
            s.seal(AccountId(7), "alice@example.org", "hunter2 secret")
        );
    }

    #[test]
    fn a_malformed_key_is_refused_with_a_reason() {
        assert!(Sealer::from_base64("not base64!").unwrap_err().contains("base64"));
        assert!(Sealer::from_base64("AAAA").unwrap_err().contains("3 bytes"));
    }
}
