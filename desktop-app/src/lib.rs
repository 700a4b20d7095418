//! The storesync manager app: a Tauri v2 window over the shared UI (`desktop-app/ui`,
//! embedded at compile time from `ui/dist`).
//!
//! The webview never talks to the network itself: its requests go through the `api`
//! command to [`link::Desktop`], which holds the hub's token and sends them to the hub
//! while it answers, else to the store's agent with the last token the hub issued (the
//! agent verifies it offline with the tenant's key from enrollment). A supervisor task
//! probes the hub, announces every change as a `connection` event (the UI's banner), and
//! follows the current source's live stream for native notifications of new alerts.
//!
//! What it does not do: keep data of its own. Offline it shows what the agent has; it
//! cannot sign in anew without the hub, and the agent refuses the token once it expires.
//!
//! With `STORESYNC_DESKTOP_REPORT=1` it prints one JSON line per event on stdout
//! (`connection`, `rendered`, `notified`), which the end-to-end test reads.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tauri::{AppHandle, Emitter as _, Manager as _};
use tauri_plugin_notification::NotificationExt as _;

pub mod alerts;
pub mod link;
pub mod session;
pub mod settings;

use link::{ApiRequest, ApiResponse, Connection, Desktop, Files, LinkError, Source};
use session::SessionView;
use settings::Settings;

/// Largest report the webview may print.
pub const REPORT_BYTES_MAX: usize = 64 * 1024;

/// Shared by commands and tasks.
#[derive(Debug)]
struct Shared {
    desktop: Arc<Desktop>,
    /// Wakes the supervisor (settings changed, a request failed, signed in or out).
    wake: Arc<tokio::sync::Notify>,
    /// True once the sign-in from the environment (if any) was tried, so the webview's
    /// first `session_get` sees its outcome.
    started: tokio::sync::watch::Receiver<bool>,
}

type State<'a> = tauri::State<'a, Shared>;

fn report(desktop: &Desktop, event: &str, payload: impl Serialize) {
    if desktop.report {
        let mut line = serde_json::json!({ "event": event });
        line["data"] = serde_json::to_value(payload).unwrap_or_default();
        println!("storesync-desktop-report {line}");
    }
}

#[tauri::command]
fn settings_get(state: State<'_>) -> Settings {
    state.desktop.settings()
}

#[tauri::command]
fn settings_set(state: State<'_>, settings: Settings) -> Result<Settings, LinkError> {
    let saved = state.desktop.set_settings(settings)?;
    state.wake.notify_one();
    Ok(saved)
}

#[tauri::command]
async fn session_get(state: State<'_>) -> Result<Option<SessionView>, LinkError> {
    let mut started = state.started.clone();
    let _ = started.wait_for(|done| *done).await;
    Ok(state.desktop.session().map(|s| s.view()))
}

#[tauri::command]
async fn sign_in(
    app: AppHandle,
    state: State<'_>,
    tenant: String,
    username: String,
    password: String,
) -> Result<SessionView, LinkError> {
    let session = state.desktop.sign_in(&tenant, &username, &password).await?;
    let _ = app.emit("session", Some(session.view()));
    state.wake.notify_one();
    Ok(session.view())
}

#[tauri::command]
fn sign_out(app: AppHandle, state: State<'_>) {
    state.desktop.sign_out();
    let _ = app.emit("session", None::<SessionView>);
    state.wake.notify_one();
}

#[tauri::command]
fn connection_get(state: State<'_>) -> Connection {
    state.desktop.connection()
}

#[tauri::command]
async fn api(state: State<'_>, request: ApiRequest) -> Result<ApiResponse, LinkError> {
    let result = state.desktop.request(request).await;
    if matches!(result, Err(LinkError::Transport { .. })) {
        // Look again now rather than at the next interval.
        state.wake.notify_one();
    }
    result
}

/// What a view rendered, for the end-to-end test; ignored unless reporting is on.
#[tauri::command]
fn report_rendered(state: State<'_>, rendered: serde_json::Value) -> Result<(), LinkError> {
    if rendered.to_string().len() > REPORT_BYTES_MAX {
        return Err(LinkError::Invalid {
            field: "rendered",
            reason: format!("is larger than {REPORT_BYTES_MAX} bytes"),
        });
    }
    report(&state.desktop, "rendered", rendered);
    Ok(())
}

/// Shows alerts as native notifications and forwards them to the webview.
struct Notifier {
    app: AppHandle,
    desktop: Arc<Desktop>,
}

#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct AlertEvent<'a> {
    source: Source,
    alert: &'a alerts::Alert,
}

