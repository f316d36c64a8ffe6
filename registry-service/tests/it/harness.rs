//! Boots the registry through its own `serve` for a test.

use cpis_testkit::TestServer;
use registry_service::Config;

/// Starts a registry with `config` and waits until it is SERVING.
pub async fn start_registry(config: Config) -> TestServer {
    TestServer::start(|listener, shutdown| registry_service::serve(config, listener, shutdown))
        .await
}
