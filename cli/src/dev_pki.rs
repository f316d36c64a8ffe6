//! The dev stack's certificates: a dev CA, a server certificate for `127.0.0.1`/`localhost`, and
//! client certificates for the lookup service (`spiffe://cpis/lookup`) and an operator
//! (`spiffe://cpis/operator`), kept in `DATA_DIR/tls/` across runs and issued anew (CA and all)
//! when any is missing, unreadable or within a day of expiry. They run the registry's internal
//! link with mutual TLS, as production does.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use chrono::Datelike as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The lookup service's identity, admitted to the registry's disclosure service.
pub const LOOKUP_IDENTITY: &str = "spiffe://cpis/lookup";
/// The dev operator's identity, admitted to the registry's operator service.
pub const OPERATOR_IDENTITY: &str = "spiffe://cpis/operator";

/// A certificate file and its key file.
#[derive(Clone, Debug)]
pub struct Pair {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, owner-readable only).
    pub key: PathBuf,
}

/// Where the dev certificates are.
#[derive(Clone, Debug)]
pub struct DevPki {
    /// The dev CA's certificate.
    pub ca: PathBuf,
    /// The registry's (and lookup service's) server certificate.
    pub server: Pair,
    /// The lookup service's client certificate.
    pub lookup: Pair,
    /// The dev operator's client certificate.
    pub operator: Pair,
}

impl DevPki {
    fn at(dir: &Path) -> Self {
        let pair = |name: &str| Pair {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        Self {
            ca: dir.join("ca.pem"),
            server: pair("server"),
            lookup: pair("lookup"),
            operator: pair("operator"),
        }
    }

    fn certificates(&self) -> [&Path; 4] {
        [
            &self.ca,
            &self.server.cert,
            &self.lookup.cert,
            &self.operator.cert,
        ]
    }
}

/// The dev certificates under `data_dir`, issued (again) when needed.
pub fn ensure(data_dir: &Path) -> anyhow::Result<DevPki> {
    let dir = data_dir.join("tls");
    let pki = DevPki::at(&dir);
    let soon = SystemTime::now() + Duration::from_secs(24 * 3600);
    let usable = pki.certificates().iter().all(|path| {
        cpis_core::tls::load_certificates(path)
            .ok()
            .and_then(|certs| certs.first().and_then(cpis_core::tls::not_after))
            .is_some_and(|expiry| expiry > soon)
    }) && [&pki.server.key, &pki.lookup.key, &pki.operator.key]
        .iter()
        .all(|key| key.exists());
    if !usable {
        issue(&dir, &pki)?;
        tracing::info!(dir = %dir.display(), "dev certificates issued");
    }
    Ok(pki)
}

/// Issues a new dev CA and every certificate, valid from the start of this month for a year.
fn issue(dir: &Path, pki: &DevPki) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let today = chrono::Utc::now().date_naive();
    let (year, month) = (today.year(), u8::try_from(today.month()).unwrap_or(1));
    let validity = |params: &mut CertificateParams| {
        params.not_before = rcgen::date_time_ymd(year, month, 1);
        params.not_after = rcgen::date_time_ymd(year + 1, month, 1);
    };

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "CP-IS dev CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let leaf = |pair: &Pair, name: &str, sans: Vec<SanType>, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("CP-IS dev {name}"));
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        validity(&mut params);
        let cert = params.signed_by(&key, &issuer)?;
        write(&pair.key, key.serialize_pem().as_bytes(), true)?;
        write(&pair.cert, cert.pem().as_bytes(), false)
    };
    leaf(
        &pki.server,
        "server",
        vec![
            SanType::IpAddress([127, 0, 0, 1].into()),
            SanType::DnsName("localhost".try_into()?),
        ],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    leaf(
        &pki.lookup,
        "lookup service",
        vec![SanType::URI(LOOKUP_IDENTITY.try_into()?)],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    leaf(
        &pki.operator,
        "operator",
        vec![SanType::URI(OPERATOR_IDENTITY.try_into()?)],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    // The CA last: a crash half-way leaves no CA file, so the next run issues everything again.
    write(&pki.ca, ca_cert.pem().as_bytes(), false)
}

/// Replaces `path` with `bytes` (a key readable by its owner only).
fn write(path: &Path, bytes: &[u8], private: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let partial = path.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let mode = if private { 0o600 } else { 0o644 };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&partial)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("cannot write {}", path.display()))
}
