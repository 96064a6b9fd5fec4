//! `dockline-sim chaos`: repeated fault trials over the real agent and
//! collector binaries, each judged by the invariant checker.
//!
//! # What a trial is
//!
//! The demo's journey (broker, collector and agents as child processes, the
//! scenario's orders posted to the agents' HTTP API, the mock ERP booking)
//! with a random mix of faults drawn from the trial's seed ([`plan`]): a
//! [`proxy::ChaosProxy`] on the agents↔broker path and one on the
//! collector↔ERP path that close, reset, delay, black-hole or refuse
//! connections; SIGKILL and restart of an agent or of the collector; broker
//! outages; and ERP 503s, 429s with `Retry-After`, slow answers, responses
//! lost after commit and expired sessions (401 `session_expired` for a while
//! after every few bookings, which halts the collector's endpoint until a
//! recheck is accepted). See [`trial`] for the life of one trial.
//!
//! # Verdict
//!
//! A trial passes when something was made and, per
//! [`verdict`](crate::verdict), nothing was lost and nothing duplicated,
//! and every signature and photo the drivers took (one proof of delivery in
//! [`ChaosOptions::media_every`]) was attached at the ERP exactly once
//! ([`crate::media::tally`]). The media keep uploads running all trial long,
//! so agent kills, collector kills and cut links land mid-upload; each trial
//! reports the media bytes re-sent and the faults that broke uploads. The
//! run passes when every trial does; `main.rs` exits non-zero otherwise.
//!
//! Events of one device booked out of sequence order (a lane-order
//! violation) are counted, flagged on the terminal and keep the trial's work
//! directory as evidence; they fail the trial only with
//! [`ChaosOptions::strict_order`], because the collector is known to deliver
//! past a sequence gap (see the README's chaos section) and the run's exit
//! code is kept for loss and duplication until that is fixed.
//! Business-order inversions across devices are reported only (the
//! collector's lanes are per device, see [`verdict`](crate::verdict)).
//!
//! # Seeds
//!
//! Trial `i` (from 0) runs with seed `seed + i`; `--trials 1 --seed <that>`
//! plays the same faults and orders again. Process timing is not
//! reproducible, so a failure may need a few runs to show again; the work
//! directory of a failed trial (configs, databases, logs) is kept and named
//! in the report.

pub mod plan;
pub mod proxy;
mod trial;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::media::tally::MediaTally;
use crate::mock_erp::ErpError;
use crate::stack::StackError;

/// What the chaos run does.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// Number of trials.
    pub trials: usize,
    /// Seed of the first trial; trial `i` uses `seed + i`.
    pub seed: u64,
    /// How long each trial produces events (faults happen within it).
    pub duration: Duration,
    /// Agents per trial (handhelds); the last is the driver's.
    pub agents: usize,
    /// New orders per second (about nine events each).
    pub orders_per_sec: f64,
    /// Longest wait for quiescence after production stops.
    pub drain_timeout: Duration,
    /// Fail a trial also when a device's events were booked out of sequence
    /// order.
    pub strict_order: bool,
    /// Every how many proofs of delivery carry a signature and a photo
    /// (0: none), so agent kills, collector kills and cut links land in
    /// the middle of uploads.
    pub media_every: u64,
    /// The `dockline-sim` executable that runs the children.
    pub exe: PathBuf,
}

