//! `GET /v1/ice`: where a call's media may go.
//!
//! The server relays no media. It names STUN servers (so that peers learn their public addresses) and
//! TURN relays (for peers that cannot reach each other directly), and mints short-lived TURN
//! credentials in the TURN REST scheme that coturn implements with `use-auth-secret`: the username is
//! `<expiry unix time>:<account id>`, the password the base64 HMAC-SHA1 of the username under a secret
//! shared with the TURN server. The TURN server checks them without asking us, and a credential is
//! useless after its expiry — a leaked one cannot be replayed for long.

use crate::config::IceSettings;
use base64::Engine;
use hmac::{Hmac, Mac};
use pinchat_proto::AccountId;
use pinchat_proto::http::{IceConfig, IceServer};
use sha1::Sha1;

/// The servers to hand `account` at Unix time `now` (seconds).
pub fn config(settings: &IceSettings, account: AccountId, now: i64) -> IceConfig {
    let mut ice_servers = vec![];
    if !settings.stun.is_empty() {
        ice_servers.push(IceServer {
            urls: settings.stun.clone(),
            username: None,
            credential: None,
        });
    }
    if let (false, Some(secret)) = (settings.turn.is_empty(), &settings.turn_secret) {
        let expiry = now + i64::from(settings.turn_ttl_secs);
        let username = format!("{expiry}:{account}");
        ice_servers.push(IceServer {
            urls: settings.turn.clone(),
            credential: Some(turn_password(&secret.0, &username)),
            username: Some(username),
        });
    }
    IceConfig {
        ice_servers,
        ttl_secs: settings.turn_ttl_secs,
    }
}

/// The TURN REST password for `username`: base64(HMAC-SHA1(secret, username)).
pub fn turn_password(secret: &str, username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    /// The RFC 2202 test vector 2 for HMAC-SHA1 (key "Jefe"), in base64.
    #[test]
    fn the_password_is_base64_hmac_sha1() {
        assert_eq!(
            turn_password("Jefe", "what do ya want for nothing?"),
            base64::engine::general_purpose::STANDARD.encode(hex("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"))
        );
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn stun_comes_without_and_turn_with_credentials_that_expire() {
        let settings = IceSettings {
            stun: vec!["stun:127.0.0.1:3478".into()],
            turn: vec!["turn:127.0.0.1:3478?transport=udp".into()],
            turn_secret: Some(Secret("0123456789abcdef".into())),
            turn_ttl_secs: 600,
        };
        let c = config(&settings, AccountId(7), 1_000_000);
        assert_eq!(c.ttl_secs, 600);
        assert_eq!(c.ice_servers.len(), 2);
        assert_eq!(c.ice_servers[0].username, None);
        let turn = &c.ice_servers[1];
        assert_eq!(turn.username.as_deref(), Some("1000600:7"));
        assert_eq!(
            turn.credential.as_deref(),
            Some(turn_password("0123456789abcdef", "1000600:7").as_str())
        );
        assert!(
            config(&IceSettings::default(), AccountId(7), 0)
                .ice_servers
                .is_empty()
        );
    }
}
