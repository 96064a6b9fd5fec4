//! Which commands from the `cmd` topic the agent obeys.
//!
//! A command is obeyed only when it is signed by the collector's key
//! (`[commands] verify_key`, Ed25519 over the exact bytes it was sent as;
//! see [`dockline_protocol::command`]), is for this device, and has not
//! expired by this device's clock. Everything else is refused with one log
//! line naming the reason and the fix, and counted per reason in
//! [`CommandCounters`] (shown in `/v1/status` under `commands`).
//!
//! With no key configured every command is refused (reason
//! `no_verify_key`), unless `allow_unsigned_commands = true`, a development
//! setting that accepts unsigned commands (and signed ones it cannot
//! check), still checking device and expiry. Refusing a command never
//! loses an event: the agent's own ack timeout resends what the collector
//! misses, only later.
//!
//! A signed command carries a nonce; [`ReplayGuard`] remembers the nonces
//! of obeyed commands until their expiry and refuses a second command with
//! the same one (`replayed`), so a captured command replayed within its
//! expiry is obeyed once. The guard lives in memory: a replay after an agent
//! restart within the command's expiry (`[commands] ttl_secs` on the
//! collector, 5 minutes by default) is obeyed again, which for a resend
//! request costs a resend and nothing else.
//!
//! The same keys check the collector's acks ([`CommandVerifier::open_ack`]):
//! with a verify key, only a signed ack that verifies deletes payloads;
//! anything else is refused, counted in [`AckCounters`] (`acks` in
//! `/v1/status`) and ignored, and the events are sent again.
//!
//! [`CommandVerifier::check`] is pure (time is passed in), so the rules are
//! unit-tested without MQTT.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use dockline_protocol::command::SIGNATURE_BYTES;
use dockline_protocol::{Ack, AckRefusal, Command, CommandRefusal, DecodeError, DeviceId, codec};
use ed25519_dalek::{Signature, VerifyingKey};
use serde::Serialize;

use crate::config::CommandsConfig;

/// Why a command was not obeyed.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Not a valid command message.
    #[error("unreadable command: {0}")]
    Decode(#[from] DecodeError),
    /// No key to check it with, and unsigned commands are not allowed.
    #[error(
        "command refused: no [commands] verify_key is configured; set it to the collector's public key (`dockline-collector keygen` prints it), or allow_unsigned_commands = true for development only"
    )]
    NoVerifyKey,
    /// The protocol's checks failed.
    #[error("command refused: {0}")]
    Command(#[from] CommandRefusal),
    /// A command with this nonce was obeyed already.
    #[error(
        "command refused: its nonce {nonce} was obeyed already (a captured command replayed within its expiry)"
    )]
    Replayed {
        /// The nonce.
        nonce: u64,
    },
}

impl Refused {
    /// The counter this refusal goes under.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Decode(_) => "malformed",
            Refused::NoVerifyKey => "no_verify_key",
            Refused::Command(r) => r.reason(),
            Refused::Replayed { .. } => "replayed",
        }
    }
}

/// Checks commands against the configured keys.
#[derive(Debug, Clone)]
pub struct CommandVerifier {
    keys: Vec<VerifyingKey>,
    allow_unsigned: bool,
}

