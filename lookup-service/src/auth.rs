//! Who is calling, decided once per call in front of the handler: the interceptor verifies the
//! NHS token, turns its claims into a typed caller (`identity`), applies the caller's rate limits
//! (per user and per organisation), and puts the caller in the request's extensions. The handler
//! never sees a token. `cpis_core::auth::FreshKeys` in front of it fetches the keys again first
//! when a token names a key not yet known.

use std::sync::Arc;

use cpis_core::{auth::TokenVerifier, rate::RateLimit};
use tonic::{Request, Status, service::Interceptor};

use crate::error::LookupError;
use crate::identity::{Caller, ClaimsError, NhsClaims};

/// The caller of a lookup, as the interceptor found it.
#[derive(Clone, Debug)]
pub enum Authenticated {
    /// A valid identity in a care setting CP-IS serves.
    Caller(Box<Caller>),
    /// A valid identity whose care setting CP-IS does not serve: the role policy refuses it
    /// (after the request is read, so the refusal is logged with the access asked for).
    UnservedSetting {
        /// The caller's organisation (ODS code as the token gave it), for the security log.
        org: String,
    },
}

/// Lookups allowed per caller.
#[derive(Debug)]
pub struct LookupLimits {
    /// Per person (or system with its responsible person).
    pub per_user: RateLimit,
    /// Per organisation (ODS code).
    pub per_org: RateLimit,
}

/// The lookup service's interceptor (see the module).
#[derive(Clone, Debug)]
pub struct NhsAuth {
    verifier: TokenVerifier,
    limits: Arc<LookupLimits>,
}

impl NhsAuth {
    /// Verifies tokens with `verifier` and applies `limits`.
    pub fn new(verifier: TokenVerifier, limits: Arc<LookupLimits>) -> Self {
        Self { verifier, limits }
    }
}

impl Interceptor for NhsAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let claims: NhsClaims = self
            .verifier
            .verify_metadata(request.metadata())
            .map_err(LookupError::from)?;
        let authenticated = match claims.into_caller() {
            Err(ClaimsError::Invalid(error)) => return Err(LookupError::from(error).into()),
            Err(ClaimsError::UnknownCareSetting { org }) => {
                // Refused by the policy later, but counted here: refusals cost log lines too.
                self.limits.per_org.check(&org)?;
                Authenticated::UnservedSetting { org }
            }
            Ok(caller) => {
                // The person first: one busy user must not spend the organisation's allowance.
                self.limits.per_user.check(&caller.accessor.key())?;
                self.limits
                    .per_org
                    .check(caller.accessor.ods_code().as_str())?;
                Authenticated::Caller(Box::new(caller))
            }
        };
        request.extensions_mut().insert(authenticated);
        Ok(request)
    }
}
