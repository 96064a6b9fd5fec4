//! Simulated parts for tests and the simulator (feature `sim`, off by default).
//!
//! Behavioural models of the chips the drivers talk to, implementing the
//! same embedded-hal traits as the real buses, so a driver and everything
//! built on it (the bridge loop, the agent's I2C source) can run without
//! hardware. They live here, next to the drivers they model, so the agent's
//! tests and the simulator share one model instead of each growing its own.
//! Like the rest of the crate they are `no_std` and allocation-free; a host
//! that needs to reach a model from two threads (a test changing the load
//! while a source thread reads it) wraps it in `Arc<Mutex<_>>` with a
//! forwarding `I2c` impl (see `agent/tests/loadcell.rs`).
//!
//! * [`SimNau7802`]: the NAU7802's register map on I2C.

mod nau7802;

pub use nau7802::SimNau7802;
