//! Commands from the collector on `dockline/v1/{site}/{device}/cmd`.
//!
//! A command message carries at most one request per kind, each an optional
//! field, so a new kind of command is a new optional field (no version bump,
//! see the versioning rule in the crate docs): an agent that does not know a
//! field ignores it, and an agent older than the `cmd` channel never
//! subscribes to it (its own ack timeout resends in the end).
//!
//! # Signed commands
//!
//! A command tells a device to do something, so a device must be able to
//! tell the collector's commands from anyone else's. The collector signs
//! with an Ed25519 key; the agent holds the public key. Both fields that
//! carry this are optional (added in v1, no version bump):
//!
//! - `exp`: the command's expiry, Unix milliseconds. A device refuses a
//!   command past it, so a recorded command cannot be replayed forever.
//! - `sg`: a [`Signed`] command: `b`, the exact CBOR bytes of the *inner*
//!   command (its `v`, `dev`, `exp` and requests; never an `sg` of its own),
//!   and `s`, the 64-byte Ed25519 signature over [`SIGNING_CONTEXT`]
//!   followed by exactly those bytes. The outer message then carries only
//!   `v`, `dev` (for routing and old agents) and `sg`.
//!
//! The signature covers the bytes as sent, so the receiver verifies before
//! it decodes anything inside and never re-encodes: a field the receiver
//! does not know is still covered. The context prefix keeps a command
//! signature from being valid for anything else the key might sign later.
//!
//! No cryptography happens here (the crate stays `no_std` with serde and
//! ciborium only): [`Command::seal`] and [`Command::open`] take the signing
//! and verifying functions, which the collector and the agent supply.
//!
//! - `n`: a nonce, a number the collector draws at random for each signed
//!   command (inside the signed bytes). A signed command without one is
//!   refused; the agent remembers the nonces it obeyed until their expiry
//!   and refuses a second command with the same one, so a captured command
//!   replayed within its expiry is not obeyed twice.

use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Serialize};

use crate::batch::check_ranges;
use crate::codec::{self, DecodeError, EncodeError};
use crate::ids::DeviceId;
use crate::validate::ValidationError;

/// Bytes signed before the command body: `dockline/v1/cmd` and a NUL.
pub const SIGNING_CONTEXT: &[u8] = b"dockline/v1/cmd\0";

/// Length of an Ed25519 signature.
pub const SIGNATURE_BYTES: usize = 64;

/// Largest signed body accepted (a resend request of [`MAX_RANGES`](crate::batch::MAX_RANGES)
/// ranges is about 20 KiB).
pub const MAX_SIGNED_BODY_BYTES: usize = 64 * 1024;

/// A command to one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Protocol version.
    pub v: u16,
    /// The device the command is for.
    #[serde(rename = "dev")]
    pub device: DeviceId,
    /// Send these sequences again (added in v1 as an optional field).
    #[serde(rename = "rs", default, skip_serializing_if = "Option::is_none")]
    pub resend: Option<Resend>,
    /// Not valid after this time, Unix milliseconds (added in v1 as an
    /// optional field; required inside a signed command).
    #[serde(rename = "exp", default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
    /// The command's nonce (see the module docs); required inside a signed
    /// command.
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<u64>,
    /// The signed command (added in v1 as an optional field); see the
    /// module docs.
    #[serde(rename = "sg", default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<Signed>,
}

/// "These sequences of yours are missing here": the device publishes the
/// ones it still holds again, and reports the rest as shed in a batch of
/// that epoch (an empty batch whose `shed` lists them), so the collector
/// stops waiting for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resend {
    /// The sequence epoch the ranges belong to (it may be older than the
    /// device's current one, after a reinstall).
    #[serde(rename = "ep")]
    pub epoch: u64,
    /// Missing sequences, inclusive ranges, ascending, at most
    /// [`MAX_RANGES`](crate::batch::MAX_RANGES).
    #[serde(rename = "r")]
    pub ranges: Vec<(u64, u64)>,
}

/// A signed command: the inner command's CBOR bytes and the signature over
/// them (see the module docs).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    /// The inner command, CBOR, exactly as signed.
    #[serde(rename = "b", with = "cbor_bytes")]
    pub body: Vec<u8>,
    /// Ed25519 signature over [`SIGNING_CONTEXT`] + `body`.
    #[serde(rename = "s", with = "cbor_bytes")]
    pub signature: Vec<u8>,
}

