//! `[erp.tryton]`: the Tryton database and user the adapter logs in as.
//! `Debug` never prints the password.

use serde::{Deserialize, Serialize};

/// `[erp.tryton]`: the Tryton database and user the adapter logs in as.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrytonConfig {
    /// The database name (the first path segment of Tryton's URLs).
    pub database: String,
    /// The login of the Tryton user events are booked as. It needs read
    /// access to `stock.shipment.out` and the rights of a stock user to
    /// press its buttons (and to create `ir.attachment` for proof of
    /// delivery).
    pub user: String,
    /// That user's password (better set by `DOCKLINE_ERP__TRYTON__PASSWORD`
    /// than written in the file, or `{ file = "…" }` / `{ env = "…" }`).
    #[serde(deserialize_with = "dockline_host::secret::deserialize")]
    pub password: String,
    /// When Tryton cannot reserve the stock for a picked shipment
    /// (`assign_try` leaves it `waiting`), force the reservation
    /// (`assign_force`) instead of parking the pick until stock arrives.
    /// The goods were physically picked, but forcing can book negative
    /// stock, so it is off by default.
    #[serde(default)]
    pub assign_force: bool,
    /// Language of Tryton's messages (the login's language code).
    #[serde(default = "default_tryton_language")]
    pub language: String,
}

impl std::fmt::Debug for TrytonConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("TrytonConfig")
            .field("database", &self.database)
            .field("user", &self.user)
            .field("assign_force", &self.assign_force)
            .field("language", &self.language)
            .finish_non_exhaustive()
    }
}

fn default_tryton_language() -> String {
    "en".into()
}
