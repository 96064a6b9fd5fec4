//! The stop signals of a service: SIGTERM (systemd's stop) and SIGINT
//! (Ctrl-C).

use std::future::Future;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when it is first polled, so a stop that comes while the
/// process is still starting is a clean stop, not a kill. A handler that
/// cannot be installed never fires (the other still does).
pub fn shutdown() -> impl Future<Output = ()> + Send + 'static {
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        tokio::select! {
            () = wait(term) => {}
            () = wait(int) => {}
        }
    }
}

async fn wait(s: std::io::Result<Signal>) {
    match s {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}