impl CommandVerifier {
    /// Parses the configured keys; the error names the bad one by position.
    pub fn from_config(config: &CommandsConfig) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (i, text) in config.verify_key.keys().into_iter().enumerate() {
            let bad = |problem: String| {
                format!(
                    "commands.verify_key[{i}] {problem}; expected the 32-byte base64 public key `dockline-collector keygen` prints (command-verify.pub)"
                )
            };
            let bytes = STANDARD
                .decode(text.trim())
                .map_err(|e| bad(format!("is not base64 ({e})")))?;
            let raw: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| bad(format!("is {} bytes", bytes.len())))?;
            let key = VerifyingKey::from_bytes(&raw)
                .map_err(|_| bad("is not a valid Ed25519 public key".into()))?;
            keys.push(key);
        }
        Ok(Self {
            keys,
            allow_unsigned: config.allow_unsigned_commands,
        })
    }

    /// A verifier with no key that refuses every command.
    pub fn refuse_all() -> Self {
        Self {
            keys: Vec::new(),
            allow_unsigned: false,
        }
    }

    fn verifies(&self, message: &[u8], signature: &[u8; SIGNATURE_BYTES]) -> bool {
        let signature = Signature::from_bytes(signature);
        // Strict: no malleable or small-order signatures.
        self.keys
            .iter()
            .any(|k| k.verify_strict(message, &signature).is_ok())
    }

    /// The command in `payload` if this device (`ours`) should obey it at
    /// `now_ms`.
    pub fn check(&self, payload: &[u8], ours: &DeviceId, now_ms: i64) -> Result<Command, Refused> {
        let command: Command = codec::decode(payload)?;
        match (&command.signed, self.keys.is_empty(), self.allow_unsigned) {
            (Some(_), false, _) => Ok(command.open(ours, now_ms, |m, s| self.verifies(m, s))?),
            // Development: a signed command we have no key for counts as
            // unsigned; its body is still checked.
            (Some(_), true, true) => Ok(command.open(ours, now_ms, |_, _| true)?),
            (Some(_), true, false) => Err(Refused::NoVerifyKey),
            (None, _, true) => Ok(command.open_unsigned(ours, now_ms)?),
            (None, true, false) => Err(Refused::NoVerifyKey),
            (None, false, false) => Err(Refused::Command(CommandRefusal::Unsigned)),
        }
    }
}

impl CommandVerifier {
    /// The ack to act on: with a verify key, the signed ack inside `ack`
    /// if it verifies (else the refusal); without one, `ack` as sent.
    pub fn open_ack(&self, ack: Ack) -> Result<Ack, AckRefusal> {
        if self.keys.is_empty() {
            return Ok(Ack {
                signed: None,
                ..ack
            });
        }
        ack.open(|m, s| self.verifies(m, s))
    }

    /// The media ack to act on, like [`Self::open_ack`]: with a verify key
    /// only the signed ack inside, else the refusal.
    pub fn open_media_ack(
        &self,
        ack: dockline_protocol::MediaAck,
    ) -> Result<dockline_protocol::MediaAck, AckRefusal> {
        if self.keys.is_empty() {
            return Ok(dockline_protocol::MediaAck {
                signed: None,
                ..ack
            });
        }
        ack.open(|m, s| self.verifies(m, s))
    }

    /// Whether acks must be signed (a verify key is configured).
    pub fn checks_acks(&self) -> bool {
        !self.keys.is_empty()
    }
}

/// Most nonces remembered at once; beyond, the one expiring first is
/// forgotten early (a collector sends far fewer commands within one ttl).
pub const MAX_REMEMBERED_NONCES: usize = 4096;

/// Nonces of obeyed commands, each until its command expires.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: std::collections::HashMap<u64, i64>,
}

impl ReplayGuard {
    /// Admits `command` (already verified) once: refuses a nonce seen
    /// before and not yet expired at `now_ms`; remembers it otherwise. A
    /// command without a nonce (unsigned, development) is admitted.
    pub fn admit(&mut self, command: &Command, now_ms: i64) -> Result<(), Refused> {
        let Some(nonce) = command.nonce else {
            return Ok(());
        };
        self.seen.retain(|_, exp| *exp >= now_ms);
        if self.seen.contains_key(&nonce) {
            return Err(Refused::Replayed { nonce });
        }
        if self.seen.len() >= MAX_REMEMBERED_NONCES
            && let Some((&oldest, _)) = self.seen.iter().min_by_key(|(_, exp)| **exp)
        {
            self.seen.remove(&oldest);
        }
        self.seen
            .insert(nonce, command.expires_ms.unwrap_or(i64::MAX));
        Ok(())
    }
}

