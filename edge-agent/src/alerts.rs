//! Offline alerts: raised on the edge from local data, online or not.
//!
//! | kind | when | subject |
//! | --- | --- | --- |
//! | `out_of_stock` | a SKU's on-hand drops to 0 or below | SKU |
//! | `low_stock` | on-hand at or below the SKU's threshold (the HQ catalog's reorder threshold, else `alerts.low_stock`, else the tenant's `lowStockDefault` rule, else `low_stock_default`) | SKU |
//! | `sales_milestone` | today's revenue crosses a configured milestone | `day:<bucket>:<amount>` |
//! | `revenue_anomaly` | last hour's revenue is far from its baseline (below) | `hour:<bucket>` |
//! | `refund_spike` | last hour's refunds plus voids are far above their baseline | `hour:<bucket>` |
//! | `pos_silent` | a register seen in the last 7 days sent nothing for `pos_silent_minutes` during opening hours; in a store whose sales carry no register id, the store's POS as a whole | `register:<id>`, `store-pos` |
//! | `conflicting_duplicate` | a known id arrives with different content | `<field>:<id>` |
//! | `disk_full` | a commit failed for lack of space (stored and sealed once there is room) | `disk` |
//! | `journal_integrity` | a sync alarm only the agent sees: the hub lost acknowledged events, the data directory went back in time without a new epoch, or the hub needs events already pruned | `sync:<epoch>:<class>` |
//!
//! **Anomaly method.** At the first tick after an hour ends, the hour's store revenue `x` is
//! compared with the same hour of the week in each of the last `anomaly_max_weeks` weeks
//! (default 8). A week counts as history only when the store recorded anything that day.
//! With fewer than `anomaly_min_weeks` (default 4) weeks of history nothing fires. Otherwise,
//! with `m` the median and `MAD` the median absolute deviation of the history, the alert
//! fires when `|x − m| > k · s`, `s = max(1.4826 · MAD, 10% of m, 1 currency unit)`,
//! `k = anomaly_threshold` (default 3). The refund spike uses the same baseline on the count
//! of refunds plus voids, firing only above it, with `s ≥ 1` and at least
//! `refund_spike_min_count` in the hour. Each alert records these numbers as its facts.
//!
//! Every alert is deduplicated by (kind, subject) with `cooldown_minutes`, stored, sealed
//! into the outbox (telemetry class) and pushed to `/api/v1/alerts/stream` subscribers.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use sqlx::{Row, SqliteConnection, SqlitePool};
use storesync_protocol::domain::{AlertKind, AlertState, Severity};
use storesync_protocol::ids::AlertId;
use storesync_protocol::rollup::{Granularity, bucket_start};
use storesync_protocol::{Alert, EventTime, Sku};

use crate::config::Settings;
use crate::rollup::store_figures;
use crate::store::StoreError;

/// An alert the writer may raise, before the cool-down decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub(crate) kind: AlertKind,
    pub(crate) severity: Severity,
    pub(crate) subject: String,
    pub(crate) message: String,
    pub(crate) facts: Vec<(String, i64)>,
}

/// An alert as the API and the live stream show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertView {
    /// Id.
    pub alert_id: String,
    /// Kind, snake_case.
    pub kind: &'static str,
    /// Severity.
    pub severity: &'static str,
    /// Store.
    pub store_id: String,
    /// SKU or metric.
    pub subject: String,
    /// When raised, RFC 3339.
    pub raised_at: String,
    /// State.
    pub state: &'static str,
    /// Who changed the state last.
    pub changed_by: Option<String>,
    /// When the state changed, Unix ms.
    pub changed_ms: Option<i64>,
    /// For people.
    pub message: String,
    /// The numbers that made it fire.
    pub facts: serde_json::Map<String, serde_json::Value>,
}

