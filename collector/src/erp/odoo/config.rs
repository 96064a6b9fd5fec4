//! `[erp.odoo]`: which Odoo, over which API, as whom, and the two business
//! choices the adapter cannot guess (what to do with a short pick's
//! remainder, which event validates the delivery).

use serde::{Deserialize, Serialize};

use crate::config_error::ConfigCheckError;

/// `[erp.odoo]`: required when `erp.kind = "odoo"`. Its `Debug` never
/// prints the password or the API key.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OdooConfig {
    /// The server's major version: 17, 18 or 19. The adapter speaks each
    /// version's API (19 renamed `stock.quant.package` to `stock.package`
    /// and added JSON-2) and checks it against the server where the API
    /// reports it.
    pub version: u8,
    /// Which API: `jsonrpc` (`/jsonrpc`, every call carries the password or
    /// API key; default for 17 and 18), `web` (`/web/session/authenticate`
    /// then `/web/dataset/call_kw` with the session cookie; needs the
    /// password) or `json2` (`/json/2/<model>/<method>` with a bearer API
    /// key; 19 only, its default).
    #[serde(default)]
    pub transport: Option<OdooTransport>,
    /// The database name.
    pub database: String,
    /// The login of the Odoo user events are booked as (a dedicated bot
    /// user with Inventory rights is best).
    pub login: String,
    /// That user's password (`jsonrpc`, `web`). Better set by
    /// `DOCKLINE_ERP__ODOO__PASSWORD` than written in the file.
    #[serde(default)]
    pub password: String,
    /// An API key of that user (`json2`, and `jsonrpc` in place of the
    /// password). Odoo keys last at most three months: rotate it by
    /// `DOCKLINE_ERP__ODOO__API_KEY` and a restart.
    #[serde(default)]
    pub api_key: String,
    /// A delivery validated with less than its demand picked: `create` a
    /// backorder for the rest (the default, Odoo's own default) or `cancel`
    /// the rest.
    #[serde(default)]
    pub backorder: Backorder,
    /// The event that validates the delivery (`button_validate`, the goods
    /// leave the stock): `packed`, `departed` (the default) or `delivered`.
    /// A later event validates too when the delivery is still open (a
    /// proof of delivery always does).
    #[serde(default)]
    pub validate_on: ValidateOn,
}

/// The API the adapter talks to (`erp.odoo.transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OdooTransport {
    /// `POST /jsonrpc`: `common.authenticate`, then `object.execute_kw`.
    JsonRpc,
    /// `POST /web/session/authenticate`, then `/web/dataset/call_kw`.
    Web,
    /// `POST /json/2/<model>/<method>` (19+).
    Json2,
}

impl OdooTransport {
    /// The name as written in the config.
    pub fn name(self) -> &'static str {
        match self {
            Self::JsonRpc => "jsonrpc",
            Self::Web => "web",
            Self::Json2 => "json2",
        }
    }
}

/// What happens to the rest of a short-picked delivery (`erp.odoo.backorder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backorder {
    /// A backorder picking for the rest (Odoo's wizard: "Create Backorder").
    #[default]
    Create,
    /// The rest is cancelled (Odoo's wizard: "No Backorder").
    Cancel,
}

/// Which event validates the delivery (`erp.odoo.validate_on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ValidateOn {
    /// The pack event (the goods leave stock when packed).
    Packed,
    /// The departure (the default).
    #[default]
    Departed,
    /// The proof of delivery.
    Delivered,
}

impl std::fmt::Debug for OdooConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |s: &str| if s.is_empty() { "(none)" } else { "(set)" };
        f.debug_struct("OdooConfig")
            .field("version", &self.version)
            .field("transport", &self.transport())
            .field("database", &self.database)
            .field("login", &self.login)
            .field("password", &redacted(&self.password))
            .field("api_key", &redacted(&self.api_key))
            .field("backorder", &self.backorder)
            .field("validate_on", &self.validate_on)
            .finish()
    }
}

impl OdooConfig {
    /// The transport in use: the configured one, else the version's
    /// default (`json2` on 19, `jsonrpc` before).
    pub fn transport(&self) -> OdooTransport {
        self.transport.unwrap_or(if self.version >= 19 {
            OdooTransport::Json2
        } else {
            OdooTransport::JsonRpc
        })
    }

