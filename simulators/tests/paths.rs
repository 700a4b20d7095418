//! The ingest paths beyond HTTP JSON against a real agent: history as CSV files in the
//! drop folder and scans as firmware-bridge frames, then CSV over HTTP. The agent ends up
//! holding exactly what the generator made, nothing is dead-lettered, and a rerun finds
//! everything already held.

mod common;

use std::process::Command;

use storesync_sim::chain::{Chain, ChainConfig, RecordKind, local_date};

fn sim(args: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_storesync-sim"))
        .args(args)
        .output()
        .expect("run storesync-sim");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "storesync-sim {args:?}: {}",
        out.status
    );
    stdout
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The "backfill done" numbers: new, duplicates, bridged scans, refused.
fn done_counts(stdout: &str) -> Vec<u64> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("backfill done:"))
        .expect("summary line");
    line.split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().expect("number"))
        .collect()
}

#[test]
fn csv_drop_folder_bridge_frames_and_csv_over_http_deliver_everything() {
    let bin_dir = common::sibling_binaries();
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = common::Agent::start(&bin_dir, dir.path(), "s001", "Europe/Paris");
    let chain = Chain::new(ChainConfig::default());
    let now = now_ms();
    let today = local_date(&chain, 0, now);
    let day = |back: i64| {
        chain.day(
            0,
            today
                .checked_sub(jiff::Span::new().days(back))
                .expect("date"),
        )
    };
    let count = |back: std::ops::RangeInclusive<i64>, kind: RecordKind| -> u64 {
        back.flat_map(day).filter(|r| r.kind == kind).count() as u64
    };
    let agent_arg = format!("s001={}", agent.api);

    // Three days: transactions as drop-folder files, scans as bridge frames.
    let out = sim(&[
        "backfill".into(),
        "--days".into(),
        "3".into(),
        "--agent".into(),
        agent_arg.clone(),
        "--csv-drop".into(),
        format!("s001={}", dir.path().display()),
        "--bridge".into(),
        format!("s001={}", agent.bridge),
    ]);
    let (tx3, scans3) = (
        count(1..=3, RecordKind::Transaction),
        count(1..=3, RecordKind::Scan),
    );
    assert!(
        tx3 > 0 && scans3 > 0,
        "the generator made {tx3} transactions and {scans3} scans"
    );
    assert_eq!(done_counts(&out), vec![tx3, 0, scans3, 0]);

    let rollups = agent.get(&format!(
        "/api/v1/rollups?granularity=day&from={}&to={}",
        now - 6 * 86_400_000,
        now + 3_600_000
    ));
    let held: u64 = rollups["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            ["transactions", "refunds", "voids"]
                .iter()
                .map(|k| r[*k].as_u64().unwrap_or(0))
                .sum::<u64>()
        })
        .sum();
    assert_eq!(held, tx3, "{rollups}");
    assert_eq!(
        agent.get("/api/v1/dead-letters")["deadLetters"],
        serde_json::json!([])
    );
    let processed = std::fs::read_dir(dir.path().join("processed"))
        .expect("processed/")
        .count();
    assert!(processed >= 2, "a file and its report in processed/");
    assert_eq!(
        std::fs::read_dir(dir.path().join("failed"))
            .expect("failed/")
            .count(),
        0
    );
    let metrics = common::get_text(&agent.api, "/metrics");
    assert!(
        metrics.contains(&format!("storesync_edge_bridge_frames_total {scans3}\n")),
        "{metrics}"
    );

    // Four days over CSV by HTTP (scans as JSON): one new day, three already held.
    let out = sim(&[
        "backfill".into(),
        "--days".into(),
        "4".into(),
        "--agent".into(),
        agent_arg,
        "--csv".into(),
        "s001".into(),
    ]);
    let day4 = day(4).len() as u64;
    assert_eq!(done_counts(&out), vec![day4, tx3 + scans3, 0, 0]);
}
