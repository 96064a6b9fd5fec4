//! dockline without hardware: an embedded MQTT broker, a mock ERP with fault
//! injection, child-process plumbing, and the `demo` that runs the whole
//! journey (agents → broker → collector → ERP) with an outage in the middle.
//!
//! # Layout
//!
//! - [`devices`]: virtual scanners, scales and GNSS receivers on
//!   pseudo-terminals, speaking the real byte protocols.
//! - [`broker`]: rumqttd in-process, built in code, port 0 supported.
//! - [`mock_erp`]: the ERP's webhook endpoint: signature check, one effect
//!   per idempotency key, injected faults, stats.
//! - [`stack`]: the one system under test of the demo, chaos, fleet, bench
//!   and the end-to-end tests: broker, mock ERP, collector and agents as
//!   child processes with typed configs, killed on drop.
//! - [`scenario`]: the HTTP orders, and the device scenarios (a warehouse
//!   shift, a delivery route) loaded from TOML files and played on virtual
//!   devices.
//! - [`verdict`]: the invariant checker: accepted events against ERP effects
//!   (lost, duplicated, out of lane order), and each event's made-to-booked
//!   time.
//! - [`latency`]: those times as percentiles, and the clock both ends read.
//! - [`media`]: the signatures and photos of the demo's deliveries
//!   (generated PNGs and JPEGs) and their verdict (made, stored, attached,
//!   lost, duplicated).
//! - [`demo`]: the whole journey with an outage, progress lines and the report.
//! - [`forge`]: batches, bursts, floods and ack watching made by hand on
//!   the broker, for the burst figure and the ingest and forgery tests.
//! - [`fleet`]: hundreds of agents with virtual scanners against one
//!   collector; events per second, lost and duplicated.
//! - [`chaos`]: repeated fault trials (chaos proxy, process kills, broker and
//!   ERP faults) judged by [`verdict`], with a JSON report.
//!
//! `main.rs` only parses flags and calls these.

pub mod bench;
pub mod bench_acks;
pub mod bench_burst;
mod bench_decode;
mod bench_delivery;
mod bench_media;
pub mod broker;
pub mod chaos;
pub mod demo;
pub mod devices;
pub mod fleet;
pub mod forge;
pub mod latency;
pub mod media;
pub mod mock_erp;
pub mod scenario;
pub mod stack;
pub mod verdict;
