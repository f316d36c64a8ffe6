//! The CP-IS protobuf contracts (`cpis.*.v1`) as Rust types, tonic clients and servers, and the
//! encoded descriptor set for gRPC reflection. Re-exports tonic and prost so every crate in the
//! workspace (and every Rust client) builds against one version of each.
#![forbid(unsafe_code)]
#![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]

pub use prost;
pub use prost_types;
pub use tonic;

/// Encoded `FileDescriptorSet` of every contract and its imports, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/cpis_descriptor.bin"));

/// The `domain` every `google.rpc.ErrorInfo` from CP-IS carries.
pub const ERROR_DOMAIN: &str = "cpis";

/// Vendored Google common types used by the contracts.
pub mod google {
    /// `google.type`: calendar dates.
    pub mod r#type {
        include!(concat!(env!("OUT_DIR"), "/google.r#type.rs"));
    }
    /// `google.rpc` error details (ErrorInfo, BadRequest, ...), as carried in error statuses.
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}

/// The CP-IS packages.
pub mod cpis {
    /// Shared domain types.
    pub mod common {
        /// `cpis.common.v1`.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/cpis.common.v1.rs"));

            impl ErrorReason {
                /// The reason as carried in `google.rpc.ErrorInfo.reason`: the value name
                /// without the `ERROR_REASON_` prefix, for example `"NHS_NUMBER_INVALID"`.
                pub fn as_info_reason(self) -> &'static str {
                    let name = self.as_str_name();
                    name.strip_prefix("ERROR_REASON_").unwrap_or(name)
                }

                /// Parses an `ErrorInfo.reason` back into the enum; `None` for unknown reasons
                /// (a newer server), which clients treat like the status code alone.
                pub fn from_info_reason(reason: &str) -> Option<Self> {
                    Self::from_str_name(&format!("ERROR_REASON_{reason}"))
                }
            }
        }
    }

    /// The registry: council-facing, internal disclosure, and operator services.
    pub mod registry {
        /// `cpis.registry.v1`.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/cpis.registry.v1.rs"));
        }
    }

    /// The NHS-facing lookup service.
    pub mod lookup {
        /// `cpis.lookup.v1`.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/cpis.lookup.v1.rs"));
        }
    }
}

/// Fully qualified gRPC service names, as health checks and reflection list them.
pub mod service_names {
    /// The council-facing registry service.
    pub const COUNCIL: &str = "cpis.registry.v1.CouncilService";
    /// The registry's internal disclosure service (lookup service only).
    pub const DISCLOSURE: &str = "cpis.registry.v1.DisclosureService";
    /// The registry's operator service.
    pub const OPERATOR: &str = "cpis.registry.v1.OperatorService";
    /// The NHS-facing lookup service.
    pub const LOOKUP: &str = "cpis.lookup.v1.LookupService";
}

#[cfg(test)]
mod tests {
    use super::cpis::common::v1::ErrorReason;

    #[test]
    fn error_reason_round_trips_through_error_info() {
        let reason = ErrorReason::NhsNumberInvalid;
        assert_eq!(reason.as_info_reason(), "NHS_NUMBER_INVALID");
        assert_eq!(
            ErrorReason::from_info_reason("NHS_NUMBER_INVALID"),
            Some(reason)
        );
        assert_eq!(ErrorReason::from_info_reason("NO_SUCH_REASON"), None);
    }

    #[test]
    fn descriptor_set_holds_every_service() {
        use prost::Message as _;
        let fds =
            prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap_or_default();
        let services: Vec<String> = fds
            .file
            .iter()
            .flat_map(|f| {
                f.service
                    .iter()
                    .map(move |s| format!("{}.{}", f.package(), s.name()))
            })
            .collect();
        for name in [
            super::service_names::COUNCIL,
            super::service_names::DISCLOSURE,
            super::service_names::OPERATOR,
            super::service_names::LOOKUP,
        ] {
            assert!(
                services.iter().any(|s| s == name),
                "{name} missing from {services:?}"
            );
        }
    }
}
