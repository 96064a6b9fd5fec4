//! The collector's answer on `dockline/v1/{site}/{device}/ack`.
//!
//! One message may say two things: how far the device's events are safely
//! stored at the collector (the agent may then drop those payloads), and the
//! ERP's verdict on individual events (the agent updates its receipts).
//!
//! # Signed acks
//!
//! An ack makes the agent delete payloads, so an agent must be able to
//! tell the collector's acks from a forgery on its ack topic. A collector
//! with a signing key (`[commands] signing_key_file`, the command key) adds
//! `sg`: the exact CBOR bytes of the ack without `sg` and the Ed25519
//! signature over [`ACK_SIGNING_CONTEXT`] followed by those bytes (the same
//! [`Signed`] layout as a command, another context, so neither signature is
//! valid as the other). The plain fields stay beside `sg`, so an agent that
//! does not know `sg` still reads the ack; an agent with a verify key acts
//! only on the signed bytes ([`Ack::open`]). A replayed signed ack says
//! nothing that was not true when it was signed: a watermark never moves
//! back and a verdict never changes.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError, EncodeError};
use crate::command::{SIGNATURE_BYTES, Signed};
use crate::ids::{DeviceId, EventId};
use crate::validate::{self, MAX_TEXT_BYTES, ValidationError};

/// Most verdicts one ack may carry.
pub const MAX_VERDICTS: usize = 1000;

/// An application-level acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Protocol version.
    pub v: u16,
    /// The device the ack is for.
    #[serde(rename = "dev")]
    pub device: DeviceId,
    /// The sequence epoch it refers to.
    #[serde(rename = "ep")]
    pub epoch: u64,
    /// Every sequence up to and including this one is committed in the
    /// collector's store (absent when the ack carries only verdicts).
    #[serde(rename = "upto", default, skip_serializing_if = "Option::is_none")]
    pub stored_up_to: Option<u64>,
    /// Ranges above `stored_up_to` that are stored too (events that jumped
    /// the queue on the live lane); the agent may drop those payloads.
    #[serde(rename = "also", default, skip_serializing_if = "Vec::is_empty")]
    pub also_stored: Vec<(u64, u64)>,
    /// ERP verdicts on individual events.
    #[serde(rename = "vd", default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<Verdict>,
    /// The collector's signature over this ack (see the module docs).
    #[serde(rename = "sg", default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<Signed>,
}

/// Prefix of every signed ack's message (distinct from commands').
pub const ACK_SIGNING_CONTEXT: &[u8] = b"dockline/v1/ack\0";

/// The message an ack signature covers: [`ACK_SIGNING_CONTEXT`], then the
/// ack's bytes without `sg` (the ack twin of
/// [`crate::command::signing_message`]).
pub fn ack_signing_message(body: &[u8]) -> Vec<u8> {
    signing_message(ACK_SIGNING_CONTEXT, body)
}

/// Why a signed ack was not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckRefusal {
    /// No `sg` where one is required.
    #[error(
        "ack is not signed; an agent with [commands] verify_key acts only on acks signed by the collector (configure [commands] signing_key_file on the collector)"
    )]
    Unsigned,
    /// The signature does not verify.
    #[error(
        "ack signature does not verify with the configured verify_key: a forged ack, or the collector signs with another key"
    )]
    BadSignature,
    /// The signed bytes are not an ack, or nest another signature.
    #[error("signed ack body is invalid: {0}")]
    Body(DecodeError),
    /// The signed ack is for another device than the outer message.
    #[error("signed ack is for device '{signed}', the message says '{outer}'; refused")]
    OtherDevice {
        /// The device inside the signature.
        signed: DeviceId,
        /// The device outside.
        outer: DeviceId,
    },
}

impl AckRefusal {
    /// A short, stable name for counters.
    pub fn reason(&self) -> &'static str {
        match self {
            AckRefusal::Unsigned => "unsigned",
            AckRefusal::BadSignature => "bad_signature",
            AckRefusal::Body(_) => "malformed",
            AckRefusal::OtherDevice { .. } => "other_device",
        }
    }
}

