//! `storesync-sim load` against a real agent: it sends at the asked rate, every request is
//! acknowledged and counted in the latency histogram, and the agent holds what was sent.

mod common;

use std::process::Command;

use serde_json::Value;

fn load(agent: &common::Agent, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_storesync-sim"))
        .arg("load")
        .arg("--agent")
        .arg(format!("s001={}", agent.api))
        .args(args)
        .args(["--json", "-"])
        .output()
        .expect("run load");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "load exit: {}", out.status);
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

#[test]
fn load_sends_at_the_rate_and_every_transaction_is_stored() {
    let bin_dir = common::sibling_binaries();
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = common::Agent::start(&bin_dir, dir.path(), "s001", "Europe/Paris");
    let before = agent.today_transactions();

    // 100 transactions/s for 2 s: request i is due at i/100 s, so exactly 200 requests.
    let fixed = load(
        &agent,
        &["--rate", "100", "--seconds", "2", "--clients", "3"],
    );
    assert_eq!(fixed["requests"], 200, "{fixed}");
    assert_eq!(fixed["accepted"], 200, "{fixed}");
    assert_eq!(fixed["errors"], 0, "{fixed}");
    assert_eq!(fixed["ackLatency"]["count"], 200, "{fixed}");
    let (p50, p99, max) = (
        fixed["ackLatency"]["p50Us"].as_u64().expect("p50"),
        fixed["ackLatency"]["p99Us"].as_u64().expect("p99"),
        fixed["ackLatency"]["maxUs"].as_u64().expect("max"),
    );
    assert!(0 < p50 && p50 <= p99 && p99 <= max, "{fixed}");
    let elapsed = fixed["elapsedS"].as_f64().expect("elapsed");
    assert!((1.9..10.0).contains(&elapsed), "{fixed}");
    assert!(fixed["scheduleLatency"]["count"] == 200, "{fixed}");

    // As fast as possible, 5 transactions per request, 40 requests.
    let fast = load(
        &agent,
        &["--requests", "40", "--batch", "5", "--clients", "2"],
    );
    assert_eq!(fast["requests"], 40, "{fast}");
    assert_eq!(fast["accepted"], 200, "{fast}");
    assert!(fast["scheduleLatency"].is_null(), "{fast}");

    assert_eq!(agent.today_transactions() - before, 400);
}

#[test]
fn load_counts_failed_requests_when_no_agent_answers() {
    let port = common::free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_storesync-sim"))
        .args(["load", "--agent"])
        .arg(format!("s001=127.0.0.1:{port}"))
        .args(["--requests", "3", "--clients", "1", "--json", "-"])
        .output()
        .expect("run load");
    assert_eq!(out.status.code(), Some(2), "nothing acknowledged");
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["errors"], 3, "{report}");
    assert_eq!(report["accepted"], 0, "{report}");
    assert!(
        report["firstErrors"][0]
            .as_str()
            .is_some_and(|e| e.contains(&port.to_string())),
        "{report}"
    );
}
