//! Bearer tokens: the hub's own issuer (EdDSA) and verification of external ones.
//!
//! Verification is pinned: every accepted key names its algorithm (RS256 or EdDSA), issuer
//! and audience; a token whose header asks for another algorithm (including `none`, which
//! does not even parse) is refused before any signature check. `exp` is required, `nbf` is
//! checked when present, both with an explicit leeway.
//!
//! Tenancy: the hub's own tokens name their tenant in the `tenant` claim. An external
//! identity provider is configured for exactly one tenant ([`VerifyKey::tenant`]), and its
//! tokens are that tenant's: a token it signed without a `tenant` claim gets the provider's
//! tenant, and one whose claim names any other tenant is refused (401), whatever its role. A
//! provider can therefore never speak for a tenant it was not configured for.
//!
//! An external provider's keys come from a PEM, a JWKS file (both read at start) or a JWKS
//! URL ([`JwksSource`]): fetched at start, again every `auth.jwks_refresh_s`, and when a
//! token of that issuer names a key the set does not hold (the provider rotated its keys) —
//! at most once per `auth.jwks_refetch_min_s`, whatever the tokens say. A failed fetch keeps
//! the last good set; a provider unreachable at start leaves its tokens refused until a
//! fetch succeeds, and the hub starts anyway.
//!
//! The hub's issuer signs with an Ed25519 key kept in a PEM file (created by `init`). Edge
//! agents verify managers' tokens offline with the tenant's public key, which admins fetch
//! from `GET /api/v1/auth/signing-key` or `storesync-hub signing-key`.
//!
//! Passwords and client secrets are stored as argon2id PHC strings; refresh tokens are
//! random, stored only as BLAKE3 hashes, spent once and rotated; a replayed refresh token
//! revokes its whole family.

use std::path::Path;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm as ArgonAlgorithm, Argon2, Params, Version};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use storesync_protocol::ids::{StoreId, TenantId};

use crate::store::Role;

/// Why a token or a credential was refused. Clients only ever see "401".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No bearer token.
    #[error("missing bearer token")]
    Missing,
    /// The token is malformed, forged, expired, not yet valid, or for someone else.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// A key or key set could not be loaded.
    #[error("key: {0}")]
    Key(String),
}

/// The claims the hub issues and expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Subject: user name or client id.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at.
    #[serde(default)]
    pub iat: u64,
    /// Tenant. The hub's own tokens always carry it; an external provider's may leave it
    /// out (the provider's configured tenant is then used, see the module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Role (`admin`, `analyst`, `store_manager`).
    pub role: String,
    /// Assigned stores (store managers).
    #[serde(default)]
    pub stores: Vec<String>,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Tenant.
    pub tenant: TenantId,
    /// Subject.
    pub subject: String,
    /// Role.
    pub role: Role,
    /// Assigned stores (store managers).
    pub stores: Vec<StoreId>,
}

/// One key tokens may be signed with.
#[derive(Debug, Clone)]
pub struct VerifyKey {
    /// Key id, matched against the header's `kid` when both are present.
    pub kid: Option<String>,
    /// The only algorithm this key accepts.
    pub algorithm: Algorithm,
    /// The key.
    pub key: DecodingKey,
    /// Expected issuer.
    pub issuer: String,
    /// Expected audience.
    pub audience: String,
    /// The one tenant tokens verified with this key may act for (an external provider's
    /// key); `None` for the hub's own keys, whose tokens name their tenant.
    pub tenant: Option<TenantId>,
}

/// Verifies bearer tokens against a set of pinned keys, and the keys of JWKS sources.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: Vec<VerifyKey>,
    /// Providers whose keys are fetched, and replaced, at run time.
    sources: Vec<Arc<JwksSource>>,
    leeway_s: u64,
    /// Tokens whose signature and claims were checked: BLAKE3 of the exact token text →
    /// the caller and the last second (`exp` + leeway) it stays acceptable. A dashboard
    /// sends one token with every request; checking its signature once instead of every
    /// time is most of the cost of a cached response.
    verified: std::sync::Arc<std::sync::Mutex<VerifiedMemo>>,
}

