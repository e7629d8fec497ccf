//! The composition root: turns the validated [`Config`](crate::config::Config) into concrete
//! parts. The only module that names the implementation behind each seam, one file per adapter
//! family; the cloud features pick modules at their `mod` lines, so no statement here depends
//! on how the binary was built.
//!
//! # Layout
//! - [`logging`]: where log lines go (stderr, or a bounded file for `skyburst up`).
//! - [`detector`]: the compute device and the loaded detector.
//! - [`backends`]: the queues and the object store a process uses, embedded or on AWS.
//! - [`aws`]: the AWS session, SQS, S3, EC2 pools and the vendor of Nova workers' credentials
//!   (feature `aws`; without it, a stand-in whose every part says which build has it).
//! - [`nova`]: Nova pools (feature `openstack`, with the same kind of stand-in).
//! - [`pools`]: one provider per `[[pools]]` entry, and the `local` pool.
//! - [`frontend`], [`worker`], [`controller`]: each process's parts.

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(not(feature = "aws"))]
#[path = "without_aws.rs"]
pub mod aws;
pub mod backends;
pub mod controller;
pub mod detector;
pub mod frontend;
pub mod logging;
#[cfg(feature = "openstack")]
pub mod nova;
#[cfg(not(feature = "openstack"))]
#[path = "without_nova.rs"]
pub mod nova;
pub mod pools;
pub mod worker;

use anyhow::Context;

pub use backends::{backends, store, Backends, Queues};
pub use controller::controller;
pub use detector::{detector, device};
pub use frontend::{frontend, tokens};
pub use pools::local_provider;
pub use worker::worker;

/// A runtime for the async commands. Two threads: the work is waiting on queues and the
/// detector runs on its own pool.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
