//! Size limits on what a caller sends, answered as the contracts say: a message larger than the
//! server decodes is RESOURCE_EXHAUSTED (reason MESSAGE_TOO_LARGE), not tonic's OUT_OF_RANGE
//! (which the contracts reserve for a sequence not yet issued); a token over [`MAX_TOKEN_BYTES`]
//! is UNAUTHENTICATED (TOKEN_INVALID, "too long"); request headers up to
//! [`MAX_HEADER_LIST_BYTES`] are read, so such a token gets that answer and not HTTP 431.

use std::task::{Context, Poll};

use cpis_proto::cpis::common::v1::ErrorReason;
use tonic::{Code, Status};

/// Longest bearer token accepted, in bytes. CIS2 ID tokens carrying many roles run to a few
/// kilobytes; four times the largest seen leaves room without letting a token cost much to parse.
pub const MAX_TOKEN_BYTES: usize = 32 * 1024;

/// Most bytes of request headers (HPACK-decoded, as HTTP/2 counts them) a server reads: above
/// [`MAX_TOKEN_BYTES`] so an oversized token is refused in words; beyond it the HTTP/2 layer
/// refuses the request itself (HTTP 431, which a gRPC client reports as UNKNOWN or INTERNAL).
pub const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;

/// How tonic words a request message over `max_decoding_message_size` (tonic::codec::decode).
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large: ";

/// The layer answering an oversized request message RESOURCE_EXHAUSTED.
#[derive(Clone, Copy, Debug, Default)]
pub struct OversizedLayer;

impl<S> tower::Layer<S> for OversizedLayer {
    type Service = Oversized<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Oversized { inner }
    }
}

/// The service [`OversizedLayer`] wraps around a server's routes.
#[derive(Clone, Debug)]
pub struct Oversized<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for Oversized<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            reword_oversized(response.headers_mut());
            Ok(response)
        })
    }
}

/// Rewrites tonic's OUT_OF_RANGE for an oversized message (a trailers-only answer: the handler
/// refused the call while reading its request) as RESOURCE_EXHAUSTED MESSAGE_TOO_LARGE.
fn reword_oversized(headers: &mut http::HeaderMap) {
    let out_of_range = headers
        .get(Status::GRPC_STATUS)
        .is_some_and(|v| v.as_bytes() == b"11");
    if !out_of_range {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let Some(sizes) = status.message().strip_prefix(TONIC_TOO_LARGE) else {
        return;
    };
    let answer = crate::status::with_reason(
        Code::ResourceExhausted,
        ErrorReason::MessageTooLarge,
        format!(
            "a request message is larger than this server accepts ({sizes}); send smaller messages"
        ),
    );
    headers.remove(Status::GRPC_STATUS_DETAILS);
    // Our own status always encodes; if it did not, the original answer stands.
    drop(answer.add_header(headers));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_the_oversized_message_is_reworded() {
        let mut headers = http::HeaderMap::new();
        Status::out_of_range(
            "Error, decoded message length too large: found 5000000 bytes, the limit is: 4194304 bytes",
        )
        .add_header(&mut headers)
        .unwrap();
        reword_oversized(&mut headers);
        let status = Status::from_header_map(&headers).unwrap();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            crate::status::reason_of(&status),
            Some(ErrorReason::MessageTooLarge)
        );
        assert!(
            status.message().contains("found 5000000 bytes"),
            "{status:?}"
        );

        let mut headers = http::HeaderMap::new();
        let sequence = crate::status::with_reason(
            Code::OutOfRange,
            ErrorReason::SequenceNotIssued,
            "not issued",
        );
        sequence.add_header(&mut headers).unwrap();
        reword_oversized(&mut headers);
        let status = Status::from_header_map(&headers).unwrap();
        assert_eq!(status.code(), Code::OutOfRange);
        assert_eq!(
            crate::status::reason_of(&status),
            Some(ErrorReason::SequenceNotIssued)
        );
    }
}
