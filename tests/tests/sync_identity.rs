//! Device identity at the hub's sync port, against a real sync server (QUIC + mutual TLS) on
//! an embedded store: a certificate signed by another tenant's CA is refused even when it
//! names this tenant and copies a real device's serial, and a device whose session claims
//! another store than its certificate's is refused and raises an alert of its own store; a
//! session ends at the hub's maximum connection age; an expired revocation list refuses
//! devices until a fresh one is signed.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use quinn::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use storesync_edge::sync::Paths;
use storesync_edge::sync::enroll;
use storesync_hub::store::{AlertQuery, Store, StoreInfo};
use storesync_hub::sync::pki::{DeviceIdentity, parse_device_cert};
use storesync_hub::sync::server::{enroll_token, tenant_ca};
use storesync_protocol::event::Epoch;
use storesync_protocol::ids::{DeviceId, StoreId, TenantId};
use storesync_protocol::session::{EdgeAction, EdgeSession, EdgeSnapshot, SessionConfig};
use storesync_protocol::wire;

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// A hub sync server on an embedded store with tenants `acme` (stores s1, s2) and `globex`
/// (store s1), and an `acme/s1` device enrolled with a one-time token.
struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    server: storesync_hub::sync::SyncServer,
    device: Paths,
}

async fn setup() -> Setup {
    setup_with(|_| {}).await
}

async fn setup_with(tweak: impl FnOnce(&mut storesync_hub::sync::ServerOptions)) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = storesync_hub::store::sqlite::SqliteStore::open(&dir.path().join("hub.db"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    for (tenant, stores) in [("acme", &["s1", "s2"][..]), ("globex", &["s1"][..])] {
        let tenant = TenantId::new(tenant).unwrap();
        store.create_tenant(&tenant, tenant.as_str()).await.unwrap();
        for id in stores {
            store
                .upsert_store(
                    &tenant,
                    &StoreInfo {
                        store_id: StoreId::new(*id).unwrap(),
                        name: (*id).to_owned(),
                        region: "north".into(),
                        time_zone: "UTC".into(),
                    },
                )
                .await
                .unwrap();
        }
        // Both tenants have a CA, so the server trusts both.
        tenant_ca(store.as_ref(), &tenant).await.unwrap();
    }
    let acme = TenantId::new("acme").unwrap();
    let s1 = StoreId::new("s1").unwrap();
    let token = enroll_token(store.as_ref(), &acme, &s1, 600_000)
        .await
        .unwrap();
    let mut options = storesync_hub::sync::ServerOptions::new("127.0.0.1:0".parse().unwrap());
    tweak(&mut options);
    let token_key = storesync_hub::sync::TokenKey {
        pem: String::new(),
        issuer: "storesync-test".into(),
        audience: "storesync-test".into(),
    };
    let server = storesync_hub::sync::SyncServer::start(Arc::clone(&store), token_key, options)
        .await
        .unwrap();
    let device = Paths::new(&dir.path().join("edge"));
    std::fs::create_dir_all(device.dir()).unwrap();
    enroll::enroll(
        &device,
        &server.local_addr().to_string(),
        &token.parse().unwrap(),
        &acme,
        &s1,
        &DeviceId::new("d1").unwrap(),
    )
    .await
    .unwrap();
    Setup {
        _dir: dir,
        store,
        server,
        device,
    }
}

/// A device's way to the hub: its address, the hub's CA, and the certificate and key the
/// device presents.
struct Client {
    hub: SocketAddr,
    hub_ca: CertificateDer<'static>,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl Client {
    /// The enrolled device of `s`.
    fn enrolled(s: &Setup) -> Client {
        let (cert, key, hub_ca) = enroll::credentials(&s.device).unwrap();
        Client {
            hub: s.server.local_addr(),
            hub_ca,
            cert,
            key,
        }
    }

    /// Opens a sync session whose hello names `store`; `Ok` once the hub welcomed it, else
    /// why it ended.
    async fn session(&self, store: &str) -> Result<(), String> {
        self.drive(store, false).await
    }

    /// Stays in a welcomed session until it ends; why it ended.
    async fn session_until_closed(&self, store: &str) -> String {
        match self.drive(store, true).await {
            Ok(()) => unreachable!("a staying session only ends with an error"),
            Err(reason) => reason,
        }
    }

    /// A session, until welcomed unless `stay`.
    async fn drive(&self, store: &str, stay: bool) -> Result<(), String> {
        let tls = storesync_edge::sync::tls::sync_config(
            self.hub_ca.clone(),
            self.cert.clone(),
            self.key.clone_key(),
            storesync_edge::sync::ALPN_SYNC,
        )
        .map_err(|e| e.to_string())?;
        let crypto =
            quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(Arc::new(storesync_edge::sync::tls::transport()));
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let connection = endpoint
            .connect_with(config, self.hub, storesync_edge::sync::HUB_SERVER_NAME)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|e| format!("{e}: {:?}", connection.close_reason()))?;
        let config = SessionConfig::default();
        let frame_len_max = config.frame_len_max;
        let mut session = EdgeSession::new(
            config,
            EdgeSnapshot {
                tenant: TenantId::new("acme").unwrap(),
                store: StoreId::new(store).unwrap(),
                device: DeviceId::new("d1").unwrap(),
                epoch: Epoch(7),
                link: None,
                streams: Vec::new(),
            },
        );
        session.connect(now_ms());
        let mut inbox = Vec::new();
        loop {
            while let Some(frame) = session.poll_transmit() {
                send.write_all(&frame).await.map_err(|e| e.to_string())?;
            }
            while let Some(action) = session.poll_action() {
                match action {
                    EdgeAction::Connected { .. } if !stay => {
                        connection.close(0u32.into(), b"done");
                        return Ok(());
                    }
                    EdgeAction::Closed(reason) => return Err(format!("{reason:?}")),
                    _ => {}
                }
            }
            match tokio::time::timeout(Duration::from_secs(10), recv.read_chunk(64 * 1024, true))
                .await
                .map_err(|_| "no answer from the hub".to_string())?
            {
                Ok(Some(chunk)) => {
                    inbox.extend_from_slice(&chunk.bytes);
                    let now = now_ms();
                    wire::drain_frames(
                        &mut inbox,
                        frame_len_max,
                        |_, _| Err("the hub sends no compressed frames".to_string()),
                        |frame| session.handle_bytes(now, frame),
                    )?;
                }
                Ok(None) => return Err("the hub finished the stream".into()),
                Err(e) => return Err(format!("{e}: {:?}", connection.close_reason())),
            }
        }
    }
}

