//! A cloneable shutdown signal: one sender flips it, every task's
//! [`Shutdown::wait`] completes. Tasks select on it at every await point that
//! may block for long (network, retry sleeps), so shutdown is prompt.

use tokio::sync::watch;

/// Triggers shutdown for every [`Shutdown`] made from it.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Completes once shutdown was triggered (or the trigger was dropped).
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl ShutdownTrigger {
    /// A new, untriggered signal.
    pub fn new() -> Self {
        Self(watch::channel(false).0)
    }

    /// A receiver for a task.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }

    /// Tells every receiver to stop.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Default for ShutdownTrigger {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// Waits until shutdown is triggered; returns at once if it already was.
    pub async fn wait(&mut self) {
        // An error means the trigger is gone, which also means "stop".
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}