/// Verified token digests → caller and last acceptable second.
type VerifiedMemo = std::collections::HashMap<[u8; 32], (Caller, u64)>;

/// Verified tokens remembered at most (the memo is emptied when full).
const VERIFIED_MAX: usize = 10_000;

impl Verifier {
    /// A verifier over `keys` with `leeway_s` seconds of clock leeway.
    pub fn new(keys: Vec<VerifyKey>, leeway_s: u64) -> Verifier {
        Verifier {
            keys,
            sources: Vec::new(),
            leeway_s,
            verified: Arc::new(std::sync::Mutex::new(VerifiedMemo::new())),
        }
    }

    /// The same verifier, also accepting the current keys of `sources`.
    pub fn with_sources(mut self, sources: Vec<Arc<JwksSource>>) -> Verifier {
        self.sources = sources;
        self
    }

    /// Checks a token and returns its caller. A token already verified is accepted again
    /// without its signature check while the clock is within its `exp` plus the leeway.
    /// A token of a JWKS source's issuer that names a key the source does not hold may wait
    /// for one fetch of the source's keys (see [`JwksSource`]).
    pub async fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let digest = *blake3::hash(token.as_bytes()).as_bytes();
        let now_s = crate::store::now_ms().max(0) as u64 / 1000;
        {
            let mut memo = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            match memo.get(&digest) {
                Some((caller, until)) if now_s <= *until => return Ok(caller.clone()),
                Some(_) => {
                    memo.remove(&digest);
                }
                None => {}
            }
        }
        let (caller, exp) = self.verify_signed(token).await?;
        let mut memo = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if memo.len() >= VERIFIED_MAX {
            memo.clear();
        }
        memo.insert(digest, (caller.clone(), exp.saturating_add(self.leeway_s)));
        Ok(caller)
    }

    async fn verify_signed(&self, token: &str) -> Result<(Caller, u64), AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let fetched: Vec<Arc<Vec<VerifyKey>>> = self.sources.iter().map(|s| s.keys()).collect();
        let keys = self
            .keys
            .iter()
            .chain(fetched.iter().flat_map(|k| k.iter()));
        let last = match self.verify_with(token, &header, keys) {
            Ok(verified) => return Ok(verified),
            Err(e) => e,
        };
        // The provider may have rotated its keys: a token of a source's issuer naming a key
        // the source does not hold asks for one (rate-limited) fetch, then one more try.
        // The issuer is read unverified only to pick the source.
        let Some(issuer) = unverified_issuer(token) else {
            return Err(last);
        };
        for (source, keys) in self.sources.iter().zip(&fetched) {
            if source.issuer != issuer || keys.iter().any(|k| k.accepts(&header)) {
                continue;
            }
            source.refetch_unknown_key().await;
            let keys = source.keys();
            if let Ok(verified) = self.verify_with(token, &header, keys.iter()) {
                return Ok(verified);
            }
        }
        Err(last)
    }

    /// Checks `token` against those of `keys` its header may name.
    fn verify_with<'a>(
        &self,
        token: &str,
        header: &Header,
        keys: impl Iterator<Item = &'a VerifyKey>,
    ) -> Result<(Caller, u64), AuthError> {
        let mut last = AuthError::Invalid(format!("no key accepts {:?}", header.alg));
        for key in keys.filter(|k| k.accepts(header)) {
            let mut validation = Validation::new(key.algorithm);
            validation.algorithms = vec![key.algorithm];
            validation.leeway = self.leeway_s;
            validation.validate_exp = true;
            validation.validate_nbf = true;
            validation.set_issuer(&[&key.issuer]);
            validation.set_audience(&[&key.audience]);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => {
                    let exp = data.claims.exp;
                    // A refused tenant is not final: the same provider may be configured
                    // (with the same key) for another tenant too.
                    match caller_of(data.claims, key.tenant.as_ref()) {
                        Ok(caller) => return Ok((caller, exp)),
                        Err(e) => last = e,
                    }
                }
                Err(e) => last = AuthError::Invalid(e.to_string()),
            }
        }
        Err(last)
    }
}

