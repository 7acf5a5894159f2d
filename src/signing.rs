//! Values kiln hands out and later takes back — registry Bearer tokens, build-context upload
//! tickets — signed rather than remembered: the value carries what it grants and until when,
//! followed by an HMAC-SHA256 over it. Any process holding the same key checks one without
//! asking another, nothing grows with the number issued, and a forged or altered value fails.
//!
//! Each use signs with its own key derived from the one secret, so a value made for one
//! purpose is never accepted for another.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

use crate::credentials::Secret;

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The root key, or a key derived from it for one purpose. Cheap to clone.
#[derive(Clone)]
pub struct SigningKey {
    key: Arc<[u8; 32]>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(…)")
    }
}

impl SigningKey {
    /// The key of the configured `secret_key`: the same on every node given the same secret.
    pub fn from_secret(secret: &Secret) -> Self {
        Self::derived(b"kiln secret_key", secret.expose().as_bytes())
    }

    /// A fresh random key, for a process that signs only for itself.
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        SigningKey { key: Arc::new(key) }
    }

    /// The key for `purpose` (e.g. `"registry-token"`): what one signs, another refuses.
    pub fn for_purpose(&self, purpose: &str) -> SigningKey {
        Self::derived(self.key.as_slice(), purpose.as_bytes())
    }

    fn derived(key: &[u8], label: &[u8]) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(label);
        SigningKey {
            key: Arc::new(mac.finalize().into_bytes().into()),
        }
    }

    /// The key's bytes, for a signature of another shape (form tokens sign a cookie in hex).
    pub fn as_bytes(&self) -> &[u8] {
        self.key.as_slice()
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(self.key.as_slice()).expect("any key length works");
        mac.update(payload);
        mac
    }

    /// `payload` and its signature, as URL-safe text (`<payload>.<signature>`, base64url).
    pub fn sign(&self, payload: &[u8]) -> String {
        let signature = self.mac(payload).finalize().into_bytes();
        format!("{}.{}", BASE64.encode(payload), BASE64.encode(signature))
    }

    /// The payload of `signed`, if this key signed it.
    pub fn open(&self, signed: &str) -> Option<Vec<u8>> {
        let (payload, signature) = signed.split_once('.')?;
        let payload = BASE64.decode(payload).ok()?;
        let signature = BASE64.decode(signature).ok()?;
        // Constant-time comparison of the signature.
        self.mac(&payload).verify_slice(&signature).ok()?;
        Some(payload)
    }
}

/// Milliseconds since the Unix epoch: how signed values write their expiry.
pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_secret_one_key_and_purposes_apart() {
        let secret = Secret::new("a".repeat(32));
        let a = SigningKey::from_secret(&secret).for_purpose("ticket");
        let b = SigningKey::from_secret(&secret).for_purpose("ticket");
        let signed = a.sign(b"alice:42");
        assert_eq!(b.open(&signed).as_deref(), Some(&b"alice:42"[..]));
        let other_purpose = SigningKey::from_secret(&secret).for_purpose("token");
        assert_eq!(other_purpose.open(&signed), None);
        let other_secret = SigningKey::from_secret(&Secret::new("b".repeat(32)));
        assert_eq!(other_secret.for_purpose("ticket").open(&signed), None);
        assert_eq!(
            SigningKey::random().for_purpose("ticket").open(&signed),
            None
        );
    }

    #[test]
    fn altered_values_are_refused() {
        let key = SigningKey::random();
        let signed = key.sign(b"u:100:alice");
        let (_, signature) = signed.split_once('.').expect("two parts");
        let raised = format!("{}.{signature}", BASE64.encode(b"o:100:alice"));
        assert_eq!(key.open(&raised), None);
        for broken in ["", ".", "x", "!!.!!", &signed[1..]] {
            assert_eq!(key.open(broken), None, "{broken}");
        }
    }
}
