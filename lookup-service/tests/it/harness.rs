//! Boots the lookup service through its own `serve` for a test.

use cpis_testkit::TestServer;
use lookup_service::Config;

/// Starts a lookup service with `config` and waits until it is SERVING.
pub async fn start_lookup(config: Config) -> TestServer {
    TestServer::start(|listener, shutdown| lookup_service::serve(config, listener, shutdown)).await
}
