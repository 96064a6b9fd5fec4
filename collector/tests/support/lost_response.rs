//! A loopback HTTP/1.1 proxy that can lose a response: the request is
//! forwarded, the server answers (and has committed), and the proxy closes
//! the client's connection instead of passing the answer on. That is the
//! "ERP committed, response lost" fault of DESIGN.md, made exact: unlike a
//! timeout, it is certain the server finished the call.
//!
//! Only what Tryton's server (and an axum test server) sends is handled:
//! requests and responses with `Content-Length` (or a response ended by
//! closing the connection).

#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The proxy; stops when dropped.
pub struct LostResponseProxy {
    addr: SocketAddr,
    rules: Arc<Mutex<Vec<String>>>,
    lost: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for LostResponseProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LostResponseProxy {
    /// Listens on 127.0.0.1:0 and forwards to `target`.
    pub async fn start(target: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let rules: Arc<Mutex<Vec<String>>> = Arc::default();
        let lost = Arc::new(AtomicU64::new(0));
        let (r, l) = (Arc::clone(&rules), Arc::clone(&lost));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (r, l) = (Arc::clone(&r), Arc::clone(&l));
                tokio::spawn(async move {
                    let _ = serve(client, target, r, l).await;
                });
            }
        });
        Ok(Self {
            addr,
            rules,
            lost,
            task,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The next request whose JSON-RPC `method` is `method` reaches the
    /// server, but its response is lost.
    pub fn lose_response_of(&self, method: &str) {
        self.rules
            .lock()
            .expect("rules lock")
            .push(format!("\"method\":\"{method}\""));
    }

    /// The next request whose bytes (head or body) contain `text` reaches
    /// the server, but its response is lost.
    pub fn lose_response_containing(&self, text: &str) {
        self.rules.lock().expect("rules lock").push(text.to_owned());
    }

    /// Responses lost so far.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut client: TcpStream,
    target: SocketAddr,
    rules: Arc<Mutex<Vec<String>>>,
    lost: Arc<AtomicU64>,
) -> io::Result<()> {
    let mut pending = Vec::new();
    loop {
        let Some(request) = read_message(&mut client, &mut pending, false).await? else {
            return Ok(());
        };
        // One upstream connection per request: trytond closes after each
        // answer (Werkzeug, `Connection: close`).
        let mut upstream = TcpStream::connect(target).await?;
        upstream.write_all(&request).await?;
        let mut rest = Vec::new();
        let response = read_message(&mut upstream, &mut rest, true)
            .await?
            .unwrap_or_default();
        let lose = {
            let mut rules = rules.lock().expect("rules lock");
            let text = String::from_utf8_lossy(&request);
            match rules.iter().position(|m| text.contains(m.as_str())) {
                Some(i) => {
                    rules.remove(i);
                    true
                }
                None => false,
            }
        };
        if lose {
            lost.fetch_add(1, Ordering::SeqCst);
            // The server committed; the client never hears of it.
            return Ok(());
        }
        client.write_all(&response).await?;
    }
}

/// Reads one HTTP message (head + `Content-Length` body); `until_eof` reads
/// a body without a length to the end of the stream. `None` on a clean EOF
/// before any byte.
async fn read_message(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    until_eof: bool,
) -> io::Result<Option<Vec<u8>>> {
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, "cut head"))
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match length {
        Some(len) => {
            while buf.len() < head_end + len {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "cut body"));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let message: Vec<u8> = buf.drain(..head_end + len).collect();
            Ok(Some(message))
        }
        None if until_eof => {
            stream.read_to_end(buf).await?;
            Ok(Some(std::mem::take(buf)))
        }
        None => Ok(Some(buf.drain(..head_end).collect())),
    }
}
