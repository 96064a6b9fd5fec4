//! Configuration loading shared by the agent and the collector: a TOML file,
//! then `DOCKLINE_*` environment overrides, then a typed struct with defaults.
//!
//! An environment variable names a key path with `__` between table levels:
//! `DOCKLINE_MQTT__HOST=broker.local` sets `[mqtt] host`, `DOCKLINE_SITE=dc1`
//! sets the top-level `site`. The value is read as a TOML value when it parses
//! as one (`42`, `true`, `["a"]`) and as a plain string otherwise.
//! Variables starting with `DOCKLINE_TEST_` belong to the test suite (service
//! URLs such as `DOCKLINE_TEST_MQTT_URL`) and are never read as overrides.

use std::fs;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A parsed TOML table, as [`Loaded::table`] holds it.
pub use toml::Table;

/// The prefix of every override variable.
pub const ENV_PREFIX: &str = "DOCKLINE_";

/// Variables with this prefix are the test suite's, not configuration.
pub const TEST_ENV_PREFIX: &str = "DOCKLINE_TEST_";

/// A configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}; check the path given to --config")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file or the merged result does not fit the expected shape.
    #[error("config {origin}: {message}")]
    Invalid {
        /// File name, or "environment" when only overrides were used.
        origin: String,
        /// What is wrong, with the line and key when known.
        message: String,
    },
    /// An override variable names a key path that collides with a plain value.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
}

/// A loaded configuration and how it came about, for `check-config` and the
/// start-up log.
#[derive(Debug)]
pub struct Loaded<T> {
    /// The typed configuration.
    pub config: T,
    /// The merged table (file, then overrides) it was built from; print it
    /// with [`redacted_toml`], never as is.
    pub table: toml::Table,
    /// The file, or "(defaults and environment)", plus the overrides used.
    pub origin: String,
    /// Override variables applied.
    pub applied: Vec<String>,
    /// `DOCKLINE_*` variables that name no known top-level key of `T`
    /// (a deploy script's `DOCKLINE_BIN`), left alone; log them at debug.
    pub ignored: Vec<String>,
}

/// The file to load: the one given (`-c`), else `default` when it exists,
/// else none (defaults and `DOCKLINE_*` variables alone).
pub fn file_to_load(given: Option<&Path>, default: &Path) -> Option<PathBuf> {
    match given {
        Some(path) => Some(path.to_path_buf()),
        None if default.is_file() => Some(default.to_path_buf()),
        None => None,
    }
}

/// Loads `T` from an optional file plus the given environment variables
/// (pass `std::env::vars()` in binaries, a fixed list in tests).
pub fn load<T: DeserializeOwned>(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    load_report(file, env).map(|loaded| loaded.config)
}

/// [`load`], also returning the merged table, the overrides applied and the
/// variables ignored.
///
/// Errors are readable: a TOML syntax error, or a wrong key or value that
/// comes from the file, names the line and column and shows the line with a
/// caret under the problem; one that comes from an override names the
/// variables applied.
pub fn load_report<T: DeserializeOwned>(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Loaded<T>, ConfigError> {
    let (mut table, origin, text) = match file {
        Some(path) => {
            let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.into(),
                source,
            })?;
            let table: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Invalid {
                        origin: path.display().to_string(),
                        message: located(&text, &e),
                    })?;
            (table, path.display().to_string(), Some(text))
        }
        None => (
            toml::Table::new(),
            "(defaults and environment)".to_string(),
            None,
        ),
    };
    let known = top_level_keys::<T>();
    let overlay = overlay_env(&mut table, env, known)?;
    let origin = if overlay.applied.is_empty() {
        origin
    } else {
        format!("{origin} with {}", overlay.applied.join(", "))
    };
    match T::deserialize(toml::Value::Table(table.clone())) {
        Ok(config) => Ok(Loaded {
            config,
            table,
            origin,
            applied: overlay.applied,
            ignored: overlay.ignored,
        }),
        Err(e) => {
            // A value table has no positions. When the file alone fails
            // with the same complaint, the problem is in the file: parse it
            // again from its text to get the line, the column and the line.
            let message = match text {
                Some(t) => match toml::from_str::<T>(&t) {
                    Err(s) if s.message() == e.message() && s.span().is_some() => located(&t, &s),
                    _ => e.message().trim_end().to_string(),
                },
                None => e.message().trim_end().to_string(),
            };
            Err(ConfigError::Invalid { origin, message })
        }
    }
}

