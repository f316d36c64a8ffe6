//! What a panic becomes on a CP-IS server: one structured log line (through tracing, so one JSON
//! object in JSON format, never a plain-text backtrace), and for the caller an INTERNAL status
//! with reason INTERNAL; the server keeps serving. Panics stay defects to fix: this only keeps
//! one from taking a connection, a stream or a log collector down with it.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use cpis_proto::cpis::common::v1::ErrorReason;
use futures::FutureExt as _;
use tonic::{Code, Status};
use tower_http::catch_panic::CatchPanicLayer;

/// Longest panic message logged, in characters: a panic message is code's text, but a bound
/// keeps a formatted value from flooding the log.
const MAX_MESSAGE: usize = 512;

/// The status a caller receives for a panic: the same words as any other defect.
pub fn panicked_status() -> Status {
    crate::status::with_reason(Code::Internal, ErrorReason::Internal, "internal error")
}

/// Builds the HTTP response for a panicked handler: a trailers-only gRPC status. The payload is
/// dropped unread: the panic hook has already logged it.
fn answer_panic(_payload: Box<dyn Any + Send + 'static>) -> http::Response<tonic::body::Body> {
    panicked_status().into_http()
}

/// The layer that turns a panic while a handler computes its answer into INTERNAL (for a
/// streaming answer: until its first message is ready; see [`unless_panicked`] for the task
/// that produces the rest).
pub type CatchPanics =
    CatchPanicLayer<fn(Box<dyn Any + Send + 'static>) -> http::Response<tonic::body::Body>>;

/// The layer every CP-IS server runs outermost.
pub fn catch_panics() -> CatchPanics {
    CatchPanicLayer::custom(answer_panic as fn(_) -> _)
}

/// Runs `work` (a streaming answer's producer, usually on its own task) and returns `None` if it
/// panicked, so the producer can end the stream with [`panicked_status`]: a producer task that
/// just dies drops its sender, and the caller sees a clean end of stream it takes for success.
pub async fn unless_panicked<F: Future>(work: F) -> Option<F::Output> {
    AssertUnwindSafe(work).catch_unwind().await.ok()
}

/// Routes every panic through tracing: one event with the message (bounded) and where, instead
/// of the default hook's plain-text lines on standard error. With no subscriber listening (a
/// test without logging), the previous hook still runs, so a failure is never silent. Installed
/// once per process; later calls do nothing.
pub fn install_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !tracing::enabled!(tracing::Level::ERROR) {
                previous(info);
                return;
            }
            let message = info
                .payload_as_str()
                .unwrap_or("(a panic without a message)");
            // A message may quote a value: escaped and bounded like any caller text.
            let message = crate::text::LogSafeUpTo(message, MAX_MESSAGE);
            let (file, line) = info.location().map_or(("", 0), |l| (l.file(), l.line()));
            tracing::error!(
                panic.message = %message,
                panic.file = file,
                panic.line = line,
                thread = std::thread::current().name().unwrap_or(""),
                "panicked"
            );
        }));
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed expectation is a failed test

    use std::pin::Pin;
    use std::sync::{Arc, Mutex};

    use futures::Stream;
    use tokio::net::TcpListener;
    use tonic::transport::{Server, server::TcpIncoming};
    use tonic::{Request, Response};
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::health_server::{Health, HealthServer};
    use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

    use super::*;
    use crate::status::reason_of;

    fn serving() -> HealthCheckResponse {
        HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }
    }

    /// A test-only service that panics where the request's `service` says.
    struct Panicky;

    type Answers = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    #[tonic::async_trait]
    impl Health for Panicky {
        async fn check(
            &self,
            request: Request<HealthCheckRequest>,
        ) -> Result<Response<HealthCheckResponse>, Status> {
            if request.get_ref().service == "panic" {
                panic!("a handler panicked (test)");
            }
            Ok(Response::new(serving()))
        }

        type WatchStream = Answers;

        async fn watch(
            &self,
            request: Request<HealthCheckRequest>,
        ) -> Result<Response<Answers>, Status> {
            let how = request.into_inner().service;
            if how == "panic" {
                panic!("a streaming handler panicked before answering (test)");
            }
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let guarded = how == "task-guarded";
            tokio::spawn(async move {
                let work = async {
                    let _ = tx.send(Ok(serving())).await;
                    if how != "finish" {
                        panic!("a stream's producer task panicked (test)");
                    }
                };
                if guarded {
                    if unless_panicked(work).await.is_none() {
                        let _ = tx.send(Err(panicked_status())).await;
                    }
                } else {
                    work.await;
                }
            });
            Ok(Response::new(Box::pin(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            )))
        }
    }

    async fn serve_panicky() -> HealthClient<tonic::transport::Channel> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            Server::builder()
                .layer(catch_panics())
                .add_service(HealthServer::new(Panicky))
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        HealthClient::new(channel)
    }

    fn ask(service: &str) -> HealthCheckRequest {
        HealthCheckRequest {
            service: service.into(),
        }
    }

    fn assert_internal(status: &Status) {
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        assert_eq!(reason_of(status), Some(ErrorReason::Internal), "{status:?}");
        assert_eq!(status.message(), "internal error");
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_internal_and_the_server_keeps_serving() {
        let mut client = serve_panicky().await;
        for _ in 0..3 {
            let status = client.check(ask("panic")).await.expect_err("panicked");
            assert_internal(&status);
            // The same connection answers the next call.
            let answer = client.check(ask("")).await.expect("still serving");
            assert_eq!(answer.into_inner(), serving());
        }
        let status = client.watch(ask("panic")).await.expect_err("panicked");
        assert_internal(&status);
        let mut stream = client.watch(ask("finish")).await.unwrap().into_inner();
        assert_eq!(stream.message().await.unwrap(), Some(serving()));
        assert_eq!(stream.message().await.unwrap(), None);
    }

    /// A streaming answer's producer task is beyond the layer: guarded with `unless_panicked` the
    /// stream ends INTERNAL; unguarded it ends as if complete (why producers must be guarded).
    #[tokio::test]
    async fn a_panicking_stream_producer_ends_internal_only_when_guarded() {
        let mut client = serve_panicky().await;
        let mut guarded = client
            .watch(ask("task-guarded"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(guarded.message().await.unwrap(), Some(serving()));
        let status = guarded.message().await.expect_err("ends INTERNAL");
        assert_internal(&status);

        let mut unguarded = client.watch(ask("task")).await.unwrap().into_inner();
        assert_eq!(unguarded.message().await.unwrap(), Some(serving()));
        assert_eq!(unguarded.message().await.unwrap(), None);

        let answer = client.check(ask("")).await.expect("still serving");
        assert_eq!(answer.into_inner(), serving());
    }

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_panic_is_one_json_log_line() {
        install_hook();
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(move || writer.clone())
            .finish();
        let long = "x".repeat(10_000);
        tracing::subscriber::with_default(subscriber, || {
            let result = std::panic::catch_unwind(|| panic!("boom\n{{\"level\":\"INFO\"}} {long}"));
            assert!(result.is_err());
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(line["level"], "ERROR");
        assert_eq!(line["message"], "panicked");
        let message = line["panic.message"].as_str().unwrap();
        assert!(
            message.starts_with("boom\\n{\"level\":\"INFO\"} x"),
            "{message}"
        );
        assert!(
            message.ends_with("…[cut: 10022 bytes in all, 9510 not shown]"),
            "{message}"
        );
        assert_eq!(line["panic.file"], file!());
        assert!(line["panic.line"].as_u64().unwrap() > 0);
        assert!(!text.contains("stack backtrace"));
    }
}
