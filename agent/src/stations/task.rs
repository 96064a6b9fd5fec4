//! Pick lists waiting to be picked, as posted to `POST /v1/tasks`.
//!
//! The book is held in memory: a restart of the agent forgets the lists not
//! yet opened (the handheld or ERP posts them again), while every event of a
//! pick already made is in the outbox. Opening a list at a station takes it
//! out of the book, so two stations never pick the same list.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::observation::gtin14;

/// Most lines on one pick list.
pub const MAX_LINES: usize = 500;
/// Most pick lists waiting at once.
pub const MAX_TASKS: usize = 10_000;

/// One pick list: the order and what to pick for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PickTask {
    /// The order (pick list) number, as its barcode carries it.
    pub order: String,
    /// What to pick.
    pub lines: Vec<TaskLine>,
}

/// One line of a pick list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskLine {
    /// GTIN-8, -12, -13 or -14; kept as 14 digits.
    pub item: String,
    /// Units to pick.
    pub quantity: u32,
    /// Weight of one unit, kg, for the scale check; no check without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_weight_kg: Option<f64>,
}

impl PickTask {
    /// Checks the list and normalises its GTINs to 14 digits.
    pub fn normalised(mut self) -> Result<PickTask, String> {
        let order = self.order.trim();
        if order.is_empty() || order.len() > dockline_protocol::event::MAX_REF_BYTES {
            return Err(format!(
                "order {:?} must be 1 to {} bytes: it is the text of the pick list's barcode",
                self.order,
                dockline_protocol::event::MAX_REF_BYTES
            ));
        }
        self.order = order.to_owned();
        if self.lines.is_empty() || self.lines.len() > MAX_LINES {
            return Err(format!(
                "pick list {} has {} lines; give it 1 to {MAX_LINES}",
                self.order,
                self.lines.len()
            ));
        }
        for (i, line) in self.lines.iter_mut().enumerate() {
            line.item = gtin14(line.item.trim()).ok_or_else(|| {
                format!(
                    "lines[{i}].item {:?} is not a GTIN; use the 8, 12, 13 or 14 digits of the item's barcode",
                    line.item
                )
            })?;
            if line.quantity == 0 {
                return Err(format!("lines[{i}].quantity is 0; pick at least 1"));
            }
            if let Some(w) = line.unit_weight_kg
                && !(w.is_finite() && w > 0.0)
            {
                return Err(format!(
                    "lines[{i}].unit_weight_kg is {w}; give a weight > 0 in kg, or leave it out to skip the scale check"
                ));
            }
        }
        for (i, line) in self.lines.iter().enumerate() {
            if self.lines[..i].iter().any(|l| l.item == line.item) {
                return Err(format!(
                    "item {} is on pick list {} twice; merge the lines",
                    line.item, self.order
                ));
            }
        }
        Ok(self)
    }
}

/// Pick lists waiting for a station, by order number.
#[derive(Debug, Clone, Default)]
pub struct TaskBook {
    tasks: BTreeMap<String, PickTask>,
}

impl TaskBook {
    /// Adds or replaces a (normalised) list; `true` when it replaced one.
    pub fn post(&mut self, task: PickTask) -> Result<bool, String> {
        if !self.tasks.contains_key(&task.order) && self.tasks.len() >= MAX_TASKS {
            return Err(format!(
                "{MAX_TASKS} pick lists are already waiting; pick some before posting more"
            ));
        }
        Ok(self.tasks.insert(task.order.clone(), task).is_some())
    }

    /// Takes the list for `order` out of the book.
    pub fn take(&mut self, order: &str) -> Option<PickTask> {
        self.tasks.remove(order)
    }

    /// The waiting lists, by order number.
    pub fn waiting(&self) -> impl Iterator<Item = &PickTask> {
        self.tasks.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(item: &str, quantity: u32, weight: Option<f64>) -> PickTask {
        PickTask {
            order: " SO-1 ".into(),
            lines: vec![TaskLine {
                item: item.into(),
                quantity,
                unit_weight_kg: weight,
            }],
        }
    }

    #[test]
    fn lists_are_checked_and_normalised() {
        let t = task("5901234123457", 2, Some(0.5))
            .normalised()
            .expect("valid");
        assert_eq!(t.order, "SO-1");
        assert_eq!(t.lines[0].item, "05901234123457");
        for (bad, why) in [
            (task("59012", 1, None), "not a GTIN"),
            (task("5901234123457", 0, None), "quantity is 0"),
            (task("5901234123457", 1, Some(-1.0)), "weight > 0"),
        ] {
            let err = bad.normalised().expect_err(why);
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn taking_a_list_removes_it() {
        let mut book = TaskBook::default();
        let t = task("5901234123457", 1, None).normalised().expect("valid");
        assert_eq!(book.post(t.clone()), Ok(false));
        assert_eq!(book.post(t), Ok(true));
        assert!(book.take("SO-1").is_some());
        assert!(book.take("SO-1").is_none());
    }
}
