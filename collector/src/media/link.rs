//! Signed, expiring links to a stored medium: what the webhook adapter puts
//! in a CloudEvent's `dataref`, so the ERP fetches the bytes from the
//! collector without a dashboard login.
//!
//! A link is `{base}/v1/media/{hex}?exp={unix seconds}&sig={base64url}`, where
//! `sig` is the HMAC-SHA256, under the collector's link key, of
//! `"{hex}.{exp}"`. It opens exactly one medium until `exp`; changing the
//! hash or the expiry breaks the signature. Pure functions: the HTTP layer
//! calls [`MediaLinks::verify`] with the query it received and its clock.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dockline_protocol::media::MediaHash;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Shortest key a link signer takes (bytes).
pub const MIN_KEY_BYTES: usize = 32;

/// Why a link was refused (the HTTP layer answers 403 and counts it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Past its expiry.
    #[error("the media link expired at {exp} (unix seconds); ask the collector for a new one")]
    Expired {
        /// When it expired.
        exp: u64,
    },
    /// The signature does not match the hash and expiry.
    #[error(
        "the media link's signature does not match; the link was altered or signed by another collector"
    )]
    BadSignature,
    /// `sig` is not base64url.
    #[error("the media link's `sig` is not base64url")]
    Malformed,
}

/// The link key is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the media link key is {len} bytes; it must be at least {MIN_KEY_BYTES} random bytes")]
pub struct KeyTooShort {
    /// Its length.
    pub len: usize,
}

/// Signs and checks media links for one collector (or several sharing the
/// key and base URL).
#[derive(Clone)]
pub struct MediaLinks {
    /// The keyed HMAC, cloned for each link.
    key: Hmac<Sha256>,
    base: String,
    ttl_secs: u64,
}

impl std::fmt::Debug for MediaLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaLinks")
            .field("base", &self.base)
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

impl MediaLinks {
    /// Links under `base` (the collector's public URL, without a trailing
    /// slash), valid `ttl_secs` after signing, signed with `key`.
    pub fn new(key: &[u8], base: &str, ttl_secs: u64) -> Result<Self, KeyTooShort> {
        if key.len() < MIN_KEY_BYTES {
            return Err(KeyTooShort { len: key.len() });
        }
        let key =
            Hmac::<Sha256>::new_from_slice(key).map_err(|_| KeyTooShort { len: key.len() })?;
        Ok(Self {
            key,
            base: base.trim_end_matches('/').to_owned(),
            ttl_secs,
        })
    }

    /// The link to `hash`, signed at `now_secs` (unix seconds).
    pub fn url(&self, hash: &MediaHash, now_secs: u64) -> String {
        let exp = now_secs.saturating_add(self.ttl_secs);
        let hex = hash.to_string();
        format!(
            "{}/v1/media/{hex}?exp={exp}&sig={}",
            self.base,
            URL_SAFE_NO_PAD.encode(self.mac(&hex, exp))
        )
    }

    /// Whether `sig` opens `hash` until `exp`, at `now_secs`.
    pub fn verify(
        &self,
        hash: &MediaHash,
        exp: u64,
        sig: &str,
        now_secs: u64,
    ) -> Result<(), LinkError> {
        let given = URL_SAFE_NO_PAD
            .decode(sig.as_bytes())
            .map_err(|_| LinkError::Malformed)?;
        let hex = hash.to_string();
        let mut mac = self.key.clone();
        mac.update(format!("{hex}.{exp}").as_bytes());
        mac.verify_slice(&given)
            .map_err(|_| LinkError::BadSignature)?;
        if now_secs > exp {
            return Err(LinkError::Expired { exp });
        }
        Ok(())
    }

    fn mac(&self, hex: &str, exp: u64) -> Vec<u8> {
        let mut mac = self.key.clone();
        mac.update(format!("{hex}.{exp}").as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> MediaLinks {
        MediaLinks::new(&[7u8; 32], "https://collector.example/", 600).expect("key")
    }

    fn parts(url: &str) -> (u64, String) {
        let query = url.split_once('?').expect("query").1;
        let mut exp = 0;
        let mut sig = String::new();
        for pair in query.split('&') {
            match pair.split_once('=').expect("pair") {
                ("exp", v) => exp = v.parse().expect("exp"),
                ("sig", v) => sig = v.to_owned(),
                _ => {}
            }
        }
        (exp, sig)
    }

    #[test]
    fn a_link_opens_its_medium_until_it_expires() {
        let hash = MediaHash::of(b"photo");
        let url = links().url(&hash, 1_000);
        assert!(url.starts_with("https://collector.example/v1/media/"));
        let (exp, sig) = parts(&url);
        assert_eq!(exp, 1_600);
        assert_eq!(links().verify(&hash, exp, &sig, 1_600), Ok(()));
        assert_eq!(
            links().verify(&hash, exp, &sig, 1_601),
            Err(LinkError::Expired { exp })
        );
    }

    #[test]
    fn an_altered_link_is_refused() {
        let hash = MediaHash::of(b"photo");
        let (exp, sig) = parts(&links().url(&hash, 1_000));
        let other = MediaHash::of(b"another photo");
        assert_eq!(
            links().verify(&other, exp, &sig, 1_000),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            links().verify(&hash, exp + 1, &sig, 1_000),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            links().verify(&hash, exp, "!!", 1_000),
            Err(LinkError::Malformed)
        );
        let stranger = MediaLinks::new(&[8u8; 32], "https://collector.example", 600).expect("key");
        assert_eq!(
            stranger.verify(&hash, exp, &sig, 1_000),
            Err(LinkError::BadSignature)
        );
    }

    #[test]
    fn a_short_key_is_refused() {
        assert_eq!(
            MediaLinks::new(&[1u8; 8], "http://x", 1).expect_err("short"),
            KeyTooShort { len: 8 }
        );
    }
}
