//! What the service's own errors keep as their cause: the failure underneath (an SDK error, a
//! SQLite or I/O error) or, where there is none, the backend's own words. The same vocabulary
//! as the providers crate's errors, so a cause reads the same whichever layer reports it.

pub use skyburst_providers::{error_chain, explained, Cause};
