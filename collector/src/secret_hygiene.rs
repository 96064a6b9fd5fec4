//! Secrets the config names that are not secret: refused at start.
//!
//! Two checks [`crate::run`] makes before anything else starts:
//! - The command signing key file (`[commands] signing_key_file`) must be
//!   readable by its owner only (mode `& 0o077 == 0`, as
//!   `dockline-collector keygen` writes it): whoever can read it can sign
//!   commands every device obeys. Otherwise start is refused with the
//!   file, its mode and `chmod 600`. A file that cannot be read at all is
//!   left to the key loader, which names that problem.
//! - A webhook secret (`[erp] secret`, `invoice_webhook_secret`,
//!   `[erp.webhook] previous_secrets`) must not be one published in this
//!   repository ([`EXAMPLE_SECRETS`]: the example config's): anyone could
//!   sign events the ERP would accept as the collector's. The demo and the
//!   tests generate their own secrets, so this needs no exception.

use std::path::Path;

use crate::config_error::ConfigCheckError;
use crate::erp::ErpConfig;
use crate::ingest::commands::CommandsConfig;

/// Webhook secrets published in this repository (`collector.example.toml`).
pub const EXAMPLE_SECRETS: &[&str] = &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"];

/// Runs both checks on the `[commands]` and `[erp]` sections.
pub fn check(commands: &CommandsConfig, erp: &ErpConfig) -> Result<(), ConfigCheckError> {
    if commands.signing_key.is_none()
        && let Some(path) = &commands.signing_key_file
    {
        check_private_file(path).map_err(|problem| ConfigCheckError {
            key: "commands.signing_key_file",
            problem,
        })?;
    }
    let named = std::iter::once(("erp.secret", Some(erp.secret.as_str())))
        .chain(std::iter::once((
            "erp.invoice_webhook_secret",
            erp.invoice_webhook_secret.as_deref(),
        )))
        .chain(
            erp.webhook
                .previous_secrets
                .iter()
                .map(|s| ("erp.webhook.previous_secrets", Some(s.as_str()))),
        );
    for (key, secret) in named {
        if secret.is_some_and(is_example_secret) {
            return Err(ConfigCheckError {
                key,
                problem: "is the example secret published in dockline's repository, so anyone could sign events your ERP accepts; make your own (printf 'whsec_%s\\n' \"$(openssl rand -base64 32)\") and give the same to the ERP".into(),
            });
        }
    }
    Ok(())
}

/// Whether `secret` is one of [`EXAMPLE_SECRETS`] (surrounding whitespace ignored).
pub fn is_example_secret(secret: &str) -> bool {
    EXAMPLE_SECRETS.contains(&secret.trim())
}

/// `Err(problem)` when `path` exists and its group or others may read or
/// write it.
#[cfg(unix)]
fn check_private_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} has mode {mode:04o}: others on this host can read the key that signs commands to every device; run `chmod 600 {}` (and check who could have copied it)",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

/// No Unix modes to check elsewhere.
#[cfg(not(unix))]
fn check_private_file(_path: &Path) -> Result<(), String> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config(secret: &str) -> Config {
        toml::from_str(&format!(
            "[erp]\nurl = \"http://127.0.0.1:9/e\"\nsecret = \"{secret}\"\n"
        ))
        .expect("parses")
    }

    const OWN: &str = "whsec_ZG9ja2xpbmUtaHlnaWVuZS10ZXN0LXNlY3JldA==";

    #[test]
    fn the_example_config_secret_is_refused_everywhere_a_secret_goes() {
        let example = include_str!("../collector.example.toml");
        for s in EXAMPLE_SECRETS {
            assert!(example.contains(s), "{s} is the example config's");
        }
        let c = config(EXAMPLE_SECRETS[0]);
        let err = check(&c.commands, &c.erp).expect_err("example refused");
        assert_eq!(err.key, "erp.secret");
        assert!(err.problem.contains("openssl rand"), "{err}");
        let mut c = config(OWN);
        assert!(check(&c.commands, &c.erp).is_ok());
        c.erp.invoice_webhook_secret = Some(format!(" {} ", EXAMPLE_SECRETS[0]));
        assert_eq!(
            check(&c.commands, &c.erp).expect_err("refused").key,
            "erp.invoice_webhook_secret"
        );
        let mut c = config(OWN);
        c.erp.webhook.previous_secrets = vec![EXAMPLE_SECRETS[0].into()];
        assert_eq!(
            check(&c.commands, &c.erp).expect_err("refused").key,
            "erp.webhook.previous_secrets"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_signing_key_file_others_can_read_is_refused_naming_file_mode_and_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        crate::ingest::commands::generate(dir.path()).expect("keygen");
        let key = dir.path().join(crate::ingest::commands::SIGNING_KEY_FILE);
        let mut c = config(OWN);
        c.commands.signing_key_file = Some(key.clone());
        check(&c.commands, &c.erp).expect("keygen writes 0600");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = check(&c.commands, &c.erp).expect_err("0644 refused");
        assert_eq!(err.key, "commands.signing_key_file");
        for part in [&key.display().to_string(), "0644", "chmod 600"] {
            assert!(err.problem.contains(part), "{part} missing: {err}");
        }
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(
            check(&c.commands, &c.erp).is_err(),
            "group-readable refused too"
        );
        // A key given inline wins over the file, which is then not read.
        c.commands.signing_key = Some("set elsewhere".into());
        assert!(check(&c.commands, &c.erp).is_ok());
        // A missing file is the key loader's to report.
        c.commands.signing_key = None;
        c.commands.signing_key_file = Some(dir.path().join("absent.key"));
        assert!(check(&c.commands, &c.erp).is_ok());
    }
}
