//! In-process agents and hubs for the sync benchmarks: an agent data directory filled
//! through the agent's writer, its sync client, and a hub sync server on a PostgreSQL
//! database of a throw-away cluster.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use storesync_edge::config::Settings;
use storesync_edge::sync::client::{SyncContext, SyncOptions, SyncStatus};
use storesync_edge::writer::{Outcome, Record, Submission, WriterHandle};
use storesync_hub::store::pg::{PgConfig, PgStore};
use storesync_hub::store::{Store, StoreInfo};
use storesync_hub::sync::{ServerOptions, SyncServer, TokenKey};
use storesync_protocol::event::Event;
use storesync_protocol::ids::{StoreId, TenantId};
use storesync_protocol::validate::{Context, transaction_from_json};
use tokio::sync::watch;
use tokio_postgres::NoTls;

/// A number from the environment, or `default`.
pub fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The tenant of every benchmark.
pub const TENANT: &str = "acme";

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One line item as the raw-COPY baseline writes it.
#[derive(Debug)]
pub struct Line {
    pub transaction_id: String,
    pub line_no: i16,
    pub at_ms: i64,
    pub sku: String,
    pub quantity: i32,
    pub price_e4: i64,
}

/// A POS transaction of three line items, `n` of store `store`, at `at_ms`.
pub fn sale_json(store: &str, n: u64, at_ms: i64) -> serde_json::Value {
    let items: Vec<serde_json::Value> = (0..3u64)
        .map(|i| {
            serde_json::json!({
                "itemId": format!("sku-{}", (n * 7 + i * 13) % SKUS),
                "quantity": 1 + (n + i) % 3,
                "price": 2.5,
            })
        })
        .collect();
    let total: f64 = (0..3u64).map(|i| (1 + (n + i) % 3) as f64 * 2.5).sum();
    serde_json::json!({
        "transactionId": format!("{store}-t{n:09}"),
        "storeId": store,
        "timestamp": jiff::Timestamp::from_millisecond(at_ms).unwrap().to_string(),
        "items": items,
        "totalAmount": total,
        "paymentMethod": if n.is_multiple_of(3) { "cash" } else { "card" },
        "registerId": format!("r{}", n % 4),
    })
}

/// The SKUs [`sale_json`] names: `sku-0` to `sku-499`.
pub const SKUS: u64 = 500;

/// Stock adjustments (a JSON array) giving `store` 1,000 units of each of [`SKUS`].
pub fn opening_stock(store: &str, at_ms: i64) -> serde_json::Value {
    let timestamp = jiff::Timestamp::from_millisecond(at_ms)
        .unwrap()
        .to_string();
    (0..SKUS)
        .map(|n| {
            serde_json::json!({
                "adjustmentId": format!("{store}-open-{n}"),
                "storeId": store,
                "sku": format!("sku-{n}"),
                "delta": 1000,
                "reason": "opening stock",
                "timestamp": timestamp,
            })
        })
        .collect()
}

/// An agent's data directory, not running.
#[derive(Debug)]
pub struct Agent {
    pub dir: PathBuf,
    pub settings: Settings,
    pub store: String,
    /// Transactions recorded by [`Agent::record`].
    pub recorded: u64,
}

/// A running agent: store, writer and sync client.
#[derive(Debug)]
pub struct RunningAgent {
    pub writer: WriterHandle,
    pub status: watch::Receiver<SyncStatus>,
    stop: watch::Sender<bool>,
    sync_task: tokio::task::JoinHandle<()>,
    writer_task: tokio::task::JoinHandle<()>,
}

impl RunningAgent {
    /// Stops the sync client and the writer.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.sync_task.await;
        drop(self.writer);
        let _ = self.writer_task.await;
    }
}

impl Agent {
    /// `storesync-edge init` for store `store` of [`TENANT`] in `dir`.
    pub async fn init(dir: &Path, store: &str) -> Agent {
        let done = storesync_edge::agent::init(dir, TENANT, store, "UTC")
            .await
            .unwrap();
        let settings = storesync_edge::config::load(&done.config_path).unwrap();
        Agent {
            dir: dir.to_path_buf(),
            settings,
            store: store.to_owned(),
            recorded: 0,
        }
    }

