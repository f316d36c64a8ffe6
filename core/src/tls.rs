//! TLS on our own listeners (rustls with the ring provider, TLS 1.2 and 1.3 with rustls' safe
//! defaults, ALPN h2): the server certificate chain and key come from PEM files that are checked
//! every few seconds and re-read when they change, so a rotation needs no restart (a bad new
//! file keeps the old certificate and logs an error); a listener may require client
//! certificates chaining to a configured CA (mTLS), whose identities (SAN URIs and DNS names)
//! then reach handlers through [`crate::connection::ConnectionInfo`]. tonic's own TLS is not
//! used because it runs outside our connection layer (timeouts) and reloads nothing.
//!
//! A listener on a non-loopback address refuses to start in plaintext unless the operator says
//! `--insecure-plaintext` ([`check_plaintext`]).
//!
//! The client side ([`ClientConnector`], the lookup service's link to the registry) verifies the
//! server against a configured CA and presents a client certificate that is reloaded the same
//! way, so renewing it needs no restart either (each new connection takes the current one).

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use rustls::client::ResolvesClientCert;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime, pem::PemObject as _,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// TLS settings of a service's listeners, on both services' command lines.
#[derive(Clone, Debug, clap::Args)]
pub struct TlsOptions {
    /// PEM file with this server's certificate chain, leaf first. With --tls-key, every
    /// listener serves TLS 1.2/1.3 (ALPN h2); the files are re-read when they change.
    #[arg(long, env = "CPIS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM file with the private key of --tls-cert (PKCS#8, SEC1 or PKCS#1).
    #[arg(long, env = "CPIS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// How often the certificate and key files are checked for a change.
    #[arg(long, env = "CPIS_TLS_RELOAD_INTERVAL", default_value = "5s", value_parser = crate::config::duration_within("100ms", "1h"))]
    pub tls_reload_interval: Duration,

    /// Allow plaintext listeners on non-loopback addresses (a mesh that terminates TLS in front
    /// of this service). Without TLS on the internal port no client certificate is seen, so the
    /// internal services refuse every caller.
    #[arg(long, env = "CPIS_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,
}

impl Default for TlsOptions {
    fn default() -> Self {
        Self {
            tls_cert: None,
            tls_key: None,
            tls_reload_interval: Duration::from_secs(5),
            insecure_plaintext: false,
        }
    }
}

impl TlsOptions {
    /// The server certificate in effect, reloading in the background; `None` without
    /// `--tls-cert`. Must run inside the Tokio runtime.
    pub fn server_cert(&self) -> Result<Option<Arc<ReloadingCert>>, TlsError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(ReloadingCert::start(
                cert.clone(),
                key.clone(),
                self.tls_reload_interval,
            )?)),
            (None, None) => Ok(None),
            _ => Err(TlsError::Config(
                "--tls-cert and --tls-key go together".into(),
            )),
        }
    }
}

/// Why TLS could not be set up (reported at start-up).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A file holds no usable PEM certificate or key.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the configuration (a key that does not match its certificate...).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// Settings that do not fit together.
    #[error("{0}")]
    Config(String),
}

/// The crypto provider every CP-IS TLS endpoint uses: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn pem_error(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::Pem {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Every certificate in a PEM file, in order; at least one.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error(path, "holds no certificate"));
    }
    Ok(certs)
}

fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = load_certificates(cert)?;
    let key_pem = read(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| pem_error(key, format!("no PEM private key: {e}")))?;
    Ok(CertifiedKey::from_der(chain, key_der, &provider())?)
}

/// A fingerprint of a file's content (not its modification time, which a rename-over within
/// one clock tick, or a copy keeping times, would not change); `None` if it cannot be read.
/// Certificate, key, CA and CRL files are small: reading them every few seconds costs nothing.
fn stamp(path: &Path) -> Option<u64> {
    use std::hash::{Hash as _, Hasher as _};
    let bytes = fs::read(path).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some(hasher.finish())
}

/// The fingerprints of `files`, in order.
fn stamps(files: &[PathBuf]) -> Vec<Option<u64>> {
    files.iter().map(|file| stamp(file)).collect()
}

