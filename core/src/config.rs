//! Configuration plumbing both services share: parsing a service's flags from a given argument
//! list (testable without touching the process), and choosing its token verifier (keys from a
//! file or URL, lifetime rules).

use std::path::Path;

use clap::Parser;

use crate::auth::{TokenRules, TokenVerifier};
use crate::keys::{JwksUrl, KeySource, RefreshPolicy};

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

/// Where a service's token keys come from and what its tokens must satisfy, from its flags.
#[derive(Debug)]
pub struct TokenSettings<'a> {
    /// A verifier given directly (tests, the dev stack); the lifetime rules below still apply.
    pub injected: Option<&'a TokenVerifier>,
    /// `--jwks-file`.
    pub jwks_file: Option<&'a Path>,
    /// `--jwks-url`.
    pub jwks_url: Option<&'a str>,
    /// `--jwks-ca`: a CA the URL's server may chain to, beside the Mozilla roots.
    pub jwks_ca: Option<&'a Path>,
    /// How the file or URL is refreshed.
    pub refresh: RefreshPolicy,
    /// The flags that name a key source, for the message when none is set.
    pub flags: &'a str,
    /// Issuer, audience and lifetime rules.
    pub rules: TokenRules,
}

/// The token verifier in effect: the one injected (tests, the dev stack) under this service's
/// lifetime rules, or one loading the JWKS file or URL the operator configured. Fails when no
/// source is set, when both are, or when no key can be loaded at start: a service that could
/// authenticate nobody does not start.
pub async fn token_verifier(settings: TokenSettings<'_>) -> Result<TokenVerifier, String> {
    let rules = settings.rules;
    if let Some(verifier) = settings.injected {
        return Ok(verifier.with_lifetime(rules.max_lifetime, rules.require_iat));
    }
    let source = match (settings.jwks_file, settings.jwks_url) {
        (Some(path), None) => KeySource::File(path.to_owned()),
        (None, Some(url)) => KeySource::Url(JwksUrl::parse(url)?.trusting(settings.jwks_ca)),
        (Some(_), Some(_)) => {
            return Err(format!(
                "token keys: set one of {}, not both",
                settings.flags
            ));
        }
        (None, None) => return Err(format!("no token keys: set {}", settings.flags)),
    };
    TokenVerifier::load(source, settings.refresh, rules).await
}

/// A flag's duration parser (`humantime`: "250ms", "5m", "1h") that refuses values outside
/// `min..=max` in words: zero where it would make a tight loop, or so large that adding it to a
/// clock overflows. The bounds are humantime strings too, written beside the flag they bound.
pub fn duration_within(
    min: &'static str,
    max: &'static str,
) -> impl Fn(&str) -> Result<std::time::Duration, String> + Clone + Send + Sync + 'static {
    move |text: &str| {
        let bound = |b: &str| {
            humantime::parse_duration(b).map_err(|e| format!("bad bound {b:?}: {e} (a defect)"))
        };
        let (low, high) = (bound(min)?, bound(max)?);
        let value = humantime::parse_duration(text).map_err(|e| e.to_string())?;
        if value < low || value > high {
            return Err(format!("must be between {min} and {max}"));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed expectation is a failed test
    use std::time::Duration;

    use super::duration_within;

    #[test]
    fn durations_outside_their_bounds_are_refused_in_words() {
        let parse = duration_within("10s", "1d");
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("0s"), Err("must be between 10s and 1d".to_owned()));
        assert_eq!(
            parse("100000000years"),
            Err("must be between 10s and 1d".to_owned())
        );
        assert!(parse("soon").is_err());
    }
}