/// A trial could not be carried out (as opposed to finding losses).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// A part of the system under test failed to start or restart.
    #[error(transparent)]
    Stack(#[from] StackError),
    /// The mock ERP took bad knobs.
    #[error(transparent)]
    Erp(#[from] ErpError),
    /// A chaos proxy could not bind.
    #[error("cannot start a chaos proxy on 127.0.0.1: {source}")]
    Proxy {
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// A setting cannot work.
    #[error("{0}")]
    Options(String),
}

/// One fault as played, for the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultRecord {
    /// Seconds after production started.
    pub at_secs: f64,
    /// Seconds it lasted (0 for a one-shot close or reset).
    pub hold_secs: f64,
    /// What (`agents_broker_black_hole`, `kill_agent`, `erp_429`, …).
    pub kind: String,
    /// The device, for an agent kill.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// Its strength (`1200 ms`, `40%`), when it has one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub strength: String,
}

/// The result of one trial.
#[derive(Debug, Clone, Serialize)]
pub struct TrialReport {
    /// 1-based.
    pub trial: usize,
    /// Its seed (`--trials 1 --seed` this to play it again).
    pub seed: u64,
    /// Nothing lost or duplicated (nor, with `strict_order`, out of lane
    /// order), the trial ran, and something was made.
    pub passed: bool,
    /// Why the trial could not be carried out, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Events the agents accepted (201).
    pub events_generated: u64,
    /// Accepted events with an effect at the ERP.
    pub booked: u64,
    /// Accepted events without one.
    pub lost: u64,
    /// Effects beyond the first for one event.
    pub duplicated: u64,
    /// Effects booked after a later sequence of the same device.
    pub out_of_lane_order: u64,
    /// Effects booked after a later business step of the same order
    /// (across devices; reported, not failed).
    pub order_inversions: u64,
    /// Effects for no accepted event (posts whose answer was lost).
    pub unexpected_effects: u64,
    /// Faults of the plan that were played.
    pub faults_injected: u64,
    /// The plan.
    pub faults: Vec<FaultRecord>,
    /// 503s, 429s, expired-session 401s and dropped responses the ERP
    /// actually served.
    pub erp_faults_injected: u64,
    /// Requests the ERP answered as replays of a booked key.
    pub erp_replays: u64,
    /// Connections the chaos proxies accepted.
    pub proxy_connections: u64,
    /// Connections they closed, reset or refused.
    pub proxy_connections_cut: u64,
    /// Posts made while the agent was down (certainly not stored).
    pub posts_refused: u64,
    /// Posts without an answer (maybe stored).
    pub post_errors: u64,
    /// Envelopes the collector's inbox dropped as already stored.
    pub collector_duplicates_dropped: u64,
    /// Open dead letters at the end.
    pub collector_dead_letters: u64,
    /// For lost events: their state on the agent, counted.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub lost_where: BTreeMap<String, u64>,
    /// Signatures and photos: made, stored, attached, lost, duplicated.
    pub media: MediaTally,
    /// Media bytes the agents published on the media topic.
    pub media_sent_bytes: u64,
    /// Of those, bytes sent again after a cut, a kill or a timeout.
    pub media_resent_bytes: u64,
    /// Faults of the plan that break uploads (agents↔broker link faults,
    /// agent and collector kills, broker outages).
    pub media_cuts: u64,
    /// Of those, the ones that struck while media were on their way (held
    /// by an agent, not yet stored at the collector).
    pub media_cuts_mid_upload: u64,
    /// Media requests the ERP answered as replays of an attachment.
    pub erp_media_replays: u64,
    /// Whether everything was booked and nothing queued or pending before
    /// the drain timeout.
    pub quiescent: bool,
    /// Seconds from the end of production to quiescence (or the timeout).
    pub drain_secs: f64,
    /// Wall time of the trial.
    pub duration_secs: f64,
    /// Configs, databases and logs, kept when the trial failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work_dir: Option<String>,
}

impl TrialReport {
    fn failed_to_run(trial: usize, seed: u64, error: String, work_dir: String) -> Self {
        Self {
            trial,
            seed,
            passed: false,
            error: Some(error),
            events_generated: 0,
            booked: 0,
            lost: 0,
            duplicated: 0,
            out_of_lane_order: 0,
            order_inversions: 0,
            unexpected_effects: 0,
            faults_injected: 0,
            faults: Vec::new(),
            erp_faults_injected: 0,
            erp_replays: 0,
            proxy_connections: 0,
            proxy_connections_cut: 0,
            posts_refused: 0,
            post_errors: 0,
            collector_duplicates_dropped: 0,
            collector_dead_letters: 0,
            lost_where: BTreeMap::new(),
            media: MediaTally::default(),
            media_sent_bytes: 0,
            media_resent_bytes: 0,
            media_cuts: 0,
            media_cuts_mid_upload: 0,
            erp_media_replays: 0,
            quiescent: false,
            drain_secs: 0.0,
            duration_secs: 0.0,
            work_dir: Some(work_dir),
        }
    }
}

/// Sums over the trials.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Trials run.
    pub trials: u64,
    /// Trials that failed.
    pub failed: u64,
    /// Trials with events booked out of lane order.
    pub trials_out_of_lane_order: u64,
    /// See [`TrialReport`].
    pub events_generated: u64,
    /// See [`TrialReport`].
    pub booked: u64,
    /// See [`TrialReport`].
    pub lost: u64,
    /// See [`TrialReport`].
    pub duplicated: u64,
    /// See [`TrialReport`].
    pub out_of_lane_order: u64,
    /// See [`TrialReport`].
    pub order_inversions: u64,
    /// See [`TrialReport`].
    pub faults_injected: u64,
    /// Media made.
    pub media_made: u64,
    /// Media attached at the ERP.
    pub media_attached: u64,
    /// Media lost.
    pub media_lost: u64,
    /// Media attached more than once.
    pub media_duplicated: u64,
    /// See [`TrialReport`].
    pub media_resent_bytes: u64,
    /// See [`TrialReport`].
    pub media_cuts: u64,
    /// See [`TrialReport`].
    pub media_cuts_mid_upload: u64,
    /// Faults played, by kind.
    pub faults_by_kind: BTreeMap<String, u64>,
}

