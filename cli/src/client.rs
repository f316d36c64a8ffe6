//! Talking to the services: a channel (plaintext for `http://`, TLS trusting `--ca-cert` for
//! `https://`, with a client certificate where a service asks for one) with the caller's bearer
//! token on every call, and the one-line rendering of a gRPC error (code, reason, field, message) that every command prints.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cpis_proto::cpis::lookup::v1::lookup_service_client::LookupServiceClient;
use cpis_proto::cpis::registry::v1::council_service_client::CouncilServiceClient;
use secrecy::{ExposeSecret as _, SecretString};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};
use tonic_types::StatusExt as _;

/// What a command failed on; printed on one line, and decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The service answered with an error.
    #[error("{}", describe(.0))]
    Rpc(Box<Status>),
    /// The service could not be reached.
    #[error("cannot reach {url}: {message}")]
    Connect {
        /// Where.
        url: String,
        /// Why.
        message: String,
    },
    /// Anything else (bad arguments, files).
    #[error("{0}")]
    Other(String),
}

impl From<Status> for CliError {
    fn from(status: Status) -> Self {
        Self::Rpc(Box::new(status))
    }
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> Self {
        Self::Other(error.to_string())
    }
}

/// `PERMISSION_DENIED WRONG_LOCAL_AUTHORITY: message` or, with a field,
/// `INVALID_ARGUMENT NHS_NUMBER_INVALID field=record.nhs_number: message`.
pub fn describe(status: &Status) -> String {
    let code = code_name(status.code());
    let reason = status
        .get_details_error_info()
        .map(|info| info.reason)
        .filter(|r| !r.is_empty());
    let fields = cpis_core::status::violated_fields(status);
    let mut line = code.to_owned();
    if let Some(reason) = reason {
        line.push(' ');
        line.push_str(&reason);
    }
    if !fields.is_empty() {
        line.push_str(" field=");
        line.push_str(&fields.join(","));
    }
    line.push_str(": ");
    line.push_str(status.message());
    line
}

/// The canonical upper-case name of a gRPC code, as the gRPC specification spells it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Adds `authorization: Bearer …` to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Where the registry is and the council's credential, shared by every council command.
#[derive(Debug, Clone, clap::Args)]
pub struct CouncilArgs {
    /// The registry's council-facing address (http:// or https://).
    #[arg(
        long,
        env = "CPIS_REGISTRY_URL",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub registry_url: String,
    /// PEM file of the CA that signed the registry's certificate (https:// URLs).
    #[arg(long, env = "CPIS_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// PEM file of the council's client certificate, for a registry that asks councils for one
    /// as well as a token (`--council-client-ca` there). With --client-key.
    #[arg(long, env = "CPIS_CLIENT_CERT", global = true, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM file of --client-cert's private key.
    #[arg(long, env = "CPIS_CLIENT_KEY", global = true, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// The council's bearer token (from the council's identity provider, or `cpis token council`).
    #[arg(
        long,
        env = "CPIS_COUNCIL_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<SecretString>,
}

impl CouncilArgs {
    /// A connected council client.
    pub async fn client(
        &self,
    ) -> Result<CouncilServiceClient<InterceptedService<Channel, Bearer>>, CliError> {
        let client = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some(ClientCert { cert, key }),
            _ => None,
        };
        council(
            &self.registry_url,
            self.ca_cert.as_deref(),
            client,
            self.token.as_ref(),
        )
        .await
    }
}

/// A client certificate and its key (PEM files), for services that admit callers by
/// certificate.
#[derive(Clone, Copy, Debug)]
pub struct ClientCert<'a> {
    /// The certificate chain.
    pub cert: &'a Path,
    /// Its private key.
    pub key: &'a Path,
}

/// Connects to `url` (http://HOST:PORT, or https://HOST:PORT trusting `ca` and presenting
/// `client` when given) within a few seconds.
pub async fn connect_with(
    url: &str,
    ca: Option<&Path>,
    client: Option<ClientCert<'_>>,
) -> Result<Channel, CliError> {
    let connect_error = |message: String| CliError::Connect {
        url: url.to_owned(),
        message,
    };
    let read = |path: &Path| {
        std::fs::read(path)
            .map_err(|e| CliError::Other(format!("cannot read {}: {e}", path.display())))
    };
    if client.is_some() && !url.starts_with("https://") {
        return Err(CliError::Other(format!(
            "a client certificate needs an https:// URL, not {url}"
        )));
    }
    let mut endpoint =
        Endpoint::from_shared(url.to_owned()).map_err(|e| connect_error(e.to_string()))?;
    if url.starts_with("https://") {
        let ca = ca.ok_or_else(|| {
            CliError::Other(format!("{url} is https: give the CA with --ca-cert"))
        })?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let Some(client) = client {
            tls = tls.identity(Identity::from_pem(read(client.cert)?, read(client.key)?));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| connect_error(source_chain(&e)))?;
    }
    endpoint
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| connect_error(source_chain(&e)))
}

/// A bearer interceptor for `token`; an empty token sends none (the server then answers
/// UNAUTHENTICATED TOKEN_MISSING, which is the clearest message).
pub fn bearer(token: Option<&SecretString>) -> Result<Bearer, CliError> {
    let Some(token) = token.filter(|t| !t.expose_secret().trim().is_empty()) else {
        return Ok(Bearer(None));
    };
    let value = format!("Bearer {}", token.expose_secret().trim())
        .parse::<MetadataValue<Ascii>>()
        .map_err(|_| CliError::Other("the token holds characters a header cannot carry".into()))?;
    Ok(Bearer(Some(value)))
}

/// A council client on `url` (trusting `ca` for https, presenting `client` where the registry
/// asks councils for a certificate) with `token`.
pub async fn council(
    url: &str,
    ca: Option<&Path>,
    client: Option<ClientCert<'_>>,
    token: Option<&SecretString>,
) -> Result<CouncilServiceClient<InterceptedService<Channel, Bearer>>, CliError> {
    let channel = connect_with(url, ca, client).await?;
    Ok(CouncilServiceClient::with_interceptor(
        channel,
        bearer(token)?,
    ))
}

/// A lookup client on `url` (trusting `ca` for https) with `token`.
pub async fn lookup(
    url: &str,
    ca: Option<&Path>,
    token: Option<&SecretString>,
) -> Result<LookupServiceClient<InterceptedService<Channel, Bearer>>, CliError> {
    let channel = connect_with(url, ca, None).await?;
    Ok(LookupServiceClient::with_interceptor(
        channel,
        bearer(token)?,
    ))
}

/// An error with its causes, for transport errors whose top line says little.
pub fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
