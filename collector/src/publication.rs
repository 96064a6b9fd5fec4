//! Messages the collector sends to devices, as ready-to-publish topic and
//! bytes. Ingest and delivery produce [`Publication`]s without touching MQTT,
//! so both are testable without a broker; the MQTT task sends them QoS 1.
//! Commands are stamped with an expiry and signed here (see
//! [`crate::ingest::commands`]), so no path publishes a command unsigned by mistake.

use dockline_protocol::{
    Ack, Channel, Command, DeviceId, EncodeError, PROTOCOL_VERSION, Resend, SiteId, Topic, Verdict,
    codec,
};

use crate::ingest::commands::CommandSigner;

/// A message to publish QoS 1 on `topic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// The full topic name.
    pub topic: String,
    /// The CBOR payload.
    pub payload: Vec<u8>,
}

impl Publication {
    /// An ack for `device` on its ack topic (`also_stored`: ranges stored
    /// above `stored_up_to`).
    pub fn ack(
        site: &SiteId,
        device: &DeviceId,
        epoch: u64,
        stored_up_to: Option<u64>,
        also_stored: Vec<(u64, u64)>,
        verdicts: Vec<Verdict>,
    ) -> Result<Self, EncodeError> {
        let ack = Ack {
            v: PROTOCOL_VERSION,
            device: device.clone(),
            epoch,
            stored_up_to,
            also_stored,
            verdicts,
            signed: None,
        };
        Ok(Self {
            topic: Topic::new(site.clone(), device.clone(), Channel::Ack).to_string(),
            payload: codec::encode(&ack)?,
        })
    }

    /// This publication with its ack signed by `signer` when it is an ack on
    /// an ack topic and `signer` has a key; anything else unchanged. The MQTT
    /// task applies it to every publication, so no path publishes an ack
    /// unsigned by mistake.
    pub fn signed_by(self, signer: &CommandSigner) -> Result<Self, EncodeError> {
        if !signer.signs() {
            return Ok(self);
        }
        if self.topic.ends_with("/media_ack") {
            let Ok(ack) = codec::decode::<dockline_protocol::MediaAck>(&self.payload) else {
                return Ok(self);
            };
            return Ok(Self {
                topic: self.topic,
                payload: codec::encode(&signer.sign_media_ack(&ack)?)?,
            });
        }
        if !self.topic.ends_with("/ack") {
            return Ok(self);
        }
        let Ok(ack) = codec::decode::<Ack>(&self.payload) else {
            return Ok(self);
        };
        Ok(Self {
            topic: self.topic,
            payload: codec::encode(&signer.sign_ack(&ack)?)?,
        })
    }

    /// A resend request for `device`'s missing `ranges` of `epoch`, on its
    /// command topic, with its expiry and (when a key is configured) its
    /// signature from `signer`.
    pub fn resend(
        site: &SiteId,
        device: &DeviceId,
        epoch: u64,
        ranges: Vec<(u64, u64)>,
        signer: &CommandSigner,
        now_ms: i64,
    ) -> Result<Self, EncodeError> {
        let command = Command {
            v: PROTOCOL_VERSION,
            device: device.clone(),
            resend: Some(Resend { epoch, ranges }),
            expires_ms: None,
            signed: None,
            nonce: None,
        };
        let command = signer.prepare(command, now_ms)?;
        Ok(Self {
            topic: Topic::new(site.clone(), device.clone(), Channel::Cmd).to_string(),
            payload: codec::encode(&command)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dockline_protocol::media::{MediaAck, MediaHash, MediaState};

    #[test]
    fn media_acks_are_signed_with_the_command_key() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let signer = CommandSigner::new(Some(key.clone()), std::time::Duration::from_secs(60));
        let ack = MediaAck {
            v: PROTOCOL_VERSION,
            device: DeviceId::new("hh-1").expect("id"),
            hash: MediaHash::of(b"x"),
            have: 1,
            at: Some(0),
            state: MediaState::Stored,
            signed: None,
        };
        let p = Publication {
            topic: "dockline/v1/s/hh-1/media_ack".into(),
            payload: codec::encode(&ack).expect("enc"),
        }
        .signed_by(&signer)
        .expect("signed");
        let sent: MediaAck = codec::decode(&p.payload).expect("dec");
        let public = key.verifying_key();
        let opened = sent
            .open(|m, s| {
                public
                    .verify_strict(m, &ed25519_dalek::Signature::from_bytes(s))
                    .is_ok()
            })
            .expect("verifies");
        assert_eq!(opened, ack);
        let unsigned = CommandSigner::new(None, std::time::Duration::from_secs(60));
        let p = Publication {
            topic: "dockline/v1/s/hh-1/media_ack".into(),
            payload: codec::encode(&ack).expect("enc"),
        }
        .signed_by(&unsigned)
        .expect("as is");
        assert_eq!(
            codec::decode::<MediaAck>(&p.payload).expect("dec").signed,
            None
        );
    }
}
