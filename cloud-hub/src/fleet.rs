//! Fleet alerts: conditions across stores that only the hub can see.
//!
//! - **Store not syncing** ([`AlertKind::StoreNotSyncing`]): no device of a store has been in
//!   contact (handshake, heartbeat or committed batch) for
//!   [`FleetOptions::not_syncing_after_ms`]. A connected device's contact is recorded about
//!   every 5 to 10 s (heartbeats, throttled), so the limit must be well above that.
//!   Checked by [`check_not_syncing`], which the sync server runs every
//!   [`FleetOptions::check_interval`]. A store none of whose devices ever made contact is
//!   judged from its first enrollment: a device enrolled (holding a certificate neither
//!   revoked nor expired) longer ago than the limit that never synced raises the same
//!   alert; a store with no enrolled device is not judged. The alert clears when the
//!   store's device connects (at the handshake) or when a check no longer finds the
//!   condition: a recent contact, or a store no longer judged (its only device revoked or
//!   expired before it ever synced). A check clears with one statement for the tenant.
//! - **Clock skew** ([`AlertKind::ClockSkew`]): the skew a device's hello showed at the
//!   handshake is beyond [`FleetOptions::clock_skew_max_ms`]. Raised or cleared by
//!   [`on_connected`] at every handshake of the device.
//!
//! - **Sync alarms** ([`on_alarm`]): a device's chain that does not verify, a hub behind
//!   what a device saw acknowledged, a device claiming another identity; raised when the
//!   session reports them and left for someone to resolve.
//!
//! Each alert has one stable id per subject and condition ([`not_syncing_id`],
//! [`clock_skew_id`]), and the store raises it with an upsert
//! ([`FleetAlertStore`](crate::store::fleet::FleetAlertStore)): raising it again while the
//! condition lasts changes nothing, so hub replicas running the same check concurrently
//! raise one alert, and an acknowledgement survives the next check. The alerts live in the
//! tenant's `alerts` table, so the alerts API, its role rules (a store manager sees only
//! assigned stores) and the live stream show them like any other alert.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use storesync_protocol::domain::{Alert, AlertKind, AlertState, Severity};
use storesync_protocol::event::StreamId;
use storesync_protocol::ids::{AlertId, DeviceId, StoreId, TenantId};
use storesync_protocol::session::Alarm;
use storesync_protocol::time::{EventTime, UnixMillis};

use crate::store::{Store, StoreError};

/// When fleet alerts fire and how often the periodic check runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetOptions {
    /// A store none of whose devices made contact for this long is "not syncing".
    pub not_syncing_after_ms: i64,
    /// Device clock skew (either way) beyond which a [`AlertKind::ClockSkew`] alert fires.
    pub clock_skew_max_ms: i64,
    /// How often the not-syncing check runs.
    pub check_interval: Duration,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            not_syncing_after_ms: 15 * 60 * 1000,
            clock_skew_max_ms: 120_000,
            check_interval: Duration::from_secs(30),
        }
    }
}

/// `prefix` + `subject` when that is a valid id, else `prefix` + a digest of `subject`
/// (ids are at most 64 characters), so the id stays stable for the subject.
fn stable_id(prefix: &str, subject: &str) -> Result<AlertId, StoreError> {
    AlertId::new(format!("{prefix}{subject}"))
        .or_else(|_| {
            let digest = blake3::hash(subject.as_bytes()).to_hex();
            AlertId::new(format!("{prefix}{}", &digest[..32]))
        })
        .map_err(|e| StoreError::Invalid(format!("fleet alert id for {subject:?}: {e}")))
}

/// The id of a store's not-syncing alert.
pub fn not_syncing_id(store: &StoreId) -> Result<AlertId, StoreError> {
    stable_id("hub-not-syncing-", store.as_str())
}

/// The id of a device's clock-skew alert.
pub fn clock_skew_id(device: &DeviceId) -> Result<AlertId, StoreError> {
    stable_id("hub-clock-skew-", device.as_str())
}

fn fleet_alert(
    alert_id: AlertId,
    kind: AlertKind,
    store: &StoreId,
    subject: &str,
    now_ms: UnixMillis,
    message: String,
    facts: Vec<(String, i64)>,
) -> Alert {
    Alert {
        alert_id,
        kind,
        severity: Severity::Warning,
        store_id: store.clone(),
        subject: subject.to_owned(),
        raised_at: EventTime::from_unix_ms(now_ms, 0),
        state: AlertState::Open,
        changed_by: None,
        message,
        facts,
    }
}

/// What one not-syncing check did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Stores judged (those with a device contact or an enrolled device).
    pub stores: usize,
    /// Alerts raised or reopened.
    pub raised: usize,
    /// Alerts resolved.
    pub cleared: usize,
}

