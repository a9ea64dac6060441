//! ChatFlow load generator: simulated users against the ingest tier, subscribers on the fan-out
//! tier, a delivery checker, a report, and benchmark scenarios.

pub mod bench;
pub mod chart;
pub mod cli;
pub mod credentials;
pub mod late_resume;
pub mod local;
pub mod monitoring;
pub mod progress;
pub mod report;
pub mod run;
pub mod sender;
pub mod stats;
pub mod subscriber;
pub mod verify;
pub mod workload;