impl Signed {
    /// Checks the signature's length and the body's size; `field` names the
    /// `sg` in errors.
    pub(crate) fn check(&self, field: &str) -> Result<(), ValidationError> {
        if self.signature.len() != SIGNATURE_BYTES {
            return Err(ValidationError {
                field: alloc::format!("{field}.s"),
                problem: alloc::format!(
                    "is {} bytes, an Ed25519 signature is {SIGNATURE_BYTES}",
                    self.signature.len()
                ),
            });
        }
        if self.body.len() > MAX_SIGNED_BODY_BYTES {
            return Err(ValidationError {
                field: alloc::format!("{field}.b"),
                problem: alloc::format!(
                    "is {} bytes, the limit is {MAX_SIGNED_BODY_BYTES}",
                    self.body.len()
                ),
            });
        }
        Ok(())
    }
}

impl fmt::Debug for Signed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed")
            .field("body_bytes", &self.body.len())
            .field("signature_bytes", &self.signature.len())
            .finish()
    }
}

/// Why a device refuses a command. Every text names the problem and what to
/// do about it; [`CommandRefusal::reason`] is a short key for counters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandRefusal {
    /// No signature, and unsigned commands are not allowed.
    #[error(
        "command is not signed; configure [commands] signing_key_file on the collector and verify_key on this agent (or set allow_unsigned_commands = true for development only)"
    )]
    Unsigned,
    /// The signature does not verify with the configured key.
    #[error(
        "command signature does not verify with the configured verify_key; it was tampered with, or the collector signs with another key (compare the collector's public key with [commands] verify_key)"
    )]
    BadSignature,
    /// The signed body is not a valid command.
    #[error("signed command body is invalid: {0}")]
    Body(DecodeError),
    /// The signed body holds a signed command of its own.
    #[error("signed command nests another signed command; refused")]
    Nested,
    /// A signed command without an expiry.
    #[error("signed command has no expiry (exp); the collector must set one")]
    NoExpiry,
    /// A signed command without a nonce (`n`).
    #[error(
        "signed command has no nonce (n), so a replay could not be told apart; upgrade the collector"
    )]
    NoNonce,
    /// Past its expiry.
    #[error(
        "command expired at {expires_ms} (now {now_ms}, {late_ms} ms late); if commands always arrive expired, check this device's clock"
    )]
    Expired {
        /// The command's expiry, Unix ms.
        expires_ms: i64,
        /// This device's time, Unix ms.
        now_ms: i64,
        /// How late.
        late_ms: i64,
    },
    /// For another device (or the outer and inner device differ).
    #[error("command is for device '{addressed}', this is '{ours}'; refused")]
    OtherDevice {
        /// The device the command names.
        addressed: DeviceId,
        /// This device.
        ours: DeviceId,
    },
}

impl CommandRefusal {
    /// A short, stable name for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            CommandRefusal::Unsigned => "unsigned",
            CommandRefusal::BadSignature => "bad_signature",
            CommandRefusal::Body(_) | CommandRefusal::Nested => "malformed",
            CommandRefusal::NoExpiry | CommandRefusal::Expired { .. } => "expired",
            CommandRefusal::NoNonce => "no_nonce",
            CommandRefusal::OtherDevice { .. } => "other_device",
        }
    }
}

/// The bytes a command signature covers: [`SIGNING_CONTEXT`] + `body`.
pub fn signing_message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_CONTEXT.len() + body.len());
    m.extend_from_slice(SIGNING_CONTEXT);
    m.extend_from_slice(body);
    m
}

impl Command {
    pub(crate) fn validate(&self) -> Result<(), ValidationError> {
        if let Some(resend) = &self.resend {
            check_ranges("rs.r", &resend.ranges)?;
            crate::validate::wire_number("rs.ep", resend.epoch)?;
        }
        if let Some(signed) = &self.signed {
            signed.check("sg")?;
        }
        Ok(())
    }

