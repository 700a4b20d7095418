//! End-to-end tests against a real `storesync-edge` process on a temporary directory:
//! HTTP, CSV (HTTP and drop folder), bridge frames over TCP, hostile input, kill -9 during
//! concurrent ingest, the data-directory lock, epochs, tokens, SSE and a full disk.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Agent, HttpConn, transaction};
use serde_json::{Value, json};

fn body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

#[test]
fn http_ingest_duplicates_conflicts_and_dead_letters() {
    let (_tmp, agent) = Agent::new(|c| c);
    let t1 = transaction("t-1", 3, 1);
    let (status, v) = agent.post("/api/v1/transactions", &body(&t1));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["results"][0]["status"], "accepted");
    assert_eq!(v["results"][0]["seq"], 1);

    let (status, v) = agent.post("/api/v1/transactions", &body(&t1));
    assert_eq!(
        (status, v["results"][0]["status"].as_str()),
        (200, Some("duplicate"))
    );

    let mut changed = t1.clone();
    changed["paymentMethod"] = json!("voucher");
    let (status, v) = agent.post("/api/v1/transactions", &body(&changed));
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["results"][0]["status"], "conflict");
    assert_eq!(v["results"][0]["errors"][0]["field"], "transactionId");

    // An array with one good and one bad record: 207, per-record answers.
    let mut bad = transaction("t-3", 2, 1);
    bad["items"][1]["price"] = json!(-4);
    // The bad record as a POS might format it (on several lines, tab-indented): the dead
    // letter keeps these very bytes.
    let bad_text = serde_json::to_string_pretty(&bad)
        .unwrap()
        .replace("  ", "\t");
    let array = format!(
        "[\n  {},\n  {}\n]",
        serde_json::to_string(&transaction("t-2", 2, 1)).unwrap(),
        bad_text
    );
    let (status, v) = agent.post("/api/v1/transactions", array.as_bytes());
    assert_eq!(status, 207, "{v}");
    assert_eq!(v["results"][0]["status"], "accepted");
    assert_eq!(v["results"][1]["status"], "rejected");
    assert_eq!(v["results"][1]["errors"][0]["field"], "items[1].price");
    let letter = v["results"][1]["dead_letter"].as_i64().unwrap();

    // NDJSON.
    let nd = format!(
        "{}\n{}\n",
        serde_json::to_string(&transaction("t-4", 1, 1)).unwrap(),
        serde_json::to_string(&transaction("t-5", 4, 1)).unwrap()
    );
    let (status, v) = agent.post_with(
        "/api/v1/transactions",
        &[("Content-Type", "application/x-ndjson")],
        nd.as_bytes(),
    );
    assert_eq!((status, v["accepted"].as_u64()), (200, Some(2)), "{v}");

    // The conflict raised an alert and left a dead letter.
    let (_, alerts) = agent.get("/api/v1/alerts");
    assert!(
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "conflicting_duplicate"),
        "{alerts}"
    );
    let (_, letters) = agent.get("/api/v1/dead-letters?state=open");
    assert_eq!(
        letters["deadLetters"].as_array().unwrap().len(),
        2,
        "{letters}"
    );

    // The dead letter keeps the raw bytes; resubmitting a correction resolves it.
    let (status, one) = agent.get(&format!("/api/v1/dead-letters/{letter}"));
    assert_eq!(status, 200);
    assert_eq!(one["rawText"].as_str().unwrap(), bad_text, "{one}");
    let (status, v) = agent.post(
        &format!("/api/v1/dead-letters/{letter}/resubmit"),
        &body(&transaction("t-3", 2, 1)),
    );
    assert_eq!(
        (status, v["results"][0]["status"].as_str()),
        (200, Some("accepted")),
        "{v}"
    );
    let (_, one) = agent.get(&format!("/api/v1/dead-letters/{letter}"));
    assert_eq!(one["state"], "resubmitted");

    // Scans and adjustments.
    let ts = jiff::Timestamp::now().to_string();
    let scan = json!({"scanId": "sc-1", "storeId": "s1", "gtin": "4006381333931", "purpose": "receiving", "quantity": 40, "timestamp": ts});
    let (status, v) = agent.post("/api/v1/scans", &body(&scan));
    assert_eq!(status, 200, "{v}");
    let bad_scan = json!({"scanId": "sc-2", "storeId": "s1", "gtin": "4006381333932", "purpose": "receiving", "timestamp": ts});
    let (status, v) = agent.post("/api/v1/scans", &body(&bad_scan));
    assert_eq!(status, 422);
    assert_eq!(v["results"][0]["errors"][0]["field"], "gtin");
    let adj = json!({"adjustmentId": "adj-1", "storeId": "s1", "sku": "4006381333931", "delta": -3, "reason": "broken", "timestamp": ts});
    assert_eq!(agent.post("/api/v1/adjustments", &body(&adj)).0, 200);
    let (_, inv) = agent.get("/api/v1/inventory?sku=4006381333931");
    assert_eq!(inv["items"][0]["onHand"], 37, "{inv}");

    // Reads.
    let (status, v) = agent.get("/api/v1/rollups?granularity=day&group=store");
    assert_eq!(status, 200);
    assert_eq!(v["rows"][0]["transactions"], 5, "{v}");
    for path in [
        "/api/v1/rollups?granularity=week&group=item",
        "/api/v1/rollups?granularity=minute&group=payment",
        "/api/v1/rollups?granularity=hour&group=register",
        "/api/v1/top-items?by=units&limit=3",
        "/api/v1/summary",
        "/api/v1/outbox",
        "/healthz",
    ] {
        assert_eq!(agent.get(path).0, 200, "{path}");
    }
    let (_, summary) = agent.get("/api/v1/summary");
    assert_eq!(summary["today"]["transactions"], 5, "{summary}");
    let (status, v) = agent.get("/api/v1/rollups?granularity=fortnight");
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (400, Some("granularity"))
    );
    let (_, metrics) = request_text(&agent, "/metrics");
    assert!(
        metrics.contains("storesync_edge_records_accepted_total"),
        "{metrics}"
    );
}

