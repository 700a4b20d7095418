//! Where data comes from: the hub while it answers, else the store's agent with the last
//! token the hub issued. One probe task decides; every request of the webview goes through
//! [`Desktop::request`], which adds the bearer token and refuses anything outside
//! `/api/v1/`.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::session::{Me, Session, TokenResponse};
use crate::settings::Settings;

/// Longest request path the webview may ask for.
pub const PATH_BYTES_MAX: usize = 2_048;
/// Largest request body the webview may send.
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// Largest response passed back to the webview.
pub const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Timeout of a reachability probe.
pub const PROBE_TIMEOUT_MS: u64 = 2_000;
/// Timeout of one API request.
pub const REQUEST_TIMEOUT_MS: u64 = 20_000;

/// Which API answers the views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The hub: every store the manager may see, synced data.
    Hub,
    /// The store's agent: this store only, local data.
    Agent,
}

/// The connection state shown by the banner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    /// Where views read from; `None` when neither answers.
    pub source: Option<Source>,
    /// Whether the hub answered the last probe.
    pub hub_reachable: bool,
    /// Whether the agent answered the last probe (only probed while the hub does not).
    pub agent_reachable: bool,
    /// The hub's base URL.
    pub hub_url: String,
    /// The agent's base URL.
    pub agent_url: String,
}

/// Why a request failed before any HTTP status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The request was refused before sending.
    #[error("{field}: {reason}")]
    Invalid {
        /// Which part.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Nobody is signed in.
    #[error("not signed in")]
    SignedOut,
    /// Neither the hub nor the agent answers.
    #[error("neither the hub nor the store agent can be reached")]
    Unreachable,
    /// Transport failure.
    #[error("{target} unreachable: {reason}")]
    Transport {
        /// `hub` or `agent`.
        target: &'static str,
        /// Why.
        reason: String,
    },
    /// Sign-in refused.
    #[error("sign-in refused: {0}")]
    Refused(String),
    /// Settings or session file.
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
}

impl Serialize for LinkError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// One request of the webview.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiRequest {
    /// `GET`, `POST`, `PUT` or `DELETE`.
    pub method: String,
    /// Path and query, starting with `/api/v1/`.
    pub path: String,
    /// JSON body of a POST or PUT.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// Force a source; by default the current one.
    #[serde(default)]
    pub source: Option<Source>,
}

/// The answer, whatever its status.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiResponse {
    /// Who answered.
    pub source: Source,
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// Body as text.
    pub body: String,
}

/// Where the settings and the session are kept.
#[derive(Debug, Clone)]
pub struct Files {
    /// `settings.json`.
    pub settings: PathBuf,
    /// `session.json`.
    pub session: PathBuf,
}

/// The app's state, shared by commands and background tasks.
#[derive(Debug)]
pub struct Desktop {
    http: reqwest::Client,
    files: Files,
    settings: Mutex<Settings>,
    session: Mutex<Option<Session>>,
    connection: Mutex<Connection>,
    /// Print reports (connection changes, what the views rendered, notifications) on stdout.
    pub report: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these short locks leaves plain data, still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Checks a path the webview asks for.
pub fn check_path(path: &str) -> Result<(), LinkError> {
    let invalid = |reason: &str| LinkError::Invalid {
        field: "path",
        reason: reason.to_owned(),
    };
    if path.len() > PATH_BYTES_MAX {
        return Err(invalid("is longer than 2048 bytes"));
    }
    if !path.starts_with("/api/v1/") {
        return Err(invalid("must start with /api/v1/"));
    }
    let route = path.split(['?', '#']).next().unwrap_or_default();
    if route.split('/').any(|seg| seg == ".." || seg == ".")
        || route.contains('\\')
        || route.contains("%2e")
        || route.contains("%2E")
        || path.chars().any(char::is_control)
    {
        return Err(invalid(
            "must not contain dot segments or control characters",
        ));
    }
    Ok(())
}

impl Desktop {
    /// The state, with settings and a remembered session read from `files`.
    pub fn new(files: Files, report: bool) -> Result<Desktop, LinkError> {
        let settings = Settings::load(&files.settings)?;
        let session = Session::load(&files.session);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(PROBE_TIMEOUT_MS))
            .user_agent(concat!("storesync-desktop/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| LinkError::Invalid {
                field: "http client",
                reason: e.to_string(),
            })?;
        let connection = Connection {
            source: None,
            hub_reachable: false,
            agent_reachable: false,
            hub_url: settings.hub_url.clone(),
            agent_url: settings.agent_url.clone(),
        };
        Ok(Desktop {
            http,
            files,
            settings: Mutex::new(settings),
            session: Mutex::new(session),
            connection: Mutex::new(connection),
            report,
        })
    }

