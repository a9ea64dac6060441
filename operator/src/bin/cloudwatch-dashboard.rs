//! cloudwatch-dashboard: prints the CloudWatch dashboard body for a ChatRoomSet's queues.
//!
//!     cloudwatch-dashboard examples/chatroomset.yaml --region us-east-1 > body.json
//!     aws cloudwatch put-dashboard --dashboard-name chat --dashboard-body file://body.json

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chatflow_operator::ChatRoomSet;
use clap::Parser;

/// Prints the CloudWatch dashboard body of a ChatRoomSet's SQS queues.
#[derive(Debug, Parser)]
#[command(name = "cloudwatch-dashboard", version, about)]
struct Args {
    /// The ChatRoomSet manifest (YAML), or `-` for standard input.
    set: PathBuf,
    /// Region, when the set names no spec.queues.region.
    #[arg(long, env = "AWS_REGION")]
    region: Option<String>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(body) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cloudwatch-dashboard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<String> {
    let text = if args.set.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(&args.set)
            .with_context(|| format!("reading {}", args.set.display()))?
    };
    let crs: ChatRoomSet = serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not a ChatRoomSet", args.set.display()))?;
    let body = chatflow_operator::cloudwatch::dashboard(&crs, args.region.as_deref())?;
    Ok(serde_json::to_string_pretty(&body)?)
}
