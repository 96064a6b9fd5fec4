//! Fake serial devices for end-to-end tests: the master side of a
//! pseudo-terminal, whose slave path (`/dev/pts/N`) the agent opens through
//! its normal serialport code. (agent/tests/serial.rs has its own copy: the
//! agent's crate tests cannot depend on this harness.)

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};

/// A fake serial device; dropping it is unplugging it.
pub struct FakeSerial {
    master: File,
    /// Held open so the tty stays up (and raw) before the agent opens it.
    _slave: File,
    /// The path the agent opens.
    pub path: PathBuf,
}

impl FakeSerial {
    /// A new raw pseudo-terminal.
    pub fn new() -> Result<FakeSerial> {
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).context("openpt")?;
        grantpt(&master).context("grantpt")?;
        unlockpt(&master).context("unlockpt")?;
        let name = ptsname(&master, Vec::new()).context("ptsname")?;
        let path = PathBuf::from(
            name.into_string()
                .map_err(|_| anyhow::anyhow!("pts path is not UTF-8"))?,
        );
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        // Raw from the start: no echo back to the master, no CR→LF mapping.
        let mut termios = tcgetattr(&slave).context("tcgetattr")?;
        termios.make_raw();
        tcsetattr(&slave, OptionalActions::Now, &termios).context("tcsetattr")?;
        Ok(FakeSerial {
            master: File::from(master),
            _slave: slave,
            path,
        })
    }

    /// Writes device bytes, as the device would send them.
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.master
            .write_all(bytes)
            .with_context(|| format!("write to {}", self.path.display()))
    }
}
