//! Who may use the collector's HTTP API and dashboard, and what they may do.
//!
//! Two roles: `viewer` reads everything (stats, lanes, dead letters, the
//! dashboard's data, `/metrics`); `operator` also changes things (replay and
//! discard dead letters: every request that is not `GET`/`HEAD`).
//! `/healthz`, `/readyz`, `/v1/login` and the dashboard's static pages need
//! nothing: they hold no data.
//!
//! Credentials, from `[api]`:
//! - `[[api.tokens]]`: a bearer token and its role. The token comes from the
//!   environment (`token_env`), a file (`token_file`), the config itself
//!   (`token`) or only its SHA-256 (`token_sha256`, hex), so the config
//!   need not hold it. Only SHA-256 digests are kept in memory.
//! - `[[api.users]]`: a user name, a role and an argon2 password hash (PHC
//!   string, from `dockline-collector hash-password`). `POST /v1/login`
//!   with `{"username", "password"}` answers a session token that is then
//!   sent as a bearer token; sessions live `[api] session_ttl_secs`.
//!   A user holds at most [`MAX_SESSIONS_PER_USER`] sessions: a new login
//!   beyond that ends that user's oldest session, never another user's (so
//!   sessions are bounded by the configured users). Failed logins back off
//!   per user and per client address ([`crate::http::login_limit`]): refused with
//!   429 and `Retry-After` before any password check, counted in
//!   `/metrics`. Answers carrying a token are `Cache-Control: no-store`.
//!
//! With none configured the API is open, but only on a loopback address:
//! [`Auth::from_config`] refuses a non-loopback `[api] listen` without
//! credentials, so the API is never exposed by accident.
//!
//! CSRF: credentials travel only in the `Authorization` header, which a
//! browser never attaches on its own (no cookies, no HTTP Basic), so a
//! forged cross-site request carries none. A changing request whose
//! `Origin` is not this server is refused anyway, which also covers the
//! open loopback mode; in that mode a `Host` that is not a loopback address
//! or `localhost` is refused as well (DNS rebinding).
//!
//! Secrets are never logged: tokens and passwords appear in no `Debug`
//! output and no error message.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::http::ApiConfig;
use crate::http::login_limit::{Blocked, LoginLimiter};
use crate::metrics::{Labels, labels};

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Reads everything and changes things (replay, discard).
    Operator,
}

impl Role {
    /// The name as written in the config.
    pub fn name(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
        }
    }
}

/// `[[api.tokens]]`: one bearer token and its role. Exactly one of
/// `token_env`, `token_file`, `token`, `token_sha256`.
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Its role.
    pub role: Option<Role>,
    /// A name for logs (`who` in the access log); default `token-N`.
    #[serde(default)]
    pub name: Option<String>,
    /// The environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// A file holding the token (surrounding whitespace ignored).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The token itself (prefer `token_env` or `token_file`).
    #[serde(default)]
    pub token: Option<String>,
    /// Only the token's SHA-256, 64 hex digits (`printf %s "$TOKEN" | sha256sum`).
    #[serde(default)]
    pub token_sha256: Option<String>,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("role", &self.role)
            .field("name", &self.name)
            .field("token_env", &self.token_env)
            .field("token_file", &self.token_file)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("token_sha256", &self.token_sha256.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// `[[api.users]]`: one user who logs in with a password.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The user name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The argon2 hash of the password, a PHC string (`$argon2id$v=19$…`),
    /// from `dockline-collector hash-password`.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// The environment variable holding that hash instead.
    #[serde(default)]
    pub password_hash_env: Option<String>,
}

impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("role", &self.role)
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "<set>"),
            )
            .field("password_hash_env", &self.password_hash_env)
            .finish()
    }
}