/// `line L, column C: <message>` and below it the line itself with a caret
/// under the problem, from an error with a span into `text`; the message
/// alone without one.
fn located(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    let Some(span) = error.span() else {
        return message.to_string();
    };
    // A span over the whole document (a missing top-level key) points at
    // nothing in particular: the message alone says more.
    if span.start == 0 && span.end >= text.trim_end().len() {
        return message.to_string();
    }
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line_no = text[..start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    let line = text[line_start..line_end].trim_end_matches('\r');
    let width = text[start..span.end.clamp(start, line_end)]
        .chars()
        .count()
        .max(1);
    let gutter = line_no.to_string().len();
    format!(
        "line {line_no}, column {column}: {message}\n  {line_no} | {line}\n  {:gutter$} | {}{}",
        "",
        " ".repeat(column - 1),
        "^".repeat(width),
    )
}

/// The top-level keys whose value differs between two merged tables
/// (added, removed or changed), in name order: what a reload found changed.
pub fn changed_keys(old: &toml::Table, new: &toml::Table) -> Vec<String> {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect()
}

/// What [`overlay_env`] did.
#[derive(Debug, Default)]
pub struct Overlay {
    /// Variables applied as overrides.
    pub applied: Vec<String>,
    /// Variables naming no known top-level key, left alone.
    pub ignored: Vec<String>,
}

/// Applies `DOCKLINE_*` overrides to a parsed table. With `known` (the
/// config's top-level keys), a variable whose first level is not one of them
/// is ignored, not an error: `DOCKLINE_BIN` from a deploy script must not
/// stop a service. A typo below a known key (`DOCKLINE_MQTT__HOTS`) is still
/// applied, so the typed config refuses it by name.
pub fn overlay_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    known: Option<&[&str]>,
) -> Result<Overlay, ConfigError> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !k.starts_with(TEST_ENV_PREFIX))
        .collect();
    // Sorted so that a run is reproducible whatever order the OS lists them in.
    vars.sort();
    let mut done = Overlay::default();
    for (var, raw) in vars {
        let path: Vec<String> = var[ENV_PREFIX.len()..]
            .split("__")
            .map(|p| p.to_ascii_lowercase())
            .collect();
        if known.is_some_and(|keys| !keys.contains(&path[0].as_str())) {
            done.ignored.push(var);
            continue;
        }
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::Env {
                var,
                message: "has an empty key level; use DOCKLINE_SECTION__KEY".into(),
            });
        }
        let value = parse_value(&raw);
        let (last, parents) = path
            .split_last()
            .expect("split on a non-empty string yields at least one part");
        let mut cur = &mut *table;
        for p in parents {
            let entry = cur
                .entry(p.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cur = match entry {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(ConfigError::Env {
                        var,
                        message: format!("`{p}` is a plain value in the config, not a table"),
                    });
                }
            };
        }
        cur.insert(last.clone(), value);
        done.applied.push(var);
    }
    Ok(done)
}

/// The top-level keys of a config struct (its serde field names), or `None`
/// when `T` is not a plain struct. Asked of serde itself, so the list can
/// never drift from the struct.
pub fn top_level_keys<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    match T::deserialize(FieldProbe) {
        Err(Probe(fields)) => fields,
        Ok(_) => None,
    }
}

/// A deserializer that only records the field list a struct asks for.
struct FieldProbe;