/// Raises or clears the not-syncing alert of every store of `tenant` whose devices have
/// made contact, judging by the newest contact of any of its devices, and raises it for a
/// store whose enrolled devices never made contact, judging by its first enrollment.
pub async fn check_not_syncing(
    store: &dyn Store,
    tenant: &TenantId,
    options: &FleetOptions,
    now_ms: UnixMillis,
) -> Result<CheckReport, StoreError> {
    let mut newest: BTreeMap<StoreId, UnixMillis> = BTreeMap::new();
    for device in store.device_status(tenant).await? {
        // A device busy sending batches sends no heartbeats: its commits count as contact.
        if let Some(seen) = device.last_seen_ms.max(device.last_commit_ms) {
            let entry = newest.entry(device.store_id).or_insert(seen);
            *entry = (*entry).max(seen);
        }
    }
    // Stores never heard from: their first enrollment still valid, and by which device.
    let mut enrolled: BTreeMap<StoreId, (UnixMillis, DeviceId)> = BTreeMap::new();
    for e in store.pki().enrolled_devices(tenant, now_ms).await? {
        if newest.contains_key(&e.store) {
            continue;
        }
        let entry = enrolled
            .entry(e.store)
            .or_insert((e.issued_ms, e.device.clone()));
        if e.issued_ms < entry.0 {
            *entry = (e.issued_ms, e.device);
        }
    }
    let mut report = CheckReport {
        stores: newest.len() + enrolled.len(),
        ..CheckReport::default()
    };
    // Each judged store from its newest contact or, never heard from, its first enrollment;
    // those whose condition holds now raise, every other store's alert clears.
    let judged = newest
        .into_iter()
        .map(|(store_id, seen_ms)| (store_id, seen_ms, None))
        .chain(
            enrolled
                .into_iter()
                .map(|(store_id, (enrolled_ms, device))| (store_id, enrolled_ms, Some(device))),
        );
    let mut failing: BTreeSet<StoreId> = BTreeSet::new();
    for (store_id, since_ms, never_synced) in judged {
        let waiting_ms = now_ms.saturating_sub(since_ms);
        if waiting_ms <= options.not_syncing_after_ms {
            continue;
        }
        let minutes = waiting_ms / 60_000;
        let (message, fact) = match &never_synced {
            Some(device) => (
                format!(
                    "store {store_id} has never synced: device {device} was enrolled {minutes} minutes ago"
                ),
                "enrolled_ms",
            ),
            None => (
                format!("store {store_id} has not synced for {minutes} minutes"),
                "last_seen_ms",
            ),
        };
        let facts = (fact, since_ms);
        if raise_not_syncing(store, tenant, &store_id, options, now_ms, message, facts).await? {
            tracing::warn!(%tenant, store = %store_id, device = ?never_synced, waiting_ms, "fleet: store not syncing");
            report.raised += 1;
        }
        failing.insert(store_id);
    }
    // Synced recently, or no longer judged (its only device revoked or expired before it
    // ever synced, or enrolled anew within the limit): one statement for the tenant.
    let clear = store
        .stores(tenant)
        .await?
        .into_iter()
        .filter(|s| !failing.contains(&s.store_id))
        .map(|s| not_syncing_id(&s.store_id))
        .collect::<Result<Vec<_>, _>>()?;
    report.cleared = store
        .fleet()
        .fleet_alerts_clear(tenant, &clear, now_ms)
        .await?;
    Ok(report)
}

/// Raises (or keeps) a store's not-syncing alert with `message` and the fact that made it
/// fire beside the limit; true if it was raised or reopened now.
async fn raise_not_syncing(
    store: &dyn Store,
    tenant: &TenantId,
    store_id: &StoreId,
    options: &FleetOptions,
    now_ms: UnixMillis,
    message: String,
    (fact, value): (&str, i64),
) -> Result<bool, StoreError> {
    let alert = fleet_alert(
        not_syncing_id(store_id)?,
        AlertKind::StoreNotSyncing,
        store_id,
        store_id.as_str(),
        now_ms,
        message,
        vec![
            (fact.to_owned(), value),
            ("limit_ms".into(), options.not_syncing_after_ms),
        ],
    );
    store
        .fleet()
        .fleet_alert_raise(tenant, &alert, now_ms)
        .await
}

/// At a device's handshake: its store syncs again (its not-syncing alert clears), and its
/// clock skew raises or clears the device's clock-skew alert.
pub async fn on_connected(
    store: &dyn Store,
    tenant: &TenantId,
    store_id: &StoreId,
    device: &DeviceId,
    skew_ms: i64,
    options: &FleetOptions,
    now_ms: UnixMillis,
) -> Result<(), StoreError> {
    let fleet = store.fleet();
    fleet
        .fleet_alerts_clear(tenant, &[not_syncing_id(store_id)?], now_ms)
        .await?;
    let alert_id = clock_skew_id(device)?;
    if skew_ms.saturating_abs() > options.clock_skew_max_ms {
        let alert = fleet_alert(
            alert_id,
            AlertKind::ClockSkew,
            store_id,
            device.as_str(),
            now_ms,
            format!(
                "device {device} runs {} s {} the hub's clock",
                skew_ms.saturating_abs() / 1000,
                if skew_ms > 0 { "ahead of" } else { "behind" }
            ),
            vec![
                ("skew_ms".into(), skew_ms),
                ("limit_ms".into(), options.clock_skew_max_ms),
            ],
        );
        if fleet.fleet_alert_raise(tenant, &alert, now_ms).await? {
            tracing::warn!(%tenant, store = %store_id, %device, skew_ms, "fleet: device clock skew beyond the limit");
        }
    } else {
        fleet
            .fleet_alerts_clear(tenant, &[alert_id], now_ms)
            .await?;
    }
    Ok(())
}

