//! The integration test harness: one binary for every integration test (as ripgrep does).
//!
//! Tests that need the model files or test images fail with the command to run when those are
//! missing (`scripts/fetch-assets.sh`); none is skipped silently.

mod support;

mod admin;
#[cfg(feature = "aws")]
mod aws;
mod bad_input;
mod config_examples;
mod controller;
mod dashboard;
mod detect_cli;
mod detector_reference;
#[cfg(feature = "openstack")]
mod devstack;
mod embedded;
mod faults;
mod hostile;
#[cfg(feature = "dev-tools")]
mod hybrid;
mod images;
mod locust;
mod openapi_fuzz;
#[cfg(feature = "openstack")]
mod openstack;
mod replay;
mod scopes;
mod scripts;
mod supervision;
mod tls;
mod unattended;
