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
/// `INVALID_ARGUMENT NHS_NUMBER_INVALID field=nhs_number: message`. The services' messages
/// repeat the field and the reason (`nhs_number: … (NHS_NUMBER_INVALID)`, so that a client
/// without the details still learns them); said once already, they are not repeated here.
pub fn describe(status: &Status) -> String {
    let parts = Described::of(status);
    let mut line = parts.code.to_owned();
    if let Some(reason) = &parts.reason {
        line.push(' ');
        line.push_str(reason);
    }
    if !parts.fields.is_empty() {
        line.push_str(" field=");
        line.push_str(&parts.fields.join(","));
    }
    if !parts.message.is_empty() {
        line.push_str(": ");
        line.push_str(&parts.message);
    }
    line
}

/// A gRPC error taken apart: what `describe` prints and `--json` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// The gRPC code's name.
    pub code: &'static str,
    /// The `ErrorInfo` reason, when the service gave one.
    pub reason: Option<String>,
    /// The `BadRequest` fields, when a single one is at fault (several are named in `message`).
    pub fields: Vec<String>,
    /// The message without the field and reason it repeats.
    pub message: String,
}

impl Described {
    /// Takes `status` apart.
    pub fn of(status: &Status) -> Self {
        let reason = status
            .get_details_error_info()
            .map(|info| info.reason)
            .filter(|r| !r.is_empty());
        let fields = cpis_core::status::violated_fields(status);
        let message = tidy_message(status.message(), &fields, reason.as_deref());
        // With several fields the message names each beside its own complaint.
        let fields = if fields.len() == 1 {
            fields
        } else {
            Vec::new()
        };
        Self {
            code: code_name(status.code()),
            reason,
            fields,
            message,
        }
    }
}

/// Drops from each `; `-separated part of `message` a leading `FIELD: ` when that is the only
/// field, and a trailing ` (REASON)` when that is the error's own reason.
fn tidy_message(message: &str, fields: &[String], reason: Option<&str>) -> String {
    message
        .split("; ")
        .map(|part| {
            let mut part = part;
            if let [field] = fields
                && let Some(rest) = part
                    .strip_prefix(field.as_str())
                    .and_then(|r| r.strip_prefix(": "))
            {
                part = rest;
            }
            if let Some(reason) = reason
                && let Some(rest) = part
                    .strip_suffix(')')
                    .and_then(|r| r.strip_suffix(reason))
                    .and_then(|r| r.strip_suffix(" ("))
            {
                part = rest;
            }
            part
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The canonical upper-case name of a gRPC code, as the gRPC specification spells it.
pub use cpis_core::status::code_name;

/// A connected council client, its token on every call.
pub type CouncilClient = CouncilServiceClient<InterceptedService<Channel, Bearer>>;

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

/// `--json`, on the commands that print results (not on `dev`, `token`, `completions`, `man`).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Output {
    /// Print results as JSON (one object per line) for scripts; errors too, as
    /// {"error":{…}} on standard output.
    #[arg(long, global = true)]
    pub json: bool,
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
    pub async fn client(&self) -> Result<CouncilClient, CliError> {
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
    let url = with_scheme(url);
    let url = url.as_str();
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
    let mut endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| {
        CliError::Other(format!(
            "{url} is not a URL like http://127.0.0.1:50051: {}",
            source_chain(&e)
        ))
    })?;
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
    // A token pasted with its scheme (as in an `authorization: Bearer …` header) is the same
    // token.
    let raw = token.expose_secret().trim();
    let raw = match raw.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => raw,
    };
    let value = format!("Bearer {raw}")
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

/// An error with its causes, for transport errors whose top line says little. Layers that only
/// repeat their cause (`tcp connect error: tcp connect error: …`) or add nothing a person can use
/// (`transport error`) are said once.
pub fn source_chain(error: &dyn std::error::Error) -> String {
    let mut said: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(current) = next {
        let text = current.to_string();
        next = current.source();
        if text == "transport error" && next.is_some() {
            continue;
        }
        // A layer whose text contains its cause's says it all; a cause that repeats its
        // wrapper's text adds nothing.
        if said.last().is_some_and(|last| last.contains(&text)) {
            continue;
        }
        if let Some(last) = said.last_mut()
            && text.contains(last.as_str())
        {
            *last = text;
            continue;
        }
        said.push(text);
    }
    said.join(": ")
}

/// `host:port` (as grpcurl and the Python example take it) as `http://host:port`; a URL with a
/// scheme is kept as it is.
pub fn with_scheme(url: &str) -> String {
    let url = url.trim();
    if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    }
}

/// A hint for a connection that failed: refused means nothing listens there.
pub fn connect_hint(message: &str, service: Service) -> Option<String> {
    let refused = message.contains("Connection refused") || message.contains("os error 111");
    refused.then(|| {
        format!(
            "nothing listens there: is `cpis dev` running? (or give {} / {}; the default is {})",
            service.url_flag(),
            service.url_env(),
            service.default_url()
        )
    })
}

/// Which service a command talks to, for the hints an error carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// The registry's council-facing port.
    Registry,
    /// The lookup service.
    Lookup,
}