/// Turns a sync session's alarm into an alert of the device's store, so it reaches the
/// alerts API and the live stream instead of the log alone. One stable id per device,
/// stream and kind of alarm: a device that keeps re-sending what the hub refuses raises it
/// once; it stays until someone resolves it.
///
/// - a broken chain ([`Alarm::ChainBroken`]) and a hub behind what the device saw
///   acknowledged ([`Alarm::HubBehind`]: its database was restored or failed over, the
///   device re-sends) are [`AlertKind::JournalIntegrity`];
/// - a device claiming another identity than its certificate's ([`Alarm::Identity`]) is
///   [`AlertKind::ChainAnomaly`];
/// - conflicts ([`Alarm::Conflict`]) raise their own alert per event at the commit; the
///   other alarms are the agent's.
pub async fn on_alarm(
    store: &dyn Store,
    tenant: &TenantId,
    store_id: &StoreId,
    device: &DeviceId,
    alarm: &Alarm,
    now_ms: UnixMillis,
) -> Result<(), StoreError> {
    let stream_subject = |stream: &StreamId| {
        format!(
            "{}-{}-{}",
            stream.device,
            stream.epoch.0,
            stream.class.as_str()
        )
    };
    let (alert_id, kind, severity, subject, message, facts) = match alarm {
        Alarm::ChainBroken { stream, error } => {
            let subject = stream_subject(stream);
            (
                stable_id("hub-chain-", &subject)?,
                AlertKind::JournalIntegrity,
                Severity::Critical,
                subject,
                format!(
                    "the {} events of device {device} do not verify ({error}); the hub refused the batch and the stream waits",
                    stream.class.as_str()
                ),
                Vec::new(),
            )
        }
        Alarm::HubBehind {
            stream,
            acked,
            committed,
        } => {
            let subject = stream_subject(stream);
            (
                stable_id("hub-behind-", &subject)?,
                AlertKind::JournalIntegrity,
                Severity::Warning,
                subject,
                format!(
                    "the hub holds the {} events of device {device} up to {} but acknowledged {} (its database was restored or failed over); the device sends them again",
                    stream.class.as_str(),
                    committed.0,
                    acked.0
                ),
                vec![
                    (
                        "acked_seq".into(),
                        i64::try_from(acked.0).unwrap_or(i64::MAX),
                    ),
                    (
                        "committed_seq".into(),
                        i64::try_from(committed.0).unwrap_or(i64::MAX),
                    ),
                ],
            )
        }
        Alarm::Identity(claim) => (
            stable_id("hub-identity-", device.as_str())?,
            AlertKind::ChainAnomaly,
            Severity::Critical,
            device.as_str().to_owned(),
            format!("device {device} claimed an identity other than its certificate's: {claim}"),
            Vec::new(),
        ),
        // Conflicts raise their alert per event at the commit; the rest are the agent's.
        _ => return Ok(()),
    };
    let mut alert = fleet_alert(alert_id, kind, store_id, &subject, now_ms, message, facts);
    alert.severity = severity;
    store
        .fleet()
        .fleet_alert_raise(tenant, &alert, now_ms)
        .await?;
    Ok(())
}

/// The tenants that have a CA, i.e. that can have devices.
async fn tenants_with_devices(store: &dyn Store) -> Result<Vec<TenantId>, StoreError> {
    Ok(store
        .pki()
        .pki_names("tenant-ca/")
        .await?
        .iter()
        .filter_map(|name| name.strip_prefix("tenant-ca/"))
        .filter_map(|t| TenantId::new(t).ok())
        .collect())
}

/// Runs [`check_not_syncing`] for every tenant with devices, every
/// [`FleetOptions::check_interval`], until the task is aborted. Errors are logged and the
/// next round tries again.
pub async fn run_checks(store: std::sync::Arc<dyn Store>, options: FleetOptions) {
    let mut ticker = tokio::time::interval(options.check_interval.max(Duration::from_millis(100)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let tenants = match tenants_with_devices(&*store).await {
            Ok(tenants) => tenants,
            Err(e) => {
                tracing::warn!(error = %e, "fleet: listing tenants failed");
                continue;
            }
        };
        for tenant in tenants {
            if let Err(e) =
                check_not_syncing(&*store, &tenant, &options, crate::store::now_ms()).await
            {
                tracing::warn!(%tenant, error = %e, "fleet: not-syncing check failed");
            }
        }
    }
}