/// Acks refused since start, per reason (see [`CommandVerifier::open_ack`]).
#[derive(Debug, Default)]
pub struct AckCounters {
    accepted: AtomicU64,
    unsigned: AtomicU64,
    bad_signature: AtomicU64,
    malformed: AtomicU64,
    other_device: AtomicU64,
    resend_beyond_assigned: AtomicU64,
    beyond_assigned: AtomicU64,
}

/// A snapshot of [`AckCounters`] for `/v1/status` (`acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AckCounts {
    /// Acks acted on.
    pub accepted: u64,
    /// Acks refused, all reasons.
    pub refused: u64,
    /// Refused: not signed while a verify key is configured.
    pub unsigned: u64,
    /// Refused: the signature did not verify (a forgery).
    pub bad_signature: u64,
    /// Refused: unreadable, or signed bytes that are not an ack.
    pub malformed: u64,
    /// Refused: signed for another device.
    pub other_device: u64,
    /// Resend requests (verified commands) for sequences this agent has not
    /// assigned yet: refused, never answered as gone.
    pub resend_beyond_assigned: u64,
    /// Verified acks whose watermark went beyond the sequences this agent
    /// assigned (the collector believed a forged claim): taken only up to
    /// what was assigned.
    pub beyond_assigned: u64,
}

