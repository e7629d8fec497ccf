//! Nova's answers mapped to Skyburst's: server statuses to [`InstanceState`], HTTP statuses and
//! messages to [`ProviderError`]. Pure functions, each tested on every case.

use crate::{InstanceState, ProviderError};

/// A server's `status` as ours; `None` for one that is gone (`DELETED`, `SOFT_DELETED`).
/// `SHUTOFF`, `PAUSED`, `SUSPENDED` and `SHELVED*` serve nothing but hold quota: `Error`, so the
/// controller deletes and replaces them, as it does servers that went to `ERROR`.
pub fn server_state(status: &str) -> Option<InstanceState> {
    match status {
        "BUILD" => Some(InstanceState::Pending),
        "ACTIVE" | "REBOOT" | "HARD_REBOOT" | "PASSWORD" | "REBUILD" | "MIGRATING" | "RESIZE" | "VERIFY_RESIZE"
        | "REVERT_RESIZE" => Some(InstanceState::Running),
        "ERROR" | "SHUTOFF" | "PAUSED" | "SUSPENDED" | "SHELVED" | "SHELVED_OFFLOADED" | "RESCUE" => {
            Some(InstanceState::Error)
        }
        "DELETED" | "SOFT_DELETED" => None,
        // UNKNOWN (the compute host does not answer) and anything newer: count it toward the
        // quota without trusting it to serve.
        _ => Some(InstanceState::Stopping),
    }
}

/// Maps a failed Nova call by its HTTP status and message.
/// <https://docs.openstack.org/api-guide/compute/faults.html>
pub fn from_status(pool: &str, status: u16, message: &str) -> ProviderError {
    let (pool, detail) = (pool.to_string(), format!("HTTP {status}: {message}"));
    let quota = message.contains("Quota exceeded") || message.contains("quota");
    match status {
        // Nova answers a quota overrun with 403 (413 before microversion 2.1's cleanup).
        403 | 413 if quota => ProviderError::Quota { pool, detail },
        429 => ProviderError::Throttled { pool, detail },
        401 | 403 => ProviderError::Auth { pool, detail },
        _ if message.contains("No valid host") || message.contains("NoValidHost") => {
            ProviderError::Capacity { pool, detail }
        }
        500..=599 => ProviderError::Unavailable { pool, detail },
        _ => ProviderError::Invalid { pool, detail },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_maps() {
        let cases = [
            ("BUILD", Some(InstanceState::Pending)),
            ("ACTIVE", Some(InstanceState::Running)),
            ("REBOOT", Some(InstanceState::Running)),
            ("ERROR", Some(InstanceState::Error)),
            ("SHUTOFF", Some(InstanceState::Error)),
            ("DELETED", None),
            ("SOFT_DELETED", None),
            ("UNKNOWN", Some(InstanceState::Stopping)),
        ];
        for (status, ours) in cases {
            assert_eq!(server_state(status), ours, "{status}");
        }
    }

    #[test]
    fn http_failures_follow_the_taxonomy() {
        let quota = "Quota exceeded for instances: Requested 1, but already used 2 of 2 instances";
        let cases = [
            (403, quota, "quota"),
            (413, quota, "quota"),
            (403, "Policy doesn't allow os_compute_api:servers:create to be performed.", "auth"),
            (401, "The request you have made requires authentication.", "auth"),
            (429, "Rate limit exceeded", "throttled"),
            (500, "No valid host was found. There are not enough hosts available.", "capacity"),
            (503, "Service Unavailable", "unavailable"),
            (400, "Invalid flavorRef provided.", "invalid"),
        ];
        for (status, message, kind) in cases {
            let mapped = from_status("private", status, message);
            assert_eq!(mapped.kind(), kind, "{status} {message}");
            assert!(mapped.to_string().contains("private"), "{mapped}");
        }
    }
}
