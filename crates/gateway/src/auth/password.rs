//! Password verification against the argon2 PHC strings of `users[].passwordHash`.
//!
//! Hashing is deliberately slow (tens of milliseconds), so it runs on the blocking pool. A user
//! that does not exist or has no password is checked against a fixed dummy hash, so the answer
//! takes as long as for a real user and does not tell which names exist.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

/// A hash of a random password nobody knows, with the default parameters, computed once.
fn dummy_hash() -> Option<&'static str> {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    DUMMY
        .get_or_init(|| {
            let secret = kubegate_tokens::AccessKeySecret::generate().ok()?;
            Argon2::default()
                .hash_password(secret.expose().as_bytes())
                .ok()
                .map(|h| h.to_string())
        })
        .as_deref()
}

/// Verifies `password` against `hash` (a PHC string), or against the dummy hash when `hash` is
/// `None`; `true` only for a real hash that matches. Comparison is the argon2 crate's
/// constant-time one.
pub(crate) async fn verify(password: String, hash: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || verify_blocking(password.as_bytes(), hash.as_deref()))
        .await
        .unwrap_or(false)
}

fn verify_blocking(password: &[u8], hash: Option<&str>) -> bool {
    match hash {
        Some(hash) => {
            let Ok(parsed) = PasswordHash::new(hash) else {
                // A malformed configured hash fails like a wrong password; the hash itself is
                // never logged.
                tracing::warn!("a configured password hash is not a valid PHC string");
                return false;
            };
            Argon2::default().verify_password(password, &parsed).is_ok()
        }
        None => {
            if let Some(dummy) = dummy_hash() {
                let _ = Argon2::default().verify_password(password, dummy);
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_phc_strings() {
        let hash = Argon2::default()
            .hash_password(b"correct horse")
            .unwrap()
            .to_string();
        assert!(verify_blocking(b"correct horse", Some(&hash)));
        assert!(!verify_blocking(b"wrong", Some(&hash)));
        assert!(!verify_blocking(b"correct horse", Some("not a hash")));
        assert!(!verify_blocking(b"correct horse", None));
    }
}