impl AckCounters {
    /// Counts an ack acted on.
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refused ack under its reason.
    pub fn refused(&self, why: &AckRefusal) {
        let c = match why.reason() {
            "unsigned" => &self.unsigned,
            "bad_signature" => &self.bad_signature,
            "other_device" => &self.other_device,
            _ => &self.malformed,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an unreadable ack.
    pub fn malformed(&self) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an ack cut to what this agent assigned.
    pub fn beyond_assigned(&self) {
        self.beyond_assigned.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a resend request refused for asking beyond what was assigned.
    pub fn resend_beyond_assigned(&self) {
        self.resend_beyond_assigned.fetch_add(1, Ordering::Relaxed);
    }

    /// The current numbers.
    pub fn snapshot(&self) -> AckCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (unsigned, bad_signature, malformed, other_device) = (
            get(&self.unsigned),
            get(&self.bad_signature),
            get(&self.malformed),
            get(&self.other_device),
        );
        AckCounts {
            accepted: get(&self.accepted),
            refused: unsigned + bad_signature + malformed + other_device,
            unsigned,
            bad_signature,
            malformed,
            other_device,
            resend_beyond_assigned: get(&self.resend_beyond_assigned),
            beyond_assigned: get(&self.beyond_assigned),
        }
    }
}

/// Commands obeyed and refused since start, per reason.
#[derive(Debug, Default)]
pub struct CommandCounters {
    accepted: AtomicU64,
    malformed: AtomicU64,
    no_verify_key: AtomicU64,
    unsigned: AtomicU64,
    bad_signature: AtomicU64,
    expired: AtomicU64,
    other_device: AtomicU64,
    replayed: AtomicU64,
    no_nonce: AtomicU64,
}

/// A snapshot of [`CommandCounters`] for `/v1/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CommandCounts {
    /// Commands obeyed.
    pub accepted: u64,
    /// Commands refused, all reasons.
    pub refused: u64,
    /// Not a valid command message.
    pub malformed: u64,
    /// Refused because no verify key is configured.
    pub no_verify_key: u64,
    /// Without a signature.
    pub unsigned: u64,
    /// Signature did not verify (tampered, or another key).
    pub bad_signature: u64,
    /// Past its expiry (or signed without one).
    pub expired: u64,
    /// For another device.
    pub other_device: u64,
    /// A nonce obeyed before (a replay within the expiry).
    pub replayed: u64,
    /// Signed without a nonce (an old collector).
    pub no_nonce: u64,
}

impl CommandCounters {
    /// Counts an obeyed command.
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refusal under its reason.
    pub fn refused(&self, why: &Refused) {
        let counter = match why.reason() {
            "malformed" => &self.malformed,
            "no_verify_key" => &self.no_verify_key,
            "unsigned" => &self.unsigned,
            "bad_signature" => &self.bad_signature,
            "expired" => &self.expired,
            "replayed" => &self.replayed,
            "no_nonce" => &self.no_nonce,
            _ => &self.other_device,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The current numbers.
    pub fn snapshot(&self) -> CommandCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut counts = CommandCounts {
            accepted: get(&self.accepted),
            refused: 0,
            malformed: get(&self.malformed),
            no_verify_key: get(&self.no_verify_key),
            unsigned: get(&self.unsigned),
            bad_signature: get(&self.bad_signature),
            expired: get(&self.expired),
            other_device: get(&self.other_device),
            replayed: get(&self.replayed),
            no_nonce: get(&self.no_nonce),
        };
        counts.refused = counts.malformed
            + counts.no_verify_key
            + counts.unsigned
            + counts.bad_signature
            + counts.expired
            + counts.other_device
            + counts.replayed
            + counts.no_nonce;
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyList;
    use dockline_protocol::{PROTOCOL_VERSION, Resend};
    use ed25519_dalek::{Signer, SigningKey};

    const NOW: i64 = 1_764_050_000_000;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn public(k: &SigningKey) -> String {
        STANDARD.encode(k.verifying_key().as_bytes())
    }

    fn dev(s: &str) -> DeviceId {
        DeviceId::new(s).expect("id")
    }

    fn resend(device: &str, exp: Option<i64>) -> Command {
        Command {
            v: PROTOCOL_VERSION,
            device: dev(device),
            resend: Some(Resend {
                epoch: 1,
                ranges: vec![(5, 9)],
            }),
            expires_ms: exp,
            signed: None,
            nonce: Some(7),
        }
    }

    fn signed_by(k: &SigningKey, c: &Command) -> Vec<u8> {
        let sealed = Command::seal(c, |m| k.sign(m).to_bytes()).expect("seal");
        codec::encode(&sealed).expect("encode")
    }

    fn verifier(keys: KeyList, allow_unsigned: bool) -> CommandVerifier {
        CommandVerifier::from_config(&CommandsConfig {
            verify_key: keys,
            allow_unsigned_commands: allow_unsigned,
        })
        .expect("keys parse")
    }

    #[test]
    fn a_command_signed_by_the_collector_for_us_and_in_time_is_obeyed() {
        let collector = key(7);
        let v = verifier(KeyList::One(public(&collector)), false);
        let c = resend("hh-1", Some(NOW + 60_000));
        let got = v
            .check(&signed_by(&collector, &c), &dev("hh-1"), NOW)
            .expect("obeyed");
        assert_eq!(got.resend, c.resend);
        // Either key of a rotation list works.
        let v = verifier(
            KeyList::Many(vec![public(&key(1)), public(&collector)]),
            false,
        );
        assert!(
            v.check(&signed_by(&collector, &c), &dev("hh-1"), NOW)
                .is_ok()
        );
    }

    /// The test: a tampered or expired command is refused by the
    /// agent (and so are unsigned ones, another key's, and another
    /// device's), each under its own reason.
    #[test]
    fn a_tampered_or_expired_command_is_refused() {
        let collector = key(7);
        let v = verifier(KeyList::One(public(&collector)), false);
        let ours = dev("hh-1");
        let counters = CommandCounters::default();
        let good = signed_by(&collector, &resend("hh-1", Some(NOW + 60_000)));

        // Tampered: any single byte of the signed message flipped.
        let mut refused_tampered = 0;
        for i in 0..good.len() {
            let mut t = good.clone();
            t[i] ^= 0x01;
            match v.check(&t, &ours, NOW) {
                Ok(c) => panic!("byte {i} flipped and still obeyed: {c:?}"),
                Err(e) => {
                    counters.refused(&e);
                    refused_tampered += 1;
                }
            }
        }
        assert_eq!(refused_tampered, good.len());

        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                signed_by(&collector, &resend("hh-1", Some(NOW - 1))),
                "expired",
            ),
            (signed_by(&collector, &resend("hh-1", None)), "expired"),
            (
                codec::encode(&resend("hh-1", Some(NOW + 60_000))).expect("encode"),
                "unsigned",
            ),
            (
                signed_by(&key(9), &resend("hh-1", Some(NOW + 60_000))),
                "bad_signature",
            ),
            (
                signed_by(&collector, &resend("hh-2", Some(NOW + 60_000))),
                "other_device",
            ),
            (b"\xa0junk".to_vec(), "malformed"),
        ];
        for (bytes, reason) in cases {
            let err = v.check(&bytes, &ours, NOW).expect_err(reason);
            assert_eq!(err.reason(), reason, "{err}");
            counters.refused(&err);
        }
        let n = counters.snapshot();
        assert_eq!(n.accepted, 0);
        // A flipped byte may also read as an unknown key (so: unsigned), or
        // another device in the outer map; every one is refused and counted.
        assert!(
            n.bad_signature >= 2 && n.malformed >= 1 && n.expired == 2,
            "{n:?}"
        );
        assert_eq!(n.refused, good.len() as u64 + 6);
    }