impl Service {
    /// The flag naming its address.
    pub fn url_flag(self) -> &'static str {
        match self {
            Self::Registry => "--registry-url",
            Self::Lookup => "--lookup-url",
        }
    }

    /// The environment variable naming its address.
    pub fn url_env(self) -> &'static str {
        match self {
            Self::Registry => "CPIS_REGISTRY_URL",
            Self::Lookup => "CPIS_LOOKUP_URL",
        }
    }

    /// Its default address.
    pub fn default_url(self) -> &'static str {
        match self {
            Self::Registry => "http://127.0.0.1:50051",
            Self::Lookup => "http://127.0.0.1:50052",
        }
    }

    /// The environment variable holding the caller's token.
    pub fn token_env(self) -> &'static str {
        match self {
            Self::Registry => "CPIS_COUNCIL_TOKEN",
            Self::Lookup => "CPIS_NHS_TOKEN",
        }
    }
}

/// What to suggest after a service's error, for the commands that talk to `service`.
/// `scheduled` says whether a lookup asked for a scheduled silent read.
pub fn rpc_hint(status: &Status, service: Service, scheduled: bool) -> Option<String> {
    let reason = status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default();
    let token_env = service.token_env();
    match (status.code(), reason.as_str()) {
        (_, "TOKEN_MISSING") => {
            // The guide of older versions exported these names; say which one cpis reads.
            let stray = match service {
                Service::Registry => ["COUNCIL_TOKEN"].as_slice(),
                Service::Lookup => ["ED_TOKEN", "NHS_TOKEN"].as_slice(),
            }
            .iter()
            .find(|name| std::env::var_os(name).is_some());
            Some(match stray {
                Some(name) => format!(
                    "{name} is set, but cpis reads {token_env}: export {token_env}=\"${name}\" or pass --token \"${name}\""
                ),
                None => format!(
                    "set {token_env} or pass --token (`cpis dev` prints ready tokens; `cpis token --help` makes others)"
                ),
            })
        }
        (_, "TOKEN_INVALID") if status.message().contains("signing key") => Some(
            "the token was signed by a key this service does not know: make dev tokens with `cpis token` \
             in the directory where `cpis dev` runs, or give it --data-dir"
                .into(),
        ),
        (_, "TOKEN_INVALID" | "TOKEN_EXPIRED") => Some(format!(
            "check the token in --token / {token_env} (`cpis dev` prints fresh ones)"
        )),
        (tonic::Code::Unimplemented, _) => Some(format!(
            "that address does not serve {}: wrong port? The registry's council port is 50051 and the lookup service's 50052 by default ({} / {})",
            match service {
                Service::Registry => "the council API",
                Service::Lookup => "lookups",
            },
            service.url_flag(),
            service.url_env()
        )),
        (tonic::Code::PermissionDenied, "ACCESS_DENIED")
            if service == Service::Lookup
                && !scheduled
                && status.message().contains("access mode") =>
        {
            Some("this token's care setting (a GP practice, for example) allows scheduled silent reads only: add --scheduled".into())
        }
        (tonic::Code::PermissionDenied, "ACCESS_DENIED")
            if service == Service::Lookup && scheduled && status.message().contains("access mode") =>
        {
            Some("this token's care setting allows unscheduled lookups only: drop --scheduled".into())
        }
        (tonic::Code::PermissionDenied, "INSUFFICIENT_SCOPE") => Some(format!(
            "the token in --token / {token_env} lacks the scope this needs (`cpis token council ODS --scope \"read write\"`)"
        )),
        _ => None,
    }
}
