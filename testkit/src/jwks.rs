//! A JWKS endpoint for tests of key rotation: a real HTTP/1.1 server (hyper) on 127.0.0.1:0
//! serving whichever public keys the test puts there, counting how often it is fetched, and
//! able to fail on demand.

use std::sync::{Arc, Mutex};

use cpis_core::auth::DevSigner;
use http_body_util::Full;
use hyper::{Response, StatusCode, body::Bytes, service::service_fn};
use tokio::net::TcpListener;

struct Served {
    body: Vec<u8>,
    status: StatusCode,
    fetches: usize,
}

/// The endpoint; stops when dropped.
pub struct JwksServer {
    addr: std::net::SocketAddr,
    served: Arc<Mutex<Served>>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    /// Starts serving the public keys of `signers`.
    pub async fn start(signers: &[&DevSigner]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let served = Arc::new(Mutex::new(Served {
            body: jwks_of(signers),
            status: StatusCode::OK,
            fetches: 0,
        }));
        let shared = served.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let served = shared.clone();
                tokio::spawn(async move {
                    let answer = service_fn(move |_request| {
                        let mut served = served.lock().expect("lock");
                        served.fetches += 1;
                        let mut response =
                            Response::new(Full::new(Bytes::from(served.body.clone())));
                        *response.status_mut() = served.status;
                        std::future::ready(Ok::<_, std::convert::Infallible>(response))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), answer)
                        .await;
                });
            }
        });
        Self { addr, served, task }
    }

    /// The URL to give a service's `--jwks-url`.
    pub fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
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