    /// Signs `inner` (which must carry its expiry and no `sg`): returns the
    /// command to publish, whose `sg` holds `inner`'s CBOR bytes and
    /// `sign(signing_message(bytes))`.
    pub fn seal(
        inner: &Command,
        sign: impl FnOnce(&[u8]) -> [u8; SIGNATURE_BYTES],
    ) -> Result<Command, EncodeError> {
        let mut inner = inner.clone();
        // Never sign a signature: a nested `sg` would be refused anyway.
        inner.signed = None;
        let body = codec::encode(&inner)?;
        let signature = sign(&signing_message(&body)).to_vec();
        Ok(Command {
            v: inner.v,
            device: inner.device,
            resend: None,
            expires_ms: None,
            nonce: None,
            signed: Some(Signed { body, signature }),
        })
    }

    /// Checks a received signed command and returns the inner command it
    /// carries: the signature first (`verify(message, signature)` over
    /// [`signing_message`]), then the body, the device (`ours`) and the
    /// expiry against `now_ms`. A command without `sg` is
    /// [`CommandRefusal::Unsigned`]; see [`Command::open_unsigned`] for
    /// development setups that accept those.
    pub fn open(
        &self,
        ours: &DeviceId,
        now_ms: i64,
        verify: impl FnOnce(&[u8], &[u8; SIGNATURE_BYTES]) -> bool,
    ) -> Result<Command, CommandRefusal> {
        let Some(signed) = &self.signed else {
            return Err(CommandRefusal::Unsigned);
        };
        let signature: &[u8; SIGNATURE_BYTES] = signed
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| CommandRefusal::BadSignature)?;
        if !verify(&signing_message(&signed.body), signature) {
            return Err(CommandRefusal::BadSignature);
        }
        let inner: Command = codec::decode(&signed.body).map_err(CommandRefusal::Body)?;
        if inner.signed.is_some() {
            return Err(CommandRefusal::Nested);
        }
        if inner.device != self.device {
            return Err(CommandRefusal::OtherDevice {
                addressed: inner.device,
                ours: self.device.clone(),
            });
        }
        let Some(expires_ms) = inner.expires_ms else {
            return Err(CommandRefusal::NoExpiry);
        };
        inner.check_for(ours, now_ms, expires_ms)?;
        if inner.nonce.is_none() {
            return Err(CommandRefusal::NoNonce);
        }
        Ok(inner)
    }

    /// Accepts an unsigned command (development only): the device and, when
    /// present, the expiry are still checked. A signed command is refused
    /// here; use [`Command::open`].
    pub fn open_unsigned(&self, ours: &DeviceId, now_ms: i64) -> Result<Command, CommandRefusal> {
        if self.signed.is_some() {
            return Err(CommandRefusal::BadSignature);
        }
        match self.expires_ms {
            Some(exp) => self.check_for(ours, now_ms, exp)?,
            None => self.check_for(ours, now_ms, i64::MAX)?,
        }
        Ok(self.clone())
    }

    fn check_for(
        &self,
        ours: &DeviceId,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<(), CommandRefusal> {
        if &self.device != ours {
            return Err(CommandRefusal::OtherDevice {
                addressed: self.device.clone(),
                ours: ours.clone(),
            });
        }
        if now_ms > expires_ms {
            return Err(CommandRefusal::Expired {
                expires_ms,
                now_ms,
                late_ms: now_ms.saturating_sub(expires_ms),
            });
        }
        Ok(())
    }
}

