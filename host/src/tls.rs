//! MQTT over TLS, shared by the agent and the collector: the `[mqtt.tls]`
//! table and the rustls client configuration it builds.
//!
//! ```toml
//! [mqtt]
//! host = "broker.example.com"   # must be a name (or IP) in the broker's certificate
//! port = 8883
//! [mqtt.tls]
//! ca_file = "/etc/dockline/ca.pem"        # who signed the broker's certificate
//! cert_file = "/etc/dockline/device.pem"  # this client's certificate (mutual TLS)
//! key_file = "/etc/dockline/device.key"   # its private key
//! ```
//!
//! Invariants:
//! - the table's presence turns TLS on; an empty table (`tls = {}`) trusts
//!   the system's CA store and sends no client certificate;
//! - `ca_file` replaces the system store: the broker must chain to that CA
//!   and to nothing else, which is what a private fleet CA wants;
//! - `cert_file` and `key_file` go together (mutual TLS), and the key must
//!   belong to the certificate: both are checked when the config is checked,
//!   so a wrong file stops the process at start with the file's name instead
//!   of failing every reconnect;
//! - the broker's certificate is always verified (name and chain); there is
//!   no switch to turn verification off;
//! - the crypto provider is ring ([`provider`]), which rumqttc 0.25 compiles
//!   anyway (through rustls-webpki 0.102) and the agent's payload sealing
//!   uses too, passed explicitly so that no process-wide default is needed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// `[mqtt.tls]`: TLS to the broker, with a client certificate for mutual
/// TLS (the recommended mode: the broker then knows each device by its
/// certificate and its ACL lets a device write only its own topics).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTls {
    /// PEM file with the CA certificate(s) the broker's certificate must
    /// chain to. Without it the system's trust store is used.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM file with this client's certificate (then any intermediates),
    /// for mutual TLS. Needs `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM file with the private key of `cert_file` (PKCS#8, PKCS#1 or
    /// SEC1). Keep it readable by the service's user only.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// A `[mqtt.tls]` setting that cannot work. Every message names the key,
/// the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error(
        "[mqtt.tls] {key} {path}: cannot read it ({source}); check the path and that this service's user may read the file"
    )]
    Read {
        /// `ca_file`, `cert_file` or `key_file`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM block of the expected kind.
    #[error("[mqtt.tls] {key} {path}: {problem}")]
    Pem {
        /// `ca_file`, `cert_file` or `key_file`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What was expected and what to do.
        problem: String,
    },
    /// Only one of `cert_file` and `key_file` is set.
    #[error(
        "[mqtt.tls] has {given} but not {missing}; mutual TLS needs both (the client certificate and its private key), or neither"
    )]
    Half {
        /// The key that is set.
        given: &'static str,
        /// The key that is missing.
        missing: &'static str,
    },
    /// rustls refused the certificates or the key.
    #[error("[mqtt.tls] {what}: {problem}")]
    Rejected {
        /// Which part (the CA certificates, the client certificate and key).
        what: String,
        /// rustls's reason and what to do.
        problem: String,
    },
}

/// The crypto provider of every TLS connection dockline makes itself.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl MqttTls {
    /// Reads the files and builds the rustls client configuration.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let roots = self.roots()?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rejected {
                what: "protocol versions".into(),
                problem: e.to_string(),
            })?
            .with_root_certificates(roots);
        match (&self.cert_file, &self.key_file) {
            (None, None) => Ok(builder.with_no_client_auth()),
            (Some(_), None) => Err(TlsError::Half {
                given: "cert_file",
                missing: "key_file",
            }),
            (None, Some(_)) => Err(TlsError::Half {
                given: "key_file",
                missing: "cert_file",
            }),
            (Some(cert_file), Some(key_file)) => {
                let chain = certificates("cert_file", cert_file)?;
                let key = private_key(key_file)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsError::Rejected {
                        what: format!(
                            "cert_file {} with key_file {}",
                            cert_file.display(),
                            key_file.display()
                        ),
                        problem: format!(
                            "{e}; the key must be the one the certificate was issued for"
                        ),
                    })
            }
        }
    }

    /// The trust anchors: `ca_file`, else the system store.
    fn roots(&self) -> Result<rustls::RootCertStore, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                for cert in certificates("ca_file", path)? {
                    roots.add(cert).map_err(|e| TlsError::Pem {
                        key: "ca_file",
                        path: path.clone(),
                        problem: format!(
                            "holds a certificate that cannot be a trust anchor ({e}); give the CA's certificate"
                        ),
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(TlsError::Rejected {
                        what: "no ca_file".into(),
                        problem: "the system's CA store is empty or unreadable; set ca_file to the CA that signed the broker's certificate (or install ca-certificates)".into(),
                    });
                }
            }
        }
        Ok(roots)
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate of a PEM file; at least one.
fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(key, path)?;
    let pem_err = |problem: String| TlsError::Pem {
        key,
        path: path.to_path_buf(),
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            pem_err(format!(
                "is not valid PEM ({e}); give the PEM file as issued"
            ))
        })?;
    if certs.is_empty() {
        return Err(pem_err(
            "holds no certificate (no -----BEGIN CERTIFICATE----- block); give the PEM certificate, not the key or a DER file (convert with `openssl x509 -inform der -in FILE -out FILE.pem`)".into(),
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read("key_file", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        key: "key_file",
        path: path.to_path_buf(),
        problem: format!(
            "holds no usable private key ({e}); expected a -----BEGIN PRIVATE KEY----- (PKCS#8), RSA PRIVATE KEY or EC PRIVATE KEY block, unencrypted"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_and_halves_are_named() {
        let tls = MqttTls {
            ca_file: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..MqttTls::default()
        };
        let err = tls.client_config().expect_err("no such file").to_string();
        assert!(err.contains("ca_file /nonexistent/ca.pem"), "{err}");
        assert!(err.contains("cannot read"), "{err}");

        let dir = tempfile::tempdir().expect("tempdir");
        let not_pem = dir.path().join("ca.der");
        std::fs::write(&not_pem, [0x30, 0x82, 0x01, 0x0a]).expect("write");
        let tls = MqttTls {
            ca_file: Some(not_pem.clone()),
            ..MqttTls::default()
        };
        let err = tls.client_config().expect_err("not PEM").to_string();
        assert!(err.contains("no certificate"), "{err}");
        assert!(err.contains(&not_pem.display().to_string()), "{err}");

        let tls = MqttTls {
            cert_file: Some(not_pem),
            ..MqttTls::default()
        };
        // The system store may be empty on a bare machine; either way the
        // missing key (or the store) is named, never a panic.
        let err = tls
            .client_config()
            .expect_err("cert without key")
            .to_string();
        assert!(
            err.contains("key_file") || err.contains("CA store"),
            "{err}"
        );
    }

    #[test]
    fn a_key_file_without_a_key_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("device.key");
        std::fs::write(
            &key,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let err = private_key(&key)
            .expect_err("a certificate is no key")
            .to_string();
        assert!(err.contains("key_file"), "{err}");
        assert!(err.contains("PRIVATE KEY"), "{err}");
    }
}
