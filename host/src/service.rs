//! systemd service notifications (`Type=notify`), without libsystemd: one
//! datagram to `$NOTIFY_SOCKET` per state (`READY=1`, `WATCHDOG=1`,
//! `RELOADING=1`, `STOPPING=1`).
//!
//! Invariants: outside systemd (no `NOTIFY_SOCKET`) every call is a no-op
//! returning `Ok(false)`; a failure to send is returned, never a panic, and
//! the caller only logs it (a service must not die because the manager's
//! socket went away).

use std::io;
use std::time::Duration;

/// Sends one state string to the service manager; `Ok(true)` when sent,
/// `Ok(false)` when not running under one.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    send_state(&path, state).map(|()| true)
}

/// Sends `state` to the socket `path` names (`@name`: an abstract socket).
fn send_state(path: &std::ffi::OsStr, state: &str) -> io::Result<()> {
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket (systemd's default in containers).
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        socket.send_to(state.as_bytes(), std::path::Path::new(path))?;
    }
    Ok(())
}

/// How often to send `WATCHDOG=1`: half of `WatchdogSec=` when systemd
/// asks this process (`WATCHDOG_USEC`, and `WATCHDOG_PID` is ours or unset).
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim() != std::process::id().to_string()
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_reach_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
        send_state(path.as_os_str(), "READY=1").expect("send");
        let mut buf = [0u8; 32];
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = std::format!("dockline-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .expect("abstract name");
        let listener = std::os::unix::net::UnixDatagram::bind_addr(&addr).expect("bind abstract");
        send_state(std::ffi::OsStr::new(&std::format!("@{name}")), "WATCHDOG=1").expect("send");
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"WATCHDOG=1");

        let missing = dir.path().join("nobody-listens.sock");
        assert!(send_state(missing.as_os_str(), "READY=1").is_err());
    }
}
