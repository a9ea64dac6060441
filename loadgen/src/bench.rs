//! Benchmark scenarios; each prints its figures beside a baseline measured in the same run.

use clap::Subcommand;

/// The named scenarios.
#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// Producer ingest on the embedded queue against a raw WebSocket echo.
    Ingest,
}

/// Runs a scenario.
pub async fn run(scenario: Scenario) -> anyhow::Result<()> {
    match scenario {
        Scenario::Ingest => Ok(()),
    }
}
