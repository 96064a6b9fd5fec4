//! Issuing the certificates of a fleet's mutual TLS:
//! `dockline-collector certs ca|server|client`.
//!
//! - `ca`: a fleet CA (`ca.pem`, `ca.key`). The broker trusts it for client
//!   certificates (Mosquitto `cafile`), and every agent and the collector
//!   trust it for the broker's certificate (`[mqtt.tls] ca_file`).
//! - `server HOST…`: the broker's certificate, with each host name or IP
//!   address the clients dial as a subject alternative name (rustls checks
//!   the name against `[mqtt] host`).
//! - `client ID…` (alias `device`): one certificate per device (and one for
//!   the collector) whose common name is the id. With Mosquitto's
//!   `use_identity_as_username true` the common name becomes the MQTT user
//!   name, and a pattern ACL on `%u` lets the device write only its own
//!   topics; see the README's security section.
//!
//! Invariants: keys are ECDSA P-256, written PKCS#8 PEM with mode 0600 and
//! never printed; an existing key file is never overwritten (issue into a new
//! folder, or delete the old files on purpose); a client id must be a valid
//! device id, so the certificate's common name can be the topic segment the
//! ACL compares it with. The same code issues the certificates the tests
//! use; operators who prefer OpenSSL find the equivalent commands in the
//! README.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// The CA's certificate file name in its folder.
pub const CA_CERT: &str = "ca.pem";
/// The CA's key file name in its folder.
pub const CA_KEY: &str = "ca.key";

/// A certificate could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key file is there already.
    #[error(
        "{path} exists; refusing to overwrite a private key (issue into another folder, or delete the old files first)"
    )]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The CA folder does not hold a usable CA.
    #[error(
        "{dir} does not hold a usable CA ({problem}); make one with `dockline-collector certs ca --out {dir}`"
    )]
    Ca {
        /// The folder.
        dir: PathBuf,
        /// What was wrong.
        problem: String,
    },
    /// A name cannot go into a certificate.
    #[error("{0}")]
    Name(String),
    /// rcgen refused.
    #[error("cannot issue the certificate: {0}")]
    Issue(#[from] rcgen::Error),
}

/// What was written: the certificate and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The PEM certificate.
    pub cert: PathBuf,
    /// The PEM private key (mode 0600).
    pub key: PathBuf,
}

/// Makes a fleet CA in `out` (`ca.pem`, `ca.key`), valid for `days`.
pub fn issue_ca(out: &Path, name: &str, days: u32) -> Result<Issued, CertError> {
    let files = Issued {
        cert: out.join(CA_CERT),
        key: out.join(CA_KEY),
    };
    refuse_existing(&files)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, days);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    write_pair(&files, &cert.pem(), &key.serialize_pem())?;
    Ok(files)
}

/// Issues the broker's certificate for `hosts` (DNS names or IP addresses
/// the clients connect to), signed by the CA in `ca_dir`, as
/// `out/server.pem` and `out/server.key`.
pub fn issue_server(
    ca_dir: &Path,
    out: &Path,
    hosts: &[String],
    days: u32,
) -> Result<Issued, CertError> {
    let first = hosts.first().ok_or_else(|| {
        CertError::Name("give at least one host name or IP address the clients connect to".into())
    })?;
    let mut params = CertificateParams::new(hosts.to_vec()).map_err(|e| {
        CertError::Name(format!(
            "{hosts:?} cannot go into a certificate ({e}); give DNS names or IP addresses"
        ))
    })?;
    params.distinguished_name = dn(first);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    issue_leaf(ca_dir, out, "server", params, days)
}

/// Issues a client certificate whose common name is `id` (a device id, or
/// the collector's MQTT user name), signed by the CA in `ca_dir`, as
/// `out/<id>.pem` and `out/<id>.key`.
pub fn issue_client(ca_dir: &Path, out: &Path, id: &str, days: u32) -> Result<Issued, CertError> {
    dockline_protocol::DeviceId::new(id).map_err(|e| {
        CertError::Name(format!(
            "{id:?} cannot be a client certificate's name: {e}; use the device id exactly as in the agent's config"
        ))
    })?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(id);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    issue_leaf(ca_dir, out, id, params, days)
}

fn issue_leaf(
    ca_dir: &Path,
    out: &Path,
    stem: &str,
    mut params: CertificateParams,
    days: u32,
) -> Result<Issued, CertError> {
    let files = Issued {
        cert: out.join(format!("{stem}.pem")),
        key: out.join(format!("{stem}.key")),
    };
    refuse_existing(&files)?;
    let ca_err = |problem: String| CertError::Ca {
        dir: ca_dir.to_path_buf(),
        problem,
    };
    let read = |name: &str| {
        std::fs::read_to_string(ca_dir.join(name))
            .map_err(|e| ca_err(format!("cannot read {name}: {e}")))
    };
    let ca_key = KeyPair::from_pem(&read(CA_KEY)?)
        .map_err(|e| ca_err(format!("{CA_KEY} is not a PEM private key: {e}")))?;
    let issuer = Issuer::from_ca_cert_pem(&read(CA_CERT)?, ca_key)
        .map_err(|e| ca_err(format!("{CA_CERT} is not a PEM CA certificate: {e}")))?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    write_pair(&files, &cert.pem(), &key.serialize_pem())?;
    Ok(files)
}