impl VerifyKey {
    /// Whether a token with `header` may be checked with this key: the same algorithm, and
    /// the same key id when both name one.
    fn accepts(&self, header: &Header) -> bool {
        self.algorithm == header.alg
            && match (&self.kid, &header.kid) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// The `iss` claim of a token, unverified: only to pick which JWKS source to refresh.
fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine;
    #[derive(Deserialize)]
    struct Issued {
        iss: String,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice::<Issued>(&bytes).ok().map(|c| c.iss)
}

/// The caller a verified token speaks for. `bound` is the tenant of the key that verified
/// it (an external provider's), which the token's own claim may only repeat.
fn caller_of(claims: Claims, bound: Option<&TenantId>) -> Result<Caller, AuthError> {
    let tenant = match (bound, claims.tenant) {
        (None, Some(claimed)) => {
            TenantId::new(claimed).map_err(|e| AuthError::Invalid(format!("tenant: {e}")))?
        }
        (None, None) => return Err(AuthError::Invalid("tenant: missing".into())),
        (Some(bound), None) => bound.clone(),
        (Some(bound), Some(claimed)) if claimed == bound.as_str() => bound.clone(),
        (Some(bound), Some(_)) => {
            return Err(AuthError::Invalid(format!(
                "tenant: the issuer speaks only for tenant {bound}"
            )));
        }
    };
    Ok(Caller {
        tenant,
        role: Role::parse(&claims.role)
            .ok_or_else(|| AuthError::Invalid(format!("role {:?}", claims.role)))?,
        stores: claims
            .stores
            .into_iter()
            .map(StoreId::new)
            .collect::<Result<_, _>>()
            .map_err(|e| AuthError::Invalid(format!("stores: {e}")))?,
        subject: claims.sub,
    })
}

/// Appended to the API's audience in live-stream tickets.
pub const TICKET_AUDIENCE_SUFFIX: &str = "#live-ticket";

/// The hub's own token issuer (Ed25519).
#[derive(Clone)]
pub struct Issuer {
    key: EncodingKey,
    public_pem: String,
    public_raw: [u8; 32],
    /// `iss` of issued tokens.
    pub issuer: String,
    /// `aud` of issued tokens.
    pub audience: String,
    /// Key id.
    pub kid: String,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .finish()
    }
}

/// A new Ed25519 private key as PKCS#8 PEM.
pub fn generate_signing_key_pem() -> Result<String, AuthError> {
    let key = SigningKey::generate(&mut OsRng);
    key.to_pkcs8_pem(LineEnding::LF)
        .map(|p| p.to_string())
        .map_err(|e| AuthError::Key(e.to_string()))
}

impl Issuer {
    /// From a PKCS#8 PEM Ed25519 private key.
    pub fn from_pem(pem: &str, issuer: &str, audience: &str) -> Result<Issuer, AuthError> {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        let signing = SigningKey::from_pkcs8_pem(pem).map_err(|e| AuthError::Key(e.to_string()))?;
        let verifying = signing.verifying_key();
        let public_pem = verifying
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| AuthError::Key(e.to_string()))?;
        let public_raw = verifying.to_bytes();
        let kid = blake3::hash(&public_raw).to_hex()[..16].to_string();
        Ok(Issuer {
            key: EncodingKey::from_ed_pem(pem.as_bytes())
                .map_err(|e| AuthError::Key(e.to_string()))?,
            public_pem,
            public_raw,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            kid,
        })
    }

