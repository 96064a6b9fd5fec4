//! Scenarios: what happens on the floor and on the road, deterministic from
//! a seed.
//!
//! - [`orders`]: the original HTTP scenario, each order's events posted to
//!   the handhelds' `POST /v1/events` (used by the demo and the chaos trials).
//! - Device scenarios, loaded from TOML files (`simulator/scenarios/*.toml`):
//!   - [`shift`] (`kind = "shift"`): a warehouse shift. Pick lists go to a
//!     gateway's `POST /v1/tasks`; operators scan and weigh at pick
//!     stations, a pack station labels and weighs each tote, a dock door
//!     loads the packages. Mistakes (wrong item, short pick), misreads and
//!     scale overloads happen at configured rates.
//!   - [`route`] (`kind = "route"`): a delivery route. A truck's GNSS
//!     receiver leaves the depot, stops inside each stop's geofence, loses its
//!     fix in a dead zone, and the driver posts a proof of delivery at every
//!     stop through the agent's API.
//!
//! # From a file to bytes
//!
//! A device scenario becomes a [`Timeline`]: the virtual devices to create,
//! the `[[devices]]` and `[[stations]]` the agent needs to read them, the
//! [`Chunk`]s to play (device bytes, pick lists and events to post, each at
//! its time), and the business events the bytes must produce ([`Expected`]),
//! which the verdict matches against the ERP's books, each with the chunk
//! whose bytes make it ([`trigger`], so the demo can time it). Generating it
//! is pure; [`player`] opens the pseudo-terminals and plays it.
//!
//! The same seed and the same time budget give the same timeline, byte for
//! byte. A budget only cuts whole orders or stretches time (a route is
//! compressed to fit, its receiver still reporting once per simulated
//! second): it never cuts a business step in half.

pub mod orders;
pub mod player;
pub mod route;
pub mod shift;
pub mod trigger;

use std::path::Path;

use dockline_agent::config::DeviceConfig;
use dockline_agent::devices::{DeviceKind, Protocol};
use dockline_agent::stations::config::StationConfig;
use serde::Deserialize;
use serde_json::Value;

pub use crate::verdict::{Expected, Signature};
pub use orders::{Role, Scenario, Step};

/// A scenario file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid scenario.
    #[error("scenario {path} is not valid: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The scenario cannot be played as written.
    #[error("scenario {name}: {message}")]
    Invalid {
        /// The scenario's name.
        name: String,
        /// What is wrong and what to change.
        message: String,
    },
}

/// One scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ScenarioFile {
    /// A warehouse shift.
    Shift(shift::ShiftScenario),
    /// A delivery route.
    Route(route::RouteScenario),
}

impl ScenarioFile {
    /// Reads and parses a scenario file.
    pub fn load(path: &Path) -> Result<ScenarioFile, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses scenario text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<ScenarioFile, ScenarioError> {
        toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: origin.into(),
            message: e.to_string(),
        })
    }

    /// The scenario's name.
    pub fn name(&self) -> &str {
        match self {
            ScenarioFile::Shift(s) => &s.name,
            ScenarioFile::Route(r) => &r.name,
        }
    }

    /// The agent (device id) whose devices and API the scenario uses.
    pub fn agent(&self) -> &str {
        match self {
            ScenarioFile::Shift(s) => &s.agent,
            ScenarioFile::Route(r) => &r.agent,
        }
    }

    /// The timeline for a run of at most `budget_ms` (scenario clock = wall
    /// clock), with `seed` overriding the file's when given.
    pub fn timeline(&self, budget_ms: u64, seed: Option<u64>) -> Result<Timeline, ScenarioError> {
        let mut t = match self {
            ScenarioFile::Shift(s) => s.timeline(budget_ms, seed),
            ScenarioFile::Route(r) => r.timeline(budget_ms, seed),
        }?;
        trigger::mark(&mut t)?;
        Ok(t)
    }
}

/// The checked-in scenarios, relative to the simulator crate.
pub const DEFAULT_SCENARIOS: [&str; 2] = [
    "scenarios/warehouse-shift.toml",
    "scenarios/delivery-route.toml",
];