/// A message that carries the collector's signed copy of itself in `sg`:
/// batch acks ([`Ack`]) and media acks ([`crate::media::MediaAck`]). One
/// [`seal`] and one [`open`] serve both; each kind signs under its own
/// context, so a signature of one never opens the other.
pub(crate) trait SelfSigned: codec::WireMessage + Clone {
    /// What the signature's message begins with.
    const CONTEXT: &'static [u8];
    /// The kind's name in a refusal.
    const WHAT: &'static str;
    /// The signed copy.
    fn signed_mut(&mut self) -> &mut Option<Signed>;
    /// The signed copy.
    fn signed(&self) -> Option<&Signed>;
    /// The device the message is for.
    fn device(&self) -> &DeviceId;
}

/// `context`, then `body`: the message a signature covers.
pub(crate) fn signing_message(context: &[u8], body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(context.len() + body.len());
    m.extend_from_slice(context);
    m.extend_from_slice(body);
    m
}

/// `message` with `sg` added: `sign` signs `T::CONTEXT` plus the message's
/// bytes without `sg`.
pub(crate) fn seal<T: SelfSigned>(
    message: &T,
    sign: impl FnOnce(&[u8]) -> [u8; SIGNATURE_BYTES],
) -> Result<T, EncodeError> {
    let mut inner = message.clone();
    *inner.signed_mut() = None;
    let body = codec::encode(&inner)?;
    let signature = sign(&signing_message(T::CONTEXT, &body)).to_vec();
    *inner.signed_mut() = Some(Signed { body, signature });
    Ok(inner)
}

/// The signed message inside `message`, if `verify` accepts its signature;
/// the plain fields outside are ignored.
pub(crate) fn open<T: SelfSigned>(
    message: &T,
    verify: impl FnOnce(&[u8], &[u8; SIGNATURE_BYTES]) -> bool,
) -> Result<T, AckRefusal> {
    let Some(signed) = message.signed() else {
        return Err(AckRefusal::Unsigned);
    };
    let signature: &[u8; SIGNATURE_BYTES] = signed
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| AckRefusal::BadSignature)?;
    if !verify(&signing_message(T::CONTEXT, &signed.body), signature) {
        return Err(AckRefusal::BadSignature);
    }
    let inner: T = codec::decode(&signed.body).map_err(AckRefusal::Body)?;
    if inner.signed().is_some() {
        return Err(AckRefusal::Body(DecodeError::Invalid {
            what: T::WHAT,
            error: ValidationError {
                field: "sg.b.sg".into(),
                problem: "nests another signature".into(),
            },
        }));
    }
    if inner.device() != message.device() {
        return Err(AckRefusal::OtherDevice {
            signed: inner.device().clone(),
            outer: message.device().clone(),
        });
    }
    Ok(inner)
}

impl SelfSigned for Ack {
    const CONTEXT: &'static [u8] = ACK_SIGNING_CONTEXT;
    const WHAT: &'static str = "ack";
    fn signed_mut(&mut self) -> &mut Option<Signed> {
        &mut self.signed
    }
    fn signed(&self) -> Option<&Signed> {
        self.signed.as_ref()
    }
    fn device(&self) -> &DeviceId {
        &self.device
    }
}

impl Ack {
    /// This ack with `sg` added: `sign` signs [`ACK_SIGNING_CONTEXT`] plus
    /// the ack's bytes without `sg`.
    pub fn seal(
        &self,
        sign: impl FnOnce(&[u8]) -> [u8; SIGNATURE_BYTES],
    ) -> Result<Ack, EncodeError> {
        seal(self, sign)
    }

    /// The signed ack inside, if `verify` accepts its signature; the plain
    /// fields outside are ignored.
    pub fn open(
        &self,
        verify: impl FnOnce(&[u8], &[u8; SIGNATURE_BYTES]) -> bool,
    ) -> Result<Ack, AckRefusal> {
        open(self, verify)
    }
}

/// The ERP's verdict on one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The event's sequence.
    pub seq: u64,
    /// The event's id.
    pub id: EventId,
    /// What the ERP did.
    #[serde(rename = "o")]
    pub outcome: Outcome,
}

