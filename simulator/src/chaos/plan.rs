//! The fault plan of one chaos trial, drawn from the trial's seed.
//!
//! # Rules
//!
//! - The same seed, duration and number of agents give the same plan.
//! - Faults are drawn by category first (agents↔broker link, collector↔ERP
//!   link, agent kill, collector kill, broker outage, ERP misbehaviour, each
//!   equally likely), then the kind and its strength within the category, so
//!   every trial mixes process, network and ERP faults.
//! - Every fault starts at least [`MARGIN`] after production starts and ends
//!   at least [`MARGIN`] before it stops, so the trial's end sees a healed
//!   system that must then become quiet.
//! - Two faults on one target never overlap (the proxy of one link holds one
//!   mode at a time; a process cannot be killed while it is down); faults on
//!   different targets overlap freely, which is where the interesting
//!   interleavings are.
//!
//! Pure: no I/O.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Distance kept between the faults and the start and end of production.
pub const MARGIN: Duration = Duration::from_secs(1);
/// Gap kept between two faults on one target.
const GAP: Duration = Duration::from_millis(500);
/// Placement attempts for one fault before it is left out.
const ATTEMPTS: usize = 20;

/// A TCP path the chaos proxy sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Link {
    /// Every agent's MQTT connection to the broker.
    AgentsBroker,
    /// The collector's HTTP connections to the ERP.
    CollectorErp,
}

impl Link {
    fn code(self) -> &'static str {
        match self {
            Self::AgentsBroker => "agents_broker",
            Self::CollectorErp => "collector_erp",
        }
    }
}

/// What the proxy does to a link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LinkFault {
    /// Close every open connection (FIN), once.
    Close,
    /// Reset every open connection (RST), once.
    Reset,
    /// Deliver every byte this much later, for the fault's hold.
    Delay {
        /// One-way delay in milliseconds.
        ms: u64,
    },
    /// Forward nothing and close nothing, for the fault's hold; connections
    /// that lost bytes stay silent afterwards.
    BlackHole,
    /// Reset open connections and refuse new ones, for the fault's hold.
    Down,
}

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// A chaos proxy misbehaves.
    Link {
        /// Which link.
        link: Link,
        /// How.
        fault: LinkFault,
    },
    /// SIGKILL an agent, restart it after the hold.
    KillAgent {
        /// Index among the trial's agents.
        agent: usize,
    },
    /// SIGKILL the collector, restart it after the hold.
    KillCollector,
    /// SIGKILL the broker, start a new one on the same address after the hold.
    BrokerOutage,
    /// The ERP answers this share of requests 503.
    ErpErrors {
        /// Share of requests.
        rate: f64,
    },
    /// The ERP answers this share of requests 429 with `Retry-After: 1`.
    ErpThrottle {
        /// Share of requests.
        rate: f64,
    },
    /// The ERP waits this long before each answer.
    ErpSlow {
        /// Milliseconds.
        ms: u64,
    },
    /// The ERP books, then drops the response, for this share of new bookings.
    ErpLoseAfterCommit {
        /// Share of new bookings.
        rate: f64,
    },
    /// The ERP's session expires after every `every` new bookings and
    /// answers 401 `session_expired` for `ms` each time.
    ErpSessionExpiry {
        /// New bookings per session.
        every: u64,
        /// How long each expiry lasts, in milliseconds.
        ms: u64,
    },
}

/// What a fault occupies: faults on one target never overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Target {
    Link(Link),
    Agent(usize),
    Collector,
    Broker,
    Erp,
}

impl Fault {
    fn target(&self) -> Target {
        match self {
            Self::Link { link, .. } => Target::Link(*link),
            Self::KillAgent { agent } => Target::Agent(*agent),
            Self::KillCollector => Target::Collector,
            Self::BrokerOutage => Target::Broker,
            Self::ErpErrors { .. }
            | Self::ErpThrottle { .. }
            | Self::ErpSlow { .. }
            | Self::ErpLoseAfterCommit { .. }
            | Self::ErpSessionExpiry { .. } => Target::Erp,
        }
    }

    /// A short name for reports: `agents_broker_black_hole`, `kill_agent`, …
    pub fn kind(&self) -> String {
        match self {
            Self::Link { link, fault } => {
                let what = match fault {
                    LinkFault::Close => "close",
                    LinkFault::Reset => "reset",
                    LinkFault::Delay { .. } => "delay",
                    LinkFault::BlackHole => "black_hole",
                    LinkFault::Down => "down",
                };
                format!("{}_{what}", link.code())
            }
            Self::KillAgent { .. } => "kill_agent".into(),
            Self::KillCollector => "kill_collector".into(),
            Self::BrokerOutage => "broker_outage".into(),
            Self::ErpErrors { .. } => "erp_503".into(),
            Self::ErpThrottle { .. } => "erp_429".into(),
            Self::ErpSlow { .. } => "erp_slow".into(),
            Self::ErpLoseAfterCommit { .. } => "erp_lost_response".into(),
            Self::ErpSessionExpiry { .. } => "erp_session_expired".into(),
        }
    }

    /// The fault's strength in words (`1200 ms`, `40%`), empty when it has none.
    pub fn strength(&self) -> String {
        let pct = |r: f64| format!("{:.0}%", r * 100.0);
        match self {
            Self::Link {
                fault: LinkFault::Delay { ms },
                ..
            }
            | Self::ErpSlow { ms } => format!("{ms} ms"),
            Self::ErpErrors { rate }
            | Self::ErpThrottle { rate }
            | Self::ErpLoseAfterCommit { rate } => pct(*rate),
            Self::ErpSessionExpiry { every, ms } => {
                format!("every {every} bookings for {ms} ms")
            }
            _ => String::new(),
        }
    }
}

