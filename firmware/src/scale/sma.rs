//! SMA (Scale Manufacturers Association, SCP-01) standard responses:
//! `<LF><s><r><n><m><f><weight><unit><CR>`, e.g. `"\n 1G       5.025lb \r"`.
//!
//! The line is taken without its LF/CR. The weight field is trimmed rather
//! than cut by column (10 characters in the standard, 11 on some Cardinal
//! models). `?` and `!` lines are the unknown-command and communication-error
//! answers.

use super::{
    Decimal, DeviceError, ScaleError, ScaleEvent, Unit, WeightKind, WeightSample, unit_start,
};

const PROTOCOL: &str = "SMA";

/// Decode one SMA response line (LF and CR already stripped, or not).
pub fn parse_sma_line(line: &[u8]) -> Result<ScaleEvent, ScaleError> {
    let line = trim_terminators(line);
    match line {
        b"?" => return Ok(ScaleEvent::Device(DeviceError::UnknownCommand)),
        b"!" => return Ok(ScaleEvent::Device(DeviceError::CommunicationError)),
        _ => {}
    }
    let [status, range, kind, motion, _reserved, rest @ ..] = line else {
        return Err(ScaleError::NotRecognised { protocol: PROTOCOL });
    };
    if !range.is_ascii_digit() {
        return Err(ScaleError::NotRecognised { protocol: PROTOCOL });
    }
    let kind = match kind {
        b'G' | b'g' => WeightKind::Gross,
        b'N' | b'n' => WeightKind::Net,
        b'T' | b't' => WeightKind::Tare,
        _ => return Err(ScaleError::NotRecognised { protocol: PROTOCOL }),
    };
    let stable = match motion {
        b' ' => true,
        b'M' => false,
        _ => return Err(ScaleError::NotRecognised { protocol: PROTOCOL }),
    };
    match status {
        b'O' => return Ok(ScaleEvent::Overload),
        b'U' => return Ok(ScaleEvent::Underload),
        b'E' => return Ok(ScaleEvent::Device(DeviceError::ZeroError)),
        b'I' => return Ok(ScaleEvent::Device(DeviceError::InitialZeroError)),
        b'T' => return Ok(ScaleEvent::Device(DeviceError::TareError)),
        b' ' | b'Z' => {}
        _ => return Err(ScaleError::NotRecognised { protocol: PROTOCOL }),
    }
    let unit_start = unit_start(rest).ok_or(ScaleError::NotRecognised { protocol: PROTOCOL })?;
    let (weight, unit) = rest.split_at(unit_start);
    let value = Decimal::parse(weight).ok_or(ScaleError::BadWeight { protocol: PROTOCOL })?;
    Ok(ScaleEvent::Weight(WeightSample {
        value,
        unit: Unit::parse(unit),
        kind,
        stable,
        at_zero: *status == b'Z',
        tare: None,
    }))
}

fn trim_terminators(mut line: &[u8]) -> &[u8] {
    while let [b'\n' | b'\r', rest @ ..] = line {
        line = rest;
    }
    while let [rest @ .., b'\n' | b'\r'] = line {
        line = rest;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_examples() {
        let Ok(ScaleEvent::Weight(w)) = parse_sma_line(b"\n 1G       5.025lb \r") else {
            panic!("not a weight")
        };
        assert_eq!(
            w.value,
            Decimal {
                mantissa: 5025,
                scale: 3
            }
        );
        assert_eq!(
            (w.unit, w.kind, w.stable),
            (Unit::Lb, WeightKind::Gross, true)
        );
        let Ok(ScaleEvent::Weight(w)) = parse_sma_line(b" 1NM     12.340kg ") else {
            panic!("not a weight")
        };
        assert_eq!(
            (w.unit, w.kind, w.stable),
            (Unit::Kg, WeightKind::Net, false)
        );
        let Ok(ScaleEvent::Weight(w)) = parse_sma_line(b"Z1G        0.000kg ") else {
            panic!("not a weight")
        };
        assert!(w.at_zero);
    }

    #[test]
    fn states_and_errors() {
        assert_eq!(
            parse_sma_line(b"O1G  ----------lb "),
            Ok(ScaleEvent::Overload)
        );
        assert_eq!(
            parse_sma_line(b"U1G  ----------lb "),
            Ok(ScaleEvent::Underload)
        );
        assert_eq!(
            parse_sma_line(b"\n?\r"),
            Ok(ScaleEvent::Device(DeviceError::UnknownCommand))
        );
        assert_eq!(
            parse_sma_line(b" 1G       5.0x5lb "),
            Err(ScaleError::BadWeight { protocol: "SMA" })
        );
    }
}
