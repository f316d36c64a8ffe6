//! A JWKS endpoint for tests of key rotation: a real HTTP/1.1 server (hyper) on 127.0.0.1:0,
//! plain or over TLS with a test PKI's server certificate, serving whichever public keys the test
//! puts there, counting how often it is fetched, and able to fail on demand.

use std::sync::{Arc, Mutex};

use cpis_core::auth::DevSigner;
use http_body_util::Full;
use hyper::{Response, StatusCode, body::Bytes, service::service_fn};
use tokio::net::TcpListener;

struct Served {
    body: Vec<u8>,
    status: StatusCode,
    fetches: usize,
    /// How long each answer takes (an identity provider having a bad day).
    stall: std::time::Duration,
}

/// The endpoint; stops when dropped.
pub struct JwksServer {
    addr: std::net::SocketAddr,
    tls: bool,
    served: Arc<Mutex<Served>>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    /// Starts serving the public keys of `signers` over plain HTTP (on loopback).
    pub async fn start(signers: &[&DevSigner]) -> Self {
        Self::start_with(signers, None).await
    }

    /// Starts serving the public keys of `signers` over https, presenting `pki`'s server
    /// certificate (so a service must be told to trust `pki`'s CA).
    pub async fn start_tls(signers: &[&DevSigner], pki: &crate::pki::TestPki) -> Self {
        use rustls::pki_types::{PrivateKeyDer, pem::PemObject as _};
        // Not the services' acceptor: that one speaks only h2, and JWKS is fetched over HTTP/1.1.
        let chain = cpis_core::tls::load_certificates(&pki.server.cert).expect("chain");
        let key = PrivateKeyDer::from_pem_slice(pki.server.key_pem.as_bytes()).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(cpis_core::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("JWKS server certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Self::start_with(signers, Some(acceptor)).await
    }

    async fn start_with(signers: &[&DevSigner], tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let served = Arc::new(Mutex::new(Served {
            body: jwks_of(signers),
            status: StatusCode::OK,
            fetches: 0,
            stall: std::time::Duration::ZERO,
        }));
        let shared = served.clone();
        let secure = tls.is_some();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let served = shared.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let answer = service_fn(move |_request| {
                        let (response, stall) = {
                            let mut served = served.lock().expect("lock");
                            served.fetches += 1;
                            let mut response =
                                Response::new(Full::new(Bytes::from(served.body.clone())));
                            *response.status_mut() = served.status;
                            (response, served.stall)
                        };
                        async move {
                            tokio::time::sleep(stall).await;
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let http1 = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http1
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), answer)
                                .await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http1
                                    .serve_connection(hyper_util::rt::TokioIo::new(stream), answer)
                                    .await;
                            }
                        }
                    }
                });
            }
        });
        Self {
            addr,
            tls: secure,
            served,
            task,
        }
    }

    /// The URL to give a service's `--jwks-url` (https with `start_tls`, at `localhost`, a name
    /// the test PKI's server certificate carries).
    pub fn url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}/jwks.json", self.addr.port())
        } else {
            format!("http://{}/jwks.json", self.addr)
        }
    }

    /// From now on, serves the public keys of `signers`.
    pub fn serve(&self, signers: &[&DevSigner]) {
        let mut served = self.served.lock().expect("lock");
        served.body = jwks_of(signers);
        served.status = StatusCode::OK;
    }

    /// From now on, answers `status` with a body that is no key set.
    pub fn fail(&self, status: StatusCode) {
        let mut served = self.served.lock().expect("lock");
        served.body = b"{\"error\": \"unavailable\"}".to_vec();
        served.status = status;
    }

    /// From now on, takes `stall` to answer each request.
    pub fn stall(&self, stall: std::time::Duration) {
        self.served.lock().expect("lock").stall = stall;
    }

    /// How many requests it has answered.
    pub fn fetches(&self) -> usize {
        self.served.lock().expect("lock").fetches
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One JWKS holding every signer's public key.
pub fn jwks_of(signers: &[&DevSigner]) -> Vec<u8> {
    let keys: Vec<_> = signers
        .iter()
        .flat_map(|signer| signer.jwks().keys.clone())
        .collect();
    serde_json::to_vec(&serde_json::json!({ "keys": keys })).expect("jwks")
}