/// A credential in the config that cannot be used; names the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// A non-loopback listen address with no credentials.
    #[error(
        "[api] listen = {0} is not a loopback address and no [[api.tokens]] or [[api.users]] are configured, so anyone on the network could read and replay events; add a token or a user (see the README's security section) or listen on 127.0.0.1"
    )]
    OpenOnNetwork(SocketAddr),
    /// A problem with one token or user.
    #[error("{key}: {problem}")]
    Invalid {
        /// The config key, e.g. `api.tokens[0]`.
        key: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

fn invalid(key: &str, problem: impl Into<String>) -> AuthConfigError {
    AuthConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// A token's SHA-256.
type Digest32 = [u8; 32];

fn digest(token: &str) -> Digest32 {
    Sha256::digest(token.as_bytes()).into()
}

/// One bearer token the config knows.
struct KnownToken {
    name: String,
    role: Role,
    digest: Digest32,
}

/// One user the config knows.
struct KnownUser {
    name: String,
    role: Role,
    /// The PHC string, checked to parse at start.
    hash: String,
}

/// A logged-in session.
struct Session {
    user: String,
    role: Role,
    expires: Instant,
}

/// Most sessions one user holds at once; beyond it that user's oldest goes.
pub const MAX_SESSIONS_PER_USER: usize = 16;

/// Why a login gave no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefused {
    /// Unknown user or wrong password.
    Wrong,
    /// Too many recent failures for this user or address; not checked.
    Blocked(Blocked),
}

/// Login counters, registered into `/metrics` ([`Auth::register_metrics`]).
#[derive(Debug, Default)]
struct LoginCounters {
    failed: Counter,
    /// By `by`: `user` or `address`.
    blocked: Family<Labels, Counter>,
    sessions_ended_by_cap: Counter,
}

/// The credentials of `[api]` as one value: a reload replaces it whole.
struct Credentials {
    /// No credentials configured: everything allowed (loopback only).
    open: bool,
    tokens: Vec<KnownToken>,
    users: Vec<KnownUser>,
}

/// What a reload of `[api]` credentials changed, for the log. Names only,
/// never a secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialChange {
    /// Tokens (by name) now accepted that were not.
    pub tokens_added: Vec<String>,
    /// Tokens (by name) no longer accepted.
    pub tokens_removed: Vec<String>,
    /// Users who can now log in.
    pub users_added: Vec<String>,
    /// Users who can no longer log in.
    pub users_removed: Vec<String>,
    /// Users whose role or password changed.
    pub users_changed: Vec<String>,
    /// Sessions ended because their user was removed or changed.
    pub sessions_ended: usize,
}

impl CredentialChange {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.tokens_added.is_empty()
            && self.tokens_removed.is_empty()
            && self.users_added.is_empty()
            && self.users_removed.is_empty()
            && self.users_changed.is_empty()
    }
}

impl Credentials {
    /// What replacing `self` with `next` changes (sessions not counted).
    fn changes_to(&self, next: &Credentials) -> CredentialChange {
        let token_ids = |c: &Credentials| -> Vec<(String, Role, Digest32)> {
            c.tokens
                .iter()
                .map(|t| (t.name.clone(), t.role, t.digest))
                .collect()
        };
        let (old_t, new_t) = (token_ids(self), token_ids(next));
        let mut change = CredentialChange {
            tokens_added: new_t
                .iter()
                .filter(|t| !old_t.contains(t))
                .map(|t| t.0.clone())
                .collect(),
            tokens_removed: old_t
                .iter()
                .filter(|t| !new_t.contains(t))
                .map(|t| t.0.clone())
                .collect(),
            ..CredentialChange::default()
        };
        for u in &next.users {
            match self.users.iter().find(|o| o.name == u.name) {
                None => change.users_added.push(u.name.clone()),
                Some(o) if o.role != u.role || o.hash != u.hash => {
                    change.users_changed.push(u.name.clone());
                }
                Some(_) => {}
            }
        }
        change.users_removed = self
            .users
            .iter()
            .filter(|o| !next.users.iter().any(|u| u.name == o.name))
            .map(|o| o.name.clone())
            .collect();
        change
    }

    /// Whether a session of `user` with `role` may live on under these
    /// credentials (the user is still configured with that role).
    fn keeps_session(&self, user: &str, role: Role) -> bool {
        self.users.iter().any(|u| u.name == user && u.role == role)
    }
}

