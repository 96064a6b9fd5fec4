//! The pick station's rules (see the [module docs](super) for the prose):
//! a pick list opens a task, item scans fill its lines, a stable weight
//! checks each line where a scale and unit weights allow.

use dockline_protocol::{BusinessEvent, EventDetail, ExceptionKind, References};

use super::task::{PickTask, TaskBook};
use super::{Observation, Output, Tolerance, exception};

/// A pick station's state.
#[derive(Debug, Clone)]
pub struct PickStation {
    location: String,
    has_scale: bool,
    tolerance: Tolerance,
    task: Option<OpenTask>,
    /// The last stable weight, kg.
    last_stable_kg: Option<f64>,
}

#[derive(Debug, Clone)]
struct OpenTask {
    order: String,
    lines: Vec<Line>,
}

#[derive(Debug, Clone)]
struct Line {
    item: String,
    expected: u32,
    unit_weight_kg: Option<f64>,
    scanned: u32,
    lot: Option<String>,
    /// The stable weight when this line's first item was scanned.
    baseline_kg: Option<f64>,
    state: LineState,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum LineState {
    Open,
    AwaitingWeight,
    Done,
}

impl PickStation {
    /// A station at `location`; `has_scale` when a scale feeds it.
    pub fn new(location: String, has_scale: bool, tolerance: Tolerance) -> Self {
        PickStation {
            location,
            has_scale,
            tolerance,
            task: None,
            last_stable_kg: None,
        }
    }

    /// The last stable weight its scale reported, kg.
    pub fn last_stable_kg(&self) -> Option<f64> {
        self.last_stable_kg
    }

    /// The open pick list and its progress, for the status.
    pub fn describe(&self) -> String {
        match &self.task {
            None => "idle: scan a pick list".into(),
            Some(t) => {
                let done = t
                    .lines
                    .iter()
                    .filter(|l| l.state == LineState::Done)
                    .count();
                let waiting = t
                    .lines
                    .iter()
                    .find(|l| l.state == LineState::AwaitingWeight)
                    .map(|l| format!("; {} waits for its weight", l.item))
                    .unwrap_or_default();
                format!(
                    "picking {}: {done} of {} lines done{waiting}",
                    t.order,
                    t.lines.len()
                )
            }
        }
    }

    /// Applies one observation; `tasks` is where pick lists are opened from.
    pub fn observe(&mut self, obs: &Observation, tasks: &mut TaskBook) -> Vec<Output> {
        let mut out = Vec::new();
        match obs {
            Observation::Document(text) => self.on_document(text, tasks, &mut out),
            Observation::Item { gtin, lot, count } => {
                self.on_item(gtin, lot.as_deref(), *count, &mut out)
            }
            Observation::Weight { kg, stable: true } => {
                self.on_stable_weight(*kg, &mut out);
                self.last_stable_kg = Some(*kg);
            }
            Observation::Sscc { sscc, .. } => out.push(Output::Notice(format!(
                "SSCC {sscc} scanned at a pick station; scan items (GTIN) or a pick list here"
            ))),
            Observation::Unusable(why) => out.push(Output::Notice(why.clone())),
            // Motion readings are not weights to check; positions are not ours.
            Observation::Weight { stable: false, .. } | Observation::Position(_) => {}
        }
        if self
            .task
            .as_ref()
            .is_some_and(|t| t.lines.iter().all(|l| l.state == LineState::Done))
            && let Some(t) = self.task.take()
        {
            out.push(Output::Notice(format!("pick list {} is complete", t.order)));
        }
        out
    }

    fn refs(&self, order: &str) -> References {
        References {
            order: Some(order.to_owned()),
            location: Some(self.location.clone()),
            ..References::default()
        }
    }

    fn on_document(&mut self, text: &str, tasks: &mut TaskBook, out: &mut Vec<Output>) {
        if let Some(open) = self.task.take() {
            let same = open.order == text;
            self.close(open, out);
            if same {
                return;
            }
        }
        match tasks.take(text) {
            Some(task) => self.open(task),
            None => out.push(Output::Notice(format!(
                "pick list {text} is not waiting here (never posted, or already picked); post it to POST /v1/tasks first"
            ))),
        }
    }

    fn open(&mut self, task: PickTask) {
        let lines = task
            .lines
            .into_iter()
            .map(|l| Line {
                item: l.item,
                expected: l.quantity,
                unit_weight_kg: l.unit_weight_kg,
                scanned: 0,
                lot: None,
                baseline_kg: None,
                state: LineState::Open,
            })
            .collect();
        self.task = Some(OpenTask {
            order: task.order,
            lines,
        });
    }

    /// Closes a task early: books what was picked, reports what is short.
    fn close(&self, task: OpenTask, out: &mut Vec<Output>) {
        let refs = self.refs(&task.order);
        for line in task.lines {
            match line.state {
                LineState::Done => {}
                LineState::AwaitingWeight => {
                    out.push(not_weighed(&line, refs.clone()));
                }
                LineState::Open => {
                    if line.scanned > 0 {
                        out.push(picked(&line, line.scanned, refs.clone()));
                    }
                    out.push(exception(
                        ExceptionKind::ShortPick,
                        format!(
                            "item {}: picked {} of {} before pick list {} was closed",
                            line.item, line.scanned, line.expected, task.order
                        ),
                        refs.clone(),
                    ));
                }
            }
        }
    }

