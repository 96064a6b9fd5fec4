//! Child processes for the demo and the tests: logs go to files, readiness is
//! an address file the child writes, and a child never outlives its handle.
//!
//! # Invariants
//!
//! - An address file is written whole or not at all (temp file + rename), so a
//!   reader that sees it sees a complete `host:port`.
//! - Dropping a [`ChildProcess`] kills the child and reaps it, so a panic or an
//!   early error in the parent leaves nothing running. (A parent killed with
//!   SIGKILL cannot clean up; its children then keep running until killed.)

use std::fs::{self, File};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A child process could not be started or did not become ready.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The log file could not be created.
    #[error("cannot create log file {path}: {source}")]
    Log {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The program could not be started.
    #[error("cannot start {name} ({program}): {source}")]
    Spawn {
        /// Our name for the child.
        name: String,
        /// The program.
        program: String,
        /// Why.
        source: io::Error,
    },
    /// The child exited before it wrote its address.
    #[error("{name} exited ({status}) before it was ready; last lines of {log}:\n{tail}")]
    Exited {
        /// Our name for the child.
        name: String,
        /// How it ended.
        status: ExitStatus,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// The child did not write its address file in time.
    #[error("{name} did not write {file} within {secs} s; see {log}")]
    NotReady {
        /// Our name for the child.
        name: String,
        /// The address file.
        file: PathBuf,
        /// The wait.
        secs: u64,
        /// Its log file.
        log: PathBuf,
    },
    /// The address file holds something other than `host:port`.
    #[error("{file} holds {text:?}, not an address")]
    BadAddr {
        /// The file.
        file: PathBuf,
        /// What it holds.
        text: String,
    },
    /// Writing an address file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Writes `addr` to `path` atomically (temp file in the same directory, then rename).
pub fn write_addr_file(path: &Path, addr: SocketAddr) -> Result<(), ProcessError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, addr.to_string())
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|source| ProcessError::Write {
            path: path.into(),
            source,
        })
}

/// Reads an address file if it exists and is complete.
pub fn read_addr_file(path: &Path) -> Result<Option<SocketAddr>, ProcessError> {
    let Ok(text) = fs::read_to_string(path) else {
        return Ok(None);
    };
    let text = text.trim();
    text.parse().map(Some).map_err(|_| ProcessError::BadAddr {
        file: path.into(),
        text: text.into(),
    })
}

/// A running child process, killed when dropped.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ChildProcess {
    /// Starts `program args…` with stdout and stderr appended to `{log_dir}/{name}.log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[&str],
        log_dir: &Path,
    ) -> Result<Self, ProcessError> {
        let log = log_dir.join(format!("{name}.log"));
        let open = || {
            File::options()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(|source| ProcessError::Log {
                    path: log.clone(),
                    source,
                })
        };
        let (out, err) = (open()?, open()?);
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| ProcessError::Spawn {
                name: name.into(),
                program: program.display().to_string(),
                source,
            })?;
        Ok(Self {
            name: name.into(),
            child,
            log,
        })
    }

    /// Our name for the child.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the child has written a complete address to `file`, failing
    /// early if it exits first.
    pub async fn wait_for_addr(
        &mut self,
        file: &Path,
        timeout: Duration,
    ) -> Result<SocketAddr, ProcessError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(addr) = read_addr_file(file)? {
                return Ok(addr);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(ProcessError::Exited {
                    name: self.name.clone(),
                    status,
                    log: self.log.clone(),
                    tail: log_tail(&self.log, 20),
                });
            }
            if Instant::now() >= deadline {
                return Err(ProcessError::NotReady {
                    name: self.name.clone(),
                    file: file.into(),
                    secs: timeout.as_secs(),
                    log: self.log.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the child at once (SIGKILL) and reaps it: a crash, not a shutdown.
    pub fn kill(mut self) {
        self.kill_now();
    }

    /// Asks the child to stop (SIGTERM), waits up to `grace`, then kills it.
    pub async fn terminate(mut self, grace: Duration) {
        if self.is_running() {
            send_sigterm(self.child.id());
            let deadline = Instant::now() + grace;
            while self.is_running() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.kill_now();
    }

    fn kill_now(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// Sends SIGTERM so the child can shut down cleanly.
#[allow(unsafe_code)]
fn send_sigterm(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; the
    // pid is our own unreaped child, so it cannot name a recycled process.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_file_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.addr");
        assert_eq!(read_addr_file(&path).expect("absent is fine"), None);
        let addr: SocketAddr = "127.0.0.1:4242".parse().expect("addr");
        write_addr_file(&path, addr).expect("write");
        assert_eq!(read_addr_file(&path).expect("read"), Some(addr));
        fs::write(&path, "nonsense").expect("write");
        assert!(read_addr_file(&path).is_err());
    }

    #[tokio::test]
    async fn early_exit_is_reported_with_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = ChildProcess::spawn(
            "sh",
            Path::new("/bin/sh"),
            &["-c", "echo boom >&2; exit 3"],
            dir.path(),
        )
        .expect("spawn");
        let err = child
            .wait_for_addr(&dir.path().join("never"), Duration::from_secs(5))
            .await
            .expect_err("exits");
        assert!(err.to_string().contains("boom"), "{err}");
    }

    #[tokio::test]
    async fn drop_kills_the_child() {
        let dir = tempfile::tempdir().expect("tempdir");
        let child = ChildProcess::spawn("sleep", Path::new("/bin/sleep"), &["30"], dir.path())
            .expect("spawn");
        let pid = child.pid();
        drop(child);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}
