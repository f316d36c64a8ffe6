//! A throwaway PKI for tests (rcgen, ECDSA P-256): a CA, a server certificate for
//! `127.0.0.1`/`localhost`, client certificates for the lookup service's and an operator's
//! identities, and whatever else a test needs (another CA, an expired certificate), all written
//! as PEM files in a temporary directory the way an operator would provide them.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// The lookup service's identity (SAN URI), admitted to `DisclosureService` in every stack.
pub const LOOKUP_IDENTITY: &str = "spiffe://cpis/lookup";
/// An operator's identity (SAN URI), admitted to `OperatorService` in every stack.
pub const OPERATOR_IDENTITY: &str = "spiffe://cpis/operator";

/// A certificate and its key, as PEM text and as files.
#[derive(Clone, Debug)]
pub struct PemPair {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PKCS#8 PEM).
    pub key_pem: String,
    /// The certificate's file.
    pub cert: PathBuf,
    /// The key's file.
    pub key: PathBuf,
}

impl PemPair {
    /// A tonic client identity presenting this certificate.
    pub fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }
}

/// What kind of certificate to issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// A server certificate (SANs `127.0.0.1` and `localhost`).
    Server,
    /// A client certificate naming one identity.
    Client,
}

/// A CA, its certificate file, and the certificates it issued.
pub struct TestPki {
    dir: tempfile::TempDir,
    name: String,
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    ca_path: PathBuf,
    /// The server certificate (SANs `127.0.0.1`, `localhost`).
    pub server: PemPair,
    /// The lookup service's client certificate ([`LOOKUP_IDENTITY`]).
    pub lookup: PemPair,
    /// An operator's client certificate ([`OPERATOR_IDENTITY`]).
    pub operator: PemPair,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("name", &self.name)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl TestPki {
    /// A fresh CA named `name` with the standard server and client certificates.
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("PKI directory");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = params.self_signed(&ca_key).expect("self-signed CA");
        let ca_pem = ca_cert.pem();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, &ca_pem).expect("write CA");
        let issuer = Issuer::new(params, ca_key);
        let mut pki = Self {
            dir,
            name: name.to_owned(),
            issuer,
            ca_pem,
            ca_path,
            server: placeholder(),
            lookup: placeholder(),
            operator: placeholder(),
        };
        pki.server = pki.issue("server", Usage::Server, None, |_| {});
        pki.lookup = pki.issue("lookup", Usage::Client, Some(LOOKUP_IDENTITY), |_| {});
        pki.operator = pki.issue("operator", Usage::Client, Some(OPERATOR_IDENTITY), |_| {});
        pki
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate's file.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// Where the files are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Issues a certificate written as `file.pem`/`file.key`: a server's, or a client's naming
    /// `identity` (a URI, or a DNS name without "://"); `adjust` may change anything (validity,
    /// names) before it is signed.
    pub fn issue(
        &self,
        file: &str,
        usage: Usage,
        identity: Option<&str>,
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> PemPair {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{} {file}", self.name));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        match usage {
            Usage::Server => {
                params.subject_alt_names = vec![
                    SanType::IpAddress([127, 0, 0, 1].into()),
                    SanType::DnsName("localhost".try_into().expect("dns name")),
                ];
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            }
            Usage::Client => {
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
        }
        if let Some(identity) = identity {
            let name = if identity.contains("://") {
                SanType::URI(identity.try_into().expect("URI identity"))
            } else {
                SanType::DnsName(identity.try_into().expect("DNS identity"))
            };
            params.subject_alt_names.push(name);
        }
        adjust(&mut params);
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let pair = PemPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        std::fs::write(&pair.cert, &pair.cert_pem).expect("write certificate");
        std::fs::write(&pair.key, &pair.key_pem).expect("write key");
        pair
    }

    /// A client certificate naming `identity`, written as `file.pem`/`file.key`.
    pub fn client(&self, file: &str, identity: &str) -> PemPair {
        self.issue(file, Usage::Client, Some(identity), |_| {})
    }

    /// A certificate revocation list signed by this CA, revoking the certificates with
    /// `serials` (set when issuing: `params.serial_number`), written as `file` (PEM).
    pub fn revocation_list(&self, file: &str, serials: &[u64]) -> PathBuf {
        let params = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2025, 1, 1),
            next_update: rcgen::date_time_ymd(2100, 1, 1),
            crl_number: rcgen::SerialNumber::from(1_u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|serial| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(*serial),
                    revocation_time: rcgen::date_time_ymd(2025, 6, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).expect("sign CRL");
        let path = self.dir.path().join(file);
        std::fs::write(&path, crl.pem().expect("CRL PEM")).expect("write CRL");
        path
    }

    /// Client TLS trusting this CA, presenting `identity` when given.
    pub fn client_tls(&self, identity: Option<&PemPair>) -> ClientTlsConfig {
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        match identity {
            Some(pair) => tls.identity(pair.identity()),
            None => tls,
        }
    }
}

fn placeholder() -> PemPair {
    PemPair {
        cert_pem: String::new(),
        key_pem: String::new(),
        cert: PathBuf::new(),
        key: PathBuf::new(),
    }
}