/// The checked-in scenarios: found next to the crate when run from the
/// source tree, else the copies built into the binary.
pub fn default_scenarios() -> Result<Vec<ScenarioFile>, ScenarioError> {
    const BUILT_IN: [(&str, &str); 2] = [
        (
            "scenarios/warehouse-shift.toml",
            include_str!("../../scenarios/warehouse-shift.toml"),
        ),
        (
            "scenarios/delivery-route.toml",
            include_str!("../../scenarios/delivery-route.toml"),
        ),
    ];
    BUILT_IN
        .iter()
        .map(|(name, text)| ScenarioFile::parse(text, name))
        .collect()
}

/// A virtual device a timeline plays.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSpec {
    /// Its name in the agent's `[[devices]]`.
    pub name: String,
    /// Scanner, scale or GNSS receiver.
    pub kind: DeviceKind,
    /// The agent's protocol (scan, mtsics, toledo, nmea).
    pub protocol: Protocol,
    /// Toledo: the indicator appends a checksum byte.
    pub toledo_checksum: bool,
}

/// What to do at one moment.
#[derive(Debug, Clone, PartialEq)]
pub enum Act {
    /// Write bytes to a device's port.
    Bytes {
        /// The device's name.
        device: String,
        /// The bytes, as the device sends them.
        bytes: Vec<u8>,
    },
    /// Post a pick list to the agent's `POST /v1/tasks`.
    PostTask(Value),
    /// Post an event to the agent's `POST /v1/events`; its 201 makes it a
    /// generated event of this kind.
    PostEvent {
        /// The event kind (`delivered`).
        kind: String,
        /// The request body.
        body: Value,
        /// Media to post to `POST /v1/media` first, each then referenced by
        /// its hash in the body ([`crate::media::reference_in`]); a player
        /// told to leave media out posts the body as it is.
        media: Vec<crate::media::Medium>,
    },
}

/// An act at a time, in milliseconds from the timeline's start.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// When.
    pub at_ms: u64,
    /// What.
    pub act: Act,
}

/// A scenario ready to play; see the module docs.
// Not PartialEq: the agent's StationConfig is not.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// The scenario's name (the report's source label).
    pub source: String,
    /// The agent that reads the devices.
    pub agent: String,
    /// The virtual devices.
    pub devices: Vec<DeviceSpec>,
    /// The agent's `[[stations]]`.
    pub stations: Vec<StationConfig>,
    /// What to play, in time order.
    pub chunks: Vec<Chunk>,
    /// The business events the device bytes must produce at the ERP.
    pub expected: Vec<Expected>,
    /// Pick lists or PODs posted (the HTTP side of the scenario).
    pub posts: usize,
    /// When the last chunk plays, ms.
    pub end_ms: u64,
    /// One line on what the timeline holds, for the terminal.
    pub description: String,
}

impl Timeline {
    /// The agent's `[[devices]]` and `[[stations]]`, the devices' paths
    /// being `dev_dir/<name>`.
    pub fn agent_serial(
        &self,
        dev_dir: &Path,
    ) -> Result<(Vec<DeviceConfig>, Vec<StationConfig>), ScenarioError> {
        let devices = self
            .devices
            .iter()
            .map(|d| {
                let mut c = crate::stack::config::serial_device(
                    &d.name,
                    d.kind,
                    d.protocol,
                    &dev_dir.join(&d.name),
                )
                .map_err(|e| self.invalid(e.to_string()))?;
                c.reconnect_max_ms = 500;
                c.toledo_checksum = d.toledo_checksum;
                Ok(c)
            })
            .collect::<Result<_, ScenarioError>>()?;
        Ok((devices, self.stations.clone()))
    }

    /// An error about this timeline.
    pub(crate) fn invalid(&self, message: String) -> ScenarioError {
        ScenarioError::Invalid {
            name: self.source.clone(),
            message,
        }
    }

