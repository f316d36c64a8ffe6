//! The NHS-facing lookup handler.
//! RPCs not implemented yet answer UNIMPLEMENTED (the generated default).

use cpis_proto::cpis::lookup::v1::lookup_service_server::LookupService;

/// Handler for `cpis.lookup.v1.LookupService`.
#[derive(Debug, Default)]
pub struct LookupApi {}

impl LookupApi {
    /// Creates the handler.
    pub fn new() -> Self {
        Self::default()
    }
}

#[tonic::async_trait]
impl LookupService for LookupApi {}
