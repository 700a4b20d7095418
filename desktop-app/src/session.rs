//! The manager's session: tokens from the hub's `/oauth/token`, remembered on disk (owner
//! only) so that the agent can be asked with the last token while the hub is unreachable,
//! also after a restart. Tokens never reach the webview.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::settings::{SettingsError, write_file};

/// A signed-in manager.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// Tenant.
    pub tenant: String,
    /// User name.
    pub subject: String,
    /// `admin`, `analyst` or `store_manager`.
    pub role: String,
    /// Assigned stores.
    pub stores: Vec<String>,
    /// Bearer token from the hub (a JWT the agent verifies offline).
    pub access_token: String,
    /// Refresh token, spent once.
    pub refresh_token: Option<String>,
    /// When the access token expires, Unix seconds.
    pub expires_s: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("tenant", &self.tenant)
            .field("subject", &self.subject)
            .field("role", &self.role)
            .field("expires_s", &self.expires_s)
            .finish_non_exhaustive()
    }
}

/// What the webview sees of a session.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    /// Tenant.
    pub tenant: String,
    /// User name.
    pub subject: String,
    /// Role.
    pub role: String,
    /// Assigned stores.
    pub stores: Vec<String>,
    /// Expiry of the token, Unix seconds: the agent refuses it afterwards.
    pub expires_s: u64,
}

impl Session {
    /// The part the webview may see.
    pub fn view(&self) -> SessionView {
        SessionView {
            tenant: self.tenant.clone(),
            subject: self.subject.clone(),
            role: self.role.clone(),
            stores: self.stores.clone(),
            expires_s: self.expires_s,
        }
    }

    /// Reads a remembered session; `None` when there is none or it cannot be read.
    pub fn load(path: &Path) -> Option<Session> {
        let bytes = std::fs::read(path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(session) => Some(session),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable session file");
                None
            }
        }
    }

    /// Remembers the session (owner-only file).
    pub fn save(&self, path: &Path) -> Result<(), SettingsError> {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        write_file(path, &bytes, true)
    }
}

/// The hub's answer from `/oauth/token`.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenResponse {
    pub(crate) access_token: String,
    pub(crate) expires_in: u64,
    #[serde(default)]
    pub(crate) refresh_token: Option<String>,
}

/// The hub's answer from `/api/v1/me`.
#[derive(Debug, Deserialize)]
pub(crate) struct Me {
    pub(crate) tenant: String,
    pub(crate) subject: String,
    pub(crate) role: String,
    #[serde(default)]
    pub(crate) stores: Vec<String>,
}