/// A fault with its place in the trial.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Planned {
    /// When it starts, from the start of production.
    pub at: Duration,
    /// How long it lasts (zero for a one-shot close or reset).
    pub hold: Duration,
    /// What it is.
    pub fault: Fault,
}

impl Planned {
    /// When it ends.
    pub fn end(&self) -> Duration {
        self.at + self.hold
    }
}

fn secs(rng: &mut StdRng, lo: f64, hi: f64) -> Duration {
    Duration::from_secs_f64(rng.random_range(lo..hi))
}

fn rate(rng: &mut StdRng, lo: f64, hi: f64) -> f64 {
    // Whole percents keep the report readable.
    (rng.random_range(lo..hi) * 100.0).round() / 100.0
}

/// Draws one fault and how long it holds.
fn draw(rng: &mut StdRng, agents: usize) -> (Fault, Duration) {
    let link = |rng: &mut StdRng, link: Link| -> (Fault, Duration) {
        let (fault, hold) = match rng.random_range(0..5) {
            0 => (LinkFault::Close, Duration::ZERO),
            1 => (LinkFault::Reset, Duration::ZERO),
            2 => (
                LinkFault::Delay {
                    ms: rng.random_range(100..=2500),
                },
                secs(rng, 2.0, 6.0),
            ),
            3 => (LinkFault::BlackHole, secs(rng, 2.0, 6.0)),
            _ => (LinkFault::Down, secs(rng, 1.0, 4.0)),
        };
        (Fault::Link { link, fault }, hold)
    };
    match rng.random_range(0..6) {
        0 => link(rng, Link::AgentsBroker),
        1 => link(rng, Link::CollectorErp),
        2 => (
            Fault::KillAgent {
                agent: rng.random_range(0..agents.max(1)),
            },
            secs(rng, 0.2, 3.0),
        ),
        3 => (Fault::KillCollector, secs(rng, 0.2, 3.0)),
        4 => (Fault::BrokerOutage, secs(rng, 1.0, 4.0)),
        _ => {
            let hold = secs(rng, 2.0, 6.0);
            let fault = match rng.random_range(0..5) {
                0 => Fault::ErpErrors {
                    rate: rate(rng, 0.2, 0.9),
                },
                1 => Fault::ErpThrottle {
                    rate: rate(rng, 0.2, 0.7),
                },
                2 => Fault::ErpSlow {
                    ms: rng.random_range(200..=4000),
                },
                3 => Fault::ErpSessionExpiry {
                    every: rng.random_range(10..=80),
                    ms: rng.random_range(300..=2000),
                },
                _ => Fault::ErpLoseAfterCommit {
                    rate: rate(rng, 0.2, 0.8),
                },
            };
            (fault, hold)
        }
    }
}

/// The faults of one trial of `duration` with `agents` agents, by start time.
/// Durations under three margins leave no room and give no faults.
pub fn plan(seed: u64, duration: Duration, agents: usize) -> Vec<Planned> {
    // Another stream than the scenario's, which uses the seed as it is.
    let mut rng = StdRng::seed_from_u64(seed ^ 0xC4A0_5EED_0F0F_1234);
    let room = duration.saturating_sub(MARGIN * 2);
    if room < MARGIN {
        return Vec::new();
    }
    // About one fault every three seconds of production.
    let base = (duration.as_secs() / 3).clamp(2, 12) as usize;
    let count = rng.random_range(base..=base + 2);
    let mut planned: Vec<Planned> = Vec::new();
    for _ in 0..count {
        let (fault, hold) = draw(&mut rng, agents);
        let hold = hold.min(room);
        let latest = MARGIN + room - hold;
        for _ in 0..ATTEMPTS {
            let at = Duration::from_secs_f64(
                rng.random_range(MARGIN.as_secs_f64()..=latest.as_secs_f64()),
            );
            let candidate = Planned { at, hold, fault };
            let clash = planned.iter().any(|p| {
                p.fault.target() == fault.target()
                    && candidate.at < p.end() + GAP
                    && p.at < candidate.end() + GAP
            });
            if !clash {
                planned.push(candidate);
                break;
            }
        }
    }
    planned.sort_by_key(|p| p.at);
    planned
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn same_seed_same_plan() {
        let d = Duration::from_secs(20);
        assert_eq!(plan(42, d, 3), plan(42, d, 3));
        assert_ne!(plan(42, d, 3), plan(43, d, 3));
    }

    #[test]
    fn faults_stay_inside_the_margins_and_never_overlap_on_a_target() {
        for seed in 0..500 {
            let d = Duration::from_secs(20);
            let p = plan(seed, d, 3);
            assert!(p.len() >= 2, "seed {seed}: {p:?}");
            assert!(p.windows(2).all(|w| w[0].at <= w[1].at));
            for (i, a) in p.iter().enumerate() {
                assert!(
                    a.at >= MARGIN && a.end() <= d - MARGIN,
                    "seed {seed}: {a:?}"
                );
                if let Fault::KillAgent { agent } = a.fault {
                    assert!(agent < 3);
                }
                for b in &p[i + 1..] {
                    if a.fault.target() == b.fault.target() {
                        assert!(a.end() + GAP <= b.at, "seed {seed}: {a:?} and {b:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn many_seeds_cover_every_kind_of_fault() {
        let kinds: HashSet<String> = (0..200)
            .flat_map(|seed| plan(seed, Duration::from_secs(20), 3))
            .map(|p| p.fault.kind())
            .collect();
        assert_eq!(kinds.len(), 2 * 5 + 3 + 5, "{kinds:?}");
    }

    #[test]
    fn too_short_a_trial_has_no_faults() {
        assert!(plan(1, Duration::from_secs(2), 3).is_empty());
    }
}
