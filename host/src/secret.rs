//! Secrets in the config, written inline or read from a file or an
//! environment variable (feature `config`), for the agent and the collector.
//!
//! Every key that holds a secret accepts three forms:
//!
//! ```toml
//! secret = "whsec_…"                           # inline (fine for tests)
//! secret = { file = "/run/secrets/erp-secret" }  # a file (systemd credentials, Docker/Kubernetes secrets)
//! secret = { env = "ERP_WEBHOOK_SECRET" }        # any environment variable
//! ```
//!
//! Invariants:
//! - the value is read once, when the config is loaded, so a missing file or
//!   variable stops the process at start; the error names the key's file or
//!   variable and never the value;
//! - a file's content is trimmed of surrounding whitespace (the newline an
//!   editor or `echo` adds is not part of the secret); an empty file or
//!   variable is an error, not an empty secret;
//! - [`Secret`]'s `Debug` prints `Secret(***)`, so a logged config never
//!   shows one.
//!
//! The `DOCKLINE_*` overlay still works on top (`DOCKLINE_ERP__SECRET=…`
//! replaces the key with an inline value); `{ env = "NAME" }` is for
//! variables named by someone else (a secret store, an orchestrator); name
//! one outside `DOCKLINE_…`, which the overlay reads as config keys.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// A secret from the config; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Serialises as the secret itself (a typed config written back to TOML must
/// load again); print a config only through a redacting view such as
/// `config::redacted_toml`.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize(d).map(Secret)
    }
}

/// Reads a file's secret: trimmed, not empty.
pub fn from_file(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read the secret file {} ({e}); check the path and that this service's user may read it",
            path.display()
        )
    })?;
    let value = text.trim();
    if value.is_empty() {
        return Err(format!(
            "the secret file {} is empty; write the secret into it",
            path.display()
        ));
    }
    Ok(value.to_string())
}

/// Reads an environment variable's secret: trimmed, not empty.
pub fn from_env(name: &str) -> Result<String, String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        Ok(_) => Err(format!(
            "the environment variable {name} named for a secret is empty; set it to the secret"
        )),
        Err(std::env::VarError::NotPresent) => Err(format!(
            "the environment variable {name} named for a secret is not set; set it, or write the secret another way"
        )),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!(
            "the environment variable {name} named for a secret is not valid UTF-8"
        )),
    }
}

struct SecretVisitor;

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a secret: a string, { file = \"/path\" } or { env = \"VARIABLE\" }")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
        let mut source: Option<(String, String)> = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != "file" && key != "env" {
                return Err(de::Error::custom(format!(
                    "unknown key `{key}` in a secret; use {{ file = \"/path\" }} or {{ env = \"VARIABLE\" }}"
                )));
            }
            let value: String = map.next_value()?;
            if source.is_some() {
                return Err(de::Error::custom(
                    "a secret takes one of `file` and `env`, not both",
                ));
            }
            source = Some((key, value));
        }
        match source {
            Some((kind, value)) if kind == "file" => {
                from_file(std::path::Path::new(&value)).map_err(de::Error::custom)
            }
            Some((_, name)) => from_env(&name).map_err(de::Error::custom),
            None => Err(de::Error::custom(
                "an empty secret table; use { file = \"/path\" } or { env = \"VARIABLE\" }",
            )),
        }
    }
}

/// `#[serde(deserialize_with = "…")]` for a `String` secret.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(SecretVisitor)
}

/// `#[serde(deserialize_with = "…", default)]` for an `Option<String>` secret.
pub fn deserialize_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    deserialize(d).map(Some)
}

/// `#[serde(deserialize_with = "…", default)]` for a list of secrets (a
/// rotation's previous secrets), each in any of the three forms.
pub fn deserialize_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct ListVisitor;
    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of secrets")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(Secret(s)) = seq.next_element::<Secret>()? {
                out.push(s);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(ListVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Cfg {
        #[serde(deserialize_with = "deserialize")]
        secret: String,
        #[serde(default, deserialize_with = "deserialize_option")]
        other: Option<String>,
        #[serde(default, deserialize_with = "deserialize_list")]
        previous: Vec<String>,
        #[serde(default)]
        password: Option<Secret>,
    }

    fn parse(text: &str) -> Result<Cfg, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn inline_file_and_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("s");
        std::fs::write(&file, "whsec_ZmlsZQ==\n").expect("write");
        // Setting a variable needs `unsafe` in edition 2024, which the
        // crate denies: PATH stands in for a set one, and this name is
        // never set.
        let var = "DOCKLINE_SECRET_TEST_NEVER_SET";
        let path_value = std::env::var("PATH").expect("PATH is set");
        let cfg = parse(&format!(
            "secret = {{ file = {:?} }}\nother = {{ env = \"PATH\" }}\nprevious = [\"whsec_aW5saW5l\", {{ file = {:?} }}]\npassword = \"pw\"\n",
            file.display().to_string(),
            file.display().to_string()
        ))
        .expect("parses");
        assert_eq!(cfg.secret, "whsec_ZmlsZQ==");
        assert_eq!(cfg.other.as_deref(), Some(path_value.trim()));
        assert_eq!(cfg.previous, vec!["whsec_aW5saW5l", "whsec_ZmlsZQ=="]);
        assert_eq!(format!("{:?}", cfg.password), "Some(Secret(***))");

        let err = parse(&format!("secret = {{ env = \"{var}\" }}\n")).expect_err("unset");
        assert!(err.contains(var) && err.contains("not set"), "{err}");
        let err = parse("secret = { file = \"/nonexistent/erp\" }\n").expect_err("no file");
        assert!(err.contains("/nonexistent/erp"), "{err}");
        assert!(err.contains("cannot read the secret file"), "{err}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").expect("write");
        let err = parse(&format!(
            "secret = {{ file = {:?} }}\n",
            empty.display().to_string()
        ))
        .expect_err("empty");
        assert!(err.contains("is empty"), "{err}");
        let err = parse("secret = { path = \"/x\" }\n").expect_err("unknown key");
        assert!(err.contains("unknown key `path`"), "{err}");
    }
}