impl AlertView {
    pub(crate) fn from_alert(alert: &Alert, changed_ms: Option<i64>) -> AlertView {
        AlertView {
            alert_id: alert.alert_id.as_str().to_owned(),
            kind: alert.kind.as_str(),
            severity: alert.severity.as_str(),
            store_id: alert.store_id.as_str().to_owned(),
            subject: alert.subject.clone(),
            raised_at: alert.raised_at.to_rfc3339(),
            state: alert.state.as_str(),
            changed_by: alert.changed_by.clone(),
            changed_ms,
            message: alert.message.clone(),
            facts: alert
                .facts
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::from(*v)))
                .collect(),
        }
    }
}

fn severity_parse(s: &str) -> Severity {
    match s {
        "critical" => Severity::Critical,
        "warning" => Severity::Warning,
        _ => Severity::Info,
    }
}

pub(crate) async fn insert(
    conn: &mut SqliteConnection,
    alert: &Alert,
    now_ms: i64,
) -> Result<(), StoreError> {
    let facts = serde_json::to_string(&alert.facts).unwrap_or_else(|_| "[]".into());
    sqlx::query(
        "INSERT INTO alerts (alert_id, kind, severity, subject, raised_ms, state, message, facts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(alert.alert_id.as_str().to_owned())
    .bind(alert.kind.as_str())
    .bind(alert.severity.as_str())
    .bind(alert.subject.clone())
    .bind(now_ms)
    .bind(alert.state.as_str())
    .bind(alert.message.clone())
    .bind(facts)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn alert_from_row(
    r: &sqlx::sqlite::SqliteRow,
    settings_store: &str,
) -> Option<(Alert, Option<i64>)> {
    let raised_ms: i64 = r.get(4);
    let facts: Vec<(String, i64)> =
        serde_json::from_str(&r.get::<String, _>(9)).unwrap_or_default();
    Some((
        Alert {
            alert_id: AlertId::new(r.get::<String, _>(0)).ok()?,
            kind: AlertKind::parse(&r.get::<String, _>(1))?,
            severity: severity_parse(&r.get::<String, _>(2)),
            store_id: storesync_protocol::StoreId::new(settings_store).ok()?,
            subject: r.get(3),
            raised_at: EventTime::from_unix_ms(raised_ms, 0),
            state: AlertState::parse(&r.get::<String, _>(5))?,
            changed_by: r.get(6),
            message: r.get(8),
            facts,
        },
        r.get(7),
    ))
}

const ALERT_COLUMNS: &str =
    "alert_id, kind, severity, subject, raised_ms, state, changed_by, changed_ms, message, facts";

pub(crate) async fn load(
    conn: &mut SqliteConnection,
    alert_id: &str,
) -> Result<Option<Alert>, StoreError> {
    let store: Option<String> = sqlx::query("SELECT value FROM meta WHERE key = 'store'")
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| r.get(0));
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE alert_id = ?"
    )))
    .bind(alert_id.to_owned())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.and_then(|r| alert_from_row(&r, store.as_deref().unwrap_or("unknown")).map(|(a, _)| a)))
}

/// Alerts newest first, optionally in one state.
pub async fn list(
    pool: &SqlitePool,
    store: &str,
    state: Option<AlertState>,
    limit: usize,
) -> Result<Vec<AlertView>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE (?1 IS NULL OR state = ?1) ORDER BY raised_ms DESC, alert_id LIMIT ?2"
    )))
    .bind(state.map(|s| s.as_str()))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .filter_map(|r| alert_from_row(r, store))
        .map(|(a, changed)| AlertView::from_alert(&a, changed))
        .collect())
}

pub(crate) async fn load_cooldowns(
    conn: &mut SqliteConnection,
    since_ms: i64,
) -> Result<HashMap<(AlertKind, String), i64>, StoreError> {
    let rows = sqlx::query("SELECT kind, subject, MAX(raised_ms) FROM alerts WHERE raised_ms >= ? GROUP BY kind, subject")
        .bind(since_ms)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some((
                (
                    AlertKind::parse(&r.get::<String, _>(0))?,
                    r.get::<String, _>(1),
                ),
                r.get::<i64, _>(2),
            ))
        })
        .collect())
}

