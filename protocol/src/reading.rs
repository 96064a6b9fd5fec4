//! Readings: what a device measured, before any business meaning is attached.

use alloc::string::String;
use serde::{Deserialize, Serialize};

use crate::validate::{self, ValidationError};

/// One measurement from a scanner, scale or GNSS receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reading {
    /// A decoded barcode.
    Scan(Scan),
    /// A weight from a scale or load cell.
    Weight(WeightReading),
    /// A position fix.
    Position(Fix),
}

/// A barcode as the scanner sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scan {
    /// AIM symbology identifier (`]C1`, `]e0`, `]d2`, …) when the scanner sends one.
    #[serde(
        rename = "sym",
        alias = "symbology",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub symbology: Option<String>,
    /// The symbol's data; FNC1 separators are kept as GS (U+001D).
    #[serde(rename = "d", alias = "data")]
    pub data: String,
}

/// Units a scale may report in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightUnit {
    /// Kilograms.
    Kg,
    /// Grams.
    G,
    /// Pounds.
    Lb,
    /// Ounces.
    Oz,
}

/// A weight with its unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Weight {
    /// The value in `unit`.
    #[serde(rename = "val", alias = "value")]
    pub value: f64,
    /// The unit of `value`.
    #[serde(rename = "u", alias = "unit")]
    pub unit: WeightUnit,
}

/// A weight reading with the scale's state.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WeightReading {
    /// Net weight (gross minus tare).
    #[serde(rename = "net")]
    pub net: Weight,
    /// Tare, when the scale reports one.
    #[serde(rename = "tare", default, skip_serializing_if = "Option::is_none")]
    pub tare: Option<Weight>,
    /// Whether the scale reported the weight as stable (no motion).
    #[serde(rename = "st", alias = "stable")]
    pub stable: bool,
}

/// Quality of a position fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FixMode {
    /// No fix (dead reckoning or last known position).
    NoFix,
    /// Two-dimensional fix.
    Fix2d,
    /// Three-dimensional fix.
    Fix3d,
}

/// A position fix assembled from one receiver cycle.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fix {
    /// Latitude in degrees, north positive.
    pub lat: f64,
    /// Longitude in degrees, east positive.
    pub lon: f64,
    /// Ground speed in metres per second.
    #[serde(
        rename = "spd",
        alias = "speed_mps",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub speed_mps: Option<f32>,
    /// Course over ground in degrees from true north.
    #[serde(
        rename = "crs",
        alias = "course_deg",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub course_deg: Option<f32>,
    /// Fix quality.
    #[serde(rename = "fm", alias = "mode")]
    pub mode: FixMode,
    /// Satellites used in the fix.
    #[serde(
        rename = "sat",
        alias = "satellites",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub satellites: Option<u8>,
    /// Horizontal dilution of precision.
    #[serde(rename = "hdop", default, skip_serializing_if = "Option::is_none")]
    pub hdop: Option<f32>,
}

impl Fix {
    pub(crate) fn validate(&self) -> Result<(), ValidationError> {
        validate::range("lat", self.lat, -90.0, 90.0)?;
        validate::range("lon", self.lon, -180.0, 180.0)
    }
}

impl Reading {
    pub(crate) fn validate(&self) -> Result<(), ValidationError> {
        match self {
            Reading::Scan(s) => {
                validate::opt_text("scan.sym", &s.symbology, 3)?;
                validate::text("scan.d", &s.data, validate::MAX_TEXT_BYTES)
            }
            Reading::Weight(w) => {
                if !w.net.value.is_finite() {
                    return Err(ValidationError {
                        field: "weight.net".into(),
                        problem: "is not a finite number".into(),
                    });
                }
                Ok(())
            }
            Reading::Position(f) => f.validate().map_err(|e| e.under("position")),
        }
    }
}
