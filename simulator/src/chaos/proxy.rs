//! A TCP proxy on 127.0.0.1 that misbehaves on command, put between the
//! agents and the broker and between the collector and the ERP by the chaos
//! trials.
//!
//! # Modes and actions
//!
//! - **delay** ([`ChaosProxy::set_delay`]): every chunk read is written that
//!   much later, in order, in both directions (a delay line, not a throttle:
//!   throughput stays, latency grows).
//! - **black hole** ([`ChaosProxy::black_hole`] … [`ChaosProxy::resume`]):
//!   bytes read in either direction are discarded and no socket is closed, the
//!   way a link dies without a FIN or RST (Wi-Fi roaming, an expired NAT
//!   mapping). Connections accepted meanwhile are held open and never
//!   forwarded. A connection that lost bytes stays silent after `resume` (its
//!   byte stream has a hole, so neither end would hear from the other again)
//!   and its sockets stay open until a cut or until the proxy is dropped;
//!   connections that lost nothing carry on, and new ones are forwarded.
//! - **refuse** ([`ChaosProxy::refuse`]): new connections are reset at once.
//! - **cuts** ([`ChaosProxy::close_all`], [`ChaosProxy::reset_all`]): every
//!   connection open now is closed (FIN) or reset (RST, zero linger) on both
//!   sides, held ones included.
//!
//! # Design
//!
//! One task accepts; each connection runs in a task of a `JoinSet` the accept
//! task owns, so dropping the proxy aborts the accept task and with it every
//! connection. A cut is a generation number on a `watch` channel that every
//! connection task selects on. A connection's two directions each run a
//! reader and a writer joined by a small bounded channel of `(due, bytes)`,
//! which is the delay line and also carries back-pressure.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// How long a connection to the target may take before the client is reset.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Chunks in flight per direction (each at most [`CHUNK`] bytes).
const LINE_CHUNKS: usize = 64;
const CHUNK: usize = 16 * 1024;

/// How a cut ends connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CutKind {
    Close,
    Reset,
}

/// What every connection task reads.
#[derive(Debug)]
struct Shared {
    target: SocketAddr,
    holed: AtomicBool,
    refusing: AtomicBool,
    delay_ms: AtomicU64,
    cuts: watch::Sender<(u64, CutKind)>,
    accepted: AtomicU64,
    cut: AtomicU64,
}