/// Calls `reload` on `owner` whenever the content of any of `files` differs from what it was
/// (`seen`: taken before the owner's first load, so a change during it is not missed), checked
/// every `interval` by a task that ends when the last holder of `owner` drops it.
fn watch_files<T: Send + Sync + 'static>(
    owner: &Arc<T>,
    files: Vec<PathBuf>,
    mut seen: Vec<Option<u64>>,
    interval: Duration,
    reload: fn(&T),
) {
    let weak: Weak<T> = Arc::downgrade(owner);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(10)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(owner) = weak.upgrade() else { return };
            let now = stamps(&files);
            if now != seen {
                seen = now;
                reload(&owner);
            }
        }
    });
}

/// The server's certificate and key, re-read from their files when either changes (polled
/// every `interval` by a task that ends when the last holder drops this).
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadingCert {
    /// Loads the files (an error here stops the start-up) and starts watching them.
    pub fn start(
        cert_path: PathBuf,
        key_path: PathBuf,
        interval: Duration,
    ) -> Result<Arc<Self>, TlsError> {
        let files = vec![cert_path.clone(), key_path.clone()];
        let seen = stamps(&files);
        let loaded = load_certified_key(&cert_path, &key_path)?;
        let this = Arc::new(Self {
            cert_path,
            key_path,
            current: RwLock::new(Arc::new(loaded)),
        });
        watch_files(&this, files, seen, interval, Self::reload);
        Ok(this)
    }

    /// Re-reads the files; a failure keeps the certificate in use and says why.
    fn reload(&self) {
        let loaded = load_certified_key(&self.cert_path, &self.key_path).and_then(|loaded| {
            // An expired certificate would fail every handshake: keep the one in use.
            let expired = loaded
                .cert
                .first()
                .and_then(not_after)
                .is_some_and(|end| end < SystemTime::now());
            if expired {
                return Err(pem_error(
                    &self.cert_path,
                    "the new certificate has expired",
                ));
            }
            Ok(loaded)
        });
        match loaded {
            Ok(loaded) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
                tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
            }
            Err(error) => tracing::error!(
                cert = %self.cert_path.display(),
                %error,
                "TLS certificate files changed but cannot be used; keeping the previous certificate"
            ),
        }
    }

    /// The certificate chain presented now.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .cert
            .clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