/// The whole run, written as JSON with `--report`.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    /// Every trial passed.
    pub passed: bool,
    /// The first trial's seed.
    pub seed: u64,
    /// Seconds of production per trial.
    pub duration_per_trial_secs: f64,
    /// Agents per trial.
    pub agents: usize,
    /// Sums.
    pub totals: Totals,
    /// Each trial.
    pub trials: Vec<TrialReport>,
    /// Wall time of the run.
    pub duration_secs: f64,
}

/// Runs the trials one after another, printing a line as each ends.
pub async fn run(opts: &ChaosOptions) -> Result<ChaosReport, ChaosError> {
    if !(opts.orders_per_sec > 0.0 && opts.orders_per_sec.is_finite()) {
        return Err(ChaosError::Options(format!(
            "orders per second is {}; give a positive number",
            opts.orders_per_sec
        )));
    }
    if opts.agents == 0 || opts.agents > 20 {
        return Err(ChaosError::Options(format!(
            "{} agents; give 1 to 20",
            opts.agents
        )));
    }
    if opts.duration < Duration::from_secs(5) {
        return Err(ChaosError::Options(format!(
            "{} s per trial leaves no room for faults; give at least 5",
            opts.duration.as_secs_f64()
        )));
    }
    let started = Instant::now();
    println!(
        "chaos: {} trials of {} s, {} agents, seeds {}..={}",
        opts.trials,
        opts.duration.as_secs_f64(),
        opts.agents,
        opts.seed,
        opts.seed.wrapping_add(opts.trials.saturating_sub(1) as u64)
    );
    let mut trials = Vec::new();
    for i in 0..opts.trials {
        let seed = opts.seed.wrapping_add(i as u64);
        let number = i + 1;
        let kinds: Vec<String> = plan::plan(seed, opts.duration, opts.agents)
            .iter()
            .map(|p| p.fault.kind())
            .collect();
        println!(
            "trial {number}/{} seed {seed}: {}",
            opts.trials,
            kinds.join(", ")
        );
        // Kept on failure so the children's logs can be read; removed on success.
        let dir = crate::stack::kept_work_dir(&format!("dockline-chaos-{seed}-"))?;
        let report = match trial::run(opts, number, seed, &dir).await {
            Ok(mut r) => {
                if r.passed && r.out_of_lane_order == 0 {
                    let _ = std::fs::remove_dir_all(&dir);
                } else {
                    r.work_dir = Some(dir.display().to_string());
                }
                r
            }
            Err(e) => {
                TrialReport::failed_to_run(number, seed, e.to_string(), dir.display().to_string())
            }
        };
        println!("  {}", report.line());
        trials.push(report);
    }
    let totals = totals(&trials);
    Ok(ChaosReport {
        passed: totals.failed == 0 && totals.trials > 0,
        seed: opts.seed,
        duration_per_trial_secs: opts.duration.as_secs_f64(),
        agents: opts.agents,
        totals,
        trials,
        duration_secs: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    })
}

