//! The built web UI (`desktop-app/ui`, a Vite build) served at `/`.
//!
//! Every `GET` that no API route matched lands here: a file under the asset directory is
//! served as it is; any other path outside the API's prefixes gets `index.html`, so the
//! single-page app's own routes (`/stores/s1`) survive a reload. `/api/*`, `/oauth/*`,
//! `/metrics`, `/healthz` and `/readyz` never fall back: an unknown path there is the API's
//! JSON 404.
//!
//! Caching: Vite names everything under `assets/` by content hash, so those files are
//! `immutable` for a year; `index.html` and the other top-level files are `no-cache` (the
//! browser revalidates and picks up a new build at once). Every UI response carries a
//! Content-Security-Policy that allows scripts only from the hub itself and network
//! requests only to it.
//!
//! When the directory has no `index.html` the hub still serves the API; `/` answers a short
//! page with the two commands that build the UI, and start-up logs the same.

use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// The command that builds the UI, from the repository root.
pub const BUILD_COMMAND: &str =
    "npm --prefix desktop-app/ui ci && npm --prefix desktop-app/ui run build";

/// Where the built UI is looked for when the configuration names no directory: relative to
/// the working directory (a checkout), then beside the executable.
pub const DEFAULT_DIR: &str = "desktop-app/ui/dist";

/// The policy every UI response carries. ECharts and React set element styles from script,
/// which `style-src 'unsafe-inline'` allows; scripts stay same-origin only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self'; \
     connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; \
     frame-ancestors 'none'";

/// Path prefixes that belong to the API and never fall back to the UI.
const API_PREFIXES: &[&str] = &["/api/", "/oauth/"];
/// Exact API paths that never fall back to the UI.
const API_PATHS: &[&str] = &["/api", "/oauth", "/metrics", "/healthz", "/readyz"];

/// The UI's asset directory, and whether a build is in it.
#[derive(Debug, Clone)]
pub struct UiAssets {
    dir: PathBuf,
    present: bool,
}

impl UiAssets {
    /// The assets in `dir` (present when it holds `index.html`).
    pub fn from_dir(dir: impl Into<PathBuf>) -> UiAssets {
        let dir = dir.into();
        let present = dir.join("index.html").is_file();
        UiAssets { dir, present }
    }

    /// The configured directory, or the first default location that holds a build:
    /// [`DEFAULT_DIR`] under the working directory or one of its ancestors, then `ui/`
    /// beside the executable. Logs where the UI is served from, or how to build it.
    pub fn resolve(configured: Option<&Path>) -> UiAssets {
        let candidates: Vec<PathBuf> = match configured {
            Some(dir) => vec![dir.to_owned()],
            None => {
                // The working directory and its ancestors: a hub started anywhere inside a
                // checkout (the demo runs it in `.demo/hub/`) finds the checkout's build.
                let mut list: Vec<PathBuf> = std::env::current_dir()
                    .map(|cwd| cwd.ancestors().map(|d| d.join(DEFAULT_DIR)).collect())
                    .unwrap_or_else(|_| vec![PathBuf::from(DEFAULT_DIR)]);
                if let Some(exe_dir) = std::env::current_exe()
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_owned))
                {
                    list.push(exe_dir.join("ui"));
                }
                list
            }
        };
        let found = candidates
            .iter()
            .map(UiAssets::from_dir)
            .find(|ui| ui.present);
        match found {
            Some(ui) => {
                tracing::info!(dir = %ui.dir.display(), "serving the web UI at /");
                ui
            }
            None => {
                let ui = UiAssets::from_dir(&candidates[0]);
                tracing::warn!(
                    dir = %ui.dir.display(),
                    "the web UI is not built; the API works, and / says how to build it: {BUILD_COMMAND}"
                );
                ui
            }
        }
    }

    /// Whether a build was found.
    pub fn present(&self) -> bool {
        self.present
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The response for a request no API route matched, or `None` when it is the API's
    /// (its 404 applies).
    pub async fn respond(&self, method: &Method, uri: &Uri) -> Option<Response> {
        let path = uri.path();
        if (method != Method::GET && method != Method::HEAD)
            || API_PATHS.contains(&path)
            || API_PREFIXES.iter().any(|p| path.starts_with(p))
        {
            return None;
        }
        if !self.present {
            return Some(missing_page());
        }
        let Some(relative) = safe_relative(path) else {
            return Some(not_found());
        };
        if !relative.as_os_str().is_empty() {
            let file = self.dir.join(&relative);
            if let Ok(bytes) = tokio::fs::read(&file).await {
                let immutable = relative.starts_with("assets");
                return Some(file_response(&relative, bytes, immutable));
            }
            // A missing hashed asset is a stale page asking for an old build: say so
            // instead of answering HTML that the browser would try to run.
            if relative.starts_with("assets") || relative.extension().is_some() {
                return Some(not_found());
            }
        }
        match tokio::fs::read(self.dir.join("index.html")).await {
            Ok(bytes) => Some(file_response(Path::new("index.html"), bytes, false)),
            Err(e) => {
                tracing::warn!(error = %e, "reading the UI's index.html");
                Some(missing_page())
            }
        }
    }
}

