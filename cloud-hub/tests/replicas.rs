//! Two `storesync-hub serve` processes on one PostgreSQL database behave as one: a commit
//! made anywhere invalidates both caches and reaches both live streams (LISTEN/NOTIFY).

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use storesync_hub::auth::{self, HashCost};
use storesync_hub::store::pg::PgStore;
use storesync_hub::store::{Principal, Role, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Hub(Child, u16);

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_hub(
    dir: &std::path::Path,
    name: &str,
    url: &str,
    admin: &str,
    key: &std::path::Path,
) -> Hub {
    let port = free_port();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\n[store]\nbackend = \"postgres\"\nurl = \"{url}\"\nadmin_url = \"{admin}\"\napp_role = \"storesync_app\"\npool_size_max = 4\n[sync]\nlisten = \"\"\n[auth]\nsigning_key_path = \"{}\"\n",
            key.display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_storesync-hub"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Hub(child, port)
}

async fn request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

async fn wait_ready(port: u16) {
    for _ in 0..300 {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await {
            let _ = s
                .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            if String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200") {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("hub on port {port} never became ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_share_invalidation_and_live_streams() {
    let cluster = storesync_hub::testing::shared_cluster().unwrap();
    let config = cluster.database("t_replicas").await.unwrap();
    let (url, admin) = (config.url.clone(), config.admin_url.clone().unwrap());
    let store = PgStore::connect(config).await.unwrap();
    store.migrate().await.unwrap();
    setup_tenant(&store, "acme", &[("s1", "north", "UTC")]).await;
    let hash = auth::hash_secret(
        "correct horse",
        HashCost {
            memory_kib: 64,
            iterations: 1,
        },
    )
    .unwrap();
    store
        .upsert_principal(
            &tenant("acme"),
            &Principal {
                name: "ana".into(),
                is_client: false,
                secret_hash: hash,
                role: Role::Analyst,
                stores: vec![],
            },
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("signing-key.pem");
    std::fs::write(&key, auth::generate_signing_key_pem().unwrap()).unwrap();
    let a = start_hub(dir.path(), "a", &url, &admin, &key);
    let b = start_hub(dir.path(), "b", &url, &admin, &key);
    wait_ready(a.1).await;
    wait_ready(b.1).await;

    // A token from hub A works on hub B (shared key, stateless replicas).
    let (status, _, body) = request(
        a.1,
        "POST",
        "/oauth/token",
        None,
        "grant_type=password&tenant=acme&username=ana&password=correct+horse",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let body = body.trim_start_matches(|c: char| c != '{');
    let body = &body[..body.rfind('}').map(|i| i + 1).unwrap_or(body.len())];
    let token: serde_json::Value = serde_json::from_str(body).unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let path = format!(
        "/api/v1/sales/top-items?from={}&to={}",
        T0 - 1000,
        T0 + 86_400_000
    );
    let (status, head, _) = request(b.1, "GET", &path, Some(&token), "").await;
    assert_eq!(status, 200);
    assert!(head.contains("x-cache: miss"), "{head}");
    let (_, head, _) = request(b.1, "GET", &path, Some(&token), "").await;
    assert!(head.contains("x-cache: hit"), "{head}");

    // A live stream on hub A.
    let mut sse = TcpStream::connect(("127.0.0.1", a.1)).await.unwrap();
    sse.write_all(
        format!(
            "GET /api/v1/live/sse HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("event: ready") {
        let n = sse.read(&mut buf).await.unwrap();
        assert!(n > 0, "stream closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }

    // A commit made by a third process's store (as the sync server would).
    let mut device = Device::new("acme", "s1", "d1", 1);
    let (st, ev, h) = device.run(vec![sale("t1", "s1", T0, &[("sku-1", 2, 150)])]);
    store.commit_events(&st, &ev, h).await.unwrap();

    while !seen.contains("event: sales") {
        let n = sse.read(&mut buf).await.unwrap();
        assert!(n > 0, "stream closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains("\"storeId\":\"s1\""), "{seen}");
    // Hub B dropped its cached answer: eventually a miss with the new figures.
    let mut fresh = false;
    for _ in 0..100 {
        let (_, head, body) = request(b.1, "GET", &path, Some(&token), "").await;
        if head.contains("x-cache: miss") && body.contains("sku-1") {
            fresh = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(fresh, "hub B kept serving a stale cache entry");
    let (status, _, metrics) = request(b.1, "GET", "/metrics", None, "").await;
    assert_eq!(status, 200);
    // At least the hit above; the loop may add hits served before the change arrived.
    let hits: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("storesync_hub_cache_hits_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(hits >= 1, "{metrics}");
}