/// The writer folds inventory and crosses revenue milestones before it writes the batch's
/// rows: a movement older than the last stock count is refolded with the count (not added
/// after it), a count older than a movement already applied does not override it, and a
/// milestone crossed by a day's first batch fires once.
#[test]
fn late_stock_movements_refold_and_a_first_batch_crosses_a_milestone() {
    let (_tmp, agent) = Agent::new(|c| c);
    let at = |minutes_ago: i64| {
        (jiff::Timestamp::now() - jiff::SignedDuration::from_mins(minutes_ago)).to_string()
    };
    let gtin = "4006381333931";
    let count = json!({"scanId": "count-1", "storeId": "s1", "gtin": gtin, "purpose": "stockCount", "quantity": 50, "timestamp": at(5)});
    assert_eq!(agent.post("/api/v1/scans", &body(&count)).0, 200);
    // Older than the count, in one batch with a newer one: the count wins over the first.
    let late = json!({"adjustmentId": "adj-late", "storeId": "s1", "sku": gtin, "delta": -5, "reason": "broken", "timestamp": at(30)});
    let newer = json!({"adjustmentId": "adj-new", "storeId": "s1", "sku": gtin, "delta": -2, "reason": "broken", "timestamp": at(1)});
    let (status, v) = agent.post("/api/v1/adjustments", &body(&json!([late, newer])));
    assert_eq!(status, 200, "{v}");
    let (_, inv) = agent.get(&format!("/api/v1/inventory?sku={gtin}"));
    assert_eq!(inv["items"][0]["onHand"], 48, "{inv}");
    // A count that arrives after a newer movement: the newer one still applies after it.
    let recount = json!({"scanId": "count-2", "storeId": "s1", "gtin": gtin, "purpose": "stockCount", "quantity": 100, "timestamp": at(3)});
    assert_eq!(agent.post("/api/v1/scans", &body(&recount)).0, 200);
    let (_, inv) = agent.get(&format!("/api/v1/inventory?sku={gtin}"));
    assert_eq!(inv["items"][0]["onHand"], 98, "{inv}");

    // 1,200.00 in the day's first batch passes the 1,000 milestone.
    let big = json!({"transactionId": "big-1", "storeId": "s1", "timestamp": at(0),
        "items": [{"itemId": "tv", "quantity": 1, "price": 1200.0}], "totalAmount": 1200.0,
        "paymentMethod": "card", "registerId": "r1"});
    assert_eq!(agent.post("/api/v1/transactions", &body(&big)).0, 200);
    let (_, alerts) = agent.get("/api/v1/alerts");
    let milestones: Vec<&Value> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "sales_milestone")
        .collect();
    assert_eq!(milestones.len(), 1, "{alerts}");
    let (_, rollups) = agent.get("/api/v1/rollups?granularity=day&group=store");
    assert_eq!(rollups["rows"][0]["revenue"], 1200.0, "{rollups}");
    // Minute rows by item come from the log; they agree with the stored hour rows.
    let (status, minutes) = agent.get("/api/v1/rollups?granularity=minute&group=item");
    assert_eq!(status, 200, "{minutes}");
    let (_, hours) = agent.get("/api/v1/rollups?granularity=hour&group=item");
    let tv = |v: &Value| -> Vec<(f64, i64)> {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["group"] == "tv")
            .map(|r| (r["revenue"].as_f64().unwrap(), r["units"].as_i64().unwrap()))
            .collect()
    };
    assert_eq!(tv(&minutes), vec![(1200.0, 1)], "{minutes}");
    assert_eq!(tv(&minutes), tv(&hours), "{hours}");
}

/// Day and week rows by item are summed from the stored hour rows: per local day (the
/// agent's zone is Europe/Paris), days starting in the range only, `limit` groups.
/// `(bucket_ms, item, units)` of the agent's rollups by item for `query`.
fn item_rows(agent: &Agent, query: &str) -> Vec<(i64, String, i64)> {
    let (status, v) = agent.get(&format!("/api/v1/rollups?group=item&{query}"));
    assert_eq!(status, 200, "{v}");
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["bucketMs"].as_i64().unwrap(),
                r["group"].as_str().unwrap().to_owned(),
                r["units"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn day_and_week_rows_by_item_sum_the_hours() {
    let (_tmp, agent) = Agent::new(|c| c);
    let paris = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
    let today = jiff::Timestamp::now()
        .to_zoned(paris)
        .start_of_day()
        .unwrap();
    let day0 = today.checked_sub(jiff::Span::new().days(2)).unwrap();
    let day1 = today.checked_sub(jiff::Span::new().days(1)).unwrap();
    let at = |day: &jiff::Zoned, hours: i64| {
        day.checked_add(jiff::Span::new().hours(hours))
            .unwrap()
            .timestamp()
    };
    let sales = [
        ("t1", at(&day0, 1), "pen", 1),
        ("t2", at(&day0, 13), "pen", 2),
        ("t3", at(&day0, 13), "cup", 1),
        ("t4", at(&day1, 3), "pen", 4),
    ];
    let txs: Vec<Value> = sales
        .iter()
        .map(|(id, ts, sku, qty)| {
            json!({"transactionId": id, "storeId": "s1", "timestamp": ts.to_string(),
                "items": [{"itemId": sku, "quantity": qty, "price": 2.0}],
                "totalAmount": 2.0 * f64::from(*qty), "paymentMethod": "cash"})
        })
        .collect();
    let (status, v) = agent.post("/api/v1/transactions", &body(&Value::Array(txs)));
    assert_eq!(status, 200, "{v}");
    let rows = |query: String| item_rows(&agent, &query);
    let ms = |z: &jiff::Zoned| z.timestamp().as_millisecond();
    let range = |from: jiff::Timestamp, to: jiff::Timestamp| format!("from={from}&to={to}");
    let all = range(day0.timestamp(), today.timestamp());
    let expected = vec![
        (ms(&day0), "cup".to_owned(), 1),
        (ms(&day0), "pen".to_owned(), 3),
        (ms(&day1), "pen".to_owned(), 4),
    ];
    assert_eq!(rows(format!("granularity=day&{all}")), expected);
    assert_eq!(
        rows(format!("granularity=day&{all}&limit=2")),
        expected[..2].to_vec()
    );
    // A day that starts before `from` is not in the answer, even partly.
    let later = range(at(&day0, 2), today.timestamp());
    assert_eq!(
        rows(format!("granularity=day&{later}")),
        expected[2..].to_vec()
    );
    let weeks = rows(format!("granularity=week&{all}"));
    let units = |sku: &str| -> i64 { weeks.iter().filter(|r| r.1 == sku).map(|r| r.2).sum() };
    assert_eq!((units("pen"), units("cup")), (7, 1), "{weeks:?}");
}

/// How many commits' item-hour increments wait to be folded, read beside the running
/// agent.
fn unfolded_item_deltas(dir: &std::path::Path) -> i64 {
    use sqlx::Connection as _;
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.join("edge.db"))
            .read_only(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        sqlx::query_scalar("SELECT COUNT(*) FROM item_deltas")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    })
}

