//! A fake serial device for tests: the master side of a pseudo-terminal,
//! whose slave side the agent opens through its normal serialport path
//! (behind a symlink, as `/dev/serial/by-id/…` links are).

#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};

/// A fake serial device: the master side of a pseudo-terminal.
pub struct FakeDevice {
    master: File,
    /// Held open so the tty stays up (and raw) before the agent opens it.
    _slave: File,
    pub path: PathBuf,
}

impl FakeDevice {
    pub fn new() -> FakeDevice {
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let name = ptsname(&master, Vec::new()).expect("ptsname");
        let path = PathBuf::from(name.into_string().expect("pts path is UTF-8"));
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
            .open(&path)
            .expect("open slave");
        // Raw from the start: no echo back to the master, no CR→LF mapping.
        let mut termios = tcgetattr(&slave).expect("tcgetattr");
        termios.make_raw();
        tcsetattr(&slave, OptionalActions::Now, &termios).expect("tcsetattr");
        FakeDevice {
            master: File::from(master),
            _slave: slave,
            path,
        }
    }

    /// A new device behind `link` (replacing whatever it pointed to).
    pub fn plug(link: &Path) -> FakeDevice {
        let device = FakeDevice::new();
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(&device.path, link).expect("symlink");
        device
    }

    /// Closes the device and removes its link, as pulling the USB cable does.
    pub fn unplug(self, link: &Path) {
        std::fs::remove_file(link).expect("remove link");
        drop(self);
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).expect("write to master");
    }
}