/// A misbehaving TCP proxy (see the module doc); dropping it ends every
/// connection it holds.
#[derive(Debug)]
pub struct ChaosProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl ChaosProxy {
    /// Binds 127.0.0.1:0 and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            target,
            holed: AtomicBool::new(false),
            refusing: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            cuts: watch::Sender::new((0, CutKind::Close)),
            accepted: AtomicU64::new(0),
            cut: AtomicU64::new(0),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    res = listener.accept() => match res {
                        Ok((client, _)) => {
                            s.accepted.fetch_add(1, Ordering::Relaxed);
                            conns.spawn(serve(client, s.clone()));
                        }
                        Err(e) => {
                            // Out of file descriptors and the like: back off, don't spin.
                            tracing::warn!(error = %e, "chaos proxy cannot accept");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops forwarding in both directions, closing nothing.
    pub fn black_hole(&self) {
        self.shared.holed.store(true, Ordering::SeqCst);
    }

    /// Forwards again (new connections, and old ones that lost nothing).
    pub fn resume(&self) {
        self.shared.holed.store(false, Ordering::SeqCst);
    }

    /// Delays every chunk by `delay` from now on (zero for none).
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.shared.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Resets new connections at once while `on`.
    pub fn refuse(&self, on: bool) {
        self.shared.refusing.store(on, Ordering::SeqCst);
    }

    /// Closes every connection open now (FIN to both ends).
    pub fn close_all(&self) {
        self.cut(CutKind::Close);
    }

    /// Resets every connection open now (RST to both ends).
    pub fn reset_all(&self) {
        self.cut(CutKind::Reset);
    }

    fn cut(&self, kind: CutKind) {
        self.shared.cuts.send_modify(|(generation, k)| {
            *generation += 1;
            *k = kind;
        });
    }

    /// Back to plain forwarding: no delay, no hole, no refusal.
    pub fn heal(&self) {
        self.set_delay(Duration::ZERO);
        self.refuse(false);
        self.resume();
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Connections ended by a cut or a refusal so far.
    pub fn cut_connections(&self) -> u64 {
        self.shared.cut.load(Ordering::Relaxed)
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Makes dropping `stream` send an RST instead of a FIN.
fn arm_reset(stream: &TcpStream) {
    // Zero linger never blocks on close, which is the concern behind tokio
    // deprecating non-zero linger; failure only means a FIN goes out instead.
    let _ = stream.set_zero_linger();
}

/// Resolves with the kind of the next cut; never if the proxy is gone.
async fn next_cut(cuts: &mut watch::Receiver<(u64, CutKind)>) -> CutKind {
    match cuts.changed().await {
        Ok(()) => cuts.borrow_and_update().1,
        Err(_) => std::future::pending().await,
    }
}

/// One accepted connection, from accept to close.
async fn serve(client: TcpStream, shared: Arc<Shared>) {
    let mut cuts = shared.cuts.subscribe();
    if shared.refusing.load(Ordering::SeqCst) {
        shared.cut.fetch_add(1, Ordering::Relaxed);
        arm_reset(&client);
        return;
    }
    if shared.holed.load(Ordering::SeqCst) {
        hold(client, &shared, &mut cuts).await;
        return;
    }
    let server =
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(shared.target)).await {
            Ok(Ok(s)) => s,
            _ => {
                // The target refused or did not answer: so does the proxy.
                arm_reset(&client);
                return;
            }
        };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client, mut server) = (client, server);
    let broken = AtomicBool::new(false);
    let cut = {
        let (cr, cw) = client.split();
        let (sr, sw) = server.split();
        let both = async {
            tokio::join!(
                pipe(cr, sw, &shared, &broken),
                pipe(sr, cw, &shared, &broken)
            )
        };
        tokio::select! {
            _ = both => None,
            kind = next_cut(&mut cuts) => Some(kind),
        }
    };
    if let Some(kind) = cut {
        shared.cut.fetch_add(1, Ordering::Relaxed);
        if kind == CutKind::Reset {
            arm_reset(&client);
            arm_reset(&server);
        }
    }
    // Dropping both streams closes them.
}

/// A connection accepted during a black hole: read and discard until the
/// client gives up or a cut ends it.
async fn hold(mut client: TcpStream, shared: &Shared, cuts: &mut watch::Receiver<(u64, CutKind)>) {
    let mut buf = [0u8; 4096];
    let drain = async { while matches!(client.read(&mut buf).await, Ok(n) if n > 0) {} };
    let cut = tokio::select! {
        () = drain => None,
        kind = next_cut(cuts) => Some(kind),
    };
    if let Some(kind) = cut {
        shared.cut.fetch_add(1, Ordering::Relaxed);
        if kind == CutKind::Reset {
            arm_reset(&client);
        }
    }
}

/// One direction: a reader that stamps each chunk with its due time and a
/// writer that sends it then. A black hole marks the connection `broken`;
/// from then on nothing is written either way and no FIN is passed on.
async fn pipe(mut from: ReadHalf<'_>, mut to: WriteHalf<'_>, shared: &Shared, broken: &AtomicBool) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(LINE_CHUNKS);
    let is_broken = || {
        if shared.holed.load(Ordering::SeqCst) {
            broken.store(true, Ordering::SeqCst);
        }
        broken.load(Ordering::SeqCst)
    };
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if is_broken() {
                continue;
            }
            let delay = Duration::from_millis(shared.delay_ms.load(Ordering::SeqCst));
            if tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .await
                .is_err()
            {
                break;
            }
        }
        if is_broken() {
            // A dead path carries no FIN either: keep the other socket open.
            std::future::pending::<()>().await;
        }
        // Dropping `tx` lets the writer pass the end of stream on.
    };
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if is_broken() {
                continue;
            }
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        if !is_broken() {
            let _ = to.shutdown().await;
        }
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server; returns its address.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut TcpStream, msg: &[u8], wait: Duration) -> io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut got = vec![0u8; msg.len()];
        match tokio::time::timeout(wait, s.read_exact(&mut got)).await {
            Ok(r) => r.map(|_| got),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no answer")),
        }
    }

    #[tokio::test]
    async fn forwards_and_delays() {
        let proxy = ChaosProxy::start(echo().await).await.expect("proxy");
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        let got = round_trip(&mut s, b"hello", Duration::from_secs(5)).await;
        assert_eq!(got.expect("echo"), b"hello");
        proxy.set_delay(Duration::from_millis(150));
        let started = std::time::Instant::now();
        let got = round_trip(&mut s, b"slow", Duration::from_secs(5)).await;
        assert_eq!(got.expect("echo"), b"slow");
        // Delayed each way.
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(proxy.accepted(), 1);
    }

    #[tokio::test]
    async fn black_hole_is_silent_and_keeps_the_broken_connection_silent() {
        let proxy = ChaosProxy::start(echo().await).await.expect("proxy");
        let mut old = TcpStream::connect(proxy.addr()).await.expect("connect");
        round_trip(&mut old, b"a", Duration::from_secs(5))
            .await
            .expect("echo");
        proxy.black_hole();
        let err = round_trip(&mut old, b"b", Duration::from_millis(300)).await;
        assert_eq!(err.map_err(|e| e.kind()), Err(io::ErrorKind::TimedOut));
        proxy.resume();
        let err = round_trip(&mut old, b"c", Duration::from_millis(300)).await;
        assert_eq!(err.map_err(|e| e.kind()), Err(io::ErrorKind::TimedOut));
        let mut new = TcpStream::connect(proxy.addr()).await.expect("connect");
        let got = round_trip(&mut new, b"d", Duration::from_secs(5)).await;
        assert_eq!(got.expect("a new connection works"), b"d");
    }

    #[tokio::test]
    async fn cuts_close_or_reset_open_connections() {
        let proxy = ChaosProxy::start(echo().await).await.expect("proxy");
        for (reset, want) in [(false, None), (true, Some(io::ErrorKind::ConnectionReset))] {
            let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
            round_trip(&mut s, b"x", Duration::from_secs(5))
                .await
                .expect("echo");
            if reset {
                proxy.reset_all();
            } else {
                proxy.close_all();
            }
            let mut buf = [0u8; 8];
            let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .expect("the cut arrives");
            match want {
                None => assert_eq!(r.expect("a clean close"), 0),
                Some(kind) => assert_eq!(r.map_err(|e| e.kind()).err(), Some(kind)),
            }
        }
        assert_eq!(proxy.cut_connections(), 2);
    }

    #[tokio::test]
    async fn refusing_resets_new_connections() {
        let proxy = ChaosProxy::start(echo().await).await.expect("proxy");
        proxy.refuse(true);
        let mut s = TcpStream::connect(proxy.addr())
            .await
            .expect("accepted by the kernel");
        let mut buf = [0u8; 8];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the reset arrives");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        proxy.heal();
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(
            round_trip(&mut s, b"ok", Duration::from_secs(5))
                .await
                .expect("echo"),
            b"ok"
        );
    }
}