/// The stock alert `quantity` calls for, if any.
pub(crate) fn stock_kind(settings: &Settings, sku: &Sku, quantity: i64) -> Option<AlertKind> {
    let threshold = settings.low_stock_threshold(sku);
    if quantity <= 0 {
        Some(AlertKind::OutOfStock)
    } else if quantity <= threshold {
        Some(AlertKind::LowStock)
    } else {
        None
    }
}

/// The warning a sale of `sku` raises when the tenant's catalog is not empty and does not
/// list it. The sale is accepted all the same; the writer's cooldown per (kind, subject)
/// makes it one alert per SKU while sales keep naming it.
pub(crate) fn unknown_sku_candidate(sku: &Sku, transaction_id: &str) -> Candidate {
    Candidate {
        kind: AlertKind::UnknownSku,
        severity: Severity::Warning,
        subject: sku.as_str().to_owned(),
        message: format!(
            "{sku} is not in the catalog (first seen in transaction {transaction_id}); the sale was recorded"
        ),
        facts: Vec::new(),
    }
}

pub(crate) fn stock_candidate(settings: &Settings, sku: &Sku, quantity: i64) -> Option<Candidate> {
    let threshold = settings.low_stock_threshold(sku);
    if quantity <= 0 {
        Some(Candidate {
            kind: AlertKind::OutOfStock,
            severity: Severity::Critical,
            subject: sku.as_str().to_owned(),
            message: format!("{sku} is out of stock ({quantity} on hand)"),
            facts: vec![
                ("on_hand_units".into(), quantity),
                ("threshold_units".into(), threshold),
            ],
        })
    } else if quantity <= threshold {
        Some(Candidate {
            kind: AlertKind::LowStock,
            severity: Severity::Warning,
            subject: sku.as_str().to_owned(),
            message: format!("{sku} is low: {quantity} on hand, threshold {threshold}"),
            facts: vec![
                ("on_hand_units".into(), quantity),
                ("threshold_units".into(), threshold),
            ],
        })
    } else {
        None
    }
}

/// Day revenue of the store per day bucket as of the last commit, kept by the writer so a
/// batch needs no query to see which milestones it crossed. A bucket not in the map is read
/// from the database once.
pub(crate) type DayRevenue = HashMap<i64, i64>;

/// Days the writer remembers at most; beyond, the map starts over (and re-reads lazily).
const DAY_REVENUE_DAYS_MAX: usize = 64;

/// Milestones crossed by `delta`, and the day revenues to remember once the batch commits.
/// Runs inside the batch's transaction before its rollups are written.
pub(crate) async fn milestone_candidates(
    conn: &mut SqliteConnection,
    settings: &Settings,
    delta: &crate::rollup::Delta<'_>,
    known: &DayRevenue,
) -> Result<(Vec<Candidate>, Vec<(i64, i64)>), StoreError> {
    let mut out = Vec::new();
    let mut remember = Vec::new();
    let milestones = settings.milestones();
    if milestones.is_empty() {
        return Ok((out, remember));
    }
    // Day rows (granularity 2) of the store (dimension kind 0).
    for (&(granularity, day_start_ms, kind, _), f) in delta {
        if granularity != 2 || kind != 0 {
            continue;
        }
        let after = match known.get(&day_start_ms) {
            Some(before) => before + f.revenue_e4,
            None if f.revenue_e4 <= 0 => continue,
            // The batch's increments are written after this read.
            None => {
                store_figures(conn, 2, day_start_ms)
                    .await?
                    .unwrap_or_default()
                    .revenue_e4
                    + f.revenue_e4
            }
        };
        remember.push((day_start_ms, after));
        if f.revenue_e4 <= 0 {
            continue;
        }
        let before = after - f.revenue_e4;
        for m in &milestones {
            if before < *m && *m <= after {
                let amount = storesync_protocol::Money::from_e4(*m);
                out.push(Candidate {
                    kind: AlertKind::SalesMilestone,
                    severity: Severity::Info,
                    subject: format!("day:{}:{}", day_start_ms, m),
                    message: format!("today's revenue passed {amount}"),
                    facts: vec![
                        ("milestone_e4".into(), *m),
                        ("day_revenue_e4".into(), after),
                        ("day_start_ms".into(), day_start_ms),
                    ],
                });
            }
        }
    }
    Ok((out, remember))
}

