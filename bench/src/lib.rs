//! `pinchat-bench`: benchmarks that compare side by side in one run. The binary prints the figures;
//! the library lets the test suite run a tiny version of each so that they never rot.

pub mod borrow;
#[cfg(target_os = "linux")]
pub mod call;
#[cfg(unix)]
pub mod cluster;
pub mod fault;
pub mod footprint;
#[cfg(target_os = "linux")]
pub mod gateway;
pub mod latency;
#[cfg(unix)]
pub mod postgres;
#[cfg(target_os = "linux")]
pub mod prosody;
pub mod proxy;
pub mod reliability;
pub mod scale;
pub mod schedule;
pub mod tls;
pub mod traffic;
pub mod xmpp;