/// Credentials read from a new `[api]`, not yet in force ([`Auth::prepare`]).
pub struct PreparedCredentials(Credentials);

impl std::fmt::Debug for PreparedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedCredentials")
            .field("tokens", &self.0.tokens.len())
            .field("users", &self.0.users.len())
            .finish()
    }
}

/// The API's access control.
pub struct Auth {
    /// Replaced whole by [`Auth::reload`]; readers clone the `Arc`.
    credentials: RwLock<Arc<Credentials>>,
    sessions: Mutex<HashMap<Digest32, Session>>,
    session_ttl: Duration,
    /// Argon2 checks are deliberately slow; two at a time at most, so a
    /// flood of logins cannot take every core.
    password_checks: Semaphore,
    /// A hash to check against for unknown users, so a login takes as long
    /// whether or not the user exists.
    decoy: String,
    /// Failed logins per user and address.
    limiter: Mutex<LoginLimiter>,
    counters: LoginCounters,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.credentials();
        f.debug_struct("Auth")
            .field("open", &c.open)
            .field("tokens", &c.tokens.len())
            .field("users", &c.users.len())
            .finish_non_exhaustive()
    }
}

/// Who made a request, once authorised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Caller {
    /// Token or user name (`anonymous` on an open API).
    pub who: String,
    /// Its role.
    pub role: Role,
}

impl Auth {
    /// Reads the credentials of `[api]` (environment variables and files
    /// included) for an API listening on `listen`.
    pub fn from_config(api: &ApiConfig, listen: SocketAddr) -> Result<Self, AuthConfigError> {
        let credentials = Credentials::from_config(api, listen)?;
        Ok(Self {
            credentials: RwLock::new(Arc::new(credentials)),
            sessions: Mutex::new(HashMap::new()),
            session_ttl: Duration::from_secs(api.session_ttl_secs.max(60)),
            password_checks: Semaphore::new(2),
            decoy: hash_password("decoy password for unknown users").unwrap_or_default(),
            limiter: Mutex::new(LoginLimiter::new()),
            counters: LoginCounters::default(),
        })
    }

    /// Reads the tokens and users of `api` for a reload (`listen` is the
    /// running address, which a reload does not move), without putting
    /// them in force: [`Auth::commit`] does that. Fails as a start would.
    pub fn prepare(
        api: &ApiConfig,
        listen: SocketAddr,
    ) -> Result<PreparedCredentials, AuthConfigError> {
        Credentials::from_config(api, listen).map(PreparedCredentials)
    }

    /// Puts prepared credentials in force. Sessions of users removed, or
    /// whose role or password changed, end.
    pub fn commit(&self, prepared: PreparedCredentials) -> CredentialChange {
        let next = prepared.0;
        let mut current = self.credentials.write().unwrap_or_else(|p| p.into_inner());
        let mut change = current.changes_to(&next);
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let before = sessions.len();
        sessions.retain(|_, s| {
            next.keeps_session(&s.user, s.role) && !change.users_changed.contains(&s.user)
        });
        change.sessions_ended = before - sessions.len();
        *current = Arc::new(next);
        change
    }