    /// Loads the key at `path`, creating it first when it does not exist.
    pub fn load_or_create(path: &Path, issuer: &str, audience: &str) -> Result<Issuer, AuthError> {
        if !path.exists() {
            let pem = generate_signing_key_pem()?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| AuthError::Key(e.to_string()))?;
            }
            write_private(path, &pem)
                .map_err(|e| AuthError::Key(format!("{}: {e}", path.display())))?;
        }
        let pem = std::fs::read_to_string(path)
            .map_err(|e| AuthError::Key(format!("{}: {e}", path.display())))?;
        Issuer::from_pem(&pem, issuer, audience)
    }

    /// The public key (SPKI PEM) edge agents and other services verify with.
    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }

    /// The public key as a JWK (`OKP`, `Ed25519`).
    pub fn public_jwk(&self) -> serde_json::Value {
        use base64::Engine;
        serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": self.kid,
            "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.public_raw),
        })
    }

    /// The verifying key for this issuer's tokens.
    pub fn verify_key(&self) -> Result<VerifyKey, AuthError> {
        Ok(VerifyKey {
            kid: Some(self.kid.clone()),
            algorithm: Algorithm::EdDSA,
            key: DecodingKey::from_ed_pem(self.public_pem.as_bytes())
                .map_err(|e| AuthError::Key(e.to_string()))?,
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            tenant: None,
        })
    }

    /// Signs an access token for `caller`, valid `ttl_s` seconds from `now_s`.
    pub fn issue(&self, caller: &Caller, now_s: u64, ttl_s: u64) -> Result<String, AuthError> {
        self.issue_for(&self.audience, caller, now_s, ttl_s)
    }

    /// The audience of live-stream tickets: the API's audience with a suffix, so that a
    /// ticket is never accepted as an access token and an access token never as a ticket.
    pub fn ticket_audience(&self) -> String {
        format!("{}{TICKET_AUDIENCE_SUFFIX}", self.audience)
    }

    /// Signs a live-stream ticket for `caller` (see `api::LIVE_TICKET_TTL_S`).
    pub fn issue_ticket(
        &self,
        caller: &Caller,
        now_s: u64,
        ttl_s: u64,
    ) -> Result<String, AuthError> {
        self.issue_for(&self.ticket_audience(), caller, now_s, ttl_s)
    }

    /// A verifier that accepts this issuer's live-stream tickets and nothing else.
    pub fn ticket_verifier(&self, leeway_s: u64) -> Result<Verifier, AuthError> {
        let mut key = self.verify_key()?;
        key.audience = self.ticket_audience();
        Ok(Verifier::new(vec![key], leeway_s))
    }

    fn issue_for(
        &self,
        audience: &str,
        caller: &Caller,
        now_s: u64,
        ttl_s: u64,
    ) -> Result<String, AuthError> {
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: audience.to_owned(),
            sub: caller.subject.clone(),
            exp: now_s + ttl_s,
            nbf: Some(now_s),
            iat: now_s,
            tenant: Some(caller.tenant.as_str().to_owned()),
            role: caller.role.as_str().to_owned(),
            stores: caller
                .stores
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| AuthError::Key(e.to_string()))
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

/// Parses a configured algorithm name; only RS256 and EdDSA are accepted.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, AuthError> {
    match name {
        "RS256" => Ok(Algorithm::RS256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        other => Err(AuthError::Key(format!(
            "algorithm {other:?} is not accepted (RS256 or EdDSA)"
        ))),
    }
}

/// A decoding key from a PEM public key for `algorithm`.
pub fn key_from_pem(algorithm: Algorithm, pem: &str) -> Result<DecodingKey, AuthError> {
    match algorithm {
        Algorithm::RS256 => DecodingKey::from_rsa_pem(pem.as_bytes()),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem.as_bytes()),
        _ => return Err(AuthError::Key("unsupported algorithm".into())),
    }
    .map_err(|e| AuthError::Key(e.to_string()))
}

/// Keys from a JWKS document of the provider `issuer` for `tenant`; each key's algorithm is
/// pinned from its `alg` (or, without one, from its key type) and only RS256 and EdDSA keys
/// are kept.
pub fn keys_from_jwks(
    json: &str,
    issuer: &str,
    audience: &str,
    tenant: &TenantId,
) -> Result<Vec<VerifyKey>, AuthError> {
    let set: JwkSet =
        serde_json::from_str(json).map_err(|e| AuthError::Key(format!("JWKS: {e}")))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
            (Some(jsonwebtoken::jwk::KeyAlgorithm::RS256), _) => Algorithm::RS256,
            (Some(jsonwebtoken::jwk::KeyAlgorithm::EdDSA), _) => Algorithm::EdDSA,
            (None, jsonwebtoken::jwk::AlgorithmParameters::RSA(_)) => Algorithm::RS256,
            (None, jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_)) => Algorithm::EdDSA,
            _ => continue,
        };
        keys.push(VerifyKey {
            kid: jwk.common.key_id.clone(),
            algorithm,
            key: DecodingKey::from_jwk(jwk).map_err(|e| AuthError::Key(e.to_string()))?,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            tenant: Some(tenant.clone()),
        });
    }
    Ok(keys)
}