    /// A copy of this (stopped, not yet enrolled) data directory in `dir`: the same device
    /// with the same outbox, for a second hub.
    pub fn copy_to(&self, dir: &Path) -> Agent {
        std::fs::create_dir_all(dir).unwrap();
        for entry in std::fs::read_dir(&self.dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
            }
        }
        let config = dir.join("storesync-edge.toml");
        let text = std::fs::read_to_string(&config).unwrap().replace(
            self.dir.canonicalize().unwrap().to_str().unwrap(),
            dir.canonicalize().unwrap().to_str().unwrap(),
        );
        std::fs::write(&config, text).unwrap();
        Agent {
            dir: dir.to_path_buf(),
            settings: storesync_edge::config::load(&config).unwrap(),
            store: self.store.clone(),
            recorded: self.recorded,
        }
    }

    async fn open(
        &self,
    ) -> (
        storesync_edge::store::Store,
        WriterHandle,
        tokio::task::JoinHandle<()>,
    ) {
        let lock = storesync_edge::store::lock_data_dir(&self.settings.config.data_dir).unwrap();
        let now = now_ms();
        let opened = storesync_edge::store::open(
            &self.settings,
            lock,
            storesync_edge::store::OpenMode::Run,
            now,
        )
        .await
        .unwrap();
        let (alerts, _) = tokio::sync::broadcast::channel(1024);
        let (writer, task) = storesync_edge::writer::spawn(
            opened.writer_conn,
            opened.sealer,
            Arc::new(self.settings.clone()),
            alerts,
            Arc::default(),
            now,
        )
        .await
        .unwrap();
        let task = tokio::spawn(async move {
            let _ = task.await;
        });
        (opened.store, writer, task)
    }

    /// Records `count` transactions through the writer, spread over the last six days;
    /// returns their line items.
    pub async fn record(&mut self, count: u64) -> Vec<Line> {
        let (_store, writer, task) = self.open().await;
        let now = now_ms();
        let span_ms = 6 * 86_400_000i64;
        let step = (span_ms / count.max(1) as i64).max(1);
        let ctx = Context {
            now_ms: now,
            limits: &self.settings.record_limits,
            store: Some(&self.settings.store),
        };
        let mut lines = Vec::with_capacity(count as usize * 3);
        let chunk = 2_000u64;
        let mut next = 0u64;
        let mut inflight = Vec::new();
        while next < count {
            let end = (next + chunk).min(count);
            let mut items = Vec::with_capacity((end - next) as usize);
            for n in next..end {
                let at = now - span_ms + n as i64 * step;
                let tx = transaction_from_json(&sale_json(&self.store, n, at), &ctx).unwrap();
                for (i, item) in tx.items.iter().enumerate() {
                    lines.push(Line {
                        transaction_id: tx.transaction_id.as_str().to_owned(),
                        line_no: i as i16,
                        at_ms: at,
                        sku: item.sku.as_str().to_owned(),
                        quantity: item.quantity,
                        price_e4: item.price.e4(),
                    });
                }
                items.push(Submission {
                    source: "bench".into(),
                    kind: "transaction",
                    raw: Vec::new(),
                    parsed: Ok(Record::Transaction(tx)),
                    resubmit_of: None,
                });
            }
            let writer = writer.clone();
            inflight.push(tokio::spawn(async move {
                // At most four submissions are in flight, well within the writer's queue.
                let outcomes = writer.submit(items, now).await.unwrap();
                assert!(
                    outcomes
                        .iter()
                        .all(|o| matches!(o, Outcome::Accepted { .. }))
                );
            }));
            if inflight.len() >= 4 {
                inflight.remove(0).await.unwrap();
            }
            next = end;
        }
        for t in inflight {
            t.await.unwrap();
        }
        drop(writer);
        task.await.unwrap();
        self.recorded += count;
        lines
    }

    /// Reads the whole outbox in runs of `run_len`, as the sync client does; returns the
    /// seconds it took and the runs.
    pub async fn read_all(&self, run_len: usize) -> (f64, Vec<Vec<Event>>) {
        let (store, writer, task) = self.open().await;
        let started = Instant::now();
        let mut runs = Vec::new();
        for stream in store.outbox_streams().await.unwrap() {
            let mut from = storesync_protocol::event::SeqNo(stream.acked.0 + 1);
            loop {
                let run = store
                    .outbox_read(stream.epoch, stream.class, from, run_len)
                    .await
                    .unwrap();
                let Some(last) = run.last() else { break };
                from = storesync_protocol::event::SeqNo(last.key.seq.0 + 1);
                runs.push(run);
            }
        }
        let secs = started.elapsed().as_secs_f64();
        drop(writer);
        task.await.unwrap();
        (secs, runs)
    }

    /// Enrolls with `hub` (the agent must not be running).
    pub async fn enroll(&self, hub: &Hub) {
        let token = storesync_hub::sync::server::enroll_token(
            hub.store.as_ref(),
            &TenantId::new(TENANT).unwrap(),
            &StoreId::new(self.store.as_str()).unwrap(),
            3_600_000,
        )
        .await
        .unwrap();
        storesync_edge::agent::enroll(&self.settings, &hub.addr.to_string(), &token)
            .await
            .unwrap();
    }

    /// Opens the store and starts the writer and the sync client.
    pub async fn start_sync(&self, options: SyncOptions) -> RunningAgent {
        let (store, writer, writer_task) = self.open().await;
        let paths = storesync_edge::sync::Paths::new(&self.settings.config.data_dir);
        let enrollment = paths.load().unwrap().expect("enrolled");
        let (stop, stop_rx) = watch::channel(false);
        let docs = storesync_edge::docs::Docs::open(
            &self.settings.config.data_dir,
            std::sync::Arc::new(self.settings.clone()),
            writer.clone(),
            store.reader().clone(),
        )
        .await
        .unwrap();
        let (sync_task, status) = storesync_edge::sync::client::spawn(
            SyncContext {
                store,
                writer: writer.clone(),
                paths,
                enrollment,
                options,
                docs,
            },
            stop_rx,
        );
        RunningAgent {
            writer,
            status,
            stop,
            sync_task,
            writer_task,
        }
    }
}