    #[test]
    fn without_a_key_commands_are_refused_unless_unsigned_is_allowed() {
        let collector = key(7);
        let unsigned = codec::encode(&resend("hh-1", Some(NOW + 1))).expect("encode");
        let signed = signed_by(&collector, &resend("hh-1", Some(NOW + 1)));
        let strict = verifier(KeyList::None, false);
        for bytes in [&unsigned, &signed] {
            let err = strict.check(bytes, &dev("hh-1"), NOW).expect_err("no key");
            assert_eq!(err.reason(), "no_verify_key");
            assert!(
                err.to_string().contains("dockline-collector keygen"),
                "{err}"
            );
        }
        let dev_mode = verifier(KeyList::None, true);
        assert!(dev_mode.check(&unsigned, &dev("hh-1"), NOW).is_ok());
        assert!(dev_mode.check(&signed, &dev("hh-1"), NOW).is_ok());
        // Device and expiry still hold in development mode.
        assert_eq!(
            dev_mode
                .check(&unsigned, &dev("hh-1"), NOW + 2)
                .expect_err("expired")
                .reason(),
            "expired"
        );
        assert!(dev_mode.check(&unsigned, &dev("hh-9"), NOW).is_err());
    }

    #[test]
    fn bad_keys_are_named_by_position() {
        for (keys, expect) in [
            (
                KeyList::One("not base64!".into()),
                "verify_key[0] is not base64",
            ),
            (
                KeyList::Many(vec![public(&key(1)), STANDARD.encode([1u8; 5])]),
                "verify_key[1] is 5 bytes",
            ),
        ] {
            let err = CommandVerifier::from_config(&CommandsConfig {
                verify_key: keys,
                allow_unsigned_commands: false,
            })
            .expect_err(expect);
            assert!(err.contains(expect), "{err}");
        }
    }

    /// A captured signed command replayed within its expiry is obeyed once;
    /// after its expiry the nonce is forgotten (the command is refused as
    /// expired anyway).
    #[test]
    fn a_replayed_command_is_refused_and_counted() {
        let collector = key(7);
        let v = verifier(KeyList::One(public(&collector)), false);
        let c = resend("hh-1", Some(NOW + 60_000));
        let wire = signed_by(&collector, &c);
        let mut guard = ReplayGuard::default();
        let first = v.check(&wire, &dev("hh-1"), NOW).expect("verifies");
        guard.admit(&first, NOW).expect("first time obeyed");
        let again = v.check(&wire, &dev("hh-1"), NOW + 1).expect("verifies");
        let err = guard.admit(&again, NOW + 1).expect_err("replay");
        assert_eq!(err.reason(), "replayed");
        let counters = CommandCounters::default();
        counters.refused(&err);
        assert_eq!(counters.snapshot().replayed, 1);
        assert_eq!(counters.snapshot().refused, 1);
        // Another command (another nonce) is fine.
        let other = Command {
            nonce: Some(8),
            ..c.clone()
        };
        guard.admit(&other, NOW + 2).expect("new nonce");
        // Past the expiry the nonce is forgotten.
        guard
            .admit(&again, NOW + 60_001)
            .expect("forgotten after expiry");
        // A signed command without a nonce is refused by the protocol.
        let bare = Command { nonce: None, ..c };
        let err = v
            .check(&signed_by(&collector, &bare), &dev("hh-1"), NOW)
            .expect_err("no nonce");
        assert_eq!(err.reason(), "no_nonce");
    }

