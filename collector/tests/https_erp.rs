//! HTTPS to the ERP: certificates are verified by default, and `[erp]
//! ca_file` trusts a private CA.
//!
//! A local HTTPS server (rustls) presents a certificate issued by a fresh CA
//! (`dockline_collector::certs`, as `dockline-collector certs` does). The
//! real webhook adapter delivers one event to it:
//! - without `ca_file` the handshake is refused (the CA is in no trust
//!   store) and the server never sees a request;
//! - with another CA's `ca_file` it is refused as well (only that CA is
//!   trusted then);
//! - with the right `ca_file` the event is POSTed and answered 200;
//! - a missing or non-PEM `ca_file` is a config error naming the file.

mod support;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dockline_collector::Config;
use dockline_collector::certs;
use dockline_collector::erp::outcome::AttemptOutcome;
use dockline_collector::erp::{self, ErpConfig};
use dockline_protocol::Envelope;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A one-route HTTPS server: every request that gets through the handshake
/// is counted and answered 200.
struct HttpsServer {
    addr: std::net::SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn https_server(cert: &Path, key: &Path) -> HttpsServer {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("server.pem")
        .collect::<Result<_, _>>()
        .expect("certificates");
    let key = PrivateKeyDer::from_pem_file(key).expect("server.key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let counted = counted.clone();
            tokio::spawn(async move {
                // A refused handshake ends here: no request was read.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then as much body as Content-Length says.
                loop {
                    let Ok(n) = tls.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    HttpsServer {
        addr,
        requests,
        task,
    }
}

fn envelope() -> Envelope {
    support::envelope("hh-tls", 1, support::picked(), support::order("SO-TLS"))
}

/// Delivers the test event through the webhook adapter `erp` configures.
async fn deliver(erp: &ErpConfig) -> AttemptOutcome {
    let adapter = erp::from_config(erp, erp::ErpMediaOptions::default()).expect("adapter");
    support::attempt(adapter.as_ref(), "dc-tls", &envelope())
        .await
        .outcome
}

#[tokio::test]
async fn https_erp_is_verified_and_a_private_ca_is_trusted_by_ca_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = dir.path().join("ca");
    let ca = certs::issue_ca(&ca_dir, "ERP test CA", 2).expect("ca");
    let server = certs::issue_server(&ca_dir, &dir.path().join("erp"), &["127.0.0.1".into()], 2)
        .expect("server cert");
    let other = certs::issue_ca(&dir.path().join("other"), "another CA", 2).expect("other ca");
    let srv = https_server(&server.cert, &server.key).await;
    let url = format!("https://{}/events", srv.addr);

    // Default: verified against the system's roots, which do not hold the CA.
    let outcome = deliver(&ErpConfig::new(url.clone(), SECRET)).await;
    let AttemptOutcome::Transport { detail, .. } = &outcome else {
        panic!("an unknown CA must be refused, got {outcome:?}");
    };
    assert!(detail.to_lowercase().contains("certificate"), "{detail}");
    assert_eq!(srv.requests.load(Ordering::SeqCst), 0);

    // Another CA's file: only that CA is trusted, so still refused.
    let outcome = deliver(&ErpConfig {
        ca_file: Some(other.cert.clone()),
        ..ErpConfig::new(url.clone(), SECRET)
    })
    .await;
    assert!(
        matches!(outcome, AttemptOutcome::Transport { .. }),
        "{outcome:?}"
    );
    assert_eq!(srv.requests.load(Ordering::SeqCst), 0);

    // The right CA: delivered and answered.
    let outcome = deliver(&ErpConfig {
        ca_file: Some(ca.cert.clone()),
        ..ErpConfig::new(url.clone(), SECRET)
    })
    .await;
    let AttemptOutcome::Response(response) = &outcome else {
        panic!("with ca_file the ERP must be reached, got {outcome:?}");
    };
    assert_eq!(response.status, 200, "{outcome:?}");
    assert_eq!(srv.requests.load(Ordering::SeqCst), 1);
}

#[test]
fn a_bad_ca_file_is_a_config_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_pem = dir.path().join("ca.der");
    std::fs::write(&not_pem, [0x30u8, 0x82, 0x01]).expect("write");
    for (path, why) in [
        (dir.path().join("missing.pem"), "cannot read"),
        (not_pem, "no PEM certificate"),
    ] {
        let text = format!(
            "[erp]\nurl = \"https://erp.example/events\"\nsecret = \"{SECRET}\"\nca_file = {:?}\n",
            path.display().to_string()
        );
        let config: Config = toml::from_str(&text).expect("parses");
        let err = config.check().expect_err(why);
        assert_eq!(err.key, "erp.ca_file");
        let text = err.to_string();
        assert!(text.contains(why), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
    }
}