/// `Vec<u8>` as a CBOR byte string (serde's default is an array of
/// integers, twice the size and slower to check).
mod cbor_bytes {
    use alloc::vec::Vec;
    use core::fmt;
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_bytes(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        // JSON renderings (tests, tools) write bytes as an array of numbers.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element::<u8>()? {
                if out.len() >= super::MAX_SIGNED_BODY_BYTES {
                    return Err(A::Error::custom("byte string too long"));
                }
                out.push(b);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PROTOCOL_VERSION;
    use alloc::string::ToString;
    use alloc::vec;

    fn dev(s: &str) -> DeviceId {
        DeviceId::new(s).expect("id")
    }

    fn resend(device: &str, exp: Option<i64>) -> Command {
        Command {
            v: PROTOCOL_VERSION,
            device: dev(device),
            resend: Some(Resend {
                epoch: 7,
                ranges: vec![(3, 4)],
            }),
            expires_ms: exp,
            signed: None,
            nonce: Some(7),
        }
    }

    /// A stand-in signature: the message's length and first bytes; enough
    /// to check what is signed and that a changed byte is noticed.
    fn fake_sign(message: &[u8]) -> [u8; SIGNATURE_BYTES] {
        let mut s = [0u8; SIGNATURE_BYTES];
        for (i, b) in message.iter().enumerate() {
            s[i % SIGNATURE_BYTES] ^= b.wrapping_add(i as u8);
        }
        s
    }

    fn fake_verify(message: &[u8], sig: &[u8; SIGNATURE_BYTES]) -> bool {
        &fake_sign(message) == sig
    }

    fn wire(c: &Command) -> Command {
        codec::decode(&codec::encode(c).expect("encodes")).expect("decodes")
    }

    #[test]
    fn a_sealed_command_opens_to_its_inner_command() {
        let inner = resend("hh-1", Some(2_000));
        let sealed = wire(&Command::seal(&inner, fake_sign).expect("seal"));
        assert!(sealed.resend.is_none(), "the request travels signed only");
        let signed = sealed.signed.as_ref().expect("sg");
        assert!(signing_message(&signed.body).starts_with(SIGNING_CONTEXT));
        let opened = sealed
            .open(&dev("hh-1"), 1_000, fake_verify)
            .expect("opens");
        assert_eq!(opened, inner);
        // At the expiry instant it is still valid; a millisecond later not.
        assert!(sealed.open(&dev("hh-1"), 2_000, fake_verify).is_ok());
        let err = sealed
            .open(&dev("hh-1"), 2_001, fake_verify)
            .expect_err("expired");
        assert_eq!(err.reason(), "expired");
        assert!(
            err.to_string().contains("check this device's clock"),
            "{err}"
        );
    }

    #[test]
    fn tampering_unsigned_other_devices_and_missing_expiry_are_refused() {
        let sealed = Command::seal(&resend("hh-1", Some(2_000)), fake_sign).expect("seal");
        // One flipped bit anywhere in the body.
        let mut tampered = sealed.clone();
        if let Some(s) = tampered.signed.as_mut()
            && let Some(b) = s.body.last_mut()
        {
            *b ^= 1;
        }
        assert_eq!(
            tampered.open(&dev("hh-1"), 0, fake_verify),
            Err(CommandRefusal::BadSignature)
        );
        // Another device's command, signed correctly, is not ours.
        let err = sealed
            .open(&dev("hh-2"), 0, fake_verify)
            .expect_err("other device");
        assert_eq!(err.reason(), "other_device");
        // The outer device rewritten to reach another device.
        let mut rerouted = sealed.clone();
        rerouted.device = dev("hh-2");
        assert_eq!(
            rerouted
                .open(&dev("hh-2"), 0, fake_verify)
                .expect_err("rerouted")
                .reason(),
            "other_device"
        );
        let no_exp = Command::seal(&resend("hh-1", None), fake_sign).expect("seal");
        assert_eq!(
            no_exp.open(&dev("hh-1"), 0, fake_verify),
            Err(CommandRefusal::NoExpiry)
        );
        let plain = resend("hh-1", Some(2_000));
        assert_eq!(
            plain.open(&dev("hh-1"), 0, fake_verify),
            Err(CommandRefusal::Unsigned)
        );
        // Development mode takes it, still checking device and expiry.
        assert_eq!(plain.open_unsigned(&dev("hh-1"), 0), Ok(plain.clone()));
        assert_eq!(
            plain
                .open_unsigned(&dev("hh-1"), 3_000)
                .expect_err("expired")
                .reason(),
            "expired"
        );
        assert!(plain.open_unsigned(&dev("hh-9"), 0).is_err());
    }

    #[test]
    fn a_signature_of_the_wrong_length_does_not_decode() {
        let mut sealed = Command::seal(&resend("hh-1", Some(1)), fake_sign).expect("seal");
        if let Some(s) = sealed.signed.as_mut() {
            s.signature.truncate(10);
        }
        let err = codec::decode::<Command>(&codec::encode(&sealed).expect("encodes"))
            .expect_err("short signature");
        assert!(err.to_string().contains("sg.s"), "{err}");
    }
}