impl ResolvesClientCert for ReloadingCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn root_store(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in load_certificates(path)? {
        roots
            .add(ca)
            .map_err(|e| pem_error(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// Connects tonic channels over TLS (for `Endpoint::connect_with_connector_lazy`): TCP with
/// TCP_NODELAY, then a handshake verifying the server against a CA and presenting a client
/// certificate that reloads when its files change.
#[derive(Clone, Debug)]
pub struct ClientConnector {
    config: Arc<ClientConfig>,
}

impl ClientConnector {
    /// Trusts the CA(s) in `ca`; presents `client` when the server asks for a certificate.
    pub fn new(ca: &Path, client: Option<Arc<ReloadingCert>>) -> Result<Self, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(root_store(ca)?);
        let mut config = match client {
            Some(cert) => builder.with_client_cert_resolver(cert),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            config: Arc::new(config),
        })
    }
}

impl tower::Service<http::Uri> for ClientConnector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&self.config));
        Box::pin(async move {
            let invalid =
                |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
            let host = uri
                .host()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
                .ok_or_else(|| invalid(format!("{uri} names no host")))?;
            let port = uri.port_u16().unwrap_or(443);
            let name = ServerName::try_from(host.clone())
                .map_err(|e| invalid(format!("{host} is not a server name: {e}")))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

/// Whether a listener asks its clients for certificates, and what it does without one.
#[derive(Clone, Debug)]
pub enum ClientAuth {
    /// No client certificates (the public ports by default).
    None,
    /// Every client must present a certificate the trust accepts; the handshake fails without.
    Required(Arc<ClientTrust>),
    /// A certificate is asked for and, when presented, must be one the trust accepts; a client
    /// without one still connects, and the services decide (a council port that wants one
    /// answers UNAUTHENTICATED in words rather than failing the handshake).
    Optional(Arc<ClientTrust>),
}

/// A TLS acceptor presenting `cert`, asking clients for certificates as `client_auth` says (no
/// certificate where one is required, an unknown CA, an expired or a revoked certificate fail
/// the handshake).
pub fn acceptor(
    cert: Arc<ReloadingCert>,
    client_auth: &ClientAuth,
) -> Result<TlsAcceptor, TlsError> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Required(trust) => builder.with_client_cert_verifier(Arc::new(TrustVerifier {
            trust: Arc::clone(trust),
            mandatory: true,
        })),
        ClientAuth::Optional(trust) => builder.with_client_cert_verifier(Arc::new(TrustVerifier {
            trust: Arc::clone(trust),
            mandatory: false,
        })),
    };
    let mut config = builder.with_cert_resolver(cert);
    // gRPC is HTTP/2 only.
    config.alpn_protocols = vec![b"h2".to_vec()];
    // No session resumption: a resumed session skips the client certificate's verification, so
    // a revoked (or no longer trusted) certificate could come back on a ticket. gRPC connections
    // are long-lived; a full handshake per connection costs little.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The CA(s) and certificate revocation lists client certificates are checked against, re-read
/// (like [`ReloadingCert`]) when any of their files changes: a new CA or a new CRL takes effect
/// for the next handshake without a restart; a bad new file keeps the previous trust and logs an
/// error. Revocation is checked on the client's own certificate, against the CRL of its issuer,
/// which must then be among the CRLs (an unknown status is a refusal); connections already open
/// end at the listener's maximum connection age (the registry sets one wherever callers are
/// admitted by certificate).
#[derive(Debug)]
pub struct ClientTrust {
    ca: PathBuf,
    crls: Vec<PathBuf>,
    current: RwLock<Arc<dyn ClientCertVerifier>>,
}

impl ClientTrust {
    /// Loads the CA file and CRL files (an error here stops the start-up) and watches them
    /// every `interval`.
    pub fn start(
        ca: PathBuf,
        crls: Vec<PathBuf>,
        interval: Duration,
    ) -> Result<Arc<Self>, TlsError> {
        let files: Vec<PathBuf> = std::iter::once(ca.clone()).chain(crls.clone()).collect();
        let seen = stamps(&files);
        let verifier = client_verifier(&ca, &crls)?;
        let this = Arc::new(Self {
            ca,
            crls,
            current: RwLock::new(verifier),
        });
        watch_files(&this, files, seen, interval, Self::reload);
        Ok(this)
    }

    fn reload(&self) {
        match client_verifier(&self.ca, &self.crls) {
            Ok(verifier) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = verifier;
                tracing::info!(ca = %self.ca.display(), crls = self.crls.len(), "client CA and revocation lists reloaded");
            }
            Err(error) => tracing::error!(
                ca = %self.ca.display(),
                %error,
                "client CA or revocation list files changed but cannot be used; keeping the previous ones"
            ),
        }
    }

    fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }
}

fn client_verifier(ca: &Path, crls: &[PathBuf]) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let roots = Arc::new(root_store(ca)?);
    let mut lists = Vec::new();
    for path in crls {
        lists.extend(load_crls(path)?);
    }
    WebPkiClientVerifier::builder_with_provider(roots, provider())
        .with_crls(lists)
        .only_check_end_entity_revocation()
        .build()
        .map_err(|e| TlsError::Config(format!("client CA {}: {e}", ca.display())))
}

/// Every certificate revocation list in a file (PEM, or one DER list); at least one.
fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let pem = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, format!("not a PEM revocation list file: {e}")))?;
    let lists = if pem.is_empty() && !bytes.is_empty() && !bytes.starts_with(b"-----") {
        vec![CertificateRevocationListDer::from(bytes)]
    } else {
        pem
    };
    if lists.is_empty() {
        return Err(pem_error(path, "holds no certificate revocation list"));
    }
    Ok(lists)
}

/// The verifier a listener uses: the trust's current one, asked for at each handshake.
#[derive(Debug)]
struct TrustVerifier {
    trust: Arc<ClientTrust>,
    mandatory: bool,
}

impl ClientCertVerifier for TrustVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: they would go stale when the CA file changes, and a client given hints that
        // do not name its issuer may send no certificate at all (Go's does not).
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.trust
            .verifier()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.trust
            .verifier()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.trust
            .verifier()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.trust.verifier().supported_verify_schemes()
    }
}

