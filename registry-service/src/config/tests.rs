//! Flags and environment parse as documented, with sensible defaults; bad values are refused in words.

use super::*;

#[test]
fn flags_parse_without_touching_the_environment() {
    let config = Config::try_parse_from([
        "registry",
        "--database-url",
        "postgres://cpis@db/cpis",
        "--shutdown-grace",
        "3s",
        "--upload-chunk",
        "500",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        config.database_url,
        Some(DatabaseUrl::Postgres(_))
    ));
    assert_eq!(config.server.shutdown_grace, Duration::from_secs(3));
    assert_eq!(config.upload_chunk, 500);
    // The password-bearing URL never shows in Debug output.
    let shown = format!("{config:?}");
    assert!(!shown.contains("cpis@db"), "{shown}");
}

#[test]
fn token_key_flags_parse_with_sensible_defaults() {
    let defaults = Config::try_parse_from(["registry"]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (
            defaults.jwks_refresh,
            defaults.jwks_min_refetch,
            defaults.token_max_lifetime,
            defaults.token_require_iat,
        ),
        (
            Duration::from_secs(300),
            Duration::from_secs(10),
            Duration::from_secs(24 * 3600),
            true
        )
    );
    let config = Config::try_parse_from([
        "registry",
        "--jwks-url",
        "https://idp.example/jwks",
        "--jwks-min-refetch",
        "30s",
        "--token-max-lifetime",
        "2h",
        "--token-require-iat",
        "false",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.jwks_url.as_deref(), Some("https://idp.example/jwks"));
    assert_eq!(config.jwks_min_refetch, Duration::from_secs(30));
    assert_eq!(config.token_max_lifetime, Duration::from_secs(7200));
    assert!(!config.token_require_iat);
}

#[test]
fn council_certificates_revocation_and_bounds_are_configurable() {
    let config = Config::try_parse_from([
        "registry",
        "--council-client-ca",
        "councils.pem",
        "--council-client-crl",
        "a.crl,b.crl",
        "--council-identity",
        "{ods}.councils.example",
        "--internal-client-ca",
        "ca.pem",
        "--internal-client-crl",
        "internal.crl",
        "--certificate-connection-age",
        "30m",
        "--max-pending-handshakes-per-source",
        "500",
        "--jwks-url",
        "https://idp.example/jwks",
        "--jwks-ca",
        "idp-ca.pem",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.council_client_ca,
        Some(PathBuf::from("councils.pem"))
    );
    assert_eq!(config.council_client_crl.len(), 2);
    assert_eq!(config.council_identity, "{ods}.councils.example");
    assert_eq!(config.internal_client_crl, [PathBuf::from("internal.crl")]);
    assert_eq!(config.certificate_connection_age, Duration::from_secs(1800));
    assert_eq!(config.server.max_pending_handshakes_per_source, 500);
    assert_eq!(config.server.max_pending_handshakes, 1024);
    assert_eq!(config.jwks_ca, Some(PathBuf::from("idp-ca.pem")));
    // Refused in words: an identity without {ods}, a CRL without its CA, a zero refresh
    // (a tight loop), a timeout that would overflow a clock.
    for refused in [
        &["registry", "--council-identity", "spiffe://cpis/council"][..],
        &["registry", "--council-client-crl", "a.crl"],
        &["registry", "--jwks-refresh", "0s"],
        &["registry", "--handshake-timeout", "1000000000d"],
        &["registry", "--max-pending-handshakes", "0"],
    ] {
        assert!(Config::try_parse_from(refused).is_err(), "{refused:?}");
    }
}

#[test]
fn tls_files_and_internal_callers_are_configurable() {
    let config = Config::try_parse_from([
        "registry",
        "--tls-cert",
        "server.pem",
        "--tls-key",
        "server.key",
        "--internal-client-ca",
        "ca.pem",
        "--disclosure-identities",
        "spiffe://cpis/lookup,lookup.cpis.internal",
        "--operator-identities",
        "spiffe://cpis/operator",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.disclosure_identities,
        ["spiffe://cpis/lookup", "lookup.cpis.internal"]
    );
    assert_eq!(config.operator_identities, ["spiffe://cpis/operator"]);
    assert_eq!(
        config.server.tls.tls_cert,
        Some(PathBuf::from("server.pem"))
    );
    assert!(!config.server.tls.insecure_plaintext);
    // A certificate without its key (or the reverse) is a usage error, not a silent
    // plaintext start.
    assert!(Config::try_parse_from(["registry", "--tls-cert", "server.pem"]).is_err());
    assert!(Config::try_parse_from(["registry", "--internal-tls-key", "k.pem"]).is_err());
}

#[test]
fn enumeration_thresholds_have_defaults_and_can_be_switched_off() {
    let defaults = Config::try_parse_from(["registry"]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(defaults.enumeration_limits(), EnumerationLimits::DEFAULT);
    let config = Config::try_parse_from([
        "registry",
        "--enumeration-user-per-hour",
        "5",
        "--enumeration-user-per-day",
        "0",
        "--enumeration-system-per-hour",
        "50",
        "--enumeration-system-per-day",
        "500",
        "--enumeration-organisation-per-hour",
        "20",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.enumeration_limits(),
        EnumerationLimits {
            user_per_hour: 5,
            user_per_day: 0,
            system_per_hour: 50,
            system_per_day: 500,
            organisation_per_hour: 20,
        }
    );
    assert!(Config::try_parse_from(["registry", "--enumeration-user-per-hour", "-1"]).is_err());
}

#[test]
fn bad_database_url_is_refused() {
    assert!(Config::try_parse_from(["registry", "--database-url", "mysql://x"]).is_err());
}
