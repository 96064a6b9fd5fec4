//! Keyboard-wedge scanners: Linux `input_event` records in, scan lines out.
//!
//! Most USB scanners, and the ones built into Linux handhelds, are HID
//! keyboards: they send key codes, not characters, typed on the keyboard
//! layout the scanner is set to. This module turns a stream of evdev
//! `struct input_event` records (24 bytes on 64-bit Linux: `timeval`, `type`
//! u16, `code` u16, `value` i32, little-endian) back into the bytes of the
//! scan, sans-I/O, so a recorded stream decodes exactly as a live device.
//!
//! # Rules
//!
//! - Only `EV_KEY` records matter; value 1 (press) and 2 (autorepeat) type a
//!   key, value 0 (release) only ends a modifier. Shift, AltGr, Ctrl, Alt and
//!   Caps Lock are tracked.
//! - The keymap (US or DE) must be the scanner's: the same key code is `y`
//!   on a US scanner and `z` on a German one.
//! - GS (FNC1) arrives in one of three ways, all read as 0x1D: Ctrl+`]`
//!   (Ctrl with the key right of `P`, whatever the layout prints there),
//!   Alt held while `0029` is typed on the keypad, or a substitute character
//!   the scanner is programmed to send ([`WedgeOptions::gs_substitute`]).
//!   Other Ctrl+letter combinations give their control characters.
//! - A scan ends at the configured suffix key (Enter by default, Tab, or
//!   none: then the line going quiet ends it, see `StreamDecoder::idle`).
//! - A key the keymap does not know ends nothing and types nothing; it is
//!   counted ([`WedgeDecoder::unknown_keys`]) so a wrong keymap shows.

use serde::{Deserialize, Serialize};

/// Size of one `struct input_event` on 64-bit Linux.
pub const INPUT_EVENT_LEN: usize = 24;

const EV_KEY: u16 = 1;

const KEY_ENTER: u16 = 28;
const KEY_KPENTER: u16 = 96;
const KEY_TAB: u16 = 15;
const KEY_LEFTCTRL: u16 = 29;
const KEY_RIGHTCTRL: u16 = 97;
const KEY_LEFTSHIFT: u16 = 42;
const KEY_RIGHTSHIFT: u16 = 54;
const KEY_LEFTALT: u16 = 56;
const KEY_RIGHTALT: u16 = 100;
const KEY_CAPSLOCK: u16 = 58;
const KEY_RIGHTBRACE: u16 = 27;

/// The keyboard layout the scanner types in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Keymap {
    /// US English (QWERTY).
    #[default]
    Us,
    /// German (QWERTZ).
    De,
}

/// The key that ends a scan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WedgeSuffix {
    /// Enter (or keypad Enter).
    #[default]
    Enter,
    /// Tab.
    Tab,
    /// No suffix: a pause in typing ends the scan.
    None,
}

/// How a wedge scanner is set up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WedgeOptions {
    /// The scanner's keyboard layout.
    pub keymap: Keymap,
    /// A character the scanner sends in place of GS (e.g. `~`), mapped back.
    pub gs_substitute: Option<char>,
    /// The key that ends a scan.
    pub suffix: WedgeSuffix,
}

/// One key record from an `input_event` stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyEvent {
    /// Linux key code (`KEY_A` = 30).
    pub code: u16,
    /// 0 release, 1 press, 2 autorepeat.
    pub value: i32,
}

/// Read the key records from one 24-byte `input_event`; `None` for other
/// event types (`EV_SYN`, `EV_MSC`).
pub fn key_event(record: &[u8; INPUT_EVENT_LEN]) -> Option<KeyEvent> {
    let kind = u16::from_le_bytes([record[16], record[17]]);
    if kind != EV_KEY {
        return None;
    }
    Some(KeyEvent {
        code: u16::from_le_bytes([record[18], record[19]]),
        value: i32::from_le_bytes([record[20], record[21], record[22], record[23]]),
    })
}

/// Encode one `input_event` record (for recordings, tests and the simulator).
pub fn input_event(sec: i64, usec: i64, kind: u16, code: u16, value: i32) -> [u8; INPUT_EVENT_LEN] {
    let mut out = [0u8; INPUT_EVENT_LEN];
    out[..8].copy_from_slice(&sec.to_le_bytes());
    out[8..16].copy_from_slice(&usec.to_le_bytes());
    out[16..18].copy_from_slice(&kind.to_le_bytes());
    out[18..20].copy_from_slice(&code.to_le_bytes());
    out[20..].copy_from_slice(&value.to_le_bytes());
    out
}

/// What one key typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Typed {
    /// A byte of the scan.
    Byte(u8),
    /// The suffix: the scan is complete.
    End,
}

