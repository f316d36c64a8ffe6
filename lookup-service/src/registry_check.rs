//! Whether the registry accepts this service at all, for health: at start the lookup service
//! stays NOT_SERVING until the registry has accepted its client certificate once (a misconfigured
//! service must not take traffic only to fail every lookup); later, a registry that starts
//! refusing it (a rotation gone wrong) turns health NOT_SERVING again. A registry that is merely
//! unreachable does not: lookups then answer UNAVAILABLE themselves, and taking every replica out
//! of rotation would only hide the answer.
//!
//! The check is a `Disclose` with an empty request over the mTLS channel: the registry's
//! interceptor judges the certificate's identity first, then the request is refused as invalid (INVALID_ARGUMENT) before
//! anything is read or recorded.

use std::time::Duration;

use cpis_proto::cpis::registry::v1::{
    DiscloseRequest, disclosure_service_client::DisclosureServiceClient,
};
use tokio::sync::watch;
use tonic::{Code, Request, transport::Channel};

/// How often the registry's acceptance is checked again once serving.
const RECHECK: Duration = Duration::from_secs(10);
/// How long one check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// What the registry made of this service's certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Accepted,
    Refused,
    Unreachable,
}

async fn check(client: &mut DisclosureServiceClient<Channel>) -> Verdict {
    let mut request = Request::new(DiscloseRequest::default());
    request.set_timeout(CHECK_TIMEOUT);
    match tokio::time::timeout(CHECK_TIMEOUT, client.disclose(request)).await {
        Ok(Err(status)) if status.code() == Code::InvalidArgument => Verdict::Accepted,
        Ok(Ok(_)) => Verdict::Accepted,
        Ok(Err(status))
            if matches!(
                status.code(),
                Code::Unauthenticated | Code::PermissionDenied | Code::Unimplemented
            ) =>
        {
            Verdict::Refused
        }
        _ => Verdict::Unreachable,
    }
}

/// Waits until the registry accepts this service, then returns a signal health follows.
pub(crate) async fn accepted(channel: Channel) -> watch::Receiver<bool> {
    let mut client = DisclosureServiceClient::new(channel);
    let mut last = None;
    loop {
        let verdict = check(&mut client).await;
        if verdict == Verdict::Accepted {
            break;
        }
        if last != Some(verdict) {
            match verdict {
                Verdict::Refused => tracing::error!(
                    "the registry refuses this service's client certificate (--registry-client-cert, \
                     the registry's --disclosure-identities); not serving"
                ),
                _ => tracing::warn!("waiting for the registry"),
            }
            last = Some(verdict);
        }
        tokio::time::sleep(CHECK_TIMEOUT).await;
    }
    tracing::info!("the registry accepts this service");
    let (tx, rx) = watch::channel(true);
    tokio::spawn(async move {
        while !tx.is_closed() {
            tokio::time::sleep(RECHECK).await;
            match check(&mut client).await {
                Verdict::Accepted => tx.send_if_modified(|ok| !std::mem::replace(ok, true)),
                Verdict::Refused => tx.send_if_modified(|ok| std::mem::replace(ok, false)),
                Verdict::Unreachable => false,
            };
        }
    });
    rx
}
