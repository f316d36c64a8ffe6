//! The registry's operator service (NHS-number status changes, demographics directory).
//! RPCs not implemented yet answer UNIMPLEMENTED (the generated default).

use cpis_proto::cpis::registry::v1::operator_service_server::OperatorService;

/// Handler for `cpis.registry.v1.OperatorService`.
#[derive(Debug, Default)]
pub struct OperatorApi {}

impl OperatorApi {
    /// Creates the handler.
    pub fn new() -> Self {
        Self::default()
    }
}

#[tonic::async_trait]
impl OperatorService for OperatorApi {}