#[tokio::test]
async fn a_certificate_from_another_tenants_ca_is_refused() {
    let s = setup().await;
    let device = Client::enrolled(&s);
    // The enrolled device itself is welcome.
    device.session("s1").await.unwrap();

    // globex's CA signs a certificate naming acme's device, with that device's serial.
    let real = parse_device_cert(device.cert.as_ref()).unwrap();
    let globex_ca = tenant_ca(s.store.as_ref(), &TenantId::new("globex").unwrap())
        .await
        .unwrap();
    let forged_key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&forged_key)
        .unwrap();
    let identity = DeviceIdentity {
        tenant: TenantId::new("acme").unwrap(),
        store: StoreId::new("s1").unwrap(),
        device: DeviceId::new("d1").unwrap(),
    };
    for serial in [real.serial.clone(), vec![0x42; 16]] {
        let forged = globex_ca
            .issue_device(
                csr.der().as_ref(),
                &identity,
                &serial,
                SystemTime::now() - Duration::from_secs(60),
                Duration::from_secs(86_400),
            )
            .unwrap();
        let forger = Client {
            cert: forged,
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(forged_key.serialize_der())),
            hub_ca: device.hub_ca.clone(),
            hub: device.hub,
        };
        let refused = forger.session("s1").await.unwrap_err();
        assert!(
            refused.contains("does not match the hub's records")
                || refused.contains("unknown certificate"),
            "{refused}"
        );
    }
    // The real device is still welcome.
    device.session("s1").await.unwrap();
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_device_claiming_another_store_is_refused_and_alerted() {
    let s = setup().await;
    let device = Client::enrolled(&s);
    let refused = device.session("s2").await.unwrap_err();
    assert!(refused.contains("s2"), "{refused}");
    // The hub stores the alert as it closes the session: wait for it.
    let acme = TenantId::new("acme").unwrap();
    let mut alerts = Vec::new();
    for _ in 0..100 {
        alerts = s
            .store
            .alerts(&acme, &AlertQuery::newest(10))
            .await
            .unwrap();
        if !alerts.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0].alert;
    assert_eq!(alert.kind.as_str(), "chain_anomaly");
    assert_eq!(alert.store_id.as_str(), "s1", "the certificate's store");
    assert!(alert.message.contains("d1"), "{alert:?}");
    // Its own store is still welcome.
    device.session("s1").await.unwrap();
    s.server.shutdown().await;
}

/// A session is closed at the hub's maximum connection age, so a rotated or revoked
/// certificate reaches even a connection that never drops; the device reconnects.
#[tokio::test]
async fn a_session_ends_at_the_maximum_connection_age() {
    let s = setup_with(|o| o.connection_age_max = Duration::from_secs(2)).await;
    let device = Client::enrolled(&s);
    let started = std::time::Instant::now();
    let ended = device.session_until_closed("s1").await;
    let lasted = started.elapsed();
    assert!(ended.contains("maximum connection age"), "{ended}");
    assert!(
        (Duration::from_secs(2)..Duration::from_secs(8)).contains(&lasted),
        "{lasted:?}"
    );
    device.session("s1").await.unwrap();
    s.server.shutdown().await;
}

/// The hub's certificate revocation lists expire: a hub that has not signed a fresh one in
/// time refuses devices (unknown revocation status denies) instead of trusting a stale
/// list, and takes them again once it has signed a fresh one.
#[tokio::test]
async fn an_expired_revocation_list_refuses_devices_until_it_is_renewed() {
    // Lists are signed valid from a minute back: 64 s of validity leaves 4 s. No periodic
    // refresh here; a change of the trust state (a new tenant CA) signs fresh ones.
    let s = setup_with(|o| {
        o.crl_validity = Duration::from_secs(64);
        o.crl_refresh = Duration::from_secs(3600);
        o.revocation_check = Duration::from_millis(500);
    })
    .await;
    let device = Client::enrolled(&s);
    device.session("s1").await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let refused = device.session("s1").await.unwrap_err();
    assert!(refused.contains("revocation list expired"), "{refused}");
    tenant_ca(s.store.as_ref(), &TenantId::new("initech").unwrap())
        .await
        .unwrap();
    // The next check (every 500 ms) signs fresh lists: the device is taken again.
    let mut last = Err(String::new());
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        last = device.session("s1").await;
        if last.is_ok() {
            break;
        }
    }
    last.unwrap();
    s.server.shutdown().await;
}
