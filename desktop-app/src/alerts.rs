//! New alerts from the live stream of the current source, forwarded to the webview (event
//! `alert`) and shown as native notifications, each alert once.
//!
//! The hub's `/api/v1/live/sse` announces changed alert ids (`alerts` events), which are
//! then read from `/api/v1/alerts?state=open`; the agent's `/api/v1/alerts/stream` sends
//! whole alerts (`alert` events).

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use futures::StreamExt as _;
use serde::Deserialize;

use crate::link::{Desktop, Source};

/// Largest SSE event kept while reading the stream.
pub const EVENT_BYTES_MAX: usize = 256 * 1024;
/// How many alert ids are remembered as already notified.
pub const SEEN_IDS_MAX: usize = 4_096;
/// Pause before reconnecting a stream that ended.
pub const RECONNECT_DELAY_MS: u64 = 2_000;

/// One alert, as both APIs spell it.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// Id.
    pub alert_id: String,
    /// Kind, e.g. `low_stock`.
    #[serde(default)]
    pub kind: String,
    /// Severity.
    #[serde(default)]
    pub severity: String,
    /// Store.
    #[serde(default)]
    pub store_id: String,
    /// `open`, `acknowledged` or `resolved`.
    #[serde(default)]
    pub state: String,
    /// For people.
    #[serde(default)]
    pub message: String,
}

/// Alert ids already notified, bounded.
#[derive(Debug, Default)]
pub struct Seen {
    order: VecDeque<String>,
    ids: HashSet<String>,
}

impl Seen {
    /// Records `id`; true when it is new.
    pub fn insert(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() >= SEEN_IDS_MAX {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        self.order.push_back(id.to_owned());
        self.ids.insert(id.to_owned());
        true
    }
}

/// Splits complete SSE events off `buffer`: `(event name, data)`.
pub fn take_events(buffer: &mut String) -> Vec<(String, String)> {
    let mut out = Vec::new();
    loop {
        let normalized = buffer.replace("\r\n", "\n");
        if normalized.len() != buffer.len() {
            *buffer = normalized;
        }
        let Some(end) = buffer.find("\n\n") else {
            break;
        };
        let block: String = buffer.drain(..end + 2).collect();
        let mut name = String::from("message");
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if !data.is_empty() {
            out.push((name, data));
        }
    }
    out
}

/// Alerts that arrived on one stream, to be shown.
pub trait Sink: Send + Sync {
    /// A new open alert.
    fn alert(&self, source: Source, alert: &Alert);
    /// A live event for the views, in the UI's `LiveEvent` shape (`{"type": "sales",
    /// "tick": ...}`, `{"type": "alerts", "alertIds": [...], "stores": [...]}`,
    /// `{"type": "resync"}`).
    fn live(&self, source: Source, event: serde_json::Value);
}

/// Reads the live stream of `source` until it ends or fails; the caller reconnects.
pub async fn follow(
    desktop: &Desktop,
    source: Source,
    seen: &tokio::sync::Mutex<Seen>,
    sink: &dyn Sink,
) -> Result<(), String> {
    let (base, token) = desktop.target(source).map_err(|e| e.to_string())?;
    let path = match source {
        Source::Hub => "/api/v1/live/sse",
        Source::Agent => "/api/v1/alerts/stream",
    };
    let response = desktop
        .http()
        .get(format!("{base}{path}"))
        .bearer_auth(&token)
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| e.to_string())?;
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        for (name, data) in take_events(&mut buffer) {
            match (source, name.as_str()) {
                (Source::Agent, "alert") => match serde_json::from_str::<Alert>(&data) {
                    Ok(alert) => {
                        sink.live(
                            source,
                            serde_json::json!({"type": "alerts", "alertIds": [alert.alert_id], "stores": [alert.store_id]}),
                        );
                        if alert.state == "open" && seen.lock().await.insert(&alert.alert_id) {
                            sink.alert(source, &alert);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "unreadable alert from the agent"),
                },
                (Source::Hub, "alerts") => {
                    if let Ok(serde_json::Value::Object(mut event)) = serde_json::from_str(&data) {
                        event.insert("type".into(), "alerts".into());
                        sink.live(source, event.into());
                    }
                    for alert in hub_open_alerts(desktop, &data).await {
                        if seen.lock().await.insert(&alert.alert_id) {
                            sink.alert(source, &alert);
                        }
                    }
                }
                (Source::Hub, "sales") => {
                    if let Ok(tick) = serde_json::from_str::<serde_json::Value>(&data) {
                        sink.live(source, serde_json::json!({"type": "sales", "tick": tick}));
                    }
                }
                (Source::Hub, "resync") => sink.live(source, serde_json::json!({"type": "resync"})),
                _ => {}
            }
        }
        if buffer.len() > EVENT_BYTES_MAX {
            return Err(format!("an event is larger than {EVENT_BYTES_MAX} bytes"));
        }
    }
    Ok(())
}

/// The open alerts among the ids a hub `alerts` event names.
async fn hub_open_alerts(desktop: &Desktop, data: &str) -> Vec<Alert> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Changed {
        alert_ids: Vec<String>,
    }
    #[derive(Deserialize)]
    struct List {
        #[serde(alias = "alerts")]
        items: Vec<Alert>,
    }
    let Ok(changed) = serde_json::from_str::<Changed>(data) else {
        return Vec::new();
    };
    let request = crate::link::ApiRequest {
        method: "GET".into(),
        path: "/api/v1/alerts?state=open&limit=200".into(),
        body: None,
        source: Some(Source::Hub),
    };
    let Ok(response) = desktop.request(request).await else {
        return Vec::new();
    };
    let Ok(list) = serde_json::from_str::<List>(&response.body) else {
        return Vec::new();
    };
    list.items
        .into_iter()
        .filter(|a| changed.alert_ids.contains(&a.alert_id))
        .collect()
}

/// Follows the stream of whatever source is current, reconnecting, until cancelled.
pub async fn run(
    desktop: &Desktop,
    source: Source,
    seen: &tokio::sync::Mutex<Seen>,
    sink: &dyn Sink,
) {
    loop {
        if let Err(e) = follow(desktop, source, seen, sink).await {
            tracing::info!(?source, error = %e, "alert stream ended");
        }
        tokio::time::sleep(Duration::from_millis(RECONNECT_DELAY_MS)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_chunks() {
        let mut buffer = String::from("event: ready\ndata: {}\n\nevent: alert\r\ndata: {\"a\":");
        assert_eq!(
            take_events(&mut buffer),
            vec![("ready".into(), "{}".into())]
        );
        buffer.push_str("1}\r\n\r\n: keep-alive\n\n");
        assert_eq!(
            take_events(&mut buffer),
            vec![("alert".into(), "{\"a\":1}".into())]
        );
        assert!(buffer.is_empty());
    }

    #[test]
    fn each_alert_is_notified_once_and_memory_is_bounded() {
        let mut seen = Seen::default();
        assert!(seen.insert("a"));
        assert!(!seen.insert("a"));
        for n in 0..SEEN_IDS_MAX {
            seen.insert(&n.to_string());
        }
        assert_eq!(seen.order.len(), SEEN_IDS_MAX);
        assert!(seen.insert("a"), "the oldest id was forgotten");
    }
}
