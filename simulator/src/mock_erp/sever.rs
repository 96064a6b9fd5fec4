//! A TCP listener whose connections a request handler can cut, so the mock ERP
//! can commit a booking and then never answer, the way a real ERP does when
//! its response is lost on the way back.
//!
//! Each accepted stream shares an `AtomicBool` with the [`Connection`] the
//! handler receives as connect info. Once the handler sets it, every later
//! read or write on the stream fails, so hyper drops the connection before a
//! byte of the response goes out.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A TCP listener whose accepted connections can be severed.
#[derive(Debug)]
pub struct SeveringListener(pub TcpListener);

/// One accepted connection, as seen by a handler.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The peer's address.
    pub peer: SocketAddr,
    severed: Arc<AtomicBool>,
}

impl Connection {
    /// Makes the connection fail: the response being prepared is never sent.
    pub fn sever(&self) {
        self.severed.store(true, Ordering::SeqCst);
    }
}

/// A TCP stream that fails every I/O call once severed.
#[derive(Debug)]
pub struct SeverableStream {
    inner: TcpStream,
    severed: Arc<AtomicBool>,
}

impl SeverableStream {
    fn check(&self) -> io::Result<()> {
        if self.severed.load(Ordering::SeqCst) {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "mock ERP dropped the connection after commit (injected fault)",
            ))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for SeverableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SeverableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl Listener for SeveringListener {
    type Io = SeverableStream;
    type Addr = Connection;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((inner, peer)) => {
                    // Answers are small; send them at once rather than wait for more.
                    let _ = inner.set_nodelay(true);
                    let severed = Arc::new(AtomicBool::new(false));
                    let stream = SeverableStream {
                        inner,
                        severed: severed.clone(),
                    };
                    return (stream, Connection { peer, severed });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "mock ERP cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(Connection {
            peer: self.0.local_addr()?,
            severed: Arc::new(AtomicBool::new(false)),
        })
    }
}

impl Connected<IncomingStream<'_, SeveringListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, SeveringListener>) -> Self {
        stream.remote_addr().clone()
    }
}