    fn on_item(&mut self, gtin: &str, lot: Option<&str>, count: u32, out: &mut Vec<Output>) {
        let last_stable = self.last_stable_kg;
        let has_scale = self.has_scale;
        let Some(task) = self.task.as_mut() else {
            out.push(Output::Notice(format!(
                "item {gtin} scanned with no pick list open; scan the pick list first"
            )));
            return;
        };
        let refs = References {
            order: Some(task.order.clone()),
            location: Some(self.location.clone()),
            ..References::default()
        };
        // Moving on to another item leaves an unweighed line behind.
        if let Some(waiting) = task
            .lines
            .iter_mut()
            .find(|l| l.state == LineState::AwaitingWeight && l.item != gtin)
        {
            out.push(not_weighed(waiting, refs.clone()));
            waiting.state = LineState::Done;
        }
        let Some(line) = task.lines.iter_mut().find(|l| l.item == gtin) else {
            out.push(exception(
                ExceptionKind::WrongItem,
                format!(
                    "item {gtin} is not on pick list {}; put it back",
                    task.order
                ),
                refs,
            ));
            return;
        };
        let total = line.scanned.saturating_add(count);
        if line.state != LineState::Open || total > line.expected {
            out.push(exception(
                ExceptionKind::Other,
                format!(
                    "item {gtin}: {total} scanned, pick list {} asks for {}; put the extra back",
                    task.order, line.expected
                ),
                refs,
            ));
            return;
        }
        if line.scanned == 0 {
            line.baseline_kg = Some(last_stable.unwrap_or(0.0));
        }
        line.scanned = total;
        if let Some(lot) = lot {
            line.lot = Some(lot.to_owned());
        }
        if line.scanned == line.expected {
            if has_scale && line.unit_weight_kg.is_some() {
                line.state = LineState::AwaitingWeight;
            } else {
                line.state = LineState::Done;
                out.push(picked(line, line.scanned, refs));
            }
        }
    }

    fn on_stable_weight(&mut self, kg: f64, out: &mut Vec<Output>) {
        let tolerance = self.tolerance;
        let location = self.location.clone();
        let Some(task) = self.task.as_mut() else {
            return;
        };
        let Some(line) = task
            .lines
            .iter_mut()
            .find(|l| l.state == LineState::AwaitingWeight)
        else {
            return;
        };
        let expected = line.unit_weight_kg.unwrap_or(0.0) * f64::from(line.expected);
        let allowed = tolerance.allowed(expected);
        let measured = (kg - line.baseline_kg.unwrap_or(0.0)).abs();
        if measured <= allowed.min(expected / 2.0) {
            // Nothing placed or taken yet.
            return;
        }
        let refs = References {
            order: Some(task.order.clone()),
            location: Some(location),
            ..References::default()
        };
        line.state = LineState::Done;
        if (measured - expected).abs() <= allowed {
            out.push(picked(line, line.scanned, refs));
        } else {
            out.push(exception(
                ExceptionKind::WeightMismatch,
                format!(
                    "item {}: {} units should weigh {expected:.3} kg (± {allowed:.3}), the scale shows {measured:.3} kg; recount the items",
                    line.item, line.expected
                ),
                refs,
            ));
        }
    }
}

fn picked(line: &Line, quantity: u32, refs: References) -> Output {
    Output::Event(BusinessEvent {
        detail: EventDetail::Picked {
            item: line.item.clone(),
            quantity,
            lot: line.lot.clone(),
        },
        refs,
    })
}

fn not_weighed(line: &Line, refs: References) -> Output {
    exception(
        ExceptionKind::WeightMismatch,
        format!(
            "item {}: {} units were scanned but never weighed; weigh each line before scanning the next",
            line.item, line.expected
        ),
        refs,
    )
}

#[cfg(test)]
mod tests {
    use super::super::task::TaskLine;
    use super::*;

    const A: &str = "09521234543213";
    const B: &str = "05901234123457";

    fn book() -> TaskBook {
        let mut book = TaskBook::default();
        let task = PickTask {
            order: "SO-1".into(),
            lines: vec![
                TaskLine {
                    item: A.into(),
                    quantity: 2,
                    unit_weight_kg: Some(0.5),
                },
                TaskLine {
                    item: B.into(),
                    quantity: 1,
                    unit_weight_kg: None,
                },
            ],
        };
        book.post(task).expect("room");
        book
    }

    fn doc(s: &str) -> Observation {
        Observation::Document(s.into())
    }
    fn item(g: &str) -> Observation {
        Observation::Item {
            gtin: g.into(),
            lot: None,
            count: 1,
        }
    }
    fn stable(kg: f64) -> Observation {
        Observation::Weight { kg, stable: true }
    }
    fn moving(kg: f64) -> Observation {
        Observation::Weight { kg, stable: false }
    }

