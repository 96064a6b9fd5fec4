//! The wire contract between dockline agents and collectors.
//!
//! # Layout
//!
//! - [`ids`]: validated device, site and event identifiers.
//! - [`reading`]: what a device measured (scan, weight, position).
//! - [`event`]: business events (picked … delivered, exception) and their
//!   correlation references.
//! - [`envelope`]: one event or reading with its device, sequence, id, time and priority.
//! - [`batch`]: what an agent publishes on its `events` topic.
//! - [`ack`]: what the collector answers on the device's `ack` topic.
//! - [`status`]: birth, death and heartbeat messages on the `status` topic.
//! - [`command`]: what the collector asks of a device on its `cmd` topic
//!   (resend a range), with its expiry and Ed25519 signature.
//! - [`media`]: proof-of-delivery media in chunks, the collector's media
//!   acks, and the reassembly state machine (the whole contract is in its
//!   module doc).
//! - [`topic`]: the topic grammar `dockline/v1/{site}/{device}/{channel}`.
//! - [`codec`]: CBOR encoding and size-capped, validating decoding.
//!
//! The crate is `no_std` + `alloc` (serde, ciborium and thiserror only): it
//! knows nothing of tokio, SQLite, sockets, config files or TLS, so the
//! firmware of a peripheral bridge can speak it too. What the binaries share
//! as Linux programs (config loader, secrets, TLS, logging) is in
//! `dockline-host`.
//!
//! # Versioning rule
//!
//! Every message carries the protocol version `v` ([`PROTOCOL_VERSION`]), and the
//! topics carry the same major version (`dockline/v1/…`). Messages are CBOR maps
//! keyed by short field names, and receivers ignore keys they do not know.
//!
//! **May change without a version bump** (old and new peers keep talking):
//! - adding an *optional* field (`Option<…>` or `#[serde(default)]`), which old
//!   receivers ignore and new receivers default when it is absent;
//! - adding a new message *channel* that old peers never subscribe to.
//!
//! **Needs a version bump** (receivers reject `v` they do not support):
//! - removing, renaming or re-typing a field, or changing its unit or meaning;
//! - adding a variant to an enum (an old receiver could not decode the message);
//! - changing the topic grammar or the meaning of sequence numbers and acks.
//!
//! The golden fixtures in `protocol/tests/fixtures/` pin the exact bytes: a
//! change to the wire format fails `tests/golden.rs`. If the change follows the
//! rule above, re-bless the fixtures (`DOCKLINE_BLESS=1 cargo test -p
//! dockline-protocol --test golden`) and say so in the commit message.
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod ack;
pub mod batch;
pub mod codec;
pub mod command;
pub mod envelope;
pub mod event;
pub mod ids;
pub mod media;
pub mod reading;
pub mod status;
pub mod topic;
mod validate;

pub use ack::{Ack, AckRefusal, Outcome, Verdict};
pub use batch::Batch;
pub use codec::{DecodeError, EncodeError, WireMessage, decode, encode};
pub use command::{Command, CommandRefusal, Resend, Signed};
pub use envelope::{Envelope, Payload, Priority, TimeSource};
pub use event::{BusinessEvent, EventDetail, ExceptionKind, ProofOfDelivery, References};
pub use ids::{DeviceId, EventId, IdError, SiteId};
pub use media::{MediaAck, MediaChunk, MediaHash, MediaState, MediaType, Reassembly};
pub use reading::{Fix, FixMode, Reading, Scan, Weight, WeightReading, WeightUnit};
pub use status::{
    ClassQueue, DeviceHealth, DropCount, MediaHealth, QueueHealth, Status, StatusKind,
    VerdictsWanted,
};
pub use topic::{Channel, MediaChannel, Topic, TopicError};
pub use validate::ValidationError;

/// The protocol version this crate speaks, carried as `v` in every message.
pub const PROTOCOL_VERSION: u16 = 1;
