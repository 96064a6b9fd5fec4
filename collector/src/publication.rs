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
        if !signer.signs() || !self.topic.ends_with("/ack") {
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