    /// What came out, as short words: `picked A 2`, `exception weight_mismatch`, `notice`.
    fn run(has_scale: bool, steps: &[Observation]) -> Vec<String> {
        let mut station = PickStation::new(
            "pick-1".into(),
            has_scale,
            Tolerance {
                kg: 0.02,
                percent: 2.0,
            },
        );
        let mut tasks = book();
        let mut seen = Vec::new();
        for obs in steps {
            for o in station.observe(obs, &mut tasks) {
                seen.push(match o {
                    Output::Notice(_) => "notice".into(),
                    Output::ScaleCommand { .. } => "scale".into(),
                    Output::Event(e) => {
                        assert_eq!(e.refs.location.as_deref(), Some("pick-1"));
                        match e.detail {
                            EventDetail::Picked { item, quantity, .. } => {
                                let name = if item == A { "A" } else { "B" };
                                format!("picked {name} {quantity}")
                            }
                            EventDetail::Exception { kind, .. } => {
                                let kind = serde_json::to_value(kind).unwrap_or_default();
                                format!("exception {}", kind.as_str().unwrap_or("?"))
                            }
                            other => format!("{other:?}"),
                        }
                    }
                });
            }
        }
        seen
    }

    #[test]
    fn pick_rules_table() {
        // (what, has a scale, observations, outputs)
        type Case<'a> = (&'a str, bool, Vec<Observation>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "no scale: lines are picked when their count is reached",
                false,
                vec![doc("SO-1"), item(A), item(A), item(B)],
                vec!["picked A 2", "picked B 1", "notice"],
            ),
            (
                "scale: the line waits for a stable weight within tolerance",
                true,
                vec![
                    stable(0.0),
                    doc("SO-1"),
                    item(A),
                    item(A),
                    stable(0.0),
                    moving(0.7),
                    stable(1.01),
                    item(B),
                ],
                vec!["picked A 2", "picked B 1", "notice"],
            ),
            (
                "scale: weight taken off a shelf scale counts the same",
                true,
                vec![stable(5.0), doc("SO-1"), item(A), item(A), stable(3.99)],
                vec!["picked A 2"],
            ),
            (
                "scale: one unit missing from the scale is a weight mismatch",
                true,
                vec![stable(0.2), doc("SO-1"), item(A), item(A), stable(0.7)],
                vec!["exception weight_mismatch"],
            ),
            (
                "scale: a motion reading is never taken as the weight",
                true,
                vec![doc("SO-1"), item(A), item(A), moving(0.5)],
                vec![],
            ),
            (
                "scale: scanning on before weighing fails the line",
                true,
                vec![doc("SO-1"), item(A), item(A), item(B)],
                vec!["exception weight_mismatch", "picked B 1", "notice"],
            ),
            (
                "wrong item is an exception and not counted",
                false,
                vec![doc("SO-1"), item("00000096385074"), item(A), item(A)],
                vec!["exception wrong_item", "picked A 2"],
            ),
            (
                "over-scan is an exception and not counted",
                false,
                vec![doc("SO-1"), item(A), item(A), item(A)],
                vec!["picked A 2", "exception other"],
            ),
            (
                "closing early: partial pick booked, short picks reported",
                false,
                vec![doc("SO-1"), item(A), doc("SO-1")],
                vec!["picked A 1", "exception short_pick", "exception short_pick"],
            ),
            (
                "closing with a line waiting for its weight",
                true,
                vec![doc("SO-1"), item(B), item(A), item(A), doc("SO-1")],
                vec!["picked B 1", "exception weight_mismatch"],
            ),
            (
                "unknown pick list and items without a list are notices",
                false,
                vec![doc("SO-9"), item(A)],
                vec!["notice", "notice"],
            ),
            (
                "a finished list cannot be picked twice",
                false,
                vec![doc("SO-1"), item(A), item(A), item(B), doc("SO-1"), item(A)],
                vec!["picked A 2", "picked B 1", "notice", "notice", "notice"],
            ),
        ];
        for (name, has_scale, steps, want) in cases {
            assert_eq!(run(has_scale, &steps), want, "{name}");
        }
    }

    #[test]
    fn mismatch_note_names_both_weights() {
        let mut station = PickStation::new(
            "p".into(),
            true,
            Tolerance {
                kg: 0.02,
                percent: 0.0,
            },
        );
        let mut tasks = book();
        for obs in [doc("SO-1"), item(A), item(A)] {
            station.observe(&obs, &mut tasks);
        }
        assert!(station.describe().contains("waits for its weight"));
        let out = station.observe(&stable(1.3), &mut tasks);
        let Some(EventDetail::Exception { note, .. }) =
            out.first().and_then(|o| o.event()).map(|e| &e.detail)
        else {
            panic!("expected an exception, got {out:?}");
        };
        assert!(
            note.contains("1.000 kg") && note.contains("1.300 kg"),
            "{note}"
        );
    }
}