/// Turns key events into scan bytes; see the module docs.
#[derive(Debug, Default)]
pub struct WedgeDecoder {
    options: WedgeOptions,
    shift: bool,
    ctrl: bool,
    alt: bool,
    altgr: bool,
    caps: bool,
    /// Keypad digits typed while Alt is held (`Alt+0029`).
    alt_code: Option<u16>,
    unknown: u64,
}

impl WedgeDecoder {
    /// A decoder for a scanner set up as `options`.
    pub fn new(options: WedgeOptions) -> Self {
        WedgeDecoder {
            options,
            ..WedgeDecoder::default()
        }
    }

    /// Keys the keymap did not know, so far.
    pub fn unknown_keys(&self) -> u64 {
        self.unknown
    }

    /// Apply one key event; returns what it typed.
    pub fn push(&mut self, event: KeyEvent) -> Option<Typed> {
        let down = event.value != 0;
        match event.code {
            KEY_LEFTSHIFT | KEY_RIGHTSHIFT => self.shift = down,
            KEY_LEFTCTRL | KEY_RIGHTCTRL => self.ctrl = down,
            KEY_RIGHTALT => self.altgr = down,
            KEY_LEFTALT => {
                self.alt = down;
                if down {
                    self.alt_code = Some(0);
                } else if let Some(code) = self.alt_code.take() {
                    // Alt released after keypad digits: the typed code.
                    return u8::try_from(code)
                        .ok()
                        .filter(|c| *c > 0)
                        .map(|c| self.byte(c));
                }
            }
            KEY_CAPSLOCK if event.value == 1 => self.caps = !self.caps,
            _ if !down => {}
            code => return self.key(code),
        }
        None
    }

    fn key(&mut self, code: u16) -> Option<Typed> {
        if self.alt {
            if let (Some(acc), Some(digit)) = (self.alt_code, keypad_digit(code)) {
                self.alt_code = Some(acc.saturating_mul(10).saturating_add(digit));
            }
            return None;
        }
        let suffix = match self.options.suffix {
            WedgeSuffix::Enter => code == KEY_ENTER || code == KEY_KPENTER,
            WedgeSuffix::Tab => code == KEY_TAB,
            WedgeSuffix::None => false,
        };
        if suffix {
            return Some(Typed::End);
        }
        if self.ctrl {
            return control(code, self.options.keymap).map(Typed::Byte);
        }
        let Some(ch) = character(self.options.keymap, code, self.shift, self.altgr, self.caps)
        else {
            self.unknown += 1;
            return None;
        };
        let mut buf = [0u8; 4];
        let encoded = ch.encode_utf8(&mut buf);
        match encoded.as_bytes() {
            [b] => Some(self.byte(*b)),
            // Non-ASCII (DE umlauts): Latin-1 byte, as a serial scanner sends it.
            _ => u8::try_from(u32::from(ch)).ok().map(|b| self.byte(b)),
        }
    }

    fn byte(&self, b: u8) -> Typed {
        if self
            .options
            .gs_substitute
            .is_some_and(|s| u32::from(s) == u32::from(b))
        {
            Typed::Byte(0x1D)
        } else {
            Typed::Byte(b)
        }
    }
}

/// How a scanner types GS (for [`type_scan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsKeys {
    /// Ctrl + the key right of `P` (`KEY_RIGHTBRACE`).
    CtrlBracket,
    /// Alt held while `0029` is typed on the keypad.
    AltCode,
    /// The substitute character of the options.
    Substitute,
}

/// The `input_event` records a wedge scanner set up as `options` sends for
/// `scan` (bytes; GS = 0x1D), as the kernel delivers them: for every key an
/// `EV_MSC`/`MSC_SCAN`, the `EV_KEY` press, an `EV_SYN`, the release and an
/// `EV_SYN`, 2 ms apart from `start_us`. `None` when a byte cannot be typed
/// on the keymap. The inverse of [`WedgeDecoder`], for the simulator and tests.
pub fn type_scan(
    options: WedgeOptions,
    gs: GsKeys,
    scan: &[u8],
    start_us: i64,
) -> Option<Vec<[u8; INPUT_EVENT_LEN]>> {
    let mut k = Typist {
        t: start_us,
        out: Vec::new(),
    };
    for &b in scan {
        if b == 0x1D {
            match gs {
                GsKeys::CtrlBracket => k.tap(KEY_RIGHTBRACE, &[KEY_LEFTCTRL]),
                GsKeys::AltCode => {
                    k.key(KEY_LEFTALT, 1);
                    for code in [82, 82, 80, 73] {
                        k.tap(code, &[]);
                    }
                    k.key(KEY_LEFTALT, 0);
                }
                GsKeys::Substitute => {
                    let (code, mods) = key_for(options.keymap, options.gs_substitute?)?;
                    k.tap(code, mods);
                }
            }
            continue;
        }
        let (code, mods) = key_for(options.keymap, char::from(b))?;
        k.tap(code, mods);
    }
    match options.suffix {
        WedgeSuffix::Enter => k.tap(KEY_ENTER, &[]),
        WedgeSuffix::Tab => k.tap(KEY_TAB, &[]),
        WedgeSuffix::None => {}
    }
    Some(k.out)
}

