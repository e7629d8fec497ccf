//! Nova's answers mapped to Skyburst's: server statuses to [`InstanceState`], HTTP statuses and
//! messages to [`ProviderError`]. Pure functions, each tested on every case.

use super::{AbsoluteLimits, FlavorSize};
use crate::{Cause, InstanceState, Limits, ProviderError};

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
    with_cause(pool, status, message, format!("HTTP {status}: {message}").into())
}

/// As [`from_status`], keeping `cause` (the client's error) as the source.
pub fn with_cause(pool: &str, status: u16, message: &str, cause: Cause) -> ProviderError {
    let pool = pool.to_string();
    let quota = message.contains("Quota exceeded") || message.contains("quota");
    match status {
        // Nova answers a quota overrun with 403 (413 before microversion 2.1's cleanup).
        403 | 413 if quota => ProviderError::Quota { pool, cause },
        429 => ProviderError::Throttled { pool, cause },
        401 | 403 => ProviderError::Auth { pool, cause },
        _ if message.contains("No valid host") || message.contains("NoValidHost") => {
            ProviderError::Capacity { pool, cause }
        }
        500..=599 => ProviderError::Unavailable { pool, cause },
        _ => ProviderError::Invalid { pool, cause },
    }
}

/// The project's limits as ours: its instance quota and use, and the servers of `flavor` it has
/// room for, by the tightest of instances, vCPUs and RAM (-1 is unlimited; a flavor of size 0
/// is limited by nothing but instances).
pub fn limits(absolute: &AbsoluteLimits, flavor: FlavorSize) -> Limits {
    let left = |max: i64, used: i64, each: u64| -> Option<u64> {
        if max < 0 {
            return None;
        }
        let left = (max - used).max(0) as u64;
        Some(left.checked_div(each).unwrap_or(u64::MAX))
    };
    let a = absolute;
    let room = [
        left(a.max_total_instances, a.total_instances_used, 1),
        left(a.max_total_cores, a.total_cores_used, flavor.vcpus),
        left(a.max_total_ram_size, a.total_ram_used, flavor.ram),
    ]
    .into_iter()
    .flatten()
    .min()
    .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    Limits {
        max_instances: u32::try_from(a.max_total_instances).ok(),
        in_use: u32::try_from(a.total_instances_used.max(0)).unwrap_or(u32::MAX),
        room,
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

    fn absolute(instances: (i64, i64), cores: (i64, i64), ram: (i64, i64)) -> AbsoluteLimits {
        AbsoluteLimits {
            max_total_instances: instances.0,
            total_instances_used: instances.1,
            max_total_cores: cores.0,
            total_cores_used: cores.1,
            max_total_ram_size: ram.0,
            total_ram_used: ram.1,
        }
    }

    #[test]
    fn room_is_the_tightest_of_instances_cores_and_ram() {
        let flavor = FlavorSize { vcpus: 2, ram: 4096 };
        // Instances: 10 - 2 = 8; cores: (20 - 4) / 2 = 8; RAM: (51200 - 8192) / 4096 = 10.
        assert_eq!(limits(&absolute((10, 2), (20, 4), (51200, 8192)), flavor).room, Some(8));
        // Cores bind: (9 - 4) / 2 = 2 (a half server left over does not count).
        assert_eq!(limits(&absolute((10, 2), (9, 4), (51200, 8192)), flavor).room, Some(2));
        // RAM binds: (20480 - 8192) / 4096 = 3.
        assert_eq!(limits(&absolute((10, 2), (20, 4), (20480, 8192)), flavor).room, Some(3));
        // Quota 0 (the fault the hybrid test makes): no room.
        let zero = limits(&absolute((0, 0), (20, 0), (51200, 0)), flavor);
        assert_eq!((zero.room, zero.max_instances), (Some(0), Some(0)));
        // Over quota (lowered under a running fleet): no room, never negative.
        assert_eq!(limits(&absolute((2, 5), (-1, 10), (-1, 0)), flavor).room, Some(0));
        // Unlimited everywhere.
        let unlimited = limits(&absolute((-1, 7), (-1, 14), (-1, 0)), flavor);
        assert_eq!((unlimited.room, unlimited.max_instances, unlimited.in_use), (None, None, 7));
        // A zero-size flavor is limited by instances alone.
        assert_eq!(limits(&absolute((4, 1), (0, 0), (0, 0)), FlavorSize { vcpus: 0, ram: 0 }).room, Some(3));
    }
}