fn totals(trials: &[TrialReport]) -> Totals {
    let mut t = Totals::default();
    for r in trials {
        t.trials += 1;
        t.failed += u64::from(!r.passed);
        t.trials_out_of_lane_order += u64::from(r.out_of_lane_order > 0);
        t.events_generated += r.events_generated;
        t.booked += r.booked;
        t.lost += r.lost;
        t.duplicated += r.duplicated;
        t.out_of_lane_order += r.out_of_lane_order;
        t.order_inversions += r.order_inversions;
        t.faults_injected += r.faults_injected;
        t.media_made += r.media.made;
        t.media_attached += r.media.attached;
        t.media_lost += r.media.lost;
        t.media_duplicated += r.media.duplicated;
        t.media_resent_bytes += r.media_resent_bytes;
        t.media_cuts += r.media_cuts;
        t.media_cuts_mid_upload += r.media_cuts_mid_upload;
        for f in r.faults.iter().take(r.faults_injected as usize) {
            *t.faults_by_kind.entry(f.kind.clone()).or_default() += 1;
        }
    }
    t
}

impl TrialReport {
    /// `PASS`, `PASS*` (passed, but events booked out of lane order),
    /// `FAIL` or `ERROR`.
    fn result(&self) -> &'static str {
        match (&self.error, self.passed, self.out_of_lane_order > 0) {
            (Some(_), _, _) => "ERROR",
            (None, false, _) => "FAIL",
            (None, true, true) => "PASS*",
            (None, true, false) => "PASS",
        }
    }

    /// One line for the terminal as the trial ends.
    fn line(&self) -> String {
        match &self.error {
            Some(e) => format!(
                "ERROR: {e} (work dir {})",
                self.work_dir.as_deref().unwrap_or("-")
            ),
            None => {
                let mut s = format!(
                    "made {}, booked {}, lost {}, duplicated {}, out of lane order {}, {} faults, drained in {:.1} s{} → {}",
                    self.events_generated,
                    self.booked,
                    self.lost,
                    self.duplicated,
                    self.out_of_lane_order,
                    self.faults_injected,
                    self.drain_secs,
                    if self.quiescent { "" } else { " (NOT quiet)" },
                    self.result()
                );
                if self.media.made > 0 {
                    s.push_str(&format!(
                        "; media made {}, attached {}, lost {}, duplicated {}, {} bytes re-sent over {} cuts ({} mid-upload)",
                        self.media.made,
                        self.media.attached,
                        self.media.lost,
                        self.media.duplicated,
                        self.media_resent_bytes,
                        self.media_cuts,
                        self.media_cuts_mid_upload
                    ));
                }
                if !self.lost_where.is_empty() {
                    s.push_str(&format!(
                        "; lost events on their agents: {:?}",
                        self.lost_where
                    ));
                }
                if let Some(d) = &self.work_dir {
                    s.push_str(&format!("; logs in {d}"));
                }
                s
            }
        }
    }
}