/// Records keys as the kernel reports them, 2 ms apart.
struct Typist {
    t: i64,
    out: Vec<[u8; INPUT_EVENT_LEN]>,
}

impl Typist {
    fn key(&mut self, code: u16, value: i32) {
        let (sec, usec) = (self.t / 1_000_000, self.t % 1_000_000);
        if value == 1 {
            // EV_MSC / MSC_SCAN: the HID usage, sent before each press.
            self.out
                .push(input_event(sec, usec, 4, 4, 0x7_0000 + i32::from(code)));
        }
        self.out.push(input_event(sec, usec, EV_KEY, code, value));
        self.out.push(input_event(sec, usec, 0, 0, 0));
        self.t += 2_000;
    }

    fn tap(&mut self, code: u16, modifiers: &[u16]) {
        for m in modifiers {
            self.key(*m, 1);
        }
        self.key(code, 1);
        self.key(code, 0);
        for m in modifiers.iter().rev() {
            self.key(*m, 0);
        }
    }
}

/// The key and modifiers that type `ch` on `keymap` (main block preferred
/// over the keypad).
fn key_for(keymap: Keymap, ch: char) -> Option<(u16, &'static [u16])> {
    (1..=86u16)
        .filter(|c| !(71..=83).contains(c) && *c != 55)
        .find_map(|code| {
            if character(keymap, code, false, false, false) == Some(ch) {
                Some((code, &[][..]))
            } else if character(keymap, code, true, false, false) == Some(ch) {
                Some((code, &[KEY_LEFTSHIFT][..]))
            } else if character(keymap, code, false, true, false) == Some(ch) {
                Some((code, &[KEY_RIGHTALT][..]))
            } else {
                None
            }
        })
}

fn keypad_digit(code: u16) -> Option<u16> {
    Some(match code {
        82 => 0,
        79 => 1,
        80 => 2,
        81 => 3,
        75 => 4,
        76 => 5,
        77 => 6,
        71 => 7,
        72 => 8,
        73 => 9,
        _ => return None,
    })
}

/// Ctrl+key: the ASCII control character (Ctrl+A = 0x01 … Ctrl+] = 0x1D).
fn control(code: u16, keymap: Keymap) -> Option<u8> {
    if code == KEY_RIGHTBRACE {
        return Some(0x1D);
    }
    let letter = character(keymap, code, false, false, false)?;
    match letter {
        'a'..='z' => u8::try_from(u32::from(letter) - u32::from('a') + 1).ok(),
        '[' => Some(0x1B),
        '\\' => Some(0x1C),
        _ => None,
    }
}

/// The character key `code` types on `keymap`.
fn character(keymap: Keymap, code: u16, shift: bool, altgr: bool, caps: bool) -> Option<char> {
    let (plain, shifted, alt) = match keymap {
        Keymap::Us => (US_PLAIN, US_SHIFT, ""),
        Keymap::De => (DE_PLAIN, DE_SHIFT, DE_ALTGR),
    };
    let index = usize::from(code);
    let pick = |row: &str| row.chars().nth(index).filter(|c| *c != '\0');
    if altgr {
        return pick(alt);
    }
    let base = pick(plain)?;
    let upper = shift ^ (caps && base.is_alphabetic());
    if upper { pick(shifted) } else { Some(base) }
}

