//! chatflow-loadgen: parse the command line and run the chosen mode.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use chatflow_loadgen::cli::{Cli, Command};
use chatflow_loadgen::credentials::Credentials;
use chatflow_loadgen::local::LocalSystem;
use chatflow_loadgen::progress::Progress;
use chatflow_loadgen::run::{self, Targets};
use chatflow_loadgen::{bench, report};
use clap::Parser;

#[global_allocator]
static ALLOC: chatflow_testkit::alloc::Counting = chatflow_testkit::alloc::Counting;

#[tokio::main]
async fn main() -> ExitCode {
    // The report is the output; logs only say what went wrong, unless RUST_LOG asks for more.
    chatflow::telemetry::init_logging_at("warn");
    let cli = Cli::parse();
    match dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("chatflow-loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Local {
            workload,
            sqs_endpoint,
            out,
        } => {
            let w = workload.workload();
            let system = LocalSystem::start(w.rooms, sqs_endpoint)
                .await
                .context("starting the local pipeline")?;
            let progress = Progress::new(true);
            let result = run::execute(&system.targets(), &w, &progress).await;
            system.stop().await;
            finish(result?, &out)
        }
        Command::Run {
            ingest_url,
            subscribe_url,
            jwt_secret_file,
            workload,
            out,
        } => {
            if !ingest_url.contains("{roomId}") {
                bail!("--ingest-url must contain {{roomId}}, e.g. ws://host:8080/chat/{{roomId}}");
            }
            let subscribe = match subscribe_url {
                Some(spec) => Some(
                    run::subscribe_router(&spec)
                        .map_err(|e| anyhow::anyhow!("--subscribe-url: {e}"))?,
                ),
                None => None,
            };
            let credentials = match jwt_secret_file {
                Some(path) => Some(Arc::new(
                    Credentials::from_file(&path)
                        .with_context(|| format!("--jwt-secret-file {}", path.display()))?,
                )),
                None => None,
            };
            let targets = Targets {
                ingest: ingest_url,
                subscribe,
                credentials,
            };
            let progress = Progress::new(true);
            finish(
                run::execute(&targets, &workload.workload(), &progress).await?,
                &out,
            )
        }
        Command::Dashboard { action } => {
            chatflow_loadgen::monitoring::run(action).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::LateResume(o) => {
            chatflow_loadgen::late_resume::run(o).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { scenario } => {
            bench::run(scenario).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn finish(result: run::RunResult, out: &std::path::Path) -> anyhow::Result<ExitCode> {
    let summary = report::summarize(&result);
    print!("{}", report::render(&summary));
    let files = report::write_files(out, &result, &summary)
        .with_context(|| format!("writing {}", out.display()))?;
    for f in files {
        println!("  wrote {}", f.display());
    }
    let clean = summary.delivery.is_none_or(|v| v.clean());
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}
