//! EC2's answers mapped to Skyburst's: instance states to [`InstanceState`], error codes and
//! transport failures to [`ProviderError`]. Pure functions, tested on constructed SDK values:
//! moto produces none of the capacity, limit or throttling errors, nor a pending phase.

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::InstanceStateName;

use crate::{Cause, InstanceState, ProviderError};

/// EC2's instance state as ours; `None` for instances that no longer exist (`terminated`).
/// `stopped` counts as `Error`: a stopped worker serves nothing but still holds its volume, so the
/// controller terminates and replaces it.
pub fn instance_state(state: &InstanceStateName) -> Option<InstanceState> {
    match state {
        InstanceStateName::Pending => Some(InstanceState::Pending),
        InstanceStateName::Running => Some(InstanceState::Running),
        InstanceStateName::ShuttingDown | InstanceStateName::Stopping => Some(InstanceState::Stopping),
        InstanceStateName::Stopped => Some(InstanceState::Error),
        InstanceStateName::Terminated => None,
        // A state added after this SDK: count it toward caps without trusting it to serve.
        _ => Some(InstanceState::Stopping),
    }
}

/// The states `list` asks for: every one that holds capacity or quota.
pub const LISTED_STATES: [&str; 5] = ["pending", "running", "shutting-down", "stopping", "stopped"];

/// Maps one EC2 error code (and its message) to the provider taxonomy.
/// <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html>
pub fn from_code(pool: &str, code: &str, message: &str) -> ProviderError {
    with_cause(pool, code, format!("{code}: {message}").into())
}

/// The variant EC2's `code` means, carrying `cause`.
fn with_cause(pool: &str, code: &str, cause: Cause) -> ProviderError {
    let pool = pool.to_string();
    match code {
        // No room for this instance type in this subnet's availability zone now.
        "InsufficientInstanceCapacity"
        | "InsufficientHostCapacity"
        | "InsufficientReservedInstanceCapacity"
        | "InsufficientCapacity"
        | "InsufficientFreeAddressesInSubnet" => ProviderError::Capacity { pool, cause },
        "InstanceLimitExceeded" | "VcpuLimitExceeded" | "MaxSpotInstanceCountExceeded" | "VolumeLimitExceeded" => {
            ProviderError::Quota { pool, cause }
        }
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "RequestThrottled" => {
            ProviderError::Throttled { pool, cause }
        }
        "AuthFailure"
        | "UnauthorizedOperation"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "ExpiredToken"
        | "RequestExpired"
        | "OptInRequired"
        | "Blocked" => ProviderError::Auth { pool, cause },
        "InternalError" | "InternalFailure" | "ServiceUnavailable" | "Unavailable" => {
            ProviderError::Unavailable { pool, cause }
        }
        _ => ProviderError::Invalid { pool, cause },
    }
}

/// Maps any SDK failure, keeping it as the cause: service errors by code; timeouts and
/// connection failures are `Unavailable`; a request that could not be built for want of
/// credentials is `Auth`.
pub fn from_sdk<E, R>(pool: &str, error: SdkError<E, R>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let chain = crate::error_chain(&error);
    let transport =
        matches!(error, SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_));
    if let SdkError::ServiceError(service) = &error {
        let e = service.err();
        let code = e.code().unwrap_or("Unknown").to_string();
        // The SDK's own text is "service error"; the message says what the service said.
        let message = format!("{code}: {}", e.message().unwrap_or(&chain));
        return with_cause(pool, &code, crate::explained(message, error));
    }
    let (pool, cause) = (pool.to_string(), crate::explained(chain.clone(), error));
    if transport {
        ProviderError::Unavailable { pool, cause }
    } else if chain.contains("credentials") || chain.contains("identity") {
        ProviderError::Auth { pool, cause }
    } else {
        ProviderError::Invalid { pool, cause }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::config::http::HttpResponse;
    use aws_sdk_ec2::error::ErrorMetadata;
    use aws_sdk_ec2::operation::run_instances::RunInstancesError;
    use aws_smithy_types::body::SdkBody;

    fn service_error(code: &str) -> SdkError<RunInstancesError, HttpResponse> {
        let meta = ErrorMetadata::builder().code(code).message("from a test").build();
        let response = HttpResponse::new(400u16.try_into().unwrap(), SdkBody::from("<Response/>"));
        SdkError::service_error(RunInstancesError::generic(meta), response)
    }

    #[test]
    fn every_state_maps_and_terminated_ones_vanish() {
        let cases = [
            (InstanceStateName::Pending, Some(InstanceState::Pending)),
            (InstanceStateName::Running, Some(InstanceState::Running)),
            (InstanceStateName::ShuttingDown, Some(InstanceState::Stopping)),
            (InstanceStateName::Stopping, Some(InstanceState::Stopping)),
            (InstanceStateName::Stopped, Some(InstanceState::Error)),
            (InstanceStateName::Terminated, None),
            (InstanceStateName::from("rebooting-into-space"), Some(InstanceState::Stopping)),
        ];
        for (state, ours) in cases {
            assert_eq!(instance_state(&state), ours, "{state:?}");
        }
        for listed in LISTED_STATES {
            assert!(instance_state(&InstanceStateName::from(listed)).is_some(), "{listed}");
        }
    }

    #[test]
    fn capacity_limit_and_throttling_errors_follow_the_taxonomy() {
        let cases = [
            ("InsufficientInstanceCapacity", "capacity"),
            ("InsufficientFreeAddressesInSubnet", "capacity"),
            ("InstanceLimitExceeded", "quota"),
            ("VcpuLimitExceeded", "quota"),
            ("RequestLimitExceeded", "throttled"),
            ("UnauthorizedOperation", "auth"),
            ("AuthFailure", "auth"),
            ("InternalError", "unavailable"),
            ("InvalidAMIID.NotFound", "invalid"),
            // A token reused with other parameters: a bug, never retried as is.
            ("IdempotentParameterMismatch", "invalid"),
        ];
        for (code, kind) in cases {
            let mapped = from_sdk("public", service_error(code));
            assert_eq!(mapped.kind(), kind, "{code}");
            let cause = std::error::Error::source(&mapped).expect("the cloud's answer is kept");
            assert!(cause.source().is_some_and(|sdk| sdk.is::<SdkError<RunInstancesError, HttpResponse>>()));
            assert!(mapped.to_string().contains(code), "{mapped}");
            assert!(mapped.to_string().contains("public"), "{mapped}");
        }
        assert!(from_sdk("public", service_error("InsufficientInstanceCapacity")).is_full());
        assert!(from_sdk("public", service_error("VcpuLimitExceeded")).is_full());
    }

    #[test]
    fn transport_failures_are_unavailable() {
        let timeout: SdkError<RunInstancesError, HttpResponse> = SdkError::timeout_error("attempt timed out");
        assert_eq!(from_sdk("public", timeout).kind(), "unavailable");
        let unbuildable: SdkError<RunInstancesError, HttpResponse> =
            SdkError::construction_failure("no credentials in the chain");
        assert_eq!(from_sdk("public", unbuildable).kind(), "auth");
    }
}