    /// The credentials in force now.
    fn credentials(&self) -> Arc<Credentials> {
        Arc::clone(&self.credentials.read().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Credentials {
    /// Reads the credentials of `[api]` (environment variables and files
    /// included) for an API listening on `listen`.
    fn from_config(api: &ApiConfig, listen: SocketAddr) -> Result<Self, AuthConfigError> {
        let mut tokens = Vec::new();
        for (i, t) in api.tokens.iter().enumerate() {
            let key = format!("api.tokens[{i}]");
            let role = t.role.ok_or_else(|| {
                invalid(
                    &key,
                    "no role; add role = \"viewer\" or role = \"operator\"",
                )
            })?;
            let name = t.name.clone().unwrap_or_else(|| format!("token-{i}"));
            let sources = [
                t.token_env.is_some(),
                t.token_file.is_some(),
                t.token.is_some(),
                t.token_sha256.is_some(),
            ];
            if sources.iter().filter(|s| **s).count() != 1 {
                return Err(invalid(
                    &key,
                    "give exactly one of token_env, token_file, token, token_sha256",
                ));
            }
            let digest = if let Some(var) = &t.token_env {
                let value = std::env::var(var).map_err(|_| {
                    invalid(
                        &key,
                        format!("token_env = {var:?}, but that environment variable is not set (or not UTF-8); set it or remove the token"),
                    )
                })?;
                token_digest(&key, value.trim())?
            } else if let Some(path) = &t.token_file {
                let value = std::fs::read_to_string(path).map_err(|e| {
                    invalid(
                        &key,
                        format!(
                            "cannot read token_file {}: {e}; check the path and its permissions",
                            path.display()
                        ),
                    )
                })?;
                token_digest(&key, value.trim())?
            } else if let Some(value) = &t.token {
                token_digest(&key, value)?
            } else {
                let hex = t.token_sha256.as_deref().unwrap_or_default();
                parse_hex32(hex).ok_or_else(|| {
                    invalid(
                        &key,
                        "token_sha256 must be 64 hex digits (printf %s \"$TOKEN\" | sha256sum)",
                    )
                })?
            };
            tokens.push(KnownToken { name, role, digest });
        }
        let mut users = Vec::new();
        for (i, u) in api.users.iter().enumerate() {
            let key = format!("api.users[{i}]");
            if u.name.is_empty() {
                return Err(invalid(&key, "empty name"));
            }
            let hash = match (&u.password_hash, &u.password_hash_env) {
                (Some(h), None) => h.clone(),
                (None, Some(var)) => std::env::var(var).map_err(|_| {
                    invalid(
                        &key,
                        format!("password_hash_env = {var:?}, but that environment variable is not set; set it or use password_hash"),
                    )
                })?,
                _ => {
                    return Err(invalid(
                        &key,
                        "give exactly one of password_hash, password_hash_env (make one with `dockline-collector hash-password`)",
                    ));
                }
            };
            let parsed = PasswordHash::new(hash.trim()).map_err(|e| {
                invalid(
                    &key,
                    format!("password_hash is not a PHC string ({e}); make one with `dockline-collector hash-password`"),
                )
            })?;
            if parsed.algorithm.as_str() != "argon2id"
                && parsed.algorithm.as_str() != "argon2i"
                && parsed.algorithm.as_str() != "argon2d"
            {
                return Err(invalid(
                    &key,
                    format!(
                        "password_hash uses {}, not argon2; make one with `dockline-collector hash-password`",
                        parsed.algorithm
                    ),
                ));
            }
            users.push(KnownUser {
                name: u.name.clone(),
                role: u.role,
                hash: hash.trim().to_string(),
            });
        }
        let open = tokens.is_empty() && users.is_empty();
        if open && !listen.ip().is_loopback() {
            return Err(AuthConfigError::OpenOnNetwork(listen));
        }
        Ok(Self {
            open,
            tokens,
            users,
        })
    }
}

impl Auth {
    /// An API without credentials (loopback only; tests).
    pub fn open() -> Self {
        Self {
            credentials: RwLock::new(Arc::new(Credentials {
                open: true,
                tokens: Vec::new(),
                users: Vec::new(),
            })),
            sessions: Mutex::new(HashMap::new()),
            session_ttl: Duration::from_secs(3600),
            password_checks: Semaphore::new(2),
            decoy: String::new(),
            limiter: Mutex::new(LoginLimiter::new()),
            counters: LoginCounters::default(),
        }
    }

    /// Whether no credentials are configured.
    pub fn is_open(&self) -> bool {
        self.credentials().open
    }

    /// The caller a bearer token stands for, if it is a configured token or
    /// a live session.
    pub fn caller(&self, bearer: &str) -> Option<Caller> {
        let presented = digest(bearer);
        let credentials = self.credentials();
        // Compare with every token, constant time each, no early exit.
        let mut found: Option<&KnownToken> = None;
        for t in &credentials.tokens {
            if bool::from(t.digest.ct_eq(&presented)) {
                found = Some(t);
            }
        }
        if let Some(t) = found {
            return Some(Caller {
                who: t.name.clone(),
                role: t.role,
            });
        }
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match sessions.get(&presented) {
            Some(s) if s.expires > now => Some(Caller {
                who: s.user.clone(),
                role: s.role,
            }),
            Some(_) => {
                sessions.remove(&presented);
                None
            }
            None => None,
        }
    }

    /// Checks a user's password (unless `username` or the client address
    /// `from` is backing off); on success opens a session and returns its
    /// token.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        from: Option<IpAddr>,
    ) -> Result<(String, Caller), LoginRefused> {
        let credentials = self.credentials();
        let user = credentials.users.iter().find(|u| u.name == username);
        // Only configured names are tracked, so unknown ones cannot grow
        // the limiter; they still count against the address.
        let tracked = user.map(|u| u.name.as_str());
        let limiter = || self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        let backing_off = || {
            let blocked = limiter().check(tracked, from, Instant::now()).err()?;
            let by = match blocked {
                Blocked::User(_) => "user",
                Blocked::Address(_) => "address",
            };
            self.counters
                .blocked
                .get_or_create(&labels(&[("by", by)]))
                .inc();
            Some(LoginRefused::Blocked(blocked))
        };
        // Before queueing for a password check, and again once it is this
        // login's turn: guesses sent all at once queue at the semaphore, and
        // the failures of those ahead must count against those behind.
        if let Some(refused) = backing_off() {
            return Err(refused);
        }
        let hash = user.map_or_else(|| self.decoy.clone(), |u| u.hash.clone());
        let password = password.to_string();
        let permit = self
            .password_checks
            .acquire()
            .await
            .map_err(|_| LoginRefused::Wrong)?;
        if let Some(refused) = backing_off() {
            return Err(refused);
        }
        let ok = tokio::task::spawn_blocking(move || verify_password(&hash, &password))
            .await
            .unwrap_or(false);
        // Recorded while still holding the permit, so the next in the queue
        // sees this failure.
        let Some(user) = user.filter(|_| ok) else {
            self.counters.failed.inc();
            limiter().failed(tracked, from, Instant::now());
            drop(permit);
            return Err(LoginRefused::Wrong);
        };
        limiter().succeeded(&user.name);
        drop(permit);
        // A reload during the password check may have removed or changed
        // this user: no session from credentials no longer in force.
        let now_in_force = self.credentials();
        if !now_in_force
            .users
            .iter()
            .any(|u| u.name == user.name && u.role == user.role && u.hash == user.hash)
        {
            return Err(LoginRefused::Wrong);
        }
        let token = new_token();
        let caller = Caller {
            who: user.name.clone(),
            role: user.role,
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        let mine = sessions.values().filter(|s| s.user == caller.who).count();
        if mine >= MAX_SESSIONS_PER_USER
            && let Some(oldest) = sessions
                .iter()
                .filter(|(_, s)| s.user == caller.who)
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| *k)
        {
            sessions.remove(&oldest);
            self.counters.sessions_ended_by_cap.inc();
        }
        sessions.insert(
            digest(&token),
            Session {
                user: caller.who.clone(),
                role: caller.role,
                expires: now + self.session_ttl,
            },
        );
        Ok((token, caller))
    }

    /// Registers the login counters in `registry` (shared, not copied).
    pub fn register_metrics(&self, registry: &mut Registry) {
        let c = &self.counters;
        // Both label values are always shown, zero until the first block.
        for by in ["user", "address"] {
            let _ = c.blocked.get_or_create(&labels(&[("by", by)]));
        }
        registry.register(
            "dockline_login_failed",
            "Password logins refused for a wrong user name or password",
            c.failed.clone(),
        );
        registry.register(
            "dockline_login_blocked",
            "Logins refused unchecked (429) while a user or client address backs off after failures",
            c.blocked.clone(),
        );
        registry.register(
            "dockline_sessions_ended_by_cap",
            format!("Sessions ended because their user logged in more than {MAX_SESSIONS_PER_USER} times"),
            c.sessions_ended_by_cap.clone(),
        );
    }

    /// Ends the session of `bearer` (a no-op for configured tokens).
    pub fn logout(&self, bearer: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.remove(&digest(bearer));
    }

    /// Session lifetime, for the login answer.
    pub fn session_ttl(&self) -> Duration {
        self.session_ttl
    }
}

fn token_digest(key: &str, token: &str) -> Result<Digest32, AuthConfigError> {
    if token.len() < 16 {
        return Err(invalid(
            key,
            "the token is shorter than 16 characters; use a long random one (openssl rand -hex 32)",
        ));
    }
    Ok(digest(token))
}

fn parse_hex32(hex: &str) -> Option<Digest32> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A new random session token: 32 bytes, URL-safe base64.
fn new_token() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Hashes a password for `[[api.users]] password_hash` (argon2id, the
/// crate's default parameters: 19 MiB, 2 passes).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// The role a request needs: `None` for the public paths.
fn required_role(method: &Method, path: &str) -> Option<Role> {
    let public = matches!(path, "/healthz" | "/readyz" | "/v1/login" | "/")
        || path == "/ui"
        || path.starts_with("/ui/")
        // Checks its own access: a token, or a signed link (http/media.rs).
        || (path.starts_with("/v1/media/") && method == Method::GET);
    if public {
        return None;
    }
    if method == Method::GET || method == Method::HEAD {
        Some(Role::Viewer)
    } else {
        Some(Role::Operator)
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let mut response = (status, format!("{message}\n")).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"dockline\""),
        );
    }
    response
}

/// Whether `origin` (an `Origin` header) names this server (`host`, the
/// request's `Host` header).
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
}