    /// The secret `/jsonrpc` sends with every call: the API key if set,
    /// else the password.
    pub fn rpc_secret(&self) -> &str {
        if self.api_key.is_empty() {
            &self.password
        } else {
            &self.api_key
        }
    }

    /// Checks what serde cannot (called by [`crate::config::Config::check`]).
    pub fn check(&self) -> Result<(), ConfigCheckError> {
        let err = |key, problem: String| Err(ConfigCheckError { key, problem });
        if !(17..=19).contains(&self.version) {
            return err(
                "erp.odoo.version",
                format!(
                    "is {}; the Odoo adapter speaks 17, 18 and 19 (16 and older record picks in qty_done, which it does not write)",
                    self.version
                ),
            );
        }
        for (key, value) in [
            ("erp.odoo.database", &self.database),
            ("erp.odoo.login", &self.login),
        ] {
            if value.trim().is_empty() {
                return err(key, "is empty; the Odoo adapter needs the database and the login of the user it books as".into());
            }
        }
        match self.transport() {
            OdooTransport::Json2 if self.version < 19 => err(
                "erp.odoo.transport",
                format!(
                    "is \"json2\" with version {}; JSON-2 exists from Odoo 19: use \"jsonrpc\" or \"web\"",
                    self.version
                ),
            ),
            OdooTransport::Json2 if self.api_key.trim().is_empty() => err(
                "erp.odoo.api_key",
                "is empty; JSON-2 authenticates with an API key (Odoo: Preferences → Account Security → New API Key)".into(),
            ),
            OdooTransport::Web if self.password.is_empty() => err(
                "erp.odoo.password",
                "is empty; the web session logs in with the user's password (API keys are for /jsonrpc and JSON-2)".into(),
            ),
            OdooTransport::JsonRpc if self.rpc_secret().is_empty() => err(
                "erp.odoo.password",
                "and erp.odoo.api_key are empty; /jsonrpc needs one of them".into(),
            ),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> OdooConfig {
        toml::from_str(text).expect("parses")
    }

    #[test]
    fn defaults_per_version_and_checks() {
        let c = parse("version = 17\ndatabase = \"prod\"\nlogin = \"bot\"\npassword = \"pw\"\n");
        assert_eq!(c.transport(), OdooTransport::JsonRpc);
        assert_eq!(
            (c.backorder, c.validate_on),
            (Backorder::Create, ValidateOn::Departed)
        );
        c.check().expect("valid");
        let c = parse("version = 19\ndatabase = \"prod\"\nlogin = \"bot\"\napi_key = \"k\"\n");
        assert_eq!(c.transport(), OdooTransport::Json2);
        c.check().expect("valid");
        let c = parse("version = 19\ndatabase = \"prod\"\nlogin = \"bot\"\npassword = \"pw\"\n");
        assert_eq!(c.check().expect_err("no key").key, "erp.odoo.api_key");
        let c = parse(
            "version = 18\ntransport = \"json2\"\ndatabase = \"prod\"\nlogin = \"bot\"\napi_key = \"k\"\n",
        );
        assert_eq!(
            c.check().expect_err("18 has no JSON-2").key,
            "erp.odoo.transport"
        );
        let c = parse(
            "version = 18\ntransport = \"web\"\ndatabase = \"prod\"\nlogin = \"bot\"\napi_key = \"k\"\n",
        );
        assert_eq!(
            c.check().expect_err("web needs the password").key,
            "erp.odoo.password"
        );
        let c = parse("version = 16\ndatabase = \"prod\"\nlogin = \"bot\"\npassword = \"pw\"\n");
        assert_eq!(c.check().expect_err("16").key, "erp.odoo.version");
        let c = parse(
            "version = 17\ndatabase = \"prod\"\nlogin = \"bot\"\npassword = \"hunter2\"\napi_key = \"0123abcd\"\nbackorder = \"cancel\"\nvalidate_on = \"packed\"\n",
        );
        assert_eq!(c.rpc_secret(), "0123abcd", "the key is preferred");
        assert_eq!(
            (c.backorder, c.validate_on),
            (Backorder::Cancel, ValidateOn::Packed)
        );
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("0123abcd"),
            "{shown}"
        );
        assert!(shown.contains("api_key: \"(set)\""), "{shown}");
        assert!(
            toml::from_str::<OdooConfig>(
                "version = 17\ndatabase = \"d\"\nlogin = \"l\"\npasword = \"x\"\n"
            )
            .is_err()
        );
    }
}