impl alerts::Sink for Notifier {
    fn alert(&self, source: Source, alert: &alerts::Alert) {
        let _ = self.app.emit("alert", AlertEvent { source, alert });
        let title = format!("{} alert at {}", alert.severity, alert.store_id);
        let shown = self
            .app
            .notification()
            .builder()
            .title(title.trim())
            .body(&alert.message)
            .show();
        if let Err(e) = &shown {
            tracing::warn!(error = %e, "notification not shown");
        }
        report(
            &self.desktop,
            "notified",
            serde_json::json!({
                "source": source,
                "alertId": alert.alert_id,
                "kind": alert.kind,
                "shown": shown.is_ok(),
            }),
        );
    }

    fn live(&self, source: Source, event: serde_json::Value) {
        let _ = self.app.emit(
            "live",
            serde_json::json!({"source": source, "event": event}),
        );
    }
}

/// Probes, refreshes the token, announces connection changes and keeps the alert stream
/// on the current source.
async fn supervise(app: AppHandle, desktop: Arc<Desktop>, wake: Arc<tokio::sync::Notify>) {
    let seen = Arc::new(tokio::sync::Mutex::new(alerts::Seen::default()));
    let mut stream: Option<(Source, String, tauri::async_runtime::JoinHandle<()>)> = None;
    loop {
        if let Some(connection) = desktop.probe().await {
            report(&desktop, "connection", &connection);
            let _ = app.emit("connection", &connection);
        }
        if desktop.connection().source == Some(Source::Hub) && desktop.wants_refresh() {
            match desktop.refresh().await {
                Ok(session) => {
                    let _ = app.emit("session", Some(session.view()));
                }
                Err(e) => tracing::warn!(error = %e, "token refresh failed"),
            }
        }
        // One stream for the current source and token; replaced when either changes.
        let want = desktop
            .connection()
            .source
            .zip(desktop.session().map(|s| s.access_token));
        let current = stream.as_ref().map(|(s, t, _)| (*s, t.clone()));
        if want != current {
            if let Some((_, _, task)) = stream.take() {
                task.abort();
            }
            if let Some((source, token)) = want {
                let sink = Notifier {
                    app: app.clone(),
                    desktop: Arc::clone(&desktop),
                };
                let (desktop, seen) = (Arc::clone(&desktop), Arc::clone(&seen));
                let task = tauri::async_runtime::spawn(async move {
                    alerts::run(&desktop, source, &seen, &sink).await;
                });
                stream = Some((source, token, task));
            }
        }
        let interval = Duration::from_millis(desktop.settings().probe_interval_ms);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = wake.notified() => {}
        }
    }
}

/// Signs in from `STORESYNC_DESKTOP_SIGN_IN` (`tenant/user`) and
/// `STORESYNC_DESKTOP_PASSWORD` when both are set (unattended store PCs and tests).
async fn sign_in_from_env(desktop: &Desktop) {
    let (Ok(who), Ok(password)) = (
        std::env::var("STORESYNC_DESKTOP_SIGN_IN"),
        std::env::var("STORESYNC_DESKTOP_PASSWORD"),
    ) else {
        return;
    };
    let Some((tenant, user)) = who.split_once('/') else {
        tracing::warn!("STORESYNC_DESKTOP_SIGN_IN must be tenant/user");
        return;
    };
    if let Err(e) = desktop.sign_in(tenant, user, &password).await {
        tracing::warn!(error = %e, "sign-in from the environment failed");
    }
}

/// Runs the app until its window closes.
pub fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "storesync_desktop=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // reqwest is built without a default crypto provider; the workspace uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let report_on = std::env::var("STORESYNC_DESKTOP_REPORT").is_ok_and(|v| v == "1");
    tauri::Builder::default()
        .plugin(tauri_plugin_notification::init())
        .invoke_handler(tauri::generate_handler![
            settings_get,
            settings_set,
            session_get,
            sign_in,
            sign_out,
            connection_get,
            api,
            report_rendered,
        ])
        .setup(move |app| {
            let files = Files {
                settings: app.path().app_config_dir()?.join("settings.json"),
                session: app.path().app_data_dir()?.join("session.json"),
            };
            let desktop = Arc::new(Desktop::new(files, report_on)?);
            let wake = Arc::new(tokio::sync::Notify::new());
            let (started_tx, started) = tokio::sync::watch::channel(false);
            app.manage(Shared {
                desktop: Arc::clone(&desktop),
                wake: Arc::clone(&wake),
                started,
            });
            let handle = app.handle().clone();
            tauri::async_runtime::spawn(async move {
                sign_in_from_env(&desktop).await;
                let _ = started_tx.send(true);
                if let Some(session) = desktop.session() {
                    let _ = handle.emit("session", Some(session.view()));
                }
                supervise(handle, desktop, wake).await;
            });
            Ok(())
        })
        .run(tauri::generate_context!())?;
    Ok(())
}