/// A non-loopback listener without TLS is refused unless `insecure_plaintext`; allowed, it is
/// logged loudly, every start.
pub fn check_plaintext(
    addr: SocketAddr,
    tls: bool,
    insecure_plaintext: bool,
) -> Result<(), TlsError> {
    if tls || addr.ip().is_loopback() {
        return Ok(());
    }
    if !insecure_plaintext {
        return Err(TlsError::Config(format!(
            "refusing to listen on {addr} without TLS: set --tls-cert and --tls-key, or \
             --insecure-plaintext when a mesh terminates TLS in front of this service"
        )));
    }
    tracing::warn!(
        %addr,
        "INSECURE: listening in PLAINTEXT on a non-loopback address (--insecure-plaintext); \
         only safe behind a mesh or proxy that terminates TLS"
    );
    Ok(())
}

/// One identity a certificate names in its subject alternative names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A URI (`spiffe://cpis/lookup`), compared exactly.
    Uri(String),
    /// A DNS name, kept in lower case (DNS names are case-insensitive).
    Dns(String),
}

impl Identity {
    /// Whether this is the configured identity `wanted`: a URI (it has "://") matches only a
    /// URI name, exactly; anything else matches only a DNS name, ignoring case. A DNS name that
    /// happens to spell a URI therefore never passes for one.
    pub fn is(&self, wanted: &str) -> bool {
        match self {
            Self::Uri(uri) => wanted.contains("://") && uri == wanted,
            Self::Dns(dns) => !wanted.contains("://") && dns.eq_ignore_ascii_case(wanted),
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Uri(uri) => write!(f, "uri:{uri}"),
            Self::Dns(dns) => write!(f, "dns:{dns}"),
        }
    }
}

/// The identities a client certificate names: its SAN URIs (`spiffe://…`) and DNS names.
pub fn certificate_identities(cert: &CertificateDer<'_>) -> Vec<Identity> {
    use x509_cert::der::{Decode as _, oid::AssociatedOid as _};
    use x509_cert::ext::pkix::{SubjectAltName, name::GeneralName};

    let Ok(parsed) = x509_cert::Certificate::from_der(cert.as_ref()) else {
        return Vec::new();
    };
    let mut identities = Vec::new();
    for extension in parsed.tbs_certificate.extensions.iter().flatten() {
        if extension.extn_id != SubjectAltName::OID {
            continue;
        }
        let Ok(names) = SubjectAltName::from_der(extension.extn_value.as_bytes()) else {
            continue;
        };
        for name in names.0 {
            match name {
                GeneralName::UniformResourceIdentifier(uri) => {
                    identities.push(Identity::Uri(uri.to_string()));
                }
                GeneralName::DnsName(dns) => {
                    identities.push(Identity::Dns(dns.to_string().to_ascii_lowercase()));
                }
                _ => {}
            }
        }
    }
    identities
}

/// When a certificate stops being valid; `None` if it cannot be read.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<SystemTime> {
    use x509_cert::der::Decode as _;
    let parsed = x509_cert::Certificate::from_der(cert.as_ref()).ok()?;
    Some(parsed.tbs_certificate.validity.not_after.to_system_time())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_match_by_kind() {
        let uri = Identity::Uri("spiffe://cpis/lookup".into());
        let dns = Identity::Dns("lookup.cpis.internal".into());
        assert!(uri.is("spiffe://cpis/lookup"));
        assert!(!uri.is("spiffe://cpis/Lookup"), "URIs compare exactly");
        assert!(dns.is("Lookup.CPIS.internal"), "DNS names ignore case");
        // A DNS name spelling a URI never passes for the URI, nor a URI for a DNS name.
        assert!(!Identity::Dns("spiffe://cpis/lookup".into()).is("spiffe://cpis/lookup"));
        assert!(!Identity::Uri("lookup.cpis.internal".into()).is("lookup.cpis.internal"));
    }

    #[test]
    fn plaintext_is_refused_off_loopback_unless_insecure() {
        let public: SocketAddr = ([10, 0, 0, 1], 50051).into();
        let loopback: SocketAddr = ([127, 0, 0, 1], 50051).into();
        assert!(check_plaintext(public, false, false).is_err());
        assert!(check_plaintext(public, false, true).is_ok());
        assert!(check_plaintext(public, true, false).is_ok());
        assert!(check_plaintext(loopback, false, false).is_ok());
        let v6: SocketAddr = "[::]:50051".parse().unwrap_or(public);
        assert!(check_plaintext(v6, false, false).is_err());
    }
}