/// The probe's "error", carrying the field names when a struct asked.
#[derive(Debug)]
struct Probe(Option<&'static [&'static str]>);

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field probe")
    }
}

impl std::error::Error for Probe {}

impl serde::de::Error for Probe {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Probe(None)
    }
}

impl<'de> serde::Deserializer<'de> for FieldProbe {
    type Error = Probe;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Probe> {
        Err(Probe(None))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Probe> {
        Err(Probe(Some(fields)))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// Whether a key holds a secret value (a password, a token, a signing or
/// webhook secret), as opposed to where one is (`*_env`, `*_file`).
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    let names_secret = ["secret", "password", "token", "private"]
        .iter()
        .any(|w| key.contains(w));
    let names_place = ["_env", "_file", "_path"].iter().any(|s| key.ends_with(s));
    names_secret && !names_place
}

/// `config` as TOML, every key with the value the process runs with
/// (defaults included), secrets redacted as by [`redacted_toml`]: what
/// `check-config` prints.
pub fn effective_toml<T: serde::Serialize>(config: &T) -> Result<String, String> {
    Ok(redacted_toml(&effective_table(config)?))
}

/// `config` as a TOML table, every key with the value the process runs
/// with, secrets NOT redacted: for a program that redacts more keys of its
/// own before [`redacted_toml`].
pub fn effective_table<T: serde::Serialize>(config: &T) -> Result<toml::Table, String> {
    toml::Table::try_from(config).map_err(|e| format!("cannot print the effective config: {e}"))
}

/// The merged table as TOML with every secret value replaced by
/// `"<redacted>"` (strings and lists of strings under a secret-named key;
/// `{ file = … }` and `{ env = … }` forms are shown, they are not secrets).
pub fn redacted_toml(table: &toml::Table) -> String {
    fn redact(value: &mut toml::Value, secret: bool) {
        match value {
            toml::Value::String(s) if secret => *s = "<redacted>".into(),
            toml::Value::Array(items) => items.iter_mut().for_each(|v| redact(v, secret)),
            toml::Value::Table(t) => t.iter_mut().for_each(|(k, v)| redact(v, is_secret_key(k))),
            _ => {}
        }
    }
    let mut value = toml::Value::Table(table.clone());
    redact(&mut value, false);
    match value {
        toml::Value::Table(t) => {
            toml::to_string(&t).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
        }
        _ => String::new(),
    }
}

fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("x = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("x")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        site: String,
        #[serde(default)]
        mqtt: Mqtt,
    }
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Mqtt {
        #[serde(default)]
        host: String,
        #[serde(default)]
        port: u16,
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_overrides_file_values_and_types() {
        let dir = std::env::temp_dir().join(format!("dockline-cfg-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("a.toml");
        fs::write(&path, "site = \"a\"\n[mqtt]\nhost = \"h\"\nport = 1\n").expect("write");
        let cfg: Cfg = load(
            Some(&path),
            env(&[
                ("DOCKLINE_MQTT__PORT", "1884"),
                ("OTHER", "x"),
                ("DOCKLINE_TEST_MQTT_URL", "mqtt://127.0.0.1:1883"),
            ]),
        )
        .expect("loads");
        assert_eq!(cfg.site, "a");
        assert_eq!(cfg.mqtt.host, "h");
        assert_eq!(cfg.mqtt.port, 1884);
        let cfg: Cfg = load(None, env(&[("DOCKLINE_SITE", "dc-1")])).expect("env only");
        assert_eq!(cfg.site, "dc-1");
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn errors_name_the_problem() {
        let err = load::<Cfg>(Some(Path::new("/nonexistent/agent.toml")), env(&[]))
            .expect_err("missing file");
        assert!(err.to_string().contains("/nonexistent/agent.toml"), "{err}");
        let err =
            load::<Cfg>(None, env(&[("DOCKLINE_MQTT__PORT", "\"x\"")])).expect_err("bad type");
        assert!(err.to_string().contains("DOCKLINE_MQTT__PORT"), "{err}");
        let err = load::<Cfg>(
            None,
            env(&[("DOCKLINE_SITE__X", "1"), ("DOCKLINE_SITE", "a")]),
        );
        assert!(err.is_err());
    }

    #[test]
    fn unrelated_variables_are_ignored_but_typos_in_known_sections_refused() {
        assert_eq!(top_level_keys::<Cfg>(), Some(&["site", "mqtt"][..]));
        let loaded = load_report::<Cfg>(
            None,
            env(&[
                ("DOCKLINE_SITE", "dc-1"),
                ("DOCKLINE_BIN", "/opt/dockline/bin"),
                ("DOCKLINE_MQTT__PORT", "1884"),
            ]),
        )
        .expect("DOCKLINE_BIN names no key and is left alone");
        assert_eq!(loaded.ignored, vec!["DOCKLINE_BIN".to_string()]);
        assert_eq!(loaded.applied.len(), 2);
        assert_eq!(loaded.config.mqtt.port, 1884);
        let err = load::<Cfg>(
            None,
            env(&[("DOCKLINE_SITE", "dc-1"), ("DOCKLINE_MQTT__HOTS", "h")]),
        )
        .expect_err("a typo under a known section");
        let text = err.to_string();
        assert!(
            text.contains("unknown field `hots`") && text.contains("DOCKLINE_MQTT__HOTS"),
            "{text}"
        );
    }

    #[test]
    fn file_errors_show_line_column_and_the_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        fs::write(&path, "site = \"a\"\n[mqtt]\nhost = \"h\"\nprot = 1\n").expect("write");
        let text = load::<Cfg>(Some(&path), env(&[]))
            .expect_err("typo")
            .to_string();
        assert!(
            text.contains("c.toml: line 4, column 1: unknown field `prot`"),
            "{text}"
        );
        assert!(text.contains("  4 | prot = 1\n    | ^^^^"), "{text}");
        fs::write(&path, "site = \"a\"\n[mqtt\nhost = 1\n").expect("write");
        let text = load::<Cfg>(Some(&path), env(&[]))
            .expect_err("syntax")
            .to_string();
        assert!(text.contains("line 2, column"), "{text}");
        assert!(text.contains("  2 | [mqtt"), "{text}");
    }

    #[test]
    fn redaction_hides_secret_values_not_where_they_come_from() {
        let table: toml::Table = "site = \"a\"\n[api]\ntoken = \"s3cret-token-0123456\"\n\
             [mqtt]\npassword = { file = \"/etc/dockline/mqtt.pw\" }\nusername = \"gw\"\n\
             [erp]\nsecret = \"whsec_abc\"\nsecrets = [\"a\", \"b\"]\n\
             [[api.tokens]]\ntoken_env = \"TOKEN_VAR\"\ntoken = \"tok-value\"\n"
            .parse()
            .expect("toml");
        let text = redacted_toml(&table);
        for hidden in ["s3cret-token", "whsec_abc", "tok-value", "\"a\", \"b\""] {
            assert!(!text.contains(hidden), "{hidden} shown: {text}");
        }
        for shown in [
            "/etc/dockline/mqtt.pw",
            "TOKEN_VAR",
            "username = \"gw\"",
            "<redacted>",
        ] {
            assert!(text.contains(shown), "{shown} missing: {text}");
        }
    }

    #[test]
    fn changed_keys_name_added_removed_and_changed_sections() {
        let old: toml::Table = "site = \"a\"\n[mqtt]\nport = 1\n[log]\nlevel = \"info\"\n"
            .parse()
            .expect("toml");
        let new: toml::Table = "site = \"a\"\n[mqtt]\nport = 2\n[api]\nlisten = \"x\"\n"
            .parse()
            .expect("toml");
        assert_eq!(changed_keys(&old, &new), ["api", "log", "mqtt"]);
        assert!(changed_keys(&old, &old).is_empty());
    }
}