/// A hub sync server on its own database.
#[derive(Debug)]
pub struct Hub {
    pub store: Arc<dyn Store>,
    pub addr: SocketAddr,
    pub config: PgConfig,
    server: SyncServer,
}

impl Hub {
    /// A fresh database `name` with tenant [`TENANT`] and `stores`, and a sync server.
    pub async fn start(
        cluster: &storesync_hub::testing::PgCluster,
        name: &str,
        stores: &[&str],
    ) -> Hub {
        Hub::start_with(cluster, name, stores, |_| {}).await
    }

    /// Like [`Hub::start`], with the server options adjusted by `adjust`.
    pub async fn start_with(
        cluster: &storesync_hub::testing::PgCluster,
        name: &str,
        stores: &[&str],
        adjust: impl FnOnce(&mut ServerOptions),
    ) -> Hub {
        let config = cluster.database(name).await.unwrap();
        let pg = PgStore::connect(config.clone()).await.unwrap();
        pg.migrate().await.unwrap();
        let store: Arc<dyn Store> = Arc::new(pg);
        let tenant = TenantId::new(TENANT).unwrap();
        store.create_tenant(&tenant, TENANT).await.unwrap();
        for id in stores {
            store
                .upsert_store(
                    &tenant,
                    &StoreInfo {
                        store_id: StoreId::new(*id).unwrap(),
                        name: format!("Store {id}"),
                        region: "north".into(),
                        time_zone: "UTC".into(),
                    },
                )
                .await
                .unwrap();
        }
        let mut options = ServerOptions::new("127.0.0.1:0".parse().unwrap());
        adjust(&mut options);
        let token_key = TokenKey {
            pem: String::new(),
            issuer: "storesync-bench".into(),
            audience: "storesync-bench".into(),
        };
        let server = SyncServer::start(Arc::clone(&store), token_key, options)
            .await
            .unwrap();
        Hub {
            store,
            addr: server.local_addr(),
            config,
            server,
        }
    }

    /// Transactions committed in the database.
    pub async fn transactions(&self) -> i64 {
        let (client, connection) =
            tokio_postgres::connect(self.config.admin_url.as_deref().unwrap(), NoTls)
                .await
                .unwrap();
        tokio::spawn(connection);
        client
            .query_one("SELECT count(*) FROM transactions", &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Stops the sync server.
    pub async fn stop(self) {
        self.server.shutdown().await;
    }
}

/// Polls `check` every 50 ms until it answers, at most `limit`.
pub fn wait<T>(limit: std::time::Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up waiting after {limit:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