/// Fetches a JWKS document over plain HTTP (`http://host:port/path`), for identity
/// providers reached through a local sidecar or proxy; TLS URLs are refused (put the JWKS
/// in a file instead).
pub async fn fetch_jwks(url: &str) -> Result<String, AuthError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        AuthError::Key("JWKS URL must be http:// (use jwks_path for other sources)".into())
    })?;
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let addr = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:80")
    };
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(&addr).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: application/json\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut body = Vec::new();
        stream.take(1 << 20).read_to_end(&mut body).await?;
        Ok::<_, std::io::Error>(body)
    };
    let body = tokio::time::timeout(std::time::Duration::from_secs(10), fetch)
        .await
        .map_err(|_| AuthError::Key("JWKS fetch timed out".into()))?
        .map_err(|e| AuthError::Key(format!("JWKS fetch: {e}")))?;
    let text = String::from_utf8_lossy(&body);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| AuthError::Key("JWKS: bad HTTP response".into()))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(AuthError::Key(format!(
            "JWKS: {}",
            head.lines().next().unwrap_or("")
        )));
    }
    Ok(body.to_owned())
}

/// Retry delay of a periodic JWKS fetch that failed (unless the period is shorter).
const JWKS_RETRY: Duration = Duration::from_secs(30);

/// The keys an identity provider publishes at a JWKS URL, kept current.
///
/// [`JwksSource::refresh`] fetches the document and replaces the key set; a failed fetch, or
/// a document without one usable key, keeps the last good set (and is logged, with the
/// issuer and URL). [`JwksSource::spawn_refresh`] does that periodically;
/// [`Verifier::verify`] does it when a token of this issuer names a key the set does not
/// hold, but never sooner than `refetch_min` after the previous attempt, so tokens with
/// made-up key ids cannot make the hub hammer the provider. Concurrent requests for a fetch
/// wait for the one under way.
#[derive(Debug)]
pub struct JwksSource {
    url: String,
    issuer: String,
    audience: String,
    tenant: TenantId,
    refetch_min: Duration,
    /// The last good key set, swapped whole.
    keys: RwLock<Arc<Vec<VerifyKey>>>,
    /// Held while fetching; when the last fetch was attempted.
    attempted: tokio::sync::Mutex<Option<Instant>>,
}

impl JwksSource {
    /// A source of `issuer`'s keys for `tenant` at `url` (`http://` only, see
    /// [`fetch_jwks`]), holding no key until its first successful [`JwksSource::refresh`].
    pub fn new(
        url: &str,
        issuer: &str,
        audience: &str,
        tenant: &TenantId,
        refetch_min: Duration,
    ) -> JwksSource {
        JwksSource {
            url: url.to_owned(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            tenant: tenant.clone(),
            refetch_min,
            keys: RwLock::new(Arc::new(Vec::new())),
            attempted: tokio::sync::Mutex::new(None),
        }
    }

    /// The current key set.
    pub fn keys(&self) -> Arc<Vec<VerifyKey>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Fetches the keys now and replaces the set; on failure the last good set stays and
    /// the error is logged and returned. Returns the number of keys.
    pub async fn refresh(&self) -> Result<usize, AuthError> {
        let mut attempted = self.attempted.lock().await;
        self.fetch(&mut attempted).await
    }

    /// A fetch on behalf of a token naming a key the set does not hold: skipped when the
    /// last attempt is less than `refetch_min` old (also when it finished while this call
    /// waited for it).
    async fn refetch_unknown_key(&self) {
        let mut attempted = self.attempted.lock().await;
        if attempted.is_some_and(|at| at.elapsed() < self.refetch_min) {
            return;
        }
        tracing::info!(issuer = %self.issuer, "a token names a key the JWKS does not hold; fetching it again");
        let _ = self.fetch(&mut attempted).await;
    }

    async fn fetch(&self, attempted: &mut Option<Instant>) -> Result<usize, AuthError> {
        *attempted = Some(Instant::now());
        let fetched = match fetch_jwks(&self.url).await {
            Ok(text) => keys_from_jwks(&text, &self.issuer, &self.audience, &self.tenant),
            Err(e) => Err(e),
        }
        .and_then(|keys| {
            if keys.is_empty() {
                Err(AuthError::Key("JWKS: no RS256 or EdDSA key".into()))
            } else {
                Ok(keys)
            }
        });
        match fetched {
            Ok(keys) => {
                let count = keys.len();
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
                tracing::debug!(issuer = %self.issuer, keys = count, "JWKS keys fetched");
                Ok(count)
            }
            Err(e) => {
                tracing::warn!(
                    issuer = %self.issuer,
                    url = %self.url,
                    error = %e,
                    kept = self.keys().len(),
                    "JWKS fetch failed; keeping the last good keys"
                );
                Err(e)
            }
        }
    }

    /// Fetches the keys again every `period` (after a failure, within [`JWKS_RETRY`] when
    /// the period is longer), until the source is dropped.
    pub fn spawn_refresh(self: &Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()> {
        let period = period.max(Duration::from_secs(1));
        let retry = period.min(JWKS_RETRY);
        let source: Weak<JwksSource> = Arc::downgrade(self);
        let mut delay = if self.keys().is_empty() {
            retry
        } else {
            period
        };
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(delay).await;
                let Some(source) = source.upgrade() else {
                    break;
                };
                delay = match source.refresh().await {
                    Ok(_) => period,
                    Err(_) => retry,
                };
            }
        })
    }
}

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashCost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
}

