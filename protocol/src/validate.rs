//! Checks applied to every decoded message: bounded text, sane numbers.

use alloc::string::String;
use core::fmt;

/// A decoded message broke one of the protocol's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Which field, as a dotted path (`events[3].payload.delivered.received_by`).
    pub field: String,
    /// What was wrong with it.
    pub problem: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field `{}` {}", self.field, self.problem)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ValidationError {}

/// The largest epoch, sequence number or range end on the wire: the largest
/// signed 64-bit integer, since SQL databases (the agent's outbox, the
/// collector's inbox) store them as such. A larger value is malformed, so
/// it is refused where it is decoded instead of failing to store later.
pub const MAX_WIRE_NUMBER: u64 = i64::MAX as u64;

/// Checks that `value` is at most [`MAX_WIRE_NUMBER`].
pub(crate) fn wire_number(field: &str, value: u64) -> Result<(), ValidationError> {
    if value > MAX_WIRE_NUMBER {
        return Err(ValidationError {
            field: field.into(),
            problem: alloc::format!(
                "is {value}, above the largest allowed value {MAX_WIRE_NUMBER} (2^63 - 1)"
            ),
        });
    }
    Ok(())
}

impl ValidationError {
    /// The same error for a field inside `parent`: fields are named relative
    /// to the value checked, and the path is built only when there is an
    /// error, so checking a valid message allocates nothing.
    pub(crate) fn under(mut self, parent: &str) -> Self {
        self.field = alloc::format!("{parent}.{}", self.field);
        self
    }
}

/// Longest free text (notes, reasons, references) a message may carry.
pub const MAX_TEXT_BYTES: usize = 2048;

pub(crate) fn text(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.len() > max {
        return Err(ValidationError {
            field: field.into(),
            problem: alloc::format!("is {} bytes long, the limit is {max}", value.len()),
        });
    }
    Ok(())
}

pub(crate) fn opt_text(
    field: &str,
    value: &Option<String>,
    max: usize,
) -> Result<(), ValidationError> {
    match value {
        Some(v) => text(field, v, max),
        None => Ok(()),
    }
}

pub(crate) fn range(field: &str, value: f64, lo: f64, hi: f64) -> Result<(), ValidationError> {
    if !(lo..=hi).contains(&value) {
        return Err(ValidationError {
            field: field.into(),
            problem: alloc::format!("is {value}, expected a number between {lo} and {hi}"),
        });
    }
    Ok(())
}