/// Hour rows by item are folded in from the commits' delta rows thousands of sales at a
/// time; until then every reader adds the delta rows. The answers are the same before a
/// fold, after it, mixed (a folded row and a delta for one key) and after a kill -9.
#[test]
fn item_rollups_answer_the_same_before_and_after_the_fold() {
    let (_tmp, mut agent) = Agent::new(|c| c);
    let hour = |hours_ago: i64| {
        let now = jiff::Timestamp::now().as_millisecond();
        (now - now.rem_euclid(3_600_000)) - hours_ago * 3_600_000
    };
    let sale = |id: &str, at_ms: i64, sku: &str, qty: i64| {
        let ts = jiff::Timestamp::from_millisecond(at_ms + 60_000).unwrap();
        json!({"transactionId": id, "storeId": "s1", "timestamp": ts.to_string(),
            "items": [{"itemId": sku, "quantity": qty, "price": 2.0}],
            "totalAmount": 2.0 * qty as f64, "paymentMethod": "cash"})
    };
    let (h5, h3) = (hour(5), hour(3));
    let first = vec![
        sale("a1", h5, "pen", 2),
        sale("a2", h3, "cup", 1),
        sale("a3", h3, "pen", 4),
    ];
    let (status, v) = agent.post("/api/v1/transactions", &body(&Value::Array(first)));
    assert_eq!(status, 200, "{v}");
    let from = jiff::Timestamp::from_millisecond(h5).unwrap();
    let to = jiff::Timestamp::from_millisecond(hour(2)).unwrap();
    let hours = |agent: &Agent| item_rows(agent, &format!("granularity=hour&from={from}&to={to}"));
    let top = |agent: &Agent| -> Vec<(String, i64)> {
        let (status, v) = agent.get(&format!("/api/v1/top-items?by=units&from={from}&to={to}"));
        assert_eq!(status, 200, "{v}");
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["itemId"].as_str().unwrap().to_owned(),
                    r["units"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let expected = vec![
        (h5, "pen".to_owned(), 2),
        (h3, "cup".to_owned(), 1),
        (h3, "pen".to_owned(), 4),
    ];
    // Nothing is folded yet: the answer is the delta row alone.
    assert_eq!(unfolded_item_deltas(&agent.dir), 1);
    assert_eq!(hours(&agent), expected);
    assert_eq!(
        top(&agent),
        vec![("pen".to_owned(), 6), ("cup".to_owned(), 1)]
    );

    // Enough sales in the current hour to fold: the rows then count every sale.
    let bulk: Vec<Value> = (0..2_100)
        .map(|n| common::transaction(&format!("b{n}"), 1, 0))
        .collect();
    let (status, v) = agent.post("/api/v1/transactions", &body(&Value::Array(bulk)));
    assert_eq!(status, 200, "{v}");
    // The writer folds right after it answered the commit that made the sum due.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while unfolded_item_deltas(&agent.dir) > 0 {
        assert!(std::time::Instant::now() < deadline, "no fold");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(hours(&agent), expected);

    // A folded row and a delta for the same key add up; a sale's rows are counted once.
    let (status, v) = agent.post(
        "/api/v1/transactions",
        &body(&Value::Array(vec![
            sale("a4", h3, "pen", 5),
            sale("a1", h5, "pen", 2),
        ])),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        unfolded_item_deltas(&agent.dir),
        1,
        "the new sale waits in a delta"
    );
    let expected = vec![
        (h5, "pen".to_owned(), 2),
        (h3, "cup".to_owned(), 1),
        (h3, "pen".to_owned(), 9),
    ];
    assert_eq!(hours(&agent), expected);
    assert_eq!(
        top(&agent),
        vec![("pen".to_owned(), 11), ("cup".to_owned(), 1)]
    );

    // What a killed writer did not fold, the next start folds.
    agent.kill9();
    agent.restart();
    assert_eq!(
        unfolded_item_deltas(&agent.dir),
        0,
        "the start folded the deltas"
    );
    assert_eq!(hours(&agent), expected);
    assert_eq!(
        top(&agent),
        vec![("pen".to_owned(), 11), ("cup".to_owned(), 1)]
    );
}

fn request_text(agent: &Agent, path: &str) -> (u16, String) {
    let (status, body) = common::request(agent.api, "GET", path, &[], b"");
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn hostile_input_gets_a_4xx_naming_the_problem() {
    let (_tmp, agent) = Agent::new(|c| c);
    let check = |bytes: &[u8], status: u16, needle: &str| {
        let (got, v) = agent.post("/api/v1/transactions", bytes);
        assert_eq!(got, status, "{needle}: {v}");
        assert!(v.to_string().contains(needle), "expected {needle:?} in {v}");
    };
    let tx = transaction("h-1", 1, 1);
    let with = |path: &[&str], value: Value| {
        let mut t = tx.clone();
        let mut cur = &mut t;
        for (i, key) in path.iter().enumerate() {
            if i + 1 == path.len() {
                cur[*key] = value.clone();
            } else {
                cur = match key.parse::<usize>() {
                    Ok(n) => &mut cur[n],
                    Err(_) => &mut cur[*key],
                };
            }
        }
        body(&t)
    };
    check(b"{\"transactionId\": ", 400, "invalid JSON");
    check(
        b"{\"transactionId\":\"x\",\"totalAmount\": NaN}",
        400,
        "invalid JSON",
    );
    check(
        b"{\"transactionId\":\"x\",\"totalAmount\": Infinity}",
        400,
        "invalid JSON",
    );
    check(
        b"{\"transactionId\":\"x\",\"totalAmount\": 1e400}",
        400,
        "invalid JSON",
    );
    check(
        &with(&["items", "0", "price"], json!("NaN")),
        422,
        "items[0].price",
    );
    check(
        &with(&["items", "0", "price"], json!(1e300)),
        422,
        "items[0].price",
    );
    check(
        &with(&["items", "0", "quantity"], json!(-5)),
        422,
        "items[0].quantity",
    );
    check(
        &with(&["items", "0", "quantity"], json!(9_999_999_999_i64)),
        422,
        "items[0].quantity",
    );
    check(&with(&["timestamp"], json!("yesterday")), 422, "timestamp");
    check(&with(&["storeId"], json!("s2")), 422, "storeId");
    check(b"{\"transactionId\": \"\xff\xfe\"}", 400, "invalid JSON");
    check(&"[".repeat(100_000).into_bytes(), 400, "invalid JSON");
    check(&"{\"a\":".repeat(5_000).into_bytes(), 400, "invalid JSON");
    // 100,000 items: refused by record_bytes_max before parsing.
    let mut big = tx.clone();
    big["items"] = Value::Array(vec![
        json!({"itemId": "a", "quantity": 1, "price": 1});
        100_000
    ]);
    check(&body(&big), 422, "record_bytes_max");
    // 600 items: within the byte limit, over items_max.
    let mut many = tx.clone();
    many["items"] = Value::Array(vec![json!({"itemId": "a", "quantity": 1, "price": 1}); 600]);
    check(&body(&many), 422, "items_max");
    // A 50 MB body: refused with the limit named.
    let huge = vec![b' '; 50 * 1024 * 1024];
    check(&huge, 413, "body_bytes_max");
    check(b"   ", 400, "empty");
    // Too many records in one array.
    let records: Vec<Value> = (0..10_001).map(|_| json!({})).collect();
    check(
        &body(&Value::Array(records)),
        413,
        "records_per_request_max",
    );
    // Scans and adjustments go through the same body rules and their own field checks.
    let ts = jiff::Timestamp::now().to_string();
    let scan = json!({"scanId": "h-sc", "storeId": "s1", "gtin": "4006381333931",
        "purpose": "receiving", "quantity": 4, "timestamp": ts});
    let adjustment = json!({"adjustmentId": "h-adj", "storeId": "s1", "sku": "a",
        "delta": -2, "reason": "broken", "timestamp": ts});
    for (path, good, number) in [
        ("/api/v1/scans", scan, "quantity"),
        ("/api/v1/adjustments", adjustment, "delta"),
    ] {
        let check = |bytes: &[u8], status: u16, needle: &str| {
            let (got, v) = agent.post(path, bytes);
            assert_eq!(got, status, "{path} {needle}: {v}");
            assert!(
                v.to_string().contains(needle),
                "{path}: expected {needle:?} in {v}"
            );
        };
        let with = |key: &str, value: Value| {
            let mut record = good.clone();
            record[key] = value;
            body(&record)
        };
        check(b"{\"scanId\": ", 400, "invalid JSON");
        check(b"{\"quantity\": NaN}", 400, "invalid JSON");
        check(b"{\"quantity\": 1e400}", 400, "invalid JSON");
        check(b"{\"storeId\": \"\xff\xfe\"}", 400, "invalid JSON");
        check(&"[".repeat(100_000).into_bytes(), 400, "invalid JSON");
        check(&with(number, json!("NaN")), 422, number);
        check(&with(number, json!(9_999_999_999_i64)), 422, number);
        check(&with("timestamp", json!("yesterday")), 422, "timestamp");
        check(&with("storeId", json!("s2")), 422, "storeId");
        check(&vec![b' '; 50 * 1024 * 1024], 413, "body_bytes_max");
    }
    // Still healthy, nothing crashed.
    assert_eq!(agent.get("/healthz").0, 200);
    let (_, letters) = agent.get("/api/v1/dead-letters?limit=1000");
    assert!(letters["deadLetters"].as_array().unwrap().len() >= 12);
}

#[test]
fn csv_over_http_and_drop_folder() {
    let (_tmp, agent) = Agent::new(|c| c.replace("csv_rows_max = 1000000", "csv_rows_max = 4"));
    let ts = jiff::Timestamp::now().to_string();
    let csv = format!(
        "transactionId,storeId,timestamp,itemId,quantity,price,totalAmount,paymentMethod,loyalty\n\
         c-1,s1,{ts},a,2,1.50,4.00,cash,gold\n\
         c-1,s1,{ts},b,1,1.00,4.00,cash,gold\n\
         c-2,s1,{ts},a,1,abc,1.50,card,\n\
         c-3,s1,{ts},c,3,2.00,6.00,card,\n"
    );
    let (status, report) = agent.post_with(
        "/api/v1/imports/csv",
        &[("Content-Type", "text/csv")],
        csv.as_bytes(),
    );
    assert_eq!(status, 207, "{report}");
    assert_eq!(
        (report["accepted"].as_u64(), report["rejected"].as_u64()),
        (Some(2), Some(1)),
        "{report}"
    );
    assert_eq!(report["errors"][0]["lines"], "4");
    assert_eq!(
        report["errors"][0]["errors"][0]["field"], "line 4: price",
        "{report}"
    );

    // What cannot be read is kept too: a bad header keeps the whole body, rows past
    // csv_rows_max (4 here) keep the file from the first unread row on.
    let bad_header = "transactionId,storeId\nx,s1\n".to_owned();
    let header = "transactionId,storeId,timestamp,itemId,quantity,price,totalAmount,paymentMethod";
    let tail = format!("e-5,s1,{ts},a,1,1.50,1.50,cash\ne-6,s1,{ts},a,1,1.50,1.50,cash\n");
    let rows: String = (1..=4)
        .map(|n| format!("e-{n},s1,{ts},a,1,1.50,1.50,cash\n"))
        .collect();
    let long = format!("{header}\n{rows}{tail}");
    for (body, kept, line) in [(bad_header.clone(), bad_header, 1), (long, tail, 6)] {
        let (status, report) = agent.post_with(
            "/api/v1/imports/csv",
            &[("Content-Type", "text/csv")],
            body.as_bytes(),
        );
        // 4xx when nothing was read, 207 when the rows before the cut were.
        assert!(status >= 400 || status == 207, "{status}: {report}");
        assert_eq!(report["status"], "failed", "{report}");
        assert!(
            report["fatal"]
                .as_str()
                .is_some_and(|f| f.starts_with(&format!("line {line}: "))),
            "{report}"
        );
        let letter = report["unreadDeadLetter"]
            .as_i64()
            .unwrap_or_else(|| panic!("{report}"));
        let (_, one) = agent.get(&format!("/api/v1/dead-letters/{letter}"));
        assert_eq!(one["rawText"], kept, "{one}");
    }

    // Drop folder: a good file goes to processed/, a bad one to failed/, each with a report.
    let inbox = agent.dir.join("inbox");
    let good = format!(
        "transactionId,storeId,timestamp,itemId,quantity,price,totalAmount,paymentMethod\nd-1,s1,{ts},a,1,1.50,1.50,cash\n"
    );
    std::fs::write(inbox.join("good.csv.tmp"), good).unwrap();
    std::fs::rename(inbox.join("good.csv.tmp"), inbox.join("good.csv")).unwrap();
    std::fs::write(inbox.join("bad.csv"), "transactionId,storeId\nx,s1\n").unwrap();
    let processed = agent.dir.join("processed/good.csv.report.json");
    let failed = agent.dir.join("failed/bad.csv.report.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(processed.exists() && failed.exists()) {
        assert!(
            Instant::now() < deadline,
            "drop folder files were not processed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let report: Value = serde_json::from_slice(&std::fs::read(&processed).unwrap()).unwrap();
    assert_eq!(report["accepted"], 1, "{report}");
    let report: Value = serde_json::from_slice(&std::fs::read(&failed).unwrap()).unwrap();
    assert!(
        report["fatal"]
            .as_str()
            .unwrap()
            .contains("missing required column"),
        "{report}"
    );
    assert!(agent.dir.join("processed/good.csv").exists());
    assert!(agent.dir.join("failed/bad.csv").exists());
}

/// A drop-folder file cut at csv_rows_max keeps its unread rows in failed/ in full, and a
/// dead letter of at most body_bytes_max of them, its reason saying it was cut.
#[test]
fn a_large_unread_csv_remainder_is_kept_up_to_the_body_limit() {
    let (_tmp, agent) = Agent::new(|c| {
        c.replace("csv_rows_max = 1000000", "csv_rows_max = 1")
            .replace("body_bytes_max = 16777216", "body_bytes_max = 1024")
    });
    let ts = jiff::Timestamp::now().to_string();
    let rows: String = (0..50)
        .map(|n| format!("big-{n},s1,{ts},a,1,1.50,1.50,cash\n"))
        .collect();
    let file = format!(
        "transactionId,storeId,timestamp,itemId,quantity,price,totalAmount,paymentMethod\n{rows}"
    );
    std::fs::write(agent.dir.join("inbox").join("big.csv"), &file).unwrap();
    let report_path = agent.dir.join("failed/big.csv.report.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !report_path.exists() {
        assert!(Instant::now() < deadline, "the file was not processed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(report["accepted"], 1, "{report}");
    assert_eq!(
        std::fs::read_to_string(agent.dir.join("failed/big.csv")).unwrap(),
        file
    );
    let letter = report["unreadDeadLetter"]
        .as_i64()
        .unwrap_or_else(|| panic!("{report}"));
    let (_, one) = agent.get(&format!("/api/v1/dead-letters/{letter}"));
    assert_eq!(one["rawBytes"], 1024, "{one}");
    let unread = file.len() - file.find("big-1,").unwrap();
    assert!(
        one["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("the first 1024 of {unread} unread bytes kept")),
        "{one}"
    );
}

#[test]
fn bridge_frames_are_acked_after_they_are_durable() {
    use storesync_protocol::domain::{Gtin, ScanPurpose};
    use storesync_protocol::ids::ScanId;
    use storesync_protocol::wire::{BridgeScan, Decoded, FrameDecoder, Message};
    use storesync_protocol::{DeviceId, EventTime, ScanEvent, Sku, StoreId};

    let (_tmp, agent) = Agent::new(|c| c);
    let now = jiff::Timestamp::now().as_millisecond();
    let frame = |seq: u64, at_ms: i64, purpose| {
        let scan = ScanEvent {
            scan_id: ScanId::new(format!("b-{seq}")).unwrap(),
            store_id: StoreId::new("s1").unwrap(),
            gtin: Gtin::new("4006381333931").unwrap(),
            sku: Sku::new("4006381333931").unwrap(),
            purpose,
            quantity: 5,
            timestamp: EventTime::from_unix_ms(at_ms, 0),
            register_id: None,
        };
        Message::BridgeScan(BridgeScan {
            device: DeviceId::new("bridge-1").unwrap(),
            seq,
            scan,
        })
        .encode()
        .unwrap()
    };
    let mut socket = std::net::TcpStream::connect(agent.bridge.unwrap()).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut bytes = frame(1, now, ScanPurpose::StockCount);
    bytes.extend(frame(2, now + 1, ScanPurpose::Receiving));
    // Seq 3 is a day in the future: rejected, dead-lettered, still acknowledged.
    bytes.extend(frame(3, now + 86_400_000, ScanPurpose::Receiving));
    socket.write_all(&bytes).unwrap();
    let mut decoder = FrameDecoder::new(1 << 16);
    let mut acked = 0;
    while acked < 3 {
        let mut buf = [0u8; 1024];
        let n = socket.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed before the ack");
        decoder.push(&buf[..n]);
        while let Some(Decoded::Message(Message::BridgeAck(ack))) = decoder.next_frame().unwrap() {
            acked = ack.seq;
        }
    }
    let (_, inv) = agent.get("/api/v1/inventory?sku=4006381333931");
    assert_eq!(inv["items"][0]["onHand"], 10, "{inv}");
    let (_, letters) = agent.get("/api/v1/dead-letters");
    assert_eq!(letters["deadLetters"][0]["kind"], "frame", "{letters}");
    assert!(
        letters["deadLetters"][0]["errors"][0]["field"] == "timestamp",
        "{letters}"
    );

    // Garbage closes that connection only.
    let mut bad = std::net::TcpStream::connect(agent.bridge.unwrap()).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    bad.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = bad.read_to_end(&mut rest);
    assert_eq!(agent.get("/healthz").0, 200);
}

#[test]
fn kill_9_during_concurrent_ingest_loses_nothing_acknowledged() {
    let (_tmp, mut agent) = Agent::new(|c| c);
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let addr = agent.api;
    let mut threads = Vec::new();
    for client in 0..8 {
        let acked = Arc::clone(&acked);
        let stop = Arc::clone(&stop);
        threads.push(std::thread::spawn(move || {
            let Ok(mut conn) = HttpConn::connect(addr) else {
                return;
            };
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<Value> = (0..1 + n % 4)
                    .map(|i| {
                        transaction(
                            &format!("k-{client}-{n}-{i}"),
                            1 + (n + i) % 4,
                            (n % 50) as i64,
                        )
                    })
                    .collect();
                let ids: Vec<String> = batch
                    .iter()
                    .map(|t| t["transactionId"].as_str().unwrap().to_owned())
                    .collect();
                match conn.request(
                    "POST",
                    "/api/v1/transactions",
                    &[("Content-Type", "application/json")],
                    &body(&Value::Array(batch)),
                ) {
                    Ok((200, _)) => acked.lock().unwrap().extend(ids),
                    Ok((status, b)) => {
                        panic!("unexpected {status}: {}", String::from_utf8_lossy(&b))
                    }
                    Err(_) => return,
                }
                n += 1;
            }
        }));
    }
    // Let the clients get going, then kill the agent mid-stream.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 1_500 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    agent.kill9();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let acked: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();
    assert!(acked.len() >= 100, "only {} acknowledged", acked.len());

    // Restart: it comes back and keeps working, then stop it cleanly and inspect.
    agent.restart();
    assert_eq!(
        agent
            .post(
                "/api/v1/transactions",
                &body(&transaction("after-restart", 2, 0))
            )
            .0,
        200
    );
    assert!(agent.terminate(), "SIGTERM did not stop the agent cleanly");

    let config = storesync_edge::config::load(&agent.config).unwrap();
    let tz = config.tz.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let lock = storesync_edge::store::lock_data_dir(&config.config.data_dir).unwrap();
        let opened =
            storesync_edge::store::open(&config, lock, storesync_edge::store::OpenMode::Run, 0)
                .await
                .unwrap();
        let store = opened.store;
        let row: (String,) = sqlx::query_as("PRAGMA integrity_check")
            .fetch_one(store.reader())
            .await
            .unwrap();
        assert_eq!(row.0, "ok");
        let identity = store.identity().clone();
        let events = store
            .outbox_read(
                identity.epoch,
                storesync_protocol::EventClass::Sales,
                storesync_protocol::SeqNo(1),
                1_000_000,
            )
            .await
            .unwrap();
        // The stream is complete and its hash chain intact.
        let stream = storesync_protocol::Sealer::new(
            identity.tenant.clone(),
            identity.store.clone(),
            identity.device.clone(),
            identity.epoch,
            [storesync_protocol::Hash::ZERO; 3],
        )
        .stream(storesync_protocol::EventClass::Sales);
        let head = storesync_protocol::verify_run(
            &stream,
            storesync_protocol::StreamHead::genesis(storesync_protocol::Hash::ZERO),
            &events,
        )
        .unwrap();
        let streams = store.outbox_streams().await.unwrap();
        let sales = streams
            .iter()
            .find(|s| s.epoch == identity.epoch && s.class == storesync_protocol::EventClass::Sales)
            .unwrap();
        assert_eq!(sales.head, head, "persisted head equals the chain's end");
        let stored: BTreeSet<String> = events
            .iter()
            .filter_map(|e| match &e.body {
                storesync_protocol::EventBody::Transaction(t) => {
                    Some(t.transaction_id.as_str().to_owned())
                }
                _ => None,
            })
            .collect();
        let missing: Vec<&String> = acked.difference(&stored).collect();
        assert!(
            missing.is_empty(),
            "{} acknowledged transactions missing, e.g. {:?}",
            missing.len(),
            missing.first()
        );
        let check = storesync_edge::rollup::recompute(&store, &tz)
            .await
            .unwrap();
        assert!(
            check.mismatches.is_empty(),
            "rollups differ from the log: {:?}",
            check.mismatches
        );
        assert_eq!(check.transactions as usize, stored.len());
    });
}

#[test]
fn lock_epochs_copy_and_restore() {
    let (tmp, mut agent) = Agent::new(|c| c);
    assert_eq!(
        agent
            .post("/api/v1/transactions", &body(&transaction("e-1", 1, 1)))
            .0,
        200
    );
    let (_, outbox) = agent.get("/api/v1/outbox");
    let first_epoch = outbox["epoch"].as_str().unwrap().to_owned();
    assert_eq!(outbox["parentEpoch"], Value::Null);

    // A second agent on the same directory is refused.
    let out = std::process::Command::new(common::BIN)
        .args(["run", "--config"])
        .arg(&agent.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lock"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(agent.terminate());

    // Restart in place: same epoch.
    agent.restart();
    let (_, outbox) = agent.get("/api/v1/outbox");
    assert_eq!(outbox["epoch"].as_str().unwrap(), first_epoch);
    assert!(agent.terminate());

    // A copied directory gets a new epoch that links to the old one.
    let copy = tmp.path().join("copy");
    assert!(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(&agent.dir)
            .arg(&copy)
            .status()
            .unwrap()
            .success()
    );
    let copy_config = copy.join("storesync-edge.toml");
    let text = std::fs::read_to_string(&copy_config).unwrap();
    std::fs::write(
        &copy_config,
        text.replace(
            &agent.dir.display().to_string(),
            &copy.display().to_string(),
        ),
    )
    .unwrap();
    let copied = Agent::start(&copy, &copy_config);
    let (_, outbox) = copied.get("/api/v1/outbox");
    assert_ne!(outbox["epoch"].as_str().unwrap(), first_epoch);
    assert_eq!(outbox["parentEpoch"].as_str().unwrap(), first_epoch);
    // The copy still knows the transaction: idempotency survives the new epoch.
    let (_, v) = copied.post("/api/v1/transactions", &body(&transaction("e-1", 1, 1)));
    assert!(
        v["results"][0]["status"] == "duplicate" || v["results"][0]["status"] == "conflict",
        "{v}"
    );
    drop(copied);

    // Restore from a backup copy: a new epoch again.
    let backup = tmp.path().join("backup.db");
    std::fs::copy(agent.dir.join("edge.db"), &backup).unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["restore", "--config"])
        .arg(&agent.config)
        .arg("--from")
        .arg(&backup)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    agent.restart();
    let (_, outbox) = agent.get("/api/v1/outbox");
    assert_ne!(outbox["epoch"].as_str().unwrap(), first_epoch);
    assert_eq!(outbox["parentEpoch"].as_str().unwrap(), first_epoch);

    // check-config names a bad field.
    std::fs::write(
        tmp.path().join("bad.toml"),
        "tenant = \"acme\"\nstore = \"s 1\"\ndata_dir = \"x\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("check-config")
        .arg(tmp.path().join("bad.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("store"));
}

#[test]
fn tokens_are_required_and_scoped() {
    let tmp_key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp_key.path(), common::TOKEN_PUBLIC_PEM).unwrap();
    let key_path = tmp_key.path().display().to_string();
    let (_tmp, agent) = Agent::new(|c| {
        c.replace("mode = \"auto\"", "mode = \"required\"")
            .replace(
                "# public_key_file = \"token-signing.pem\"",
                &format!("public_key_file = \"{key_path}\""),
            )
            .replace(
                "# issuer = \"https://id.example\"",
                "issuer = \"https://id.example\"",
            )
            .replace(
                "# audience = \"storesync-edge\"",
                "audience = \"storesync-edge\"",
            )
    });
    let key = jsonwebtoken::EncodingKey::from_ed_pem(common::TOKEN_PRIVATE_PEM.as_bytes()).unwrap();
    let token = |claims: Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
            &claims,
            &key,
        )
        .unwrap()
    };
    let exp = jiff::Timestamp::now().as_second() + 600;
    let base = json!({"sub": "manager-7", "iss": "https://id.example", "aud": "storesync-edge", "exp": exp,
        "tenant": "acme", "scope": "store-manager", "stores": ["s1"]});
    let get = |t: Option<String>| {
        let auth = t.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        common::request(agent.api, "GET", "/api/v1/alerts", &headers, b"").0
    };
    assert_eq!(get(None), 401);
    assert_eq!(get(Some("not-a-token".into())), 401);
    assert_eq!(get(Some(token(base.clone()))), 200);
    let mut other_store = base.clone();
    other_store["stores"] = json!(["s2"]);
    assert_eq!(get(Some(token(other_store))), 403);
    let mut no_scope = base.clone();
    no_scope["scope"] = json!("analyst");
    assert_eq!(get(Some(token(no_scope))), 403);
    let mut expired = base.clone();
    expired["exp"] = json!(exp - 3_600);
    assert_eq!(get(Some(token(expired))), 401);
    let mut wrong_aud = base.clone();
    wrong_aud["aud"] = json!("elsewhere");
    assert_eq!(get(Some(token(wrong_aud))), 401);
    // Health stays open for probes.
    assert_eq!(agent.get("/healthz").0, 200);
}

#[test]
fn alerts_stream_live_and_change_state() {
    let (_tmp, agent) = Agent::new(|c| c);
    let mut sse = std::net::TcpStream::connect(agent.api).unwrap();
    sse.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    sse.write_all(
        b"GET /api/v1/alerts/stream HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\n\r\n",
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let n = sse.read(&mut buf).unwrap();
    seen.extend_from_slice(&buf[..n]);
    assert!(String::from_utf8_lossy(&seen).contains("200"));
    // Selling 3 of a SKU nobody counted: out of stock.
    assert_eq!(
        agent
            .post("/api/v1/transactions", &body(&transaction("s-1", 1, 0)))
            .0,
        200
    );
    while !String::from_utf8_lossy(&seen).contains("out_of_stock") {
        let n = sse.read(&mut buf).unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }
    let (_, list) = agent.get("/api/v1/alerts?state=open");
    let id = list["alerts"][0]["alertId"].as_str().unwrap().to_owned();
    assert!(
        list["alerts"][0]["facts"]["on_hand_units"]
            .as_i64()
            .unwrap()
            <= 0
    );
    let (status, v) = agent.post(&format!("/api/v1/alerts/{id}/acknowledge"), b"");
    assert_eq!(
        (status, v["state"].as_str()),
        (200, Some("acknowledged")),
        "{v}"
    );
    assert_eq!(v["changedBy"], "local");
    let (status, v) = agent.post(&format!("/api/v1/alerts/{id}/resolve"), b"");
    assert_eq!((status, v["state"].as_str()), (200, Some("resolved")));
    assert_eq!(agent.post("/api/v1/alerts/al-nope/resolve", b"").0, 404);
}

#[test]
fn full_disk_answers_503_and_keeps_the_database_intact() {
    let (_tmp, mut agent) = Agent::new(|c| c.replace("db_size_max_mib = 0", "db_size_max_mib = 1"));
    let mut saw_503 = false;
    let mut accepted = 0;
    for n in 0..400 {
        let batch: Vec<Value> = (0..20)
            .map(|i| transaction(&format!("f-{n}-{i}"), 40, 0))
            .collect();
        let (status, v) = agent.post("/api/v1/transactions", &body(&Value::Array(batch)));
        match status {
            200 => accepted += 20,
            503 => {
                assert!(
                    v["error"]["message"].as_str().unwrap().contains("disk"),
                    "{v}"
                );
                saw_503 = true;
                break;
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert!(
        saw_503,
        "the 1 MiB cap was never reached ({accepted} accepted)"
    );
    assert_eq!(agent.get("/healthz").0, 200);
    let (_, rollups) = agent.get("/api/v1/rollups?granularity=day");
    assert_eq!(rollups["rows"][0]["transactions"], accepted, "{rollups}");
    let (_, alerts) = agent.get("/api/v1/alerts");
    let alerts = alerts["alerts"].as_array().unwrap().clone();
    assert!(
        alerts.iter().any(|a| a["kind"] == "disk_full"),
        "{alerts:?}"
    );
    // Every alert, the disk-full one included, is sealed for the hub.
    let (_, outbox) = agent.get("/api/v1/outbox");
    let telemetry = outbox["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["class"] == "telemetry")
        .map(|s| s["head"].clone());
    assert_eq!(telemetry, Some(json!(alerts.len())), "{outbox}");
    assert!(agent.terminate());
    let out = std::process::Command::new("sqlite3")
        .arg(agent.dir.join("edge.db"))
        .arg("PRAGMA integrity_check;")
        .output();
    if let Ok(out) = out {
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    }
}

/// A full database starts again after a crash although folding the item-hour delta rows
/// needs pages the database cannot have: the agent starts and answers from the stored rows
/// and the delta rows.
#[test]
fn a_full_database_with_unfolded_item_rows_starts_after_a_crash() {
    let (_tmp, mut agent) = Agent::new(|c| c.replace("db_size_max_mib = 0", "db_size_max_mib = 1"));
    let mut accepted = 0;
    // Requests of 20 sales until one no longer fits, then of one: the database is full to
    // its last pages.
    for per_request in [20, 1] {
        for n in 0..400 {
            // Every item a new SKU: each needs an hour row by item when the writer folds.
            let batch: Vec<Value> = (0..per_request)
                .map(|i| {
                    let mut tx = transaction(&format!("f-{per_request}-{n}-{i}"), 10, 0);
                    let items = tx["items"].as_array_mut().unwrap();
                    for (line, item) in items.iter_mut().enumerate() {
                        item["itemId"] = json!(format!("u-{per_request}-{n}-{i}-{line}"));
                    }
                    tx
                })
                .collect();
            let (status, v) = agent.post("/api/v1/transactions", &body(&Value::Array(batch)));
            match status {
                200 => accepted += per_request,
                503 => break,
                other => panic!("unexpected {other}: {v}"),
            }
        }
    }
    assert!(accepted > 0 && accepted < 2_048, "{accepted} accepted");
    let units = |agent: &Agent| {
        let (status, day) = agent.get("/api/v1/rollups?granularity=day");
        assert_eq!(status, 200, "{day}");
        let (status, items) = agent.get("/api/v1/top-items?by=units&limit=100000");
        assert_eq!(status, 200, "{items}");
        let item_units: i64 = items["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["units"].as_i64().unwrap())
            .sum();
        (day["rows"][0]["units"].as_i64().unwrap(), item_units)
    };
    let (store_units, item_units) = units(&agent);
    assert_eq!(store_units, item_units);
    assert!(unfolded_item_deltas(&agent.dir) > 0, "nothing folded yet");
    agent.kill9();
    agent.restart();
    assert!(
        unfolded_item_deltas(&agent.dir) > 0,
        "the fold at start had no room"
    );
    assert_eq!(units(&agent), (store_units, store_units));
    assert!(agent.terminate());
}

#[test]
fn the_wal_is_allocated_before_the_first_commit_and_keeps_its_size() {
    const PRESIZED: u64 = 8 * 1024 * 1024;
    let wal_bytes = |agent: &Agent| agent.get("/healthz").1["walBytes"].as_u64().unwrap();
    let (_tmp, mut agent) = Agent::new(|c| c);
    // Commits overwrite the zeros written at start rather than grow the file.
    assert_eq!(wal_bytes(&agent), PRESIZED);
    for n in 0..200 {
        let (status, v) = agent.post(
            "/api/v1/transactions",
            &body(&transaction(&format!("w-{n}"), 3, 1)),
        );
        assert_eq!(status, 200, "{v}");
    }
    assert_eq!(wal_bytes(&agent), PRESIZED);
    // A restart starts from a checkpointed database and a fresh, pre-sized WAL, and SQLite
    // reads the zeros as an empty log: every record is still there.
    assert!(agent.terminate());
    agent.restart();
    assert_eq!(wal_bytes(&agent), PRESIZED);
    let (_, rollups) = agent.get("/api/v1/rollups?granularity=day");
    assert_eq!(rollups["rows"][0]["transactions"], 200, "{rollups}");
    assert_eq!(agent.get("/healthz").0, 200);

    // The WAL holds the same data as the database: it gets the database file's permissions.
    use std::os::unix::fs::PermissionsExt as _;
    assert!(agent.terminate());
    let db = agent.dir.join("edge.db");
    let wal = agent.dir.join("edge.db-wal");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    let _ = std::fs::remove_file(&wal);
    agent.restart();
    assert_eq!(wal_bytes(&agent), PRESIZED);
    let mode = std::fs::metadata(&wal).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
}
