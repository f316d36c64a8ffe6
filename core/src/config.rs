//! Configuration plumbing both services share: parsing a service's flags from a given argument
//! list (testable without touching the process), and choosing its token verifier.

use std::path::Path;

use clap::Parser;

use crate::auth::TokenVerifier;

#[derive(Parser)]
struct Standalone<C: clap::Args> {
    #[command(flatten)]
    config: C,
}

/// Parses a service's `Config` from `args` (the first item is the program name); environment
/// variables fill the rest.
pub fn parse_from<C, I, T>(args: I) -> Result<C, clap::Error>
where
    C: clap::Args,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    Standalone::<C>::try_parse_from(args).map(|s| s.config)
}

/// The token verifier in effect: the one injected (tests, the dev stack), or one built from the
/// JWKS file the operator configured with `flag`.
pub fn token_verifier(
    injected: Option<&TokenVerifier>,
    jwks_file: Option<&Path>,
    flag: &str,
    issuer: &str,
    audience: &str,
) -> Result<TokenVerifier, String> {
    if let Some(verifier) = injected {
        return Ok(verifier.clone());
    }
    let path = jwks_file.ok_or_else(|| format!("no token keys: set {flag}"))?;
    TokenVerifier::from_jwks_file(path, issuer, audience).map_err(|e| e.to_string())
}