impl ChaosReport {
    /// The closing table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        s.push_str(
            "\ntrial  seed                    made  booked  lost  dup  lane  inv  faults  drain s  result\n",
        );
        let row = |s: &mut String,
                   label: &str,
                   seed: &str,
                   r: (u64, u64, u64, u64, u64, u64, u64),
                   drain: &str,
                   result: &str| {
            s.push_str(&format!(
                "{label:<6} {seed:<20} {:>7} {:>7} {:>5} {:>4} {:>5} {:>4} {:>7} {drain:>8}  {result}\n",
                r.0, r.1, r.2, r.3, r.4, r.5, r.6
            ));
        };
        for t in &self.trials {
            let result = t.result();
            row(
                &mut s,
                &t.trial.to_string(),
                &t.seed.to_string(),
                (
                    t.events_generated,
                    t.booked,
                    t.lost,
                    t.duplicated,
                    t.out_of_lane_order,
                    t.order_inversions,
                    t.faults_injected,
                ),
                &format!("{:.1}", t.drain_secs),
                result,
            );
        }
        let t = &self.totals;
        row(
            &mut s,
            "total",
            "",
            (
                t.events_generated,
                t.booked,
                t.lost,
                t.duplicated,
                t.out_of_lane_order,
                t.order_inversions,
                t.faults_injected,
            ),
            "",
            if self.passed { "PASS" } else { "FAIL" },
        );
        s.push_str("(lane: booked out of device sequence order; inv: business-order inversions across devices, not a failure)\n");
        let kinds: Vec<String> = t
            .faults_by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        s.push_str(&format!("faults: {}\n", kinds.join(", ")));
        if t.media_made > 0 {
            s.push_str(&format!(
                "media: made {}, attached {}, lost {}, duplicated {}; {} bytes re-sent over {} upload-breaking faults, {} of them mid-upload ({:.0} per cut)\n",
                t.media_made,
                t.media_attached,
                t.media_lost,
                t.media_duplicated,
                t.media_resent_bytes,
                t.media_cuts,
                t.media_cuts_mid_upload,
                t.media_resent_bytes as f64 / t.media_cuts.max(1) as f64
            ));
        }
        if t.out_of_lane_order > 0 {
            s.push_str(&format!(
                "ORDER: {} events in {} trials booked out of device sequence order (PASS* rows; evidence kept, see the report's work_dir)\n",
                t.out_of_lane_order, t.trials_out_of_lane_order
            ));
        }
        if self.passed {
            s.push_str(&format!(
                "PASS: every accepted event booked exactly once ({:.0} s)\n",
                self.duration_secs
            ));
        } else {
            s.push_str(&format!(
                "FAIL: {} of {} trials; seeds and kept work dirs in the report\n",
                t.failed, t.trials
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(n: usize, passed: bool, lost: u64) -> TrialReport {
        let mut r = TrialReport::failed_to_run(n, 7 + n as u64, String::new(), String::new());
        r.error = None;
        r.work_dir = None;
        r.passed = passed;
        r.events_generated = 100;
        r.booked = 100 - lost;
        r.lost = lost;
        r.faults_injected = 1;
        r.faults = vec![FaultRecord {
            at_secs: 1.0,
            hold_secs: 0.0,
            kind: "kill_collector".into(),
            target: String::new(),
            strength: String::new(),
        }];
        r
    }

    #[test]
    fn totals_add_up_and_the_table_says_which_failed() {
        let trials = vec![trial(1, true, 0), trial(2, false, 3)];
        let t = totals(&trials);
        assert_eq!(
            (t.trials, t.failed, t.events_generated, t.lost),
            (2, 1, 200, 3)
        );
        assert_eq!(t.faults_by_kind.get("kill_collector"), Some(&2));
        let report = ChaosReport {
            passed: false,
            seed: 8,
            duration_per_trial_secs: 20.0,
            agents: 3,
            totals: t,
            trials,
            duration_secs: 1.0,
        };
        let table = report.table();
        assert!(table.contains("FAIL: 1 of 2 trials"), "{table}");
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("2 ") && l.ends_with("FAIL")),
            "{table}"
        );
        let json = serde_json::to_value(&report).expect("serialises");
        assert_eq!(json["trials"][1]["lost"], 3);
        assert_eq!(json["totals"]["failed"], 1);
    }
}
