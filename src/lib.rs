//! Skyburst: an elastic hybrid-cloud image-recognition service. Images go in, YOLOv3-tiny
//! (COCO) on candle finds the objects, and the fleet of workers grows on the private cloud
//! first and bursts to the public cloud.
//!
//! # Layout
//! - [`result`]: the result JSON shape shared by every entry point, converted from the
//!   detector's own types (the `skyburst-detector` crate: YOLOv3-tiny from darknet's files).
//! - [`job`]: job requests and responses, and where jobs' images and results are stored.
//! - [`queue`]: the `Queue` seam, the embedded SQLite queue and SQS; [`store`]: the
//!   `ObjectStore` seam, the filesystem store and S3; [`index`]: the SQLite result index.
//! - [`frontend`]: the actix-web front end (`skyburst serve`); [`worker`]: the detector worker.
//! - [`control`]: heartbeats, drain requests, the lease and the fleet status in the store;
//!   [`controller`]: the reconcile loop (`skyburst controller`).
//! - [`load`]: the workload generator (`skyburst load`); [`simulate`]: the discrete-event policy
//!   simulator (`skyburst simulate`).
//! - [`boot`]: what a cloud worker receives at boot (cloud-init user-data, the pinned release).
//! - [`tls`]: rustls for the front end, the controller and the pinned credentials client.
//! - [`error`]: the cause errors keep; [`config`]: the typed, layered, validated configuration; [`host`]: this process's name.
//! - [`cli`]: the command-line definition; [`cmd`]: one module per subcommand.
//! - [`app`]: the composition root, the only place that turns config into concrete parts.

#![forbid(unsafe_code)]

pub mod app;
pub mod boot;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod control;
pub mod controller;
pub mod credentials;
pub mod error;
pub mod frontend;
pub mod host;
pub mod index;
pub mod job;
pub mod load;
pub mod plot;
pub mod queue;
pub mod result;
pub mod shutdown;
pub mod simulate;
pub mod store;
pub mod tls;
pub mod worker;