/// `dockline-collector certs …`.
#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Makes a fleet CA: DIR/ca.pem (give it to the broker and every
    /// client as ca_file) and DIR/ca.key (keep it offline; mode 0600).
    Ca {
        /// The folder to write ca.pem and ca.key into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "dockline fleet CA")]
        name: String,
        /// Days of validity.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issues the broker's certificate, OUT/server.pem and OUT/server.key,
    /// for every host name or IP address clients put in [mqtt] host.
    Server {
        /// The folder holding ca.pem and ca.key.
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// The folder to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Days of validity.
        #[arg(long, default_value_t = 825)]
        days: u32,
        /// Host names and IP addresses the clients connect to.
        #[arg(required = true, value_name = "HOST")]
        hosts: Vec<String>,
    },
    /// Issues client certificates OUT/<ID>.pem and OUT/<ID>.key whose
    /// common name is the id: one per device (the MQTT user name with
    /// Mosquitto's use_identity_as_username), and one for the collector.
    #[command(alias = "device")]
    Client {
        /// The folder holding ca.pem and ca.key.
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// The folder to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Days of validity.
        #[arg(long, default_value_t = 825)]
        days: u32,
        /// Device ids (and the collector's MQTT user name).
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
}

/// Runs a `certs` command; returns what to print (the files written).
pub fn run_command(cmd: &CertsCommand) -> Result<String, CertError> {
    let line = |i: &Issued| format!("wrote {} and {}\n", i.cert.display(), i.key.display());
    Ok(match cmd {
        CertsCommand::Ca { out, name, days } => line(&issue_ca(out, name, *days)?),
        CertsCommand::Server {
            ca,
            out,
            days,
            hosts,
        } => line(&issue_server(ca, out, hosts, *days)?),
        CertsCommand::Client { ca, out, days, ids } => {
            let mut text = String::new();
            for id in ids {
                text.push_str(&line(&issue_client(ca, out, id, *days)?));
            }
            text
        }
    })
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "dockline");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Valid from an hour ago (clocks of small devices drift) for `days`.
fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days.max(1)));
}

fn refuse_existing(files: &Issued) -> Result<(), CertError> {
    for path in [&files.key, &files.cert] {
        if path.exists() {
            return Err(CertError::Exists { path: path.clone() });
        }
    }
    Ok(())
}

fn write_pair(files: &Issued, cert_pem: &str, key_pem: &str) -> Result<(), CertError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CertError::Io { path, source }
    };
    if let Some(dir) = files.key.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut key = options.open(&files.key).map_err(io(&files.key))?;
    key.write_all(key_pem.as_bytes())
        .and_then(|()| key.sync_all())
        .map_err(io(&files.key))?;
    std::fs::write(&files.cert, cert_pem).map_err(io(&files.cert))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_issues_server_and_client_certificates_rustls_accepts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = issue_ca(&dir.path().join("ca"), "test fleet", 30).expect("ca");
        let server = issue_server(
            &dir.path().join("ca"),
            &dir.path().join("broker"),
            &["127.0.0.1".into(), "broker.local".into()],
            30,
        )
        .expect("server");
        let client = issue_client(&dir.path().join("ca"), &dir.path().join("dev"), "hh-1", 30)
            .expect("client");
        // The agent's TLS setup reads them as an operator would configure them.
        let tls = dockline_host::tls::MqttTls {
            ca_file: Some(ca.cert.clone()),
            cert_file: Some(client.cert.clone()),
            key_file: Some(client.key.clone()),
        };
        tls.client_config()
            .expect("rustls accepts the CA, the chain and the key");
        // A key that does not belong to the certificate is refused by name.
        let mismatched = dockline_host::tls::MqttTls {
            key_file: Some(server.key.clone()),
            ..tls
        };
        let err = mismatched
            .client_config()
            .expect_err("wrong key")
            .to_string();
        assert!(
            err.contains("hh-1.pem") && err.contains("server.key"),
            "{err}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&client.key)
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = issue_client(&dir.path().join("ca"), &dir.path().join("dev"), "hh-1", 30)
            .expect_err("keys are never overwritten");
        assert!(
            again.to_string().contains("refusing to overwrite"),
            "{again}"
        );
        let bad = issue_client(&dir.path().join("ca"), &dir.path().join("dev"), "a/b", 30)
            .expect_err("not a device id");
        assert!(bad.to_string().contains("device id"), "{bad}");
        let no_ca = issue_client(&dir.path().join("nope"), &dir.path().join("x"), "hh-2", 30)
            .expect_err("no CA");
        assert!(no_ca.to_string().contains("certs ca --out"), "{no_ca}");
    }
}
