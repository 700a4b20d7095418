//! Throw-away PostgreSQL clusters for tests and benchmarks.
//!
//! [`PgCluster::start`] runs `initdb` and `pg_ctl` from `/usr/lib/postgresql/*/bin` into a
//! temporary directory, on a free port, as the `postgres` user when the process runs as root
//! (initdb refuses root). The cluster stops and its directory is removed when the value is
//! dropped — and, for [`shared_cluster`], which lives in a static and is never dropped, by a
//! watchdog process that waits for the test process to exit.
//!
//! [`PgCluster::database`] creates a fresh database and returns a [`PgConfig`] in which
//! migrations run as the superuser and the hub connects as `storesync_app`, a role that owns
//! nothing and has no BYPASSRLS, as in production.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use storesync_hub::testing::shared_cluster;
//! let cluster = shared_cluster()?;
//! let config = cluster.database("my_test").await?;
//! let store = storesync_hub::store::pg::PgStore::connect(config).await?;
//! # Ok(()) }
//! ```

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context as _, bail};
use tokio_postgres::NoTls;

use crate::store::pg::PgConfig;

/// The role the hub connects as in tests.
pub const APP_ROLE: &str = "storesync_app";

/// A running throw-away PostgreSQL cluster.
#[derive(Debug)]
pub struct PgCluster {
    dir: Option<tempfile::TempDir>,
    /// A kept directory (see [`PgCluster::start_in`]): stopped on drop, never removed.
    kept: Option<PathBuf>,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

fn find_bin() -> anyhow::Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL server binaries not found: apt-get install -y --no-install-recommends postgresql")?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .context("no /usr/lib/postgresql/*/bin/initdb: apt-get install -y --no-install-recommends postgresql")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl PgCluster {
    /// Creates and starts a cluster. `fsync` off is fine for tests; benchmarks keep it on.
    pub fn start(fsync: bool) -> anyhow::Result<PgCluster> {
        let dir = tempfile::Builder::new().prefix("storesync-pg-").tempdir()?;
        let root = dir.path().to_path_buf();
        PgCluster::boot(Some(dir), None, &root, fsync)
    }

    /// Starts the cluster kept in `root` (created there by `initdb` when `root/data` does
    /// not exist yet). Dropping the value stops the cluster and leaves the directory, so a
    /// benchmark can load a large data set once and measure it in many runs.
    pub fn start_in(root: &Path, fsync: bool) -> anyhow::Result<PgCluster> {
        std::fs::create_dir_all(root)
            .with_context(|| format!("creating cluster directory {}", root.display()))?;
        PgCluster::boot(None, Some(root.to_path_buf()), root, fsync)
    }

    fn boot(
        dir: Option<tempfile::TempDir>,
        kept: Option<PathBuf>,
        root: &Path,
        fsync: bool,
    ) -> anyhow::Result<PgCluster> {
        let bin = find_bin()?;
        let as_postgres = is_root();
        let data = root.join("data");
        if as_postgres {
            let (uid, gid) = postgres_ids()?;
            std::os::unix::fs::chown(root, Some(uid), Some(gid))?;
        }
        let mut cluster = PgCluster {
            dir,
            kept,
            data,
            bin,
            port: 0,
            as_postgres,
        };
        if !cluster.data.join("PG_VERSION").exists() {
            cluster.initdb()?;
        } else if cluster.data.join("postmaster.pid").exists() {
            // Left running by a run that was killed: stop it, ignoring a stale pid file.
            let data = cluster.data.to_string_lossy().into_owned();
            let _ = cluster.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
        }
        cluster.run_server(fsync)?;
        Ok(cluster)
    }

    fn initdb(&self) -> anyhow::Result<()> {
        self.run(
            "initdb",
            &[
                "-D",
                &self.data.to_string_lossy(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )
    }

    fn run_server(&mut self, fsync: bool) -> anyhow::Result<()> {
        let cluster = self;
        // Port races with other test binaries are possible: retry a few times.
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            let socket_dir = cluster.socket_dir();
            let opts = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync={} -c synchronous_commit={} -c full_page_writes={} \
                 -c max_connections=300 -c shared_buffers=256MB",
                socket_dir.display(),
                if fsync { "on" } else { "off" },
                if fsync { "on" } else { "off" },
                if fsync { "on" } else { "off" },
            );
            let log = cluster.root().join("log.txt");
            match cluster.run(
                "pg_ctl",
                &[
                    "-D",
                    &cluster.data.to_string_lossy(),
                    "-l",
                    &log.to_string_lossy(),
                    "-o",
                    &opts,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            ) {
                Ok(()) => {
                    cluster.port = port;
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("pg_ctl start failed")))
    }

    fn root(&self) -> &Path {
        match (&self.dir, &self.kept) {
            (Some(d), _) => d.path(),
            (None, Some(kept)) => kept,
            (None, None) => Path::new("/tmp"),
        }
    }

    fn socket_dir(&self) -> PathBuf {
        self.root().to_path_buf()
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.arg("-u").arg("postgres").arg("--").arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let out = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {program}"))?;
        if !out.status.success() {
            bail!(
                "{program} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Restarts the server with `pg_ctl restart -m MODE` (`fast`: clients are disconnected
    /// and the server shuts down cleanly; `immediate`: a crash, then recovery from the WAL),
    /// keeping the port and options; for fault tests.
    pub fn restart(&self, mode: &str) -> anyhow::Result<()> {
        let log = self.root().join("log.txt");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data.to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-m",
                mode,
                "-w",
                "-t",
                "60",
                "restart",
            ],
        )
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection string for `user` to `database`.
    pub fn url(&self, user: &str, database: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} dbname={database}",
            self.port
        )
    }

    /// Creates database `name` (dropping one left over) and the application role, and
    /// returns the configuration a hub uses for it.
    pub async fn database(&self, name: &str) -> anyhow::Result<PgConfig> {
        self.database_with(name, true).await
    }

    /// The configuration for database `name`, created (with the application role) when
    /// missing and kept as it is otherwise: how a benchmark reuses a loaded data set.
    pub async fn existing_database(&self, name: &str) -> anyhow::Result<PgConfig> {
        self.database_with(name, false).await
    }

    async fn database_with(&self, name: &str, fresh: bool) -> anyhow::Result<PgConfig> {
        let (client, connection) =
            tokio_postgres::connect(&self.url("postgres", "postgres"), NoTls).await?;
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN \
                   CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE; END IF; \
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;"
            ))
            .await?;
        let exists = !client
            .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await?
            .is_empty();
        if fresh || !exists {
            client
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                .await?;
            client
                .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                .await?;
        }
        drop(client);
        let _ = driver.await;
        Ok(PgConfig {
            url: self.url(APP_ROLE, name),
            admin_url: Some(self.url("postgres", name)),
            app_role: Some(APP_ROLE.to_owned()),
            pool_size_max: 16,
            listen: true,
        })
    }

    /// Starts a watchdog that stops the cluster and removes its directory when this process
    /// exits, and gives up ownership (for a cluster kept in a static).
    fn hand_to_watchdog(&mut self) -> anyhow::Result<()> {
        let dir = self
            .dir
            .take()
            .context("cluster directory already handed over")?;
        let root = dir.keep();
        let pid = std::process::id();
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = if self.as_postgres {
            format!(
                "runuser -u postgres -- {} -D {} -m immediate stop",
                pg_ctl.display(),
                self.data.display()
            )
        } else {
            format!(
                "{} -D {} -m immediate stop",
                pg_ctl.display(),
                self.data.display()
            )
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf {}",
            root.display()
        );
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if (self.dir.is_some() || self.kept.is_some()) && self.port != 0 {
            // A kept cluster is reused: stop it cleanly so the next start needs no recovery.
            let mode = if self.kept.is_some() {
                "fast"
            } else {
                "immediate"
            };
            let _ = self.run(
                "pg_ctl",
                &["-D", &self.data.to_string_lossy(), "-m", mode, "stop"],
            );
        }
    }
}

fn postgres_ids() -> anyhow::Result<(u32, u32)> {
    let uid = Command::new("id").args(["-u", "postgres"]).output()?;
    let gid = Command::new("id").args(["-g", "postgres"]).output()?;
    if !uid.status.success() {
        bail!("running as root needs a `postgres` user (it comes with the postgresql package)");
    }
    let parse = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).trim().parse::<u32>();
    Ok((parse(&uid)?, parse(&gid)?))
}

/// One cluster shared by all tests of a test binary (fsync off); each test makes its own
/// database with [`PgCluster::database`].
pub fn shared_cluster() -> anyhow::Result<&'static PgCluster> {
    static CLUSTER: OnceLock<Result<PgCluster, String>> = OnceLock::new();
    let result = CLUSTER.get_or_init(|| {
        let mut cluster = PgCluster::start(false).map_err(|e| format!("{e:#}"))?;
        cluster.hand_to_watchdog().map_err(|e| format!("{e:#}"))?;
        Ok(cluster)
    });
    result.as_ref().map_err(|e| anyhow::anyhow!("{e}"))
}
