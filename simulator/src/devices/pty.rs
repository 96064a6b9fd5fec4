//! The wire of a virtual device: the master side of a pseudo-terminal, with
//! a stable symlink to its slave (`/dev/pts/N`) that an agent's
//! `[[devices]] path` names.
//!
//! # Invariants
//!
//! - The slave is held open and set raw here, before anyone else opens it: a
//!   fresh pty echoes, maps CR to LF and buffers lines, which would corrupt
//!   device bytes (and echo them back). Holding it also keeps writes to the
//!   master from failing with EIO while the agent has not opened the port.
//! - Writes never block: the master is non-blocking, and bytes the pty will
//!   not take (its buffer is full because nobody reads) are dropped and
//!   counted, as on a serial line without flow control.
//! - Dropping the port removes the symlink and closes the pty: the agent sees
//!   an unplug.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};

/// A virtual device's port could not be created.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// A pseudo-terminal call failed.
    #[error(
        "cannot create a pseudo-terminal ({step}): {source}; check /dev/ptmx and kernel.pty.max"
    )]
    Pty {
        /// Which call.
        step: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The stable link could not be made.
    #[error("cannot link {link} to {pts}: {source}")]
    Link {
        /// The link path.
        link: PathBuf,
        /// The pty slave it should point to.
        pts: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn pty_err(step: &'static str) -> impl Fn(rustix::io::Errno) -> PortError {
    move |e| PortError::Pty {
        step,
        source: e.into(),
    }
}

/// One virtual serial port; see the module docs.
#[derive(Debug)]
pub struct VirtualPort {
    master: File,
    _slave: File,
    pts: PathBuf,
    link: PathBuf,
    written: u64,
    dropped: u64,
}

impl VirtualPort {
    /// Opens a raw pseudo-terminal and links `link` to its slave (replacing
    /// a stale link left by an earlier run).
    pub fn open(link: &Path) -> Result<Self, PortError> {
        let master =
            openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).map_err(pty_err("posix_openpt"))?;
        grantpt(&master).map_err(pty_err("grantpt"))?;
        unlockpt(&master).map_err(pty_err("unlockpt"))?;
        let name = ptsname(&master, Vec::new()).map_err(pty_err("ptsname"))?;
        let pts = PathBuf::from(name.to_string_lossy().into_owned());
        let flags = fcntl_getfl(&master).map_err(pty_err("fcntl"))?;
        fcntl_setfl(&master, flags | OFlags::NONBLOCK).map_err(pty_err("fcntl"))?;
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(OFlags::NOCTTY.bits() as i32)
            .open(&pts)
            .map_err(|source| PortError::Pty {
                step: "open slave",
                source,
            })?;
        let mut termios = tcgetattr(&slave).map_err(pty_err("tcgetattr"))?;
        termios.make_raw();
        tcsetattr(&slave, OptionalActions::Now, &termios).map_err(pty_err("tcsetattr"))?;
        let link_err = |source| PortError::Link {
            link: link.into(),
            pts: pts.clone(),
            source,
        };
        match std::fs::remove_file(link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(link_err(e)),
        }
        std::os::unix::fs::symlink(&pts, link).map_err(link_err)?;
        Ok(VirtualPort {
            master: File::from(master),
            _slave: slave,
            pts,
            link: link.into(),
            written: 0,
            dropped: 0,
        })
    }

    /// The stable path (the symlink) an agent opens.
    pub fn path(&self) -> &Path {
        &self.link
    }

    /// The pty slave behind the link (`/dev/pts/N`).
    pub fn pts(&self) -> &Path {
        &self.pts
    }

    /// Sends device bytes; what the line will not take now is dropped.
    /// Returns the number of bytes sent.
    pub fn send(&mut self, bytes: &[u8]) -> usize {
        let mut sent = 0;
        while sent < bytes.len() {
            match self.master.write(&bytes[sent..]) {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // WouldBlock (nobody reads) or EIO: the rest is lost, as on a wire.
                Err(_) => break,
            }
        }
        self.written += sent as u64;
        self.dropped += (bytes.len() - sent) as u64;
        sent
    }

    /// Bytes sent so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Bytes dropped because the line would not take them.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

impl Drop for VirtualPort {
    fn drop(&mut self) {
        // Only our own link: a path someone replaced since is theirs.
        if std::fs::read_link(&self.link).is_ok_and(|target| target == self.pts) {
            let _ = std::fs::remove_file(&self.link);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn bytes_arrive_unchanged_through_the_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join("scanner");
        let mut port = VirtualPort::open(&link).expect("pty");
        assert_eq!(std::fs::read_link(&link).ok().as_deref(), Some(port.pts()));
        let mut reader = std::fs::File::open(&link).expect("open the link");
        let bytes = b"]C1010952123454321310LOT\x1d21X\r\n\x02,0 \r";
        assert_eq!(port.send(bytes), bytes.len());
        let mut got = vec![0u8; bytes.len()];
        reader.read_exact(&mut got).expect("read");
        assert_eq!(&got, bytes, "CR, GS and STX pass through untouched");
        drop(port);
        assert!(!link.exists(), "the link goes with the device");
    }

    #[test]
    fn an_unread_port_drops_instead_of_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut port = VirtualPort::open(&dir.path().join("gps")).expect("pty");
        let chunk = [b'x'; 4096];
        for _ in 0..64 {
            port.send(&chunk);
        }
        assert!(port.dropped() > 0, "a full pty drops");
        assert_eq!(port.written() + port.dropped(), 64 * 4096);
    }
}
