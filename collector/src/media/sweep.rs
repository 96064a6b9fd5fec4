//! The retention timer: every `[media] sweep_every_secs`, delete media the
//! ERP attached more than `retain_days` ago and no open event references
//! ([`crate::media::store::MediaStore::sweep`]). The clock is passed in,
//! so tests move it.

use std::time::Duration;

use crate::media::MediaHub;
use crate::shutdown::Shutdown;

/// One sweep at `now_ms`: how many media were deleted.
pub async fn sweep_once(
    hub: &MediaHub,
    now_ms: i64,
) -> Result<u64, crate::media::store::MediaError> {
    let retain = hub.config.retain_ms();
    let n = hub.store.call(move |s| s.sweep(now_ms, retain)).await?;
    if n > 0 {
        hub.metrics.swept(n);
        tracing::info!(
            deleted = n,
            retain_days = hub.config.retain_days,
            "media retention: deleted media the ERP attached long ago"
        );
    }
    Ok(n)
}

/// Sweeps every `[media] sweep_every_secs` until shutdown, reading the time
/// from `clock` (ms since the Unix epoch).
pub async fn run(hub: MediaHub, clock: impl Fn() -> i64 + Send, mut shutdown: Shutdown) {
    let every = Duration::from_secs(hub.config.sweep_every_secs.max(1));
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(every) => {}
        }
        if let Err(e) = sweep_once(&hub, clock()).await {
            tracing::error!("media retention sweep failed: {e}; trying again next period");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::config::MediaConfig;
    use crate::media::store::FsMediaStore;
    use dockline_protocol::media::{MediaHash, MediaType};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    #[tokio::test]
    async fn the_timer_deletes_media_attached_longer_ago_than_the_retention() {
        let dir = tempfile::tempdir().expect("dir");
        let store = FsMediaStore::open(dir.path()).expect("store");
        let config = MediaConfig {
            retain_days: 2,
            sweep_every_secs: 1,
            ..MediaConfig::default()
        };
        let hub = MediaHub::new(Box::new(store), config, Arc::default());
        let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
        bytes.resize(64, 7);
        let h = MediaHash::of(&bytes);
        hub.store
            .blocking(|s| {
                s.append(&h, MediaType::Png, 64, 0, &bytes)?;
                s.complete(&h, MediaType::Png, 0)?;
                s.mark_attached(&h, 0)
            })
            .expect("stored");
        let day = 86_400_000;
        let now = Arc::new(AtomicI64::new(day));
        let clock = {
            let now = Arc::clone(&now);
            move || now.load(Ordering::SeqCst)
        };
        let stop = crate::shutdown::ShutdownTrigger::new();
        let shutdown = stop.subscribe();
        let task = tokio::spawn(run(hub.clone(), clock, shutdown));
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert!(
            hub.store.blocking(|s| s.has(&h)).expect("has"),
            "kept one day in"
        );
        now.store(2 * day + 1, Ordering::SeqCst);
        for _ in 0..300 {
            if hub.metrics.snapshot().2 == 1 {
                break;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            !hub.store.blocking(|s| s.has(&h)).expect("has"),
            "swept after two days"
        );
        assert_eq!(hub.metrics.snapshot().2, 1);
        stop.trigger();
        let _ = task.await;
    }
}
