//! The registry's council-facing service (contact details, records, bulk uploads, access history,
//! notifications).
//! RPCs not implemented yet answer UNIMPLEMENTED (the generated default).

use cpis_proto::cpis::registry::v1::council_service_server::CouncilService;

/// Handler for `cpis.registry.v1.CouncilService`.
#[derive(Debug, Default)]
pub struct CouncilApi {}

impl CouncilApi {
    /// Creates the handler.
    pub fn new() -> Self {
        Self::default()
    }
}

#[tonic::async_trait]
impl CouncilService for CouncilApi {}
