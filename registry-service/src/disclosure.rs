//! The registry's internal disclosure service, called only by the lookup service.
//! RPCs not implemented yet answer UNIMPLEMENTED (the generated default).

use cpis_proto::cpis::registry::v1::disclosure_service_server::DisclosureService;

/// Handler for `cpis.registry.v1.DisclosureService`.
#[derive(Debug, Default)]
pub struct DisclosureApi {}

impl DisclosureApi {
    /// Creates the handler.
    pub fn new() -> Self {
        Self::default()
    }
}

#[tonic::async_trait]
impl DisclosureService for DisclosureApi {}
