//! Pure: may an event go to the ERP now, must its lane wait for media, or
//! has the wait run out (deliver without them, flagged)?
//!
//! An event waits only for media it references by hash
//! ([`crate::media::refs_of`]) and the store lacks; it waits at most
//! `[media] wait_ms` from when delivery first found one missing (the
//! store remembers that time across restarts). Other lanes never wait.

use dockline_protocol::DeviceId;

use crate::media::MediaRef;

/// What to do with an event and its media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaDecision {
    /// Every medium is stored (or there are none): deliver with them.
    Go,
    /// Some are missing and the wait has time left: park until `until_ms`.
    Wait {
        /// The missing ones.
        missing: Vec<MediaRef>,
        /// When the wait runs out.
        until_ms: i64,
    },
    /// Some are missing and the wait ran out: deliver without them, flagged.
    GoWithout {
        /// The missing ones.
        missing: Vec<MediaRef>,
    },
}

/// Decides from which of `refs` are `present`, when the wait began, the
/// allowed wait and the clock.
pub fn decide(
    refs: &[MediaRef],
    present: &[bool],
    since_ms: i64,
    wait_ms: u64,
    now_ms: i64,
) -> MediaDecision {
    let missing: Vec<MediaRef> = refs
        .iter()
        .zip(present.iter().chain(std::iter::repeat(&false)))
        .filter(|(_, here)| !**here)
        .map(|(r, _)| *r)
        .collect();
    if missing.is_empty() {
        return MediaDecision::Go;
    }
    let until_ms = since_ms.saturating_add(i64::try_from(wait_ms).unwrap_or(i64::MAX));
    if now_ms < until_ms {
        MediaDecision::Wait { missing, until_ms }
    } else {
        MediaDecision::GoWithout { missing }
    }
}

/// `HH:MM` UTC of a time in ms.
fn hh_mm(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .map(|t| format!("{:02}:{:02} UTC", t.hour(), t.minute()))
        .unwrap_or_else(|_| "?".into())
}

/// The waiting lane's reason, for people: `waiting for photo sha256:ab12…
/// from device hh-07, until 14:05 UTC`.
pub fn reason(missing: &[MediaRef], device: &DeviceId, until_ms: i64) -> String {
    let what: Vec<String> = missing
        .iter()
        .map(|m| {
            let hex = m.hash.to_string();
            format!("{} sha256:{}…", m.role.name(), &hex[..8])
        })
        .collect();
    format!(
        "waiting for {} from device {device}, until {}",
        what.join(" and "),
        hh_mm(until_ms)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::MediaRole;
    use dockline_protocol::MediaHash;

    fn r(b: &[u8], role: MediaRole) -> MediaRef {
        MediaRef {
            hash: MediaHash::of(b),
            role,
        }
    }

    #[test]
    fn an_event_goes_with_its_media_waits_for_missing_ones_then_goes_without() {
        let sig = r(b"sig", MediaRole::Signature);
        let photo = r(b"photo", MediaRole::Photo);
        let refs = [sig, photo];
        assert_eq!(decide(&[], &[], 0, 10, 0), MediaDecision::Go);
        assert_eq!(decide(&refs, &[true, true], 0, 10, 99), MediaDecision::Go);
        assert_eq!(
            decide(&refs, &[true, false], 1_000, 500, 1_499),
            MediaDecision::Wait {
                missing: vec![photo],
                until_ms: 1_500
            }
        );
        assert_eq!(
            decide(&refs, &[true, false], 1_000, 500, 1_500),
            MediaDecision::GoWithout {
                missing: vec![photo]
            }
        );
    }

    #[test]
    fn the_reason_names_medium_device_and_deadline() {
        let photo = r(b"photo", MediaRole::Photo);
        let hex = photo.hash.to_string();
        let text = reason(
            &[photo],
            &DeviceId::new("hh-07").expect("id"),
            14 * 3_600_000 + 5 * 60_000,
        );
        assert_eq!(
            text,
            format!(
                "waiting for photo sha256:{}… from device hh-07, until 14:05 UTC",
                &hex[..8]
            )
        );
    }
}
