//! App settings (hub URL, agent address, probe interval), persisted as JSON in the app's
//! configuration directory, and the remembered session in its data directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The agent's loopback API address (`listen.api` in `storesync-edge.toml`).
pub const AGENT_URL_DEFAULT: &str = "http://127.0.0.1:7400";
/// The hub's default HTTP address (`listen` in `hub.toml`).
pub const HUB_URL_DEFAULT: &str = "http://127.0.0.1:8080";
/// Bounds of the reachability probe interval.
pub const PROBE_INTERVAL_MS_MIN: u64 = 500;
/// Upper bound of the probe interval.
pub const PROBE_INTERVAL_MS_MAX: u64 = 60_000;

/// What a settings value can be wrong about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// A field has a value the app cannot use.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, as named in `settings.json`.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// `settings.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    /// Base URL of the hub's web API, e.g. `https://hub.example.com`.
    #[serde(default = "hub_url_default")]
    pub hub_url: String,
    /// Base URL of the store agent's local API.
    #[serde(default = "agent_url_default")]
    pub agent_url: String,
    /// How often the hub's reachability is checked, ms.
    #[serde(default = "probe_interval_ms_default")]
    pub probe_interval_ms: u64,
    /// Tenant last signed in to, offered on the sign-in form.
    #[serde(default)]
    pub tenant: String,
    /// User last signed in, offered on the sign-in form.
    #[serde(default)]
    pub username: String,
}

fn hub_url_default() -> String {
    HUB_URL_DEFAULT.to_owned()
}
fn agent_url_default() -> String {
    AGENT_URL_DEFAULT.to_owned()
}
fn probe_interval_ms_default() -> u64 {
    3_000
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            hub_url: hub_url_default(),
            agent_url: agent_url_default(),
            probe_interval_ms: probe_interval_ms_default(),
            tenant: String::new(),
            username: String::new(),
        }
    }
}

/// Checks that `text` is an `http` or `https` base URL without query or fragment, and
/// returns it without a trailing slash.
pub fn base_url(field: &'static str, text: &str) -> Result<String, SettingsError> {
    let invalid = |reason: String| SettingsError::Invalid { field, reason };
    let text = text.trim();
    let url = reqwest::Url::parse(text).map_err(|e| {
        if text.contains("://") {
            invalid(format!("not a URL: {e}"))
        } else {
            // "127.0.0.1:7400" or "hub.example.com": say what is missing.
            invalid("must start with http:// or https://".into())
        }
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("must start with http:// or https://".into()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("has no host".into()));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(invalid(
            "must not carry a query, a fragment or credentials".into(),
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

impl Settings {
    /// The settings with URLs normalized, or the first field that is wrong.
    pub fn validated(mut self) -> Result<Settings, SettingsError> {
        self.hub_url = base_url("hubUrl", &self.hub_url)?;
        self.agent_url = base_url("agentUrl", &self.agent_url)?;
        if !(PROBE_INTERVAL_MS_MIN..=PROBE_INTERVAL_MS_MAX).contains(&self.probe_interval_ms) {
            return Err(SettingsError::Invalid {
                field: "probeIntervalMs",
                reason: format!(
                    "must be between {PROBE_INTERVAL_MS_MIN} and {PROBE_INTERVAL_MS_MAX}"
                ),
            });
        }
        Ok(self)
    }

    /// Reads `path`; defaults when it does not exist.
    pub fn load(path: &Path) -> Result<Settings, SettingsError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<Settings>(&bytes)
                .map_err(|e| SettingsError::Invalid {
                    field: "settings.json",
                    reason: e.to_string(),
                })?
                .validated(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(source) => Err(SettingsError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Writes `path` (through a temporary file, so a crash leaves the old one).
    pub fn save(&self, path: &Path) -> Result<(), SettingsError> {
        let text = serde_json::to_vec_pretty(self).unwrap_or_default();
        write_file(path, &text, false)
    }
}

/// Writes `bytes` to `path` through a temporary file; `private` makes it owner-only.
pub(crate) fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), SettingsError> {
    let io = |source| SettingsError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(&tmp).map_err(io)?;
    std::io::Write::write_all(&mut file, bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(field: &'static str, text: &str, expected: Result<&str, &str>) {
        let got = base_url(field, text).map_err(|e| e.to_string());
        match expected {
            Ok(url) => assert_eq!(got.as_deref(), Ok(url), "{text}"),
            Err(reason) => {
                let message = got.expect_err(text);
                assert!(message.contains(reason), "{text}: {message}");
                assert!(message.starts_with(field), "{text}: {message}");
            }
        }
    }

    #[test]
    fn base_urls() {
        check(
            "hubUrl",
            "https://hub.example.com/",
            Ok("https://hub.example.com"),
        );
        check(
            "hubUrl",
            " http://10.0.0.5:8080 ",
            Ok("http://10.0.0.5:8080"),
        );
        check(
            "hubUrl",
            "https://hq.example/storesync/",
            Ok("https://hq.example/storesync"),
        );
        check("agentUrl", "127.0.0.1:7400", Err("http:// or https://"));
        check("agentUrl", "ftp://a", Err("http:// or https://"));
        check("agentUrl", "http://a/?x=1", Err("query"));
        check("agentUrl", "http://user:pw@a/", Err("credentials"));
        check("agentUrl", "hub.example.com", Err("http:// or https://"));
        check("agentUrl", "http://exa mple/", Err("not a URL"));
    }

    #[test]
    fn settings_round_trip_and_defaults() {
        let dir = std::env::temp_dir().join(format!("storesync-desktop-{}", std::process::id()));
        let path = dir.join("settings.json");
        assert_eq!(Settings::load(&path).unwrap(), Settings::default());
        let settings = Settings {
            hub_url: "https://hub.example.com".into(),
            ..Settings::default()
        };
        settings.save(&path).unwrap();
        assert_eq!(Settings::load(&path).unwrap(), settings);
        std::fs::write(&path, br#"{"probeIntervalMs": 10}"#).unwrap();
        let error = Settings::load(&path).unwrap_err().to_string();
        assert!(error.starts_with("probeIntervalMs"), "{error}");
        std::fs::write(&path, br#"{"hubURL": "x"}"#).unwrap();
        let error = Settings::load(&path).unwrap_err().to_string();
        assert!(error.contains("unknown field"), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
