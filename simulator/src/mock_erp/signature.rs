//! Standard Webhooks signature checking, written independently of the
//! collector's signer so that each checks the other.
//!
//! A request carries `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature`: one or more space-separated `v1,<base64>` entries, each
//! an HMAC-SHA256 over `"{id}.{timestamp}.{raw body}"` keyed with the secret's
//! bytes (the base64 text after `whsec_`). Any one matching entry is enough,
//! which lets a sender roll its secret.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far a request's timestamp may be from the receiver's clock.
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// Why a webhook failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The secret is not `whsec_` followed by base64.
    #[error("webhook secret is not `whsec_<base64>`: {0}")]
    Secret(String),
    /// A required header is absent or not text.
    #[error("header {0} is missing or not ASCII text")]
    MissingHeader(&'static str),
    /// The timestamp is not an integer.
    #[error("webhook-timestamp {0:?} is not Unix seconds")]
    BadTimestamp(String),
    /// The timestamp is too far from now (replayed or badly skewed clock).
    #[error(
        "webhook-timestamp {sent} is {skew} s away from the receiver's clock (limit {TOLERANCE_SECS} s)"
    )]
    Stale {
        /// The timestamp sent.
        sent: i64,
        /// Its distance from now.
        skew: i64,
    },
    /// No `v1,` entry matched the body.
    #[error("no webhook-signature entry matches the body ({entries} entries checked)")]
    Mismatch {
        /// How many `v1` entries were present.
        entries: usize,
    },
}

/// Decodes a `whsec_…` secret into the HMAC key bytes.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, SignatureError> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = STANDARD
        .decode(b64)
        .map_err(|e| SignatureError::Secret(e.to_string()))?;
    if key.is_empty() {
        return Err(SignatureError::Secret("the key is empty".into()));
    }
    Ok(key)
}

fn mac(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `v1,<base64>` signature of a message (used by tests and tools that send
/// webhooks to the mock ERP).
pub fn sign(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    let tag = mac(key, id, timestamp, body).finalize().into_bytes();
    format!("v1,{}", STANDARD.encode(tag))
}

/// Checks a request's headers and raw body against `key` at time `now_secs`.
pub fn verify(
    key: &[u8],
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now_secs: i64,
) -> Result<(), SignatureError> {
    let sent: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp(timestamp.to_string()))?;
    let skew = (now_secs - sent).abs();
    if skew > TOLERANCE_SECS {
        return Err(SignatureError::Stale { sent, skew });
    }
    let mut entries = 0;
    for entry in signatures.split_whitespace() {
        let Some(b64) = entry.strip_prefix("v1,") else {
            // Other schemes (v1a asymmetric, …) are not ours to check.
            continue;
        };
        entries += 1;
        let Ok(tag) = STANDARD.decode(b64) else {
            continue;
        };
        // verify_slice compares in constant time.
        if mac(key, id, timestamp, body).verify_slice(&tag).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch { entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn standard_webhooks_reference_vector() {
        // The example from the Standard Webhooks specification.
        let key = decode_secret(SECRET).expect("secret");
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        verify(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            &sig,
            body,
            1614265330,
        )
        .expect("valid");
    }

    #[test]
    fn any_of_several_signatures_may_match() {
        let key = decode_secret(SECRET).expect("secret");
        let good = sign(&key, "m1", "100", b"body");
        let header = format!("v1,AAAA v1a,whatever {good}");
        verify(&key, "m1", "100", &header, b"body", 100).expect("second entry matches");
    }

    #[test]
    fn tampering_and_staleness_are_rejected() {
        let key = decode_secret(SECRET).expect("secret");
        let sig = sign(&key, "m1", "100", b"body");
        assert_eq!(
            verify(&key, "m1", "100", &sig, b"bodY", 100),
            Err(SignatureError::Mismatch { entries: 1 })
        );
        assert_eq!(
            verify(&key, "m2", "100", &sig, b"body", 100),
            Err(SignatureError::Mismatch { entries: 1 })
        );
        assert!(matches!(
            verify(&key, "m1", "100", &sig, b"body", 100 + TOLERANCE_SECS + 1),
            Err(SignatureError::Stale { .. })
        ));
        assert!(matches!(
            verify(&key, "m1", "soon", &sig, b"body", 100),
            Err(SignatureError::BadTimestamp(_))
        ));
        assert!(decode_secret("whsec_!!!").is_err());
    }
}