// Rows indexed by Linux key code 0..=86; '\0' = no character. Codes 2–13:
// digit row; 16–27: top letter row; 30–41: home row; 43–53: bottom row;
// 55, 57, 71–83: keypad star, space, keypad digits; 86: the ISO key left of Z.
const US_PLAIN: &str = "\0\0\
1234567890-=\0\0qwertyuiop[]\0\0asdfghjkl;'`\0\\zxcvbnm,./\0*\0 \0\0\0\0\0\0\0\0\0\0\0\0\0\
789-456+1230.\0\0\0";
const US_SHIFT: &str = "\0\0\
!@#$%^&*()_+\0\0QWERTYUIOP{}\0\0ASDFGHJKL:\"~\0|ZXCVBNM<>?\0*\0 \0\0\0\0\0\0\0\0\0\0\0\0\0\
789-456+1230.\0\0\0";
const DE_PLAIN: &str = "\0\0\
1234567890ß´\0\0qwertzuiopü+\0\0asdfghjklöä^\0#yxcvbnm,.-\0*\0 \0\0\0\0\0\0\0\0\0\0\0\0\0\
789-456+1230,\0\0<";
const DE_SHIFT: &str = "\0\0\
!\"§$%&/()=?`\0\0QWERTZUIOPÜ*\0\0ASDFGHJKLÖÄ°\0'YXCVBNM;:_\0*\0 \0\0\0\0\0\0\0\0\0\0\0\0\0\
789-456+1230,\0\0>";
const DE_ALTGR: &str = "\0\0\0²³\0\0\0{[]}\\\0\0\0@\0€\0\0\0\0\0\0\0\0~\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0µ\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0|";

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(options: WedgeOptions, keys: &[(u16, i32)]) -> Vec<u8> {
        let mut d = WedgeDecoder::new(options);
        keys.iter()
            .filter_map(|&(code, value)| d.push(KeyEvent { code, value }))
            .map(|t| match t {
                Typed::Byte(b) => b,
                Typed::End => b'\n',
            })
            .collect()
    }

    fn press(code: u16) -> [(u16, i32); 2] {
        [(code, 1), (code, 0)]
    }

    #[test]
    fn rows_line_up_with_key_codes() {
        for row in [US_PLAIN, US_SHIFT, DE_PLAIN, DE_SHIFT] {
            assert_eq!(row.chars().count(), 87, "{row}");
        }
        assert_eq!(DE_ALTGR.chars().count(), 87);
        assert_eq!(character(Keymap::Us, 30, false, false, false), Some('a'));
        assert_eq!(character(Keymap::Us, 44, false, false, false), Some('z'));
        assert_eq!(character(Keymap::De, 44, false, false, false), Some('y'));
        assert_eq!(character(Keymap::De, 21, false, false, false), Some('z'));
        assert_eq!(character(Keymap::Us, 11, false, false, false), Some('0'));
        assert_eq!(character(Keymap::Us, 82, false, false, false), Some('0'));
        assert_eq!(character(Keymap::De, 16, false, true, false), Some('@'));
        assert_eq!(character(Keymap::De, 86, true, false, false), Some('>'));
    }

    #[test]
    fn gs_by_ctrl_bracket_alt_code_or_substitute() {
        let mut keys = vec![(KEY_LEFTCTRL, 1)];
        keys.extend(press(KEY_RIGHTBRACE));
        keys.push((KEY_LEFTCTRL, 0));
        keys.push((KEY_LEFTALT, 1));
        for code in [82, 82, 80, 73] {
            keys.extend(press(code));
        }
        keys.push((KEY_LEFTALT, 0));
        keys.push((KEY_LEFTSHIFT, 1));
        keys.extend(press(41)); // Shift+` = ~ on US
        keys.push((KEY_LEFTSHIFT, 0));
        keys.extend(press(KEY_ENTER));
        let options = WedgeOptions {
            gs_substitute: Some('~'),
            ..WedgeOptions::default()
        };
        assert_eq!(typed(options, &keys), b"\x1d\x1d\x1d\n");
    }

    #[test]
    fn suffix_and_caps_lock() {
        let mut keys = vec![];
        keys.extend(press(KEY_CAPSLOCK));
        keys.extend(press(30));
        keys.extend(press(KEY_CAPSLOCK));
        keys.extend(press(30));
        keys.extend(press(KEY_TAB));
        keys.extend(press(KEY_ENTER));
        let options = WedgeOptions {
            suffix: WedgeSuffix::Tab,
            ..WedgeOptions::default()
        };
        assert_eq!(typed(options, &keys), b"Aa\n");
    }

    #[test]
    fn typing_and_decoding_are_inverse_on_both_keymaps() {
        let scan = b"]C10109521234543213\x1d10AB-12/x;Y\x1d21S:N\"#@";
        for keymap in [Keymap::Us, Keymap::De] {
            for gs in [GsKeys::CtrlBracket, GsKeys::AltCode, GsKeys::Substitute] {
                let options = WedgeOptions {
                    keymap,
                    gs_substitute: Some('|'),
                    suffix: WedgeSuffix::Enter,
                };
                let records = type_scan(options, gs, scan, 0).expect("typeable");
                let mut d = WedgeDecoder::new(options);
                let mut out = Vec::new();
                for r in &records {
                    match key_event(r).and_then(|e| d.push(e)) {
                        Some(Typed::Byte(b)) => out.push(b),
                        Some(Typed::End) => out.push(b'\n'),
                        None => {}
                    }
                }
                let mut want = scan.to_vec();
                want.push(b'\n');
                assert_eq!(out, want, "{keymap:?} {gs:?}");
            }
        }
    }

    #[test]
    fn records_round_trip() {
        let record = input_event(1_700_000_000, 5, EV_KEY, 30, 1);
        assert_eq!(key_event(&record), Some(KeyEvent { code: 30, value: 1 }));
        assert_eq!(key_event(&input_event(0, 0, 0, 0, 0)), None);
    }
}