    /// Sorts chunks by time, keeping the order of those at the same time.
    pub(crate) fn finish(&mut self) {
        self.chunks.sort_by_key(|c| c.at_ms);
        self.end_ms = self.chunks.last().map_or(0, |c| c.at_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays a timeline into the agent's own stream decoders and station
    /// rules; returns the business events made. The only frames rejected
    /// must be misreads (check digit) and overloads.
    fn through_the_agent(t: &Timeline) -> Vec<Signature> {
        let replay = trigger::replay(t).expect("the agent takes the timeline");
        for reason in &replay.rejected {
            assert!(
                reason.contains("check digit") || reason.contains("overload"),
                "{reason}"
            );
        }
        replay.events.into_iter().map(|(_, s)| s).collect()
    }

    fn sorted(mut v: Vec<Signature>) -> Vec<Signature> {
        v.sort();
        v
    }

    #[test]
    fn the_shift_makes_exactly_its_expected_events() {
        let all = default_scenarios().expect("scenarios");
        for seed in [1, 7, 42] {
            let t = all[0].timeline(90_000, Some(seed)).expect("timeline");
            let want = sorted(t.expected.iter().map(|x| x.what.clone()).collect());
            let kinds: std::collections::BTreeSet<&str> =
                want.iter().map(|s| s.kind.as_str()).collect();
            assert!(
                kinds.len() >= 4,
                "picks, exceptions, packs and loads: {kinds:?}"
            );
            assert_eq!(
                sorted(through_the_agent(&t)),
                want,
                "seed {seed}: {}",
                t.description
            );
            assert!(t.end_ms <= 90_000);
        }
    }

    #[test]
    fn the_route_makes_exactly_its_expected_events() {
        let all = default_scenarios().expect("scenarios");
        let t = all[1].timeline(40_000, None).expect("timeline");
        let want = sorted(t.expected.iter().map(|x| x.what.clone()).collect());
        assert_eq!(want.len(), 8, "depot out, 3 x (arrive, depart), depot in");
        assert_eq!(sorted(through_the_agent(&t)), want, "{}", t.description);
        assert_eq!(t.posts, 3, "a POD per stop");
    }

    #[test]
    fn every_expected_event_knows_the_bytes_that_make_it() {
        let all = default_scenarios().expect("scenarios");
        for s in &all {
            let t = s.timeline(60_000, Some(3)).expect("timeline");
            assert!(!t.expected.is_empty());
            for x in &t.expected {
                let chunk = x
                    .trigger
                    .and_then(|i| t.chunks.get(i))
                    .unwrap_or_else(|| panic!("{}: no trigger for {:?}", t.source, x.what));
                assert!(matches!(chunk.act, Act::Bytes { .. }), "{chunk:?}");
            }
        }
    }

    #[test]
    fn same_seed_same_bytes() {
        let all = default_scenarios().expect("scenarios");
        for s in &all {
            // Every field, floats and the agent's stations included.
            let play = || format!("{:?}", s.timeline(30_000, Some(5)).ok());
            assert_eq!(play(), play());
        }
    }

    #[test]
    fn the_checked_in_scenarios_parse() {
        let all = default_scenarios().expect("checked-in scenarios");
        let names: Vec<&str> = all.iter().map(ScenarioFile::name).collect();
        assert_eq!(names, ["warehouse-shift", "delivery-route"]);
        for (file, path) in all.iter().zip(DEFAULT_SCENARIOS) {
            let on_disk = ScenarioFile::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
                .expect("load");
            assert_eq!(on_disk.name(), file.name());
        }
    }

    #[test]
    fn agent_serial_lists_devices_and_stations_the_agent_accepts() {
        let all = default_scenarios().expect("scenarios");
        for s in &all {
            let t = s.timeline(60_000, None).expect("timeline");
            let mqtt =
                crate::stack::MqttAddr::from(std::net::SocketAddr::from(([127, 0, 0, 1], 1)));
            let mut config = crate::stack::config::agent("s", &t.agent, Path::new("/tmp/x"), &mqtt)
                .expect("agent config");
            (config.devices, config.stations) =
                t.agent_serial(Path::new("/tmp/dev")).expect("devices");
            config.check().expect("the agent takes it");
            assert_eq!(config.devices.len(), t.devices.len());
            assert!(!config.stations.is_empty());
        }
    }
}