    /// The HTTP client (shared with the alert stream).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Current settings.
    pub fn settings(&self) -> Settings {
        lock(&self.settings).clone()
    }

    /// Validates, saves and applies new settings.
    pub fn set_settings(&self, settings: Settings) -> Result<Settings, LinkError> {
        let settings = settings.validated()?;
        settings.save(&self.files.settings)?;
        *lock(&self.settings) = settings.clone();
        Ok(settings)
    }

    /// The signed-in session.
    pub fn session(&self) -> Option<Session> {
        lock(&self.session).clone()
    }

    /// Current connection.
    pub fn connection(&self) -> Connection {
        lock(&self.connection).clone()
    }

    /// Base URL and bearer token for `source`.
    pub fn target(&self, source: Source) -> Result<(String, String), LinkError> {
        let token = self
            .session()
            .map(|s| s.access_token)
            .ok_or(LinkError::SignedOut)?;
        let settings = self.settings();
        let base = match source {
            Source::Hub => settings.hub_url,
            Source::Agent => settings.agent_url,
        };
        Ok((base, token))
    }

    /// Signs in at the hub with a password; remembers the session.
    pub async fn sign_in(
        &self,
        tenant: &str,
        username: &str,
        password: &str,
    ) -> Result<Session, LinkError> {
        for (field, value) in [("tenant", tenant), ("username", username)] {
            if value.trim().is_empty() || value.len() > 256 {
                return Err(LinkError::Invalid {
                    field,
                    reason: "must be 1 to 256 characters".into(),
                });
            }
        }
        let form = [
            ("grant_type", "password"),
            ("tenant", tenant.trim()),
            ("username", username.trim()),
            ("password", password),
        ];
        let session = self.token(&form).await?;
        let mut settings = self.settings();
        settings.tenant = session.tenant.clone();
        settings.username = session.subject.clone();
        self.set_settings(settings)?;
        Ok(session)
    }

