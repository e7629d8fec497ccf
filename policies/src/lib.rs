//! Skyburst's pure centre: how many worker instances should run, and where.
//!
//! Everything here is a function of an [`Observation`] (queue backlog, the fleet per pool,
//! measured throughput) and explicit state carried from the previous check. No I/O, no clock,
//! no randomness: `clippy.toml` bans clocks, the environment and the filesystem, and the only
//! dependencies are serde and thiserror. The controller and the simulator run this same code.
//!
//! # Layout
//! - [`observation`]: what one check sees (backlog, pools, instances, health).
//! - [`caps`]: validated limits ([`Caps`], [`Debounce`]).
//! - [`policy`]: the [`ScalingPolicy`] trait, the named policies and [`decide`] (debounce, caps,
//!   hysteresis).
//! - [`arrivals`]: the arrival rate and its trend, from the backlog and the jobs finished
//!   ([`ArrivalMeter`]).
//! - [`slo`]: the `slo` policy ([`Slo`]).
//! - [`burst`]: [`plan`], the private-first burst planner: which pool launches, which instance
//!   drains or stops, which stuck instance is replaced.

#![forbid(unsafe_code)]

pub mod arrivals;
pub mod burst;
pub mod caps;
pub mod observation;
pub mod policy;
pub mod slo;

pub use arrivals::ArrivalMeter;
pub use burst::{plan, Action, Plan, PlannerConfig, StuckReason, TerminateReason};
pub use caps::{Caps, Debounce, InvalidLimit};
pub use observation::{Activity, Arrivals, InstanceState, InstanceView, Observation, PoolHealth, PoolView};
pub use policy::{
    decide, BacklogPerInstance, Decision, PolicyName, PolicyState, QueueMinusRunning, Release, ScalingPolicy,
    SeedHybrid, Targets,
};
pub use slo::Slo;