/// The request path as a relative path of plain components, or `None` if it tries to climb
/// out (`..`), names a root or holds a NUL.
fn safe_relative(path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(path)?;
    if decoded.contains('\0') || decoded.contains('\\') {
        return None;
    }
    let mut out = PathBuf::new();
    for component in Path::new(decoded.trim_start_matches('/')).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Decodes `%XX` escapes; `None` for a malformed escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn with_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

fn file_response(path: &Path, bytes: Vec<u8>, immutable: bool) -> Response {
    let cache = if immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    with_security_headers(
        (
            [
                (header::CONTENT_TYPE, content_type(path)),
                (header::CACHE_CONTROL, cache),
            ],
            Body::from(bytes),
        )
            .into_response(),
    )
}

fn not_found() -> Response {
    with_security_headers(
        (
            StatusCode::NOT_FOUND,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            "not found",
        )
            .into_response(),
    )
}

fn missing_page() -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>storesync hub</title><style>body{{font-family:system-ui,sans-serif;max-width:40em;\
         margin:3em auto;padding:0 1em;line-height:1.5;color:#1f2937}}code{{background:#f3f4f6;\
         padding:.2em .4em;border-radius:4px;word-break:break-all}}</style></head><body>\
         <h1>storesync hub</h1><p>The API is running, but the web UI has not been built.</p>\
         <p>From the repository root, run:</p><p><code>{BUILD_COMMAND}</code></p>\
         <p>then reload this page. The hub looks for the build in <code>{DEFAULT_DIR}</code> \
         under its working directory or an ancestor of it, or where <code>[ui] dir</code> in <code>hub.toml</code> \
         or <code>STORESYNC_HUB_UI_DIR</code> points.</p>\
         <p>API documentation: <a href=\"/api/docs\">/api/docs</a>.</p></body></html>"
    );
    with_security_headers(
        (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            html,
        )
            .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_paths_never_climb_out() {
        let check = |path: &str, expected: Option<&str>| {
            assert_eq!(safe_relative(path), expected.map(PathBuf::from), "{path}");
        };
        check("/", Some(""));
        check("/index.html", Some("index.html"));
        check("/assets/app-1a2b.js", Some("assets/app-1a2b.js"));
        check("/stores/s1", Some("stores/s1"));
        check("/./assets/x.js", Some("assets/x.js"));
        check("/../etc/passwd", None);
        check("/assets/%2e%2e/%2e%2e/etc/passwd", None);
        check("/a%00b", None);
        check("/a%5c..%5cb", None);
        check("/%zz", None);
        check("/%e2%82", None);
    }
}
