//! Bearer tokens for the local API, verified offline.
//!
//! Tokens are JWTs signed with Ed25519 (`alg = EdDSA`, nothing else is accepted). The
//! agent holds the signing public key (from its config now, from enrollment later) and
//! checks signature, `exp` (required, 30 s leeway), `nbf` when present, `iss` and `aud`.
//! Scope: `scope` (space-separated) must hold `store-manager` or `admin`, or `role` (the
//! claim the hub's own issuer sets) must be `store_manager` or `admin`; `tenant` must be
//! this agent's tenant; a store manager's `stores` must list this store.

use serde::Deserialize;

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("a bearer token is required")]
    Missing,
    /// Signature, expiry, issuer or audience failed.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Valid, but not allowed here.
    #[error("forbidden: {0}")]
    Forbidden(String),
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    scope: String,
    /// The hub's issuer names a role instead of scopes.
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    stores: Vec<String>,
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's subject, or `local` when tokens are not required.
    pub subject: String,
}

/// Checks tokens against one public key.
#[derive(Clone)]
pub struct Verifier {
    key: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
    tenant: String,
    store: String,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("tenant", &self.tenant)
            .field("store", &self.store)
            .finish()
    }
}

impl Verifier {
    /// A verifier for `pem` (Ed25519 public key), pinned to `issuer` and `audience`.
    pub fn new(
        pem: &[u8],
        issuer: &str,
        audience: &str,
        tenant: &str,
        store: &str,
    ) -> Result<Verifier, AuthError> {
        let key = jsonwebtoken::DecodingKey::from_ed_pem(pem)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        validation.algorithms = vec![jsonwebtoken::Algorithm::EdDSA];
        validation.leeway = 30;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Ok(Verifier {
            key,
            validation,
            tenant: tenant.to_owned(),
            store: store.to_owned(),
        })
    }

    /// Checks an `Authorization` header value.
    pub fn check(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let token = header
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        if token.len() > 8 * 1024 {
            return Err(AuthError::Invalid("token longer than 8 KiB".into()));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let claims = data.claims;
        if claims.tenant.as_deref() != Some(self.tenant.as_str()) {
            return Err(AuthError::Forbidden("token is for another tenant".into()));
        }
        let scopes: Vec<&str> = claims.scope.split_whitespace().collect();
        let role = claims.role.as_deref();
        let admin = scopes.contains(&"admin") || role == Some("admin");
        let manager = scopes.contains(&"store-manager") || role == Some("store_manager");
        if !admin && !manager {
            return Err(AuthError::Forbidden(
                "scope store-manager or admin is required".into(),
            ));
        }
        if !admin && !claims.stores.iter().any(|s| s == &self.store) {
            return Err(AuthError::Forbidden(format!(
                "not a manager of store {}",
                self.store
            )));
        }
        Ok(Principal {
            subject: claims.sub,
        })
    }
}