impl Default for HashCost {
    fn default() -> Self {
        // OWASP's argon2id recommendation.
        HashCost {
            memory_kib: 19_456,
            iterations: 2,
        }
    }
}

/// Hashes a password or client secret into a PHC string.
pub fn hash_secret(secret: &str, cost: HashCost) -> Result<String, AuthError> {
    let params = Params::new(cost.memory_kib, cost.iterations, 1, None)
        .map_err(|e| AuthError::Key(e.to_string()))?;
    let argon = Argon2::new(ArgonAlgorithm::Argon2id, Version::V0x13, params);
    let salt = SaltString::generate(&mut OsRng);
    argon
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Key(e.to_string()))
}

/// Whether `secret` matches the PHC string (its own parameters are used).
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|hash| {
            Argon2::default()
                .verify_password(secret.as_bytes(), &hash)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A new refresh token for `tenant`: `tenant~random`. Returns (token, its hash).
pub fn new_refresh_token(tenant: &TenantId) -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let token = format!("{}~{secret}", tenant.as_str());
    let hash = refresh_hash(&token);
    (token, hash)
}

/// The stored hash of a refresh token.
pub fn refresh_hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// The tenant a refresh token belongs to.
pub fn refresh_tenant(token: &str) -> Option<TenantId> {
    token
        .split_once('~')
        .and_then(|(t, _)| TenantId::new(t).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now_s() -> u64 {
        crate::store::now_ms() as u64 / 1000
    }

    #[tokio::test]
    async fn a_remembered_token_still_expires_and_a_altered_one_is_checked_afresh() {
        let issuer = Issuer::from_pem(&generate_signing_key_pem().unwrap(), "hub", "api").unwrap();
        let verifier = Verifier::new(vec![issuer.verify_key().unwrap()], 0);
        let caller = Caller {
            tenant: TenantId::new("acme").unwrap(),
            subject: "alice".into(),
            role: Role::Analyst,
            stores: Vec::new(),
        };
        let token = issuer.issue(&caller, now_s(), 1).unwrap();
        assert_eq!(verifier.verify(&token).await.unwrap(), caller);
        assert_eq!(verifier.verify(&token).await.unwrap(), caller, "remembered");
        // One character of the signature changed: not the remembered token.
        let mut forged = token.clone().into_bytes();
        let last = forged.len() - 2;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        assert!(
            verifier
                .verify(&String::from_utf8(forged).unwrap())
                .await
                .is_err()
        );
        // Past exp (no leeway), the remembered token is refused like any other.
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        assert!(verifier.verify(&token).await.is_err());
    }
}
