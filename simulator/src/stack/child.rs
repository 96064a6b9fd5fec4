//! The one child-process type of the system under test: every broker,
//! collector and agent the demo, chaos, fleet, bench and the end-to-end
//! tests start is a [`Child`]. Its output goes to a log file, readiness is
//! an address file the child writes, and a child never outlives its handle.
//!
//! # Invariants
//!
//! - An address file is written whole or not at all (temp file + rename), so a
//!   reader that sees it sees a complete `host:port`.
//! - Dropping a [`Child`] kills the child and reaps it, so a panic, a failed
//!   assertion or an early error in the parent leaves nothing running. (A
//!   parent killed with SIGKILL cannot clean up; its children then keep
//!   running until killed.)
//! - A child keeps its command: [`Child::restart`] starts the same program
//!   with the same arguments and environment, appending to the same log, so a
//!   killed and restarted process keeps one log.

use std::fs::{self, File};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{self, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A child process could not be started or did not become ready.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
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
pub fn write_addr_file(path: &Path, addr: SocketAddr) -> Result<(), ChildError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, addr.to_string())
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|source| ChildError::Write {
            path: path.into(),
            source,
        })
}

/// Reads an address file if it exists and is complete.
pub fn read_addr_file(path: &Path) -> Result<Option<SocketAddr>, ChildError> {
    let Ok(text) = fs::read_to_string(path) else {
        return Ok(None);
    };
    let text = text.trim();
    text.parse().map(Some).map_err(|_| ChildError::BadAddr {
        file: path.into(),
        text: text.into(),
    })
}

/// A child process, killed when dropped; see the module docs.
#[derive(Debug)]
pub struct Child {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    child: Option<process::Child>,
    log: PathBuf,
}

impl Child {
    /// Starts `program args…` with `envs` added to this process's
    /// environment, stdout and stderr appended to `{log_dir}/{name}.log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(String, String)],
        log_dir: &Path,
    ) -> Result<Self, ChildError> {
        let mut child = Self {
            name: name.into(),
            program: program.into(),
            args: args.to_vec(),
            envs: envs.to_vec(),
            child: None,
            log: log_dir.join(format!("{name}.log")),
        };
        child.start()?;
        Ok(child)
    }

    fn start(&mut self) -> Result<(), ChildError> {
        let open = || {
            File::options()
                .create(true)
                .append(true)
                .open(&self.log)
                .map_err(|source| ChildError::Log {
                    path: self.log.clone(),
                    source,
                })
        };
        let (out, err) = (open()?, open()?);
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| ChildError::Spawn {
                name: self.name.clone(),
                program: self.program.display().to_string(),
                source,
            })?;
        self.child = Some(child);
        Ok(())
    }

    /// Kills the child if it runs (SIGKILL) and starts the same command again.
    pub fn restart(&mut self) -> Result<(), ChildError> {
        self.kill_now();
        self.start()
    }

    /// Our name for the child.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The OS process id (0 once killed).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, process::Child::id)
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the child has written a complete address to `file`, failing
    /// early if it exits first.
    pub async fn wait_for_addr(
        &mut self,
        file: &Path,
        timeout: Duration,
    ) -> Result<SocketAddr, ChildError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(addr) = read_addr_file(file)? {
                return Ok(addr);
            }
            if let Some(status) = self.exit_status() {
                return Err(ChildError::Exited {
                    name: self.name.clone(),
                    status,
                    log: self.log.clone(),
                    tail: log_tail(&self.log, 20),
                });
            }
            if Instant::now() >= deadline {
                return Err(ChildError::NotReady {
                    name: self.name.clone(),
                    file: file.into(),
                    secs: timeout.as_secs(),
                    log: self.log.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How the child ended, if it has.
    fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the child at once (SIGKILL) and reaps it: a crash, not a
    /// shutdown. [`Child::restart`] starts it again.
    pub fn kill(&mut self) {
        self.kill_now();
    }

    /// Asks the child to stop (SIGTERM), waits up to `grace`, then kills it.
    pub async fn terminate(&mut self, grace: Duration) {
        if self.is_running() {
            send_sigterm(self.pid());
            let deadline = Instant::now() + grace;
            while self.is_running() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.kill_now();
    }

    fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Child {
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
        let args = ["-c".to_string(), "echo boom >&2; exit 3".to_string()];
        let mut child =
            Child::spawn("sh", Path::new("/bin/sh"), &args, &[], dir.path()).expect("spawn");
        let err = child
            .wait_for_addr(&dir.path().join("never"), Duration::from_secs(5))
            .await
            .expect_err("exits");
        assert!(err.to_string().contains("boom"), "{err}");
    }

    #[tokio::test]
    async fn drop_kills_the_child() {
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Child::spawn(
            "sleep",
            Path::new("/bin/sleep"),
            &["30".to_string()],
            &[],
            dir.path(),
        )
        .expect("spawn");
        let pid = child.pid();
        drop(child);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn a_killed_child_restarts_with_its_command_and_keeps_one_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = ["-c".to_string(), "echo \"run $X\"; sleep 30".to_string()];
        let envs = [("X".to_string(), "one".to_string())];
        let runs = |child: &Child, n: usize| {
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.log_text().matches("run one").count() < n && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            child.log_text().matches("run one").count()
        };
        let mut child =
            Child::spawn("sh", Path::new("/bin/sh"), &args, &envs, dir.path()).expect("spawn");
        assert_eq!(runs(&child, 1), 1);
        let first = child.pid();
        child.kill();
        assert!(!child.is_running());
        assert!(!Path::new(&format!("/proc/{first}")).exists());
        child.restart().expect("restart");
        assert!(child.is_running());
        assert_eq!(runs(&child, 2), 2);
    }
}