    #[test]
    fn with_a_verify_key_only_signed_acks_are_acted_on() {
        let collector = key(7);
        let v = verifier(KeyList::One(public(&collector)), false);
        let ack = Ack {
            v: PROTOCOL_VERSION,
            device: dev("hh-1"),
            epoch: 1,
            stored_up_to: Some(9),
            also_stored: vec![],
            verdicts: vec![],
            signed: None,
        };
        let err = v.open_ack(ack.clone()).expect_err("unsigned");
        assert_eq!(err.reason(), "unsigned");
        let sealed = ack.seal(|m| collector.sign(m).to_bytes()).expect("seal");
        assert_eq!(v.open_ack(sealed.clone()).expect("verifies"), ack);
        let forged = ack.seal(|m| key(9).sign(m).to_bytes()).expect("seal");
        assert_eq!(
            v.open_ack(forged).expect_err("other key").reason(),
            "bad_signature"
        );
        // Without a key: the plain fields, as before.
        let open = verifier(KeyList::default(), false);
        assert_eq!(open.open_ack(ack.clone()).expect("plain"), ack);
        assert_eq!(open.open_ack(sealed).expect("plain"), ack);
        let counters = AckCounters::default();
        counters.refused(&err);
        assert_eq!(counters.snapshot().unsigned, 1);
    }

    #[test]
    fn with_a_verify_key_a_forged_or_unsigned_media_ack_is_refused() {
        use dockline_protocol::media::{MediaAck, MediaHash, MediaState};
        let collector = key(7);
        let v = verifier(KeyList::One(public(&collector)), false);
        let ack = MediaAck {
            v: PROTOCOL_VERSION,
            device: dev("hh-1"),
            hash: MediaHash::of(b"photo"),
            have: 5,
            at: Some(0),
            state: MediaState::Stored,
            signed: None,
        };
        let err = v.open_media_ack(ack.clone()).expect_err("unsigned");
        assert_eq!(err.reason(), "unsigned");
        let sealed = ack.seal(|m| collector.sign(m).to_bytes()).expect("seal");
        assert_eq!(v.open_media_ack(sealed.clone()).expect("verifies"), ack);
        let forged = ack.seal(|m| key(9).sign(m).to_bytes()).expect("seal");
        assert_eq!(
            v.open_media_ack(forged).expect_err("other key").reason(),
            "bad_signature"
        );
        // The plain fields beside a valid signature are not believed.
        let mut altered = sealed.clone();
        altered.have = 99;
        assert_eq!(v.open_media_ack(altered).expect("inner").have, 5);
        // A batch-ack signature is no media-ack signature (another context).
        let batch_sig = Ack {
            v: PROTOCOL_VERSION,
            device: dev("hh-1"),
            epoch: 1,
            stored_up_to: Some(1),
            also_stored: vec![],
            verdicts: vec![],
            signed: None,
        }
        .seal(|m| collector.sign(m).to_bytes())
        .expect("seal");
        let mut mixed = ack.clone();
        mixed.signed = batch_sig.signed;
        assert_eq!(
            v.open_media_ack(mixed).expect_err("context").reason(),
            "bad_signature"
        );
        let open = verifier(KeyList::default(), false);
        assert_eq!(open.open_media_ack(sealed).expect("plain"), ack);
    }
}
