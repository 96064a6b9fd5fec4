//! An MT-SICS scale in request/response mode on a pseudo-terminal: the
//! agent's device thread polls it (`SI`) at the configured interval, passes
//! a station's tare on before the next poll, and reads the answers into
//! readings. The test plays the scale on the master side.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dockline_agent::config::DeviceConfig;
use dockline_agent::devices::{Presence, ScaleActionError, Sources};
use dockline_firmware::scale::MtSicsCommand;
use dockline_protocol::Reading;
use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};

const DEADLINE: Duration = Duration::from_secs(10);

/// The master side of a raw pseudo-terminal and the slave's path.
fn pty() -> (File, File, PathBuf) {
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let path = PathBuf::from(
        ptsname(&master, Vec::new())
            .expect("ptsname")
            .into_string()
            .expect("utf-8"),
    );
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
        .open(&path)
        .expect("open slave");
    let mut termios = tcgetattr(&slave).expect("tcgetattr");
    termios.make_raw();
    tcsetattr(&slave, OptionalActions::Now, &termios).expect("tcsetattr");
    (File::from(master), slave, path)
}

/// Lines the agent writes to the scale, read on a thread.
fn command_lines(mut master: File) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while let Ok(1) = master.read(&mut byte) {
            if byte[0] == b'\n' {
                let text = String::from_utf8_lossy(&line).trim().to_owned();
                line.clear();
                if tx.send(text).is_err() {
                    return;
                }
            } else {
                line.push(byte[0]);
            }
        }
    });
    rx
}

#[test]
fn polls_answers_and_passes_a_tare_before_the_next_poll() {
    let (master, _slave, path) = pty();
    let mut writer = master.try_clone().expect("clone master");
    let commands = command_lines(master);
    let config: DeviceConfig = serde_json::from_value(serde_json::json!({
        "name": "pack-scale", "kind": "scale", "protocol": "mtsics",
        "path": path, "poll_ms": 200
    }))
    .expect("device config");
    let presence = Presence::new(std::slice::from_ref(&config));
    let (tx, mut readings) = tokio::sync::mpsc::channel(16);
    let sources = Sources::spawn(std::slice::from_ref(&config), presence, tx).expect("spawn");

    let first = commands.recv_timeout(DEADLINE).expect("a poll");
    assert_eq!(first, "SI");
    writer.write_all(b"S S      1.234 kg\r\n").expect("answer");
    let reading = readings.blocking_recv().expect("a reading");
    let Reading::Weight(w) = reading.reading else {
        panic!("{reading:?}");
    };
    assert!((w.net.value - 1.234).abs() < 1e-9 && w.stable);

    sources
        .scale_action("pack-scale", MtSicsCommand::Tare)
        .expect("an MT-SICS scale takes a tare");
    assert_eq!(
        sources.scale_action("nope", MtSicsCommand::Zero),
        Err(ScaleActionError::UnknownDevice("nope".into()))
    );
    // The tare goes out before the next weight poll, and that poll waits
    // for the tare's answer.
    let started = Instant::now();
    let next = commands.recv_timeout(DEADLINE).expect("a command");
    assert_eq!(next, "T", "after {:?}", started.elapsed());
    assert!(
        commands.recv_timeout(Duration::from_millis(600)).is_err(),
        "nothing while the tare is unanswered"
    );
    writer.write_all(b"T S      0.500 kg\r\n").expect("answer");
    assert_eq!(
        commands.recv_timeout(DEADLINE).expect("polling resumes"),
        "SI"
    );
    writer.write_all(b"S I\r\n").expect("busy");
    assert_eq!(commands.recv_timeout(DEADLINE).expect("and goes on"), "SI");
    sources.stop();
}

/// A pack station's tare barcode, scanned, reaches the MT-SICS scale on the
/// pseudo-terminal as `T` before its next poll, through the station engine
/// and the [`ScaleCommander`] the feed uses; the zero barcode as `Z`.
#[test]
fn a_station_tare_barcode_tares_the_scale_on_the_line() {
    use dockline_agent::devices::ScaleCommander;
    use dockline_agent::stations::{Output, StationConfig, StationEngine, Stations};
    use dockline_protocol::Scan;

    let (master, _slave, path) = pty();
    let mut writer = master.try_clone().expect("clone master");
    let commands = command_lines(master);
    let devices: Vec<DeviceConfig> = serde_json::from_value(serde_json::json!([
        {"name": "pack-scanner", "kind": "scanner", "protocol": "scan", "path": "/dev/null"},
        {"name": "pack-scale", "kind": "scale", "protocol": "mtsics", "path": path, "poll_ms": 200}
    ]))
    .expect("device configs");
    let station: StationConfig = serde_json::from_value(serde_json::json!({
        "name": "pack-1", "kind": "pack", "devices": ["pack-scanner", "pack-scale"],
        "tare_barcode": "TARE", "zero_barcode": "ZERO"
    }))
    .expect("station config");
    let stations = Stations::new(StationEngine::new(&[station], &devices));
    let scale = &devices[1..];
    let presence = Presence::new(scale);
    let (tx, mut readings) = tokio::sync::mpsc::channel(16);
    let sources = Sources::spawn(scale, presence, tx).expect("spawn");
    let commander: ScaleCommander = sources.scale_commander();

    assert_eq!(commands.recv_timeout(DEADLINE).expect("a poll"), "SI");
    writer.write_all(b"S S      0.412 kg\r\n").expect("answer");
    readings.blocking_recv().expect("a reading");

    for (text, expected, answer) in [("TARE", "T", "T S      0.412 kg"), ("ZERO", "Z", "Z A")] {
        let scan = dockline_protocol::Reading::Scan(Scan {
            symbology: Some("]C0".into()),
            data: text.into(),
        });
        let (_, outputs) = stations.on_reading("pack-scanner", &scan).expect("routed");
        let mut sent = 0;
        for output in outputs {
            if let Output::ScaleCommand { device, command } = output {
                commander.send(&device, command).expect("sent");
                sent += 1;
            }
        }
        assert_eq!(sent, 1, "{text}: one command for the station's one scale");
        // Polls may be in flight; the command comes before the next one.
        let mut seen = Vec::new();
        loop {
            let line = commands.recv_timeout(DEADLINE).expect("a command");
            if line == expected {
                break;
            }
            assert_eq!(line, "SI", "only polls before {expected}: {seen:?}");
            writer.write_all(b"S S      0.412 kg\r\n").expect("answer");
            seen.push(line);
            assert!(seen.len() < 5, "{expected} never sent: {seen:?}");
        }
        writer
            .write_all(format!("{answer}\r\n").as_bytes())
            .expect("answer");
    }
    assert_eq!(
        commander.send("pack-scanner", MtSicsCommand::Tare),
        Err(ScaleActionError::UnknownDevice("pack-scanner".into()))
    );
    sources.stop();
}
