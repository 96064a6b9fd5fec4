//! Mettler Toledo MT-SICS responses (`S S     12.345 kg`, `S D`, `S I`,
//! `S +`, `S -`, `ES`, `ET`, `EL`).
//!
//! Fields are split on whitespace, not by column: the manual's 10-character
//! weight field is not kept by every model. The response ID of `S`, `SI` and
//! `SIR` is `S`; `SI`/`SIR` IDs are accepted too (emulators send them). A
//! `T`/`TI`/`TA` answer carries the tare. MT-SICS weights are net by definition.

use super::{Decimal, DeviceError, ScaleError, ScaleEvent, Unit, WeightKind, WeightSample};

const PROTOCOL: &str = "MT-SICS";

/// Decode one MT-SICS response line (terminator optional).
pub fn parse_mtsics_line(line: &[u8]) -> Result<ScaleEvent, ScaleError> {
    let mut fields = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let id = fields
        .next()
        .ok_or(ScaleError::NotRecognised { protocol: PROTOCOL })?;
    let status = fields.next();
    let value = fields.next();
    let unit = fields.next();
    let extra = fields.next();
    match (id, status) {
        (b"ES", None) => return Ok(ScaleEvent::Device(DeviceError::SyntaxError)),
        (b"ET", None) => return Ok(ScaleEvent::Device(DeviceError::TransmissionError)),
        (b"EL", None) => return Ok(ScaleEvent::Device(DeviceError::LogicalError)),
        _ => {}
    }
    let kind = match id {
        b"S" | b"SI" | b"SIR" | b"SR" | b"SNR" => WeightKind::Net,
        b"T" | b"TI" | b"TA" => WeightKind::Tare,
        // `@` (reset) answers with the serial number: `I4 A "B123456789"`.
        b"I4" if status == Some(b"A") => return Ok(ScaleEvent::Acknowledged),
        b"Z" | b"ZI" | b"TAC" | b"@" => {
            return match status {
                Some(b"A") => Ok(ScaleEvent::Acknowledged),
                Some(b"I") => Ok(ScaleEvent::Busy),
                Some(b"+") => Ok(ScaleEvent::Overload),
                Some(b"-") => Ok(ScaleEvent::Underload),
                _ => Err(ScaleError::NotRecognised { protocol: PROTOCOL }),
            };
        }
        _ => return Err(ScaleError::NotRecognised { protocol: PROTOCOL }),
    };
    let stable = match (status, value) {
        (Some(b"S"), Some(_)) => true,
        (Some(b"D"), Some(_)) => false,
        (Some(b"I"), None) => return Ok(ScaleEvent::Busy),
        (Some(b"+"), None) => return Ok(ScaleEvent::Overload),
        (Some(b"-"), None) => return Ok(ScaleEvent::Underload),
        (Some(b"A"), None) => return Ok(ScaleEvent::Acknowledged),
        _ => return Err(ScaleError::NotRecognised { protocol: PROTOCOL }),
    };
    if extra.is_some() {
        return Err(ScaleError::NotRecognised { protocol: PROTOCOL });
    }
    let value = value
        .and_then(Decimal::parse)
        .ok_or(ScaleError::BadWeight { protocol: PROTOCOL })?;
    let unit = unit.ok_or(ScaleError::NotRecognised { protocol: PROTOCOL })?;
    Ok(ScaleEvent::Weight(WeightSample {
        value,
        unit: Unit::parse(unit),
        kind,
        stable,
        at_zero: value.mantissa == 0,
        tare: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weight(line: &[u8]) -> WeightSample {
        match parse_mtsics_line(line) {
            Ok(ScaleEvent::Weight(w)) => w,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn manual_examples() {
        let w = weight(b"S S     12.345 kg\r\n");
        assert_eq!(
            w.value,
            Decimal {
                mantissa: 12345,
                scale: 3
            }
        );
        assert_eq!(w.unit, Unit::Kg);
        assert!(w.stable);
        let w = weight(b"S D     -0.015 kg\r\n");
        assert_eq!(
            w.value,
            Decimal {
                mantissa: -15,
                scale: 3
            }
        );
        assert!(!w.stable);
        let w = weight(b"S S      12.345 kg");
        assert_eq!(w.value.mantissa, 12345);
        assert_eq!(weight(b"S S     100.00 g").unit, Unit::G);
        assert_eq!(weight(b"T S      2.000 kg").kind, WeightKind::Tare);
    }

    #[test]
    fn states_are_explicit() {
        assert_eq!(parse_mtsics_line(b"S +\r\n"), Ok(ScaleEvent::Overload));
        assert_eq!(parse_mtsics_line(b"S -"), Ok(ScaleEvent::Underload));
        assert_eq!(parse_mtsics_line(b"S I"), Ok(ScaleEvent::Busy));
        assert_eq!(
            parse_mtsics_line(b"ES"),
            Ok(ScaleEvent::Device(DeviceError::SyntaxError))
        );
        assert_eq!(
            parse_mtsics_line(b"ET"),
            Ok(ScaleEvent::Device(DeviceError::TransmissionError))
        );
        assert_eq!(
            parse_mtsics_line(b"EL"),
            Ok(ScaleEvent::Device(DeviceError::LogicalError))
        );
        assert_eq!(parse_mtsics_line(b"Z A"), Ok(ScaleEvent::Acknowledged));
        assert_eq!(
            parse_mtsics_line(b"I4 A \"B021002593\""),
            Ok(ScaleEvent::Acknowledged)
        );
        assert_eq!(parse_mtsics_line(b"Z +"), Ok(ScaleEvent::Overload));
        assert_eq!(parse_mtsics_line(b"T I"), Ok(ScaleEvent::Busy));
        assert_eq!(
            parse_mtsics_line(b"S I 12.3"),
            Err(ScaleError::NotRecognised {
                protocol: "MT-SICS"
            })
        );
        assert_eq!(
            parse_mtsics_line(b"S S abc kg"),
            Err(ScaleError::BadWeight {
                protocol: "MT-SICS"
            })
        );
    }
}
