//! Short-lived AWS credentials for workers without an instance role (Nova servers reaching SQS
//! and S3), vended by the controller (docs/architecture.md, "Topology").
//!
//! 1. At launch the controller draws a one-time token per server; the server's user-data carries
//!    the token, its metadata the token's sha256 ([`skyburst_providers::TAG_TOKEN_SHA256`]).
//! 2. The worker posts `{instance_id, token}` to `POST /v1/credentials`. The controller finds
//!    the server among its pools' instances, checks the token's hash against the server's
//!    metadata, claims the server's record in the store (a conditional write: the first use
//!    wins), assumes `credentials.role_arn` with a session policy scoped to this deployment's
//!    queues and buckets, and answers the credentials with a refresh token.
//! 3. Before they expire the worker posts `{instance_id, refresh_token}`; each refresh token is
//!    rotated on use and good only while the server exists. The one it replaced stays good for
//!    `credentials.refresh_grace_seconds`, so a worker whose answer was lost can ask again.
//!
//! The store's record is checked before any cloud call, the instance is looked up in a listing
//! at most two seconds old, every refusal answers the same `403`, and each source address is
//! rate-limited ([`rate`]): a stream of made-up requests costs no cloud calls and learns nothing.
//!
//! # Layout
//! - this file: tokens, hashes and the wire types.
//! - [`policy`]: the session policy, the worker's IAM policy rendered for this deployment.
//! - [`rate`]: per-address token buckets in front of the endpoint.
//! - [`vendor`] (feature `aws`): the controller's side, on STS.
//! - [`client`] (feature `aws`): the worker's side, an SDK credentials provider.

#[cfg(feature = "aws")]
pub mod client;
pub mod policy;
pub mod rate;
#[cfg(feature = "aws")]
pub mod vendor;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use skyburst_providers::InstanceToken;

/// The endpoint's path on the controller's HTTP server.
pub const PATH: &str = "/v1/credentials";

/// A fresh one-time token (244 random bits from two v4 UUIDs) and its hash.
pub fn new_token() -> InstanceToken {
    let token = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    InstanceToken { sha256: sha256_hex(&token), token }
}

/// The sha256 of `text`, as lowercase hex.
pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// What a worker sends: its server id and exactly one of its one-time token (first call) or
/// its latest refresh token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsRequest {
    /// The server id (cloud-init's instance id).
    pub instance_id: String,
    /// The one-time token from the user-data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The refresh token of the last answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// What the controller answers.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VendedCredentials {
    /// AWS access key id.
    pub access_key_id: String,
    /// AWS secret access key.
    pub secret_access_key: String,
    /// STS session token.
    pub session_token: String,
    /// When they expire, ms since the Unix epoch.
    pub expires_at_ms: i64,
    /// Good once, for the next credentials.
    pub refresh_token: String,
}

impl std::fmt::Debug for VendedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets, in logs or panics.
        f.debug_struct("VendedCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

/// The store record of a server's credentials (`control/credentials/<id>.json`): its
/// existence marks the one-time token used; it holds the hash of the one refresh token that
/// is good now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialsRecord {
    /// sha256 of the current refresh token.
    pub refresh_sha256: String,
    /// When it was issued, ms since the Unix epoch.
    pub issued_at_ms: i64,
    /// sha256 of the refresh token it replaced, good until `issued_at_ms` plus the grace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_sha256: Option<String>,
}

/// The record's key in the control bucket.
pub fn record_key(instance_id: &str) -> String {
    format!("control/credentials/{instance_id}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_fresh_and_hashed() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a.token, b.token);
        assert_eq!(a.token.len(), 64);
        assert_eq!(a.sha256, sha256_hex(&a.token));
        // sha256("abc"), FIPS 180-2's example.
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn requests_take_a_token_or_a_refresh_token_and_nothing_unknown() {
        let parsed: CredentialsRequest = serde_json::from_str(r#"{"instance_id":"i","token":"t"}"#).unwrap();
        assert_eq!(parsed.token.as_deref(), Some("t"));
        assert!(serde_json::from_str::<CredentialsRequest>(r#"{"instance_id":"i","secret":"x"}"#).is_err());
    }

    #[test]
    fn credentials_never_print_their_secrets() {
        let vended = VendedCredentials {
            access_key_id: "ASIA".into(),
            secret_access_key: "s3cr3t".into(),
            session_token: "sess".into(),
            expires_at_ms: 1,
            refresh_token: "r3fr3sh".into(),
        };
        let printed = format!("{vended:?}");
        assert!(!printed.contains("s3cr3t") && !printed.contains("sess") && !printed.contains("r3fr3sh"), "{printed}");
    }
}