/// Records committed day revenues in `known`.
pub(crate) fn remember_day_revenue(known: &mut DayRevenue, committed: &[(i64, i64)]) {
    if known.len() + committed.len() > DAY_REVENUE_DAYS_MAX {
        known.clear();
    }
    known.extend(committed.iter().copied());
}

/// Median of a non-empty slice (sorted in place).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Median and MAD of `history`.
pub fn baseline(history: &[f64]) -> (f64, f64) {
    let mut v = history.to_vec();
    let m = median(&mut v);
    let mut dev: Vec<f64> = history.iter().map(|x| (x - m).abs()).collect();
    (m, median(&mut dev))
}

/// Whether `x` is an anomaly against `history` by the method in the module docs; returns
/// `(median, mad, scale)` when it is.
pub fn is_anomaly(
    x: f64,
    history: &[f64],
    k: f64,
    scale_min: f64,
    relative_min: f64,
    upper_only: bool,
) -> Option<(f64, f64, f64)> {
    let (m, mad) = baseline(history);
    let scale = (1.4826 * mad).max(relative_min * m.abs()).max(scale_min);
    let off = if upper_only { x - m } else { (x - m).abs() };
    (off > k * scale).then_some((m, mad, scale))
}

fn local_minute_and_weekday(settings: &Settings, at_ms: i64) -> Option<(usize, u16)> {
    let ts = jiff::Timestamp::from_millisecond(at_ms).ok()?;
    let zoned = ts.to_zoned(settings.tz.clone());
    let weekday = usize::try_from(zoned.weekday().to_monday_zero_offset()).ok()?;
    let minute = u16::try_from(i32::from(zoned.hour()) * 60 + i32::from(zoned.minute())).ok()?;
    Some((weekday, minute))
}

/// Minutes the store has been open at `now_ms`, `None` when closed. Hours running past
/// midnight count into the next morning.
pub fn open_for_minutes(settings: &Settings, now_ms: i64) -> Option<i64> {
    let (weekday, minute) = local_minute_and_weekday(settings, now_ms)?;
    let day = |d: usize| settings.opening.get(d).copied().flatten();
    if let Some(today) = day(weekday)
        && minute >= today.open_min
        && (today.overnight() || minute < today.close_min)
    {
        return Some(i64::from(minute - today.open_min));
    }
    let yesterday = day((weekday + 6) % 7)?;
    (yesterday.overnight() && minute < yesterday.close_min)
        .then(|| i64::from(24 * 60 - yesterday.open_min + minute))
}

/// The key under which sales without a register id are tracked for the POS-silent alert:
/// the store's POS as a whole (no register id is empty).
pub(crate) const STORE_POS: &str = "";

