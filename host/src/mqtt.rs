//! The broker connection both binaries open: one place that turns the
//! `[mqtt]` keys they share (host, port, keep-alive, `[mqtt.tls]`, user and
//! password) into rumqttc options. Each binary keeps its own `[mqtt]` table
//! (the collector's has a client id and a shared-subscription group, the
//! agent's client id is its device id) and lends its fields as a [`Broker`];
//! what is specific to a session (clean session, packet sizes, in-flight
//! window, last will) each sets on the options it gets back.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};

use crate::secret::Secret;
use crate::tls::{MqttTls, TlsError};

/// The shared `[mqtt]` keys, borrowed from a binary's config.
#[derive(Debug, Clone, Copy)]
pub struct Broker<'a> {
    /// Broker host name or address.
    pub host: &'a str,
    /// Broker port.
    pub port: u16,
    /// MQTT keep-alive, seconds.
    pub keep_alive_secs: u64,
    /// `[mqtt.tls]`: TLS when present.
    pub tls: Option<&'a MqttTls>,
    /// MQTT user name.
    pub username: Option<&'a str>,
    /// MQTT password (sent only with a user name).
    pub password: Option<&'a Secret>,
}

impl Broker<'_> {
    /// Options for `client_id`: address, keep-alive, TLS (the PEM files are
    /// read now, so a file that changed since the config was checked is an
    /// error here, not a failing reconnect) and credentials.
    pub fn options(&self, client_id: &str) -> Result<MqttOptions, TlsError> {
        let mut options = MqttOptions::new(client_id, self.host, self.port);
        options.set_keep_alive(Duration::from_secs(self.keep_alive_secs));
        if let Some(tls) = self.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(tls.client_config()?),
            )));
        }
        if let Some(user) = self.username {
            let password = self.password.map(|p| p.expose().to_owned());
            options.set_credentials(user, password.unwrap_or_default());
        }
        Ok(options)
    }

    /// `host:port`, for log lines.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_carry_address_keep_alive_and_credentials() {
        let password = Secret::new("pw");
        let broker = Broker {
            host: "broker.example",
            port: 8883,
            keep_alive_secs: 20,
            tls: None,
            username: Some("gw-1"),
            password: Some(&password),
        };
        let options = broker.options("gw-1").expect("no TLS files to read");
        assert_eq!(
            options.broker_address(),
            ("broker.example".to_owned(), 8883)
        );
        assert_eq!(options.keep_alive(), Duration::from_secs(20));
        assert_eq!(options.client_id(), "gw-1");
        let login = options.credentials().expect("credentials set");
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("gw-1", "pw")
        );
        assert!(matches!(options.transport(), Transport::Tcp));
        assert_eq!(broker.address(), "broker.example:8883");
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let tls: MqttTls = toml::from_str("ca_file = \"/nonexistent/ca.pem\"").expect("table");
        let broker = Broker {
            host: "b",
            port: 8883,
            keep_alive_secs: 20,
            tls: Some(&tls),
            username: None,
            password: None,
        };
        let err = broker.options("c").expect_err("no such file").to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