/// Booked or rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The ERP booked it; `document` is its reference (delivery note, move id).
    Booked {
        /// The ERP's document reference.
        #[serde(rename = "doc")]
        document: String,
    },
    /// The ERP refused it for good.
    Rejected {
        /// Why, in the ERP's words.
        reason: String,
    },
}

impl Ack {
    pub(crate) fn validate(&self) -> Result<(), ValidationError> {
        if self.verdicts.len() > MAX_VERDICTS {
            return Err(ValidationError {
                field: "vd".into(),
                problem: alloc::format!(
                    "holds {} verdicts, the limit is {MAX_VERDICTS}",
                    self.verdicts.len()
                ),
            });
        }
        crate::batch::check_ranges("also", &self.also_stored)?;
        if let Some(signed) = &self.signed {
            signed.check("sg")?;
        }
        crate::validate::wire_number("ep", self.epoch)?;
        if let Some(up_to) = self.stored_up_to {
            crate::validate::wire_number("upto", up_to)?;
        }
        for (i, v) in self.verdicts.iter().enumerate() {
            let text = match &v.outcome {
                Outcome::Booked { document } => document,
                Outcome::Rejected { reason } => reason,
            };
            validate::text(&alloc::format!("vd[{i}].o"), text, MAX_TEXT_BYTES)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PROTOCOL_VERSION;

    fn sign(message: &[u8]) -> [u8; SIGNATURE_BYTES] {
        let mut s = [0u8; SIGNATURE_BYTES];
        for (i, b) in message.iter().enumerate() {
            s[i % SIGNATURE_BYTES] ^= b.wrapping_add(i as u8);
        }
        s
    }

    fn verify(message: &[u8], sig: &[u8; SIGNATURE_BYTES]) -> bool {
        &sign(message) == sig
    }

    fn ack() -> Ack {
        Ack {
            v: PROTOCOL_VERSION,
            device: DeviceId::new("hh-1").expect("id"),
            epoch: 7,
            stored_up_to: Some(12),
            also_stored: alloc::vec![(14, 15)],
            verdicts: Vec::new(),
            signed: None,
        }
    }

    #[test]
    fn a_sealed_ack_opens_to_itself_and_keeps_its_plain_fields() {
        let sealed = ack().seal(sign).expect("seal");
        assert_eq!(sealed.stored_up_to, Some(12), "old agents read these");
        let wire: Ack = codec::decode(&codec::encode(&sealed).expect("enc")).expect("dec");
        assert_eq!(wire.open(verify), Ok(ack()));
    }

    #[test]
    fn forged_tampered_and_unsigned_acks_are_refused() {
        assert_eq!(ack().open(verify), Err(AckRefusal::Unsigned));
        // A forger changes the plain fields: the signed ones still rule.
        let mut sealed = ack().seal(sign).expect("seal");
        sealed.stored_up_to = Some(1 << 40);
        assert_eq!(sealed.open(verify).expect("opens").stored_up_to, Some(12));
        // Tampering with the signed bytes breaks the signature.
        if let Some(s) = sealed.signed.as_mut()
            && let Some(b) = s.body.last_mut()
        {
            *b ^= 1;
        }
        assert_eq!(sealed.open(verify), Err(AckRefusal::BadSignature));
        // Another device's signed ack under this device's name.
        let mut other = ack();
        other.device = DeviceId::new("hh-2").expect("id");
        let mut moved = other.seal(sign).expect("seal");
        moved.device = DeviceId::new("hh-1").expect("id");
        assert_eq!(
            moved.open(verify).expect_err("other device").reason(),
            "other_device"
        );
        // A command signature is not an ack signature (another context).
        let mut plain = ack();
        plain.signed = None;
        let body = codec::encode(&plain).expect("enc");
        let cmd_sig = sign(&crate::command::signing_message(&body));
        plain.signed = Some(Signed {
            body,
            signature: cmd_sig.to_vec(),
        });
        assert_eq!(plain.open(verify), Err(AckRefusal::BadSignature));
    }
}