pub(crate) async fn periodic_candidates(
    conn: &mut SqliteConnection,
    settings: &Settings,
    now_ms: i64,
    last_hour_evaluated: &mut i64,
    register_last_seen: &HashMap<String, i64>,
) -> Result<Vec<Candidate>, StoreError> {
    let mut out = Vec::new();
    let a = &settings.config.alerts;
    let tz = &settings.tz;
    let current_hour = bucket_start(now_ms, Granularity::Hour, tz);
    let hour = bucket_start(current_hour - 1, Granularity::Hour, tz);
    if hour > *last_hour_evaluated {
        *last_hour_evaluated = hour;
        let observed = store_figures(conn, 1, hour).await?.unwrap_or_default();
        let mut revenue_history = Vec::new();
        let mut refund_history = Vec::new();
        for week in 1..=a.anomaly_max_weeks {
            let then = hour - i64::try_from(week).unwrap_or(0) * 7 * 86_400_000;
            let then_hour = bucket_start(then, Granularity::Hour, tz);
            let day = bucket_start(then, Granularity::Day, tz);
            if store_figures(conn, 2, day).await?.is_none() {
                continue;
            }
            let f = store_figures(conn, 1, then_hour).await?.unwrap_or_default();
            revenue_history.push(f.revenue_e4 as f64);
            refund_history.push((f.refunds + f.voids) as f64);
        }
        let weeks = revenue_history.len();
        if weeks >= a.anomaly_min_weeks {
            let x = observed.revenue_e4 as f64;
            if let Some((m, mad, scale)) = is_anomaly(
                x,
                &revenue_history,
                a.anomaly_threshold,
                10_000.0,
                0.1,
                false,
            ) {
                out.push(Candidate {
                    kind: AlertKind::RevenueAnomaly,
                    severity: Severity::Warning,
                    subject: format!("hour:{hour}"),
                    message: format!(
                        "revenue of the last hour ({}) is far from its usual {} for this hour of the week",
                        storesync_protocol::Money::from_e4(observed.revenue_e4),
                        storesync_protocol::Money::from_e4(m as i64)
                    ),
                    facts: vec![
                        ("observed_revenue_e4".into(), observed.revenue_e4),
                        ("baseline_median_e4".into(), m as i64),
                        ("baseline_mad_e4".into(), mad as i64),
                        ("scale_e4".into(), scale as i64),
                        ("history_weeks".into(), weeks as i64),
                        ("threshold_milli".into(), (a.anomaly_threshold * 1000.0) as i64),
                        ("hour_start_ms".into(), hour),
                    ],
                });
            }
            let y = (observed.refunds + observed.voids) as f64;
            let spike = if observed.refunds + observed.voids >= a.refund_spike_min_count {
                is_anomaly(y, &refund_history, a.anomaly_threshold, 1.0, 0.0, true)
            } else {
                None
            };
            {
                if let Some((m, mad, scale)) = spike {
                    out.push(Candidate {
                        kind: AlertKind::RefundSpike,
                        severity: Severity::Warning,
                        subject: format!("hour:{hour}"),
                        message: format!("{y} refunds and voids in the last hour, usually {m}"),
                        facts: vec![
                            ("observed_refunds_voids".into(), y as i64),
                            ("baseline_median_milli".into(), (m * 1000.0) as i64),
                            ("baseline_mad_milli".into(), (mad * 1000.0) as i64),
                            ("scale_milli".into(), (scale * 1000.0) as i64),
                            ("history_weeks".into(), weeks as i64),
                            ("hour_start_ms".into(), hour),
                        ],
                    });
                }
            }
        }
    }
    let silent_ms = a.pos_silent_minutes * 60_000;
    if open_for_minutes(settings, now_ms).is_some_and(|m| m >= a.pos_silent_minutes) {
        {
            let week_ms = 7 * 86_400_000;
            // Sales without a register id are judged as the store's POS only in a store
            // whose registers send no ids: elsewhere they are a side channel.
            let named_registers = register_last_seen
                .iter()
                .any(|(r, last)| r != STORE_POS && now_ms - *last < week_ms);
            let mut seen: HashSet<&str> = HashSet::new();
            for (register, last) in register_last_seen {
                if !seen.insert(register) || (register == STORE_POS && named_registers) {
                    continue;
                }
                let quiet = now_ms - *last;
                if quiet > silent_ms && quiet < week_ms {
                    let (subject, message) = if register == STORE_POS {
                        (
                            "store-pos".to_owned(),
                            format!(
                                "the store's POS has sent nothing for {} minutes",
                                quiet / 60_000
                            ),
                        )
                    } else {
                        (
                            format!("register:{register}"),
                            format!(
                                "register {register} has sent nothing for {} minutes",
                                quiet / 60_000
                            ),
                        )
                    };
                    out.push(Candidate {
                        kind: AlertKind::PosSilent,
                        severity: Severity::Warning,
                        subject,
                        message,
                        facts: vec![
                            ("silent_minutes".into(), quiet / 60_000),
                            ("threshold_minutes".into(), a.pos_silent_minutes),
                            ("last_seen_ms".into(), *last),
                        ],
                    });
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hours past midnight count into the next morning, from the day they opened.
    #[test]
    fn opening_hours_may_run_past_midnight() {
        let text = crate::config::default_toml(std::path::Path::new("/tmp/x"), "acme", "s1", "UTC")
            .replacen("mon = \"08:00-20:00\"", "mon = \"18:00-02:00\"", 1);
        let settings =
            crate::config::check(toml::from_str(&text).unwrap(), std::path::Path::new("/"))
                .unwrap();
        // Monday 2026-11-23 and the Tuesday after it, UTC.
        let monday = 1_795_392_000_000;
        let at = |h: i64, m: i64| open_for_minutes(&settings, monday + (h * 60 + m) * 60_000);
        assert_eq!(at(17, 59), None);
        assert_eq!(at(18, 0), Some(0));
        assert_eq!(at(23, 30), Some(330));
        // Tuesday 01:00: still Monday's hours, then Tuesday's own.
        assert_eq!(at(25, 0), Some(420));
        assert_eq!(at(26, 0), None);
        assert_eq!(at(24 + 9, 0), Some(60));
    }

    /// Named registers are judged each on its own; sales without a register id are the
    /// store's POS, judged only where the registers send no ids.
    #[tokio::test]
    async fn pos_silent_judges_each_register_or_the_stores_pos() {
        use sqlx::Connection;
        let text = crate::config::default_toml(std::path::Path::new("/tmp/x"), "acme", "s1", "UTC");
        let settings =
            crate::config::check(toml::from_str(&text).unwrap(), std::path::Path::new("/"))
                .unwrap();
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        sqlx::migrate!("./migrations").run(&mut conn).await.unwrap();
        // Tuesday 2026-11-24, 12:00 UTC: open since 08:00.
        let now = 1_795_521_600_000;
        let (recent, silent) = (now - 60_000, now - 2 * 3_600_000);
        for (seen, subjects) in [
            (vec![("r1", silent)], vec!["register:r1"]),
            (vec![(STORE_POS, silent)], vec!["store-pos"]),
            (vec![("r1", recent), (STORE_POS, silent)], vec![]),
            (vec![("r1", recent), ("r2", silent)], vec!["register:r2"]),
        ] {
            let seen: HashMap<String, i64> =
                seen.into_iter().map(|(r, at)| (r.to_owned(), at)).collect();
            let mut last_hour = i64::MAX;
            let found = periodic_candidates(&mut conn, &settings, now, &mut last_hour, &seen)
                .await
                .unwrap();
            let found: Vec<&str> = found.iter().map(|c| c.subject.as_str()).collect();
            assert_eq!(found, subjects, "{seen:?}");
        }
    }

    #[test]
    fn anomaly_method() {
        let history = [100.0, 110.0, 90.0, 105.0];
        assert_eq!(is_anomaly(104.0, &history, 3.0, 1.0, 0.0, false), None);
        assert!(is_anomaly(300.0, &history, 3.0, 1.0, 0.0, false).is_some());
        assert!(is_anomaly(0.0, &history, 3.0, 1.0, 0.0, false).is_some());
        assert_eq!(is_anomaly(0.0, &history, 3.0, 1.0, 0.0, true), None);
        // A flat history does not make every small change an anomaly.
        assert_eq!(
            is_anomaly(2.0, &[1.0, 1.0, 1.0, 1.0], 3.0, 1.0, 0.0, true),
            None
        );
        assert!(is_anomaly(9.0, &[1.0, 1.0, 1.0, 1.0], 3.0, 1.0, 0.0, true).is_some());
    }
}