    /// Spends the refresh token for a new access token.
    pub async fn refresh(&self) -> Result<Session, LinkError> {
        let Some(refresh) = self.session().and_then(|s| s.refresh_token) else {
            return Err(LinkError::SignedOut);
        };
        self.token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)])
            .await
    }

    async fn token(&self, form: &[(&str, &str)]) -> Result<Session, LinkError> {
        let hub = self.settings().hub_url;
        let transport = |e: reqwest::Error| LinkError::Transport {
            target: "hub",
            reason: e.to_string(),
        };
        let response = self
            .http
            .post(format!("{hub}/oauth/token"))
            .form(form)
            .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let error = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| status.to_string());
            return Err(LinkError::Refused(match error.as_str() {
                "invalid_grant" => "wrong tenant, user name or password".into(),
                _ => error,
            }));
        }
        let token: TokenResponse = response.json().await.map_err(transport)?;
        let me: Me = self
            .http
            .get(format!("{hub}/api/v1/me"))
            .bearer_auth(&token.access_token)
            .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(transport)?
            .json()
            .await
            .map_err(transport)?;
        let session = Session {
            tenant: me.tenant,
            subject: me.subject,
            role: me.role,
            stores: me.stores,
            access_token: token.access_token,
            refresh_token: token.refresh_token,
            expires_s: now_s() + token.expires_in,
        };
        session.save(&self.files.session)?;
        *lock(&self.session) = Some(session.clone());
        Ok(session)
    }

    /// Forgets the session, on disk too.
    pub fn sign_out(&self) {
        *lock(&self.session) = None;
        if let Err(e) = std::fs::remove_file(&self.files.session) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(error = %e, "could not remove the session file");
            }
        }
    }

    /// Sends one request of the webview to the current (or the asked) source.
    pub async fn request(&self, request: ApiRequest) -> Result<ApiResponse, LinkError> {
        check_path(&request.path)?;
        let source = match request.source {
            Some(s) => s,
            None => self.connection().source.ok_or(LinkError::Unreachable)?,
        };
        let (base, token) = self.target(source)?;
        let url = format!("{base}{}", request.path);
        let builder = match request.method.as_str() {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            "POST" | "PUT" => {
                let body = match &request.body {
                    Some(v) => serde_json::to_vec(v).unwrap_or_default(),
                    None => Vec::new(),
                };
                if body.len() > BODY_BYTES_MAX {
                    return Err(LinkError::Invalid {
                        field: "body",
                        reason: format!("is larger than {BODY_BYTES_MAX} bytes"),
                    });
                }
                let method = if request.method == "PUT" {
                    reqwest::Method::PUT
                } else {
                    reqwest::Method::POST
                };
                self.http
                    .request(method, url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body)
            }
            _ => {
                return Err(LinkError::Invalid {
                    field: "method",
                    reason: "must be GET, POST, PUT or DELETE".into(),
                });
            }
        };
        let target = match source {
            Source::Hub => "hub",
            Source::Agent => "agent",
        };
        let transport = |e: reqwest::Error| LinkError::Transport {
            target,
            reason: e.to_string(),
        };
        let response = builder
            .bearer_auth(token)
            .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if response
            .content_length()
            .is_some_and(|n| n > RESPONSE_BYTES_MAX as u64)
        {
            return Err(LinkError::Invalid {
                field: "response",
                reason: format!("is larger than {RESPONSE_BYTES_MAX} bytes"),
            });
        }
        let body = response.text().await.map_err(transport)?;
        Ok(ApiResponse {
            source,
            status,
            content_type,
            body,
        })
    }

    async fn answers(&self, base: &str) -> bool {
        self.http
            .get(format!("{base}/healthz"))
            .timeout(Duration::from_millis(PROBE_TIMEOUT_MS))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// Probes the hub (and the agent when the hub does not answer); returns the new
    /// connection when it changed.
    pub async fn probe(&self) -> Option<Connection> {
        let settings = self.settings();
        let hub_reachable = self.answers(&settings.hub_url).await;
        let agent_reachable = !hub_reachable && self.answers(&settings.agent_url).await;
        let source = if hub_reachable {
            Some(Source::Hub)
        } else if agent_reachable {
            Some(Source::Agent)
        } else {
            None
        };
        let next = Connection {
            source,
            hub_reachable,
            agent_reachable,
            hub_url: settings.hub_url,
            agent_url: settings.agent_url,
        };
        let mut current = lock(&self.connection);
        if *current == next {
            return None;
        }
        *current = next.clone();
        Some(next)
    }

    /// Whether the access token should be refreshed now (a third of its life left or less;
    /// the hub's default life is 15 minutes).
    pub fn wants_refresh(&self) -> bool {
        self.session()
            .is_some_and(|s| s.refresh_token.is_some() && s.expires_s.saturating_sub(now_s()) < 300)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(path: &str, ok: bool) {
        assert_eq!(check_path(path).is_ok(), ok, "{path}");
    }

    #[test]
    fn only_api_paths_pass() {
        check("/api/v1/summary", true);
        check(
            "/api/v1/rollups?granularity=hour&from=2026-11-22T00:00:00Z",
            true,
        );
        check("/api/v1/alerts/a-1/acknowledge", true);
        check("/oauth/token", false);
        check("/api/v1/../../oauth/token", false);
        check("/api/v1/%2e%2e/metrics", false);
        check("/api/v1/x\r\nHost: evil", false);
        check("http://evil.example/api/v1/summary", false);
        check(&format!("/api/v1/{}", "a".repeat(PATH_BYTES_MAX)), false);
    }
}
