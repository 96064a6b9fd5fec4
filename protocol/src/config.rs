//! Configuration loading shared by the agent and the collector: a TOML file,
//! then `DOCKLINE_*` environment overrides, then a typed struct with defaults.
//!
//! An environment variable names a key path with `__` between table levels:
//! `DOCKLINE_MQTT__HOST=broker.local` sets `[mqtt] host`, `DOCKLINE_SITE=dc1`
//! sets the top-level `site`. The value is read as a TOML value when it parses
//! as one (`42`, `true`, `["a"]`) and as a plain string otherwise.
//! Variables starting with `DOCKLINE_TEST_` belong to the test suite (service
//! URLs such as `DOCKLINE_TEST_MQTT_URL`) and are never read as overrides.

use std::path::{Path, PathBuf};
use std::string::{String, ToString};
use std::vec::Vec;
use std::{format, fs};

use serde::de::DeserializeOwned;

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

/// Loads `T` from an optional file plus the given environment variables
/// (pass `std::env::vars()` in binaries, a fixed list in tests).
pub fn load<T: DeserializeOwned>(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let (mut table, origin) = match file {
        Some(path) => {
            let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.into(),
                source,
            })?;
            let table: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Invalid {
                        origin: path.display().to_string(),
                        message: e.to_string().trim_end().replace('\n', " | "),
                    })?;
            (table, path.display().to_string())
        }
        None => (toml::Table::new(), "(defaults and environment)".to_string()),
    };
    let applied = overlay_env(&mut table, env)?;
    let origin = if applied.is_empty() {
        origin
    } else {
        format!("{origin} with {}", applied.join(", "))
    };
    T::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Invalid {
        origin,
        message: e.to_string().trim_end().replace('\n', " | "),
    })
}

/// Applies `DOCKLINE_*` overrides to a parsed table; returns the variables used.
pub fn overlay_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<String>, ConfigError> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !k.starts_with(TEST_ENV_PREFIX))
        .collect();
    // Sorted so that a run is reproducible whatever order the OS lists them in.
    vars.sort();
    let mut applied = Vec::new();
    for (var, raw) in vars {
        let path: Vec<String> = var[ENV_PREFIX.len()..]
            .split("__")
            .map(|p| p.to_ascii_lowercase())
            .collect();
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
        applied.push(var);
    }
    Ok(applied)
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
}
