//! Sync with the hub over QUIC with mutual TLS.
//!
//! - [`enroll`]: one-time enrollment with a token (`storesync-edge enroll`), and renewal of a
//!   certificate that expired while the store was offline, by proof of possession of the
//!   old key. The material lands in `<data_dir>/sync/` with owner-only permissions.
//! - [`client`]: the driver of the protocol's [`storesync_protocol::EdgeSession`]: one task,
//!   one connection at a time, reconnecting with exponential backoff and jitter.
//! - [`tls`]: rustls client configurations (the pinned hub CA; the fingerprint pin used
//!   during enrollment).
//!
//! # Stream layout
//!
//! One QUIC connection to the hub, ALPN `storesync/1`, one bidirectional stream opened by
//! the agent, carrying protocol frames both ways. Event batches larger than
//! [`COMPRESS_MIN_BYTES`] travel as zstd-compressed frames. Enrollment and renewal use ALPN
//! `storesync-enroll/1` with a single request and answer on one stream. 0-RTT is off.

pub mod client;
pub mod enroll;
pub mod tls;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// ALPN of sync connections.
pub const ALPN_SYNC: &[u8] = b"storesync/1";
/// ALPN of enrollment connections.
pub const ALPN_ENROLL: &[u8] = b"storesync-enroll/1";
/// The server name in the hub's certificate.
pub const HUB_SERVER_NAME: &str = "hub.storesync.internal";
/// Frames at least this large are compressed.
pub const COMPRESS_MIN_BYTES: usize = 1024;

/// What enrollment stored, in `<data_dir>/sync/enrollment.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// The hub's sync address, `host:port`.
    pub hub: String,
    /// Tenant the certificate binds.
    pub tenant: String,
    /// Store the certificate binds.
    pub store: String,
    /// Device the certificate binds.
    pub device: String,
    /// Certificate expiry, Unix milliseconds.
    pub not_after_ms: i64,
    /// `iss` of the hub's tokens.
    pub token_issuer: String,
    /// `aud` of the hub's tokens.
    pub token_audience: String,
}

/// Where the sync material of a data directory lives.
#[derive(Debug, Clone)]
pub struct Paths {
    dir: PathBuf,
}

impl Paths {
    /// The `sync/` folder of `data_dir`.
    pub fn new(data_dir: &Path) -> Paths {
        Paths {
            dir: data_dir.join("sync"),
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `enrollment.toml`.
    pub fn enrollment(&self) -> PathBuf {
        self.dir.join("enrollment.toml")
    }

    /// The device key (PKCS#8 PEM, mode 0600).
    pub fn key(&self) -> PathBuf {
        self.dir.join("device.key")
    }

    /// The device certificate (DER).
    pub fn cert(&self) -> PathBuf {
        self.dir.join("device.der")
    }

    /// The hub CA the agent pins (DER).
    pub fn hub_ca(&self) -> PathBuf {
        self.dir.join("hub-ca.der")
    }

    /// The tenant's token-signing public key (PEM), for the local API.
    pub fn token_key(&self) -> PathBuf {
        self.dir.join("token-key.pem")
    }

    /// Reads the enrollment, `None` when the agent was never enrolled.
    pub fn load(&self) -> Result<Option<Enrollment>, String> {
        let path = self.enrollment();
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }
}

/// Writes `bytes` to `path` readable by the owner only, atomically (temp file + rename).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}