/// Whether a `Host` header names a loopback address or `localhost`.
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The middleware: lets a request through only with the role its method
/// and path need; puts the [`Caller`] into the request's extensions.
pub async fn authorize(
    State(auth): State<Arc<Auth>>,
    mut request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let changing = request.method() != Method::GET && request.method() != Method::HEAD;
    if changing && let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        if !same_origin(origin, host) {
            warn!(origin, path = %request.uri().path(), "refused a cross-origin request");
            return refuse(
                StatusCode::FORBIDDEN,
                "cross-origin request refused: this API only accepts changes from its own pages (Origin must match Host)",
            );
        }
    }
    if auth.is_open() {
        if let Some(host) = host
            && !loopback_host(host)
        {
            return refuse(
                StatusCode::FORBIDDEN,
                "this API has no credentials configured and only answers requests addressed to a loopback host; configure [[api.tokens]] or [[api.users]] to serve other names",
            );
        }
        request.extensions_mut().insert(Caller {
            who: "anonymous".into(),
            role: Role::Operator,
        });
        return next.run(request).await;
    }
    let Some(needed) = required_role(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let Some(caller) = bearer(request.headers()).and_then(|b| auth.caller(b)) else {
        let message = if request.headers().contains_key(header::AUTHORIZATION) {
            "unknown or expired token; log in again (POST /v1/login) or send a configured [[api.tokens]] token as Authorization: Bearer <token>"
        } else {
            "this API needs a token: send Authorization: Bearer <token> (a configured [[api.tokens]] token, or one from POST /v1/login)"
        };
        return refuse(StatusCode::UNAUTHORIZED, message);
    };
    if caller.role < needed {
        warn!(who = %caller.who, role = caller.role.name(), method = %request.method(),
            path = %request.uri().path(), "refused: operator role needed");
        return refuse(
            StatusCode::FORBIDDEN,
            &format!(
                "{} needs the operator role; {} is a {}",
                request.uri().path(),
                caller.who,
                caller.role.name()
            ),
        );
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// `POST /v1/login` body.
#[derive(Deserialize)]
pub struct Login {
    username: String,
    password: String,
}

/// `POST /v1/login`: a session token for a user's password. The client
/// address comes from the connection (a server built with
/// `into_make_service_with_connect_info::<SocketAddr>()`); without it only
/// the per-user backoff applies. Behind a reverse proxy every client has
/// the proxy's address, so the per-address backoff then covers them all.
pub async fn login(
    State(auth): State<Arc<Auth>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    body: Option<Json<Login>>,
) -> Response {
    let Some(Json(body)) = body else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "send JSON {\"username\": …, \"password\": …} with Content-Type: application/json",
        );
    };
    if body.username.len() > 256 || body.password.len() > 1024 {
        return refuse(StatusCode::BAD_REQUEST, "user name or password too long");
    }
    let from = peer.map(|axum::Extension(ConnectInfo(addr))| addr.ip());
    let mut response = match auth.login(&body.username, &body.password, from).await {
        Ok((token, caller)) => {
            info!(who = %caller.who, role = caller.role.name(), "logged in");
            Json(serde_json::json!({
                "token": token,
                "who": caller.who,
                "role": caller.role,
                "expires_in_secs": auth.session_ttl().as_secs(),
            }))
            .into_response()
        }
        Err(LoginRefused::Wrong) => {
            warn!(username = %body.username, from = ?from, "failed login");
            refuse(StatusCode::UNAUTHORIZED, "wrong user name or password")
        }
        Err(LoginRefused::Blocked(blocked)) => {
            let secs = blocked.retry_after_secs();
            let whom = match blocked {
                Blocked::User(_) => "this user name",
                Blocked::Address(_) => "this client address",
            };
            warn!(username = %body.username, from = ?from, retry_after_secs = secs,
                "login refused unchecked: too many failed logins");
            let mut r = refuse(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "too many failed logins for {whom}; try again in {secs} s (the wait doubles with each further failure)"
                ),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
            r
        }
    };
    // A token must not be kept by a browser's or a proxy's cache.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

/// `POST /v1/logout`: ends the caller's session.
pub async fn logout(State(auth): State<Arc<Auth>>, headers: HeaderMap) -> Response {
    if let Some(b) = bearer(&headers) {
        auth.logout(b);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /v1/whoami`: the caller and its role (the dashboard hides replay
/// for viewers).
pub async fn whoami(caller: Option<axum::Extension<Caller>>) -> Response {
    match caller {
        Some(axum::Extension(c)) => Json(c).into_response(),
        None => refuse(StatusCode::UNAUTHORIZED, "not logged in"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_follow_method_and_path() {
        assert_eq!(required_role(&Method::GET, "/healthz"), None);
        assert_eq!(required_role(&Method::GET, "/ui/devices"), None);
        assert_eq!(required_role(&Method::POST, "/v1/login"), None);
        assert_eq!(required_role(&Method::GET, "/dlq"), Some(Role::Viewer));
        assert_eq!(required_role(&Method::GET, "/metrics"), Some(Role::Viewer));
        assert_eq!(
            required_role(&Method::POST, "/dlq/1/replay"),
            Some(Role::Operator)
        );
        assert_eq!(required_role(&Method::GET, "/uix"), Some(Role::Viewer));
    }

    #[test]
    fn origin_and_host_checks() {
        assert!(same_origin("http://127.0.0.1:8080", Some("127.0.0.1:8080")));
        assert!(!same_origin("http://evil.example", Some("127.0.0.1:8080")));
        assert!(!same_origin("null", Some("127.0.0.1:8080")));
        assert!(loopback_host("127.0.0.1:8080"));
        assert!(loopback_host("localhost:1"));
        assert!(loopback_host("[::1]:8080"));
        assert!(!loopback_host("evil.example:8080"));
        assert!(!loopback_host("10.0.0.1"));
    }

    #[test]
    fn hashes_verify_and_hex_parses() {
        let h = hash_password("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "wrong"));
        assert!(parse_hex32(&"ab".repeat(32)).is_some());
        assert!(parse_hex32("abc").is_none());
        assert!(parse_hex32(&"zz".repeat(32)).is_none());
    }
}
