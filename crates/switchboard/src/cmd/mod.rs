//! Command definitions (clap) and dispatch.

mod admin_client;
#[cfg(feature = "aws")]
mod aws;
mod claim_check;
mod config_check;
mod dlq;
mod genesys;
pub mod pattern;
mod replay;
mod send;
mod serve;
mod simulate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Switchboard: a Genesys Cloud event gateway with EventBridge-compatible routing.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (zero-config: 127.0.0.1:8080, ./switchboard-data, one webhook source).
    Serve(serve::ServeArgs),
    /// Validate configuration files.
    Config {
        #[command(subcommand)]
        command: config_check::ConfigCommand,
    },
    /// Post signed events to a gateway (built-in Genesys events when no file is given).
    Send(send::SendArgs),
    /// Play a simulated Genesys org's events at a target rate (open loop), or write them to a file.
    Simulate(simulate::SimulateArgs),
    /// Replay stored events of a time range through the current rules (the ingest log is the
    /// archive); replayed events carry `replay-name`.
    Replay(replay::ReplayArgs),
    /// Inspect and redrive the dead-letter queue through the admin API.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Genesys Cloud: provision the EventBridge integration, inspect topics, channels and gaps.
    Genesys {
        #[command(subcommand)]
        command: genesys::GenesysCommand,
    },
    /// AWS as code: plan and apply the queues, buckets, dedup table, bus, rules and targets.
    #[cfg(feature = "aws")]
    Aws {
        #[command(subcommand)]
        command: aws::AwsCommand,
    },
    /// Fetch claim-checked events.
    ClaimCheck {
        #[command(subcommand)]
        command: claim_check::ClaimCheckCommand,
    },
    /// Test an event pattern against an event, like `aws events test-event-pattern`.
    TestPattern(pattern::TestPatternArgs),
    /// Apply Input / InputPath / InputTransformer to an event.
    Transform(pattern::TransformArgs),
    /// Stream events through rules and count matches per rule.
    Match(pattern::MatchArgs),
}

/// Runs the chosen command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Config { command } => config_check::run(command),
        Command::Send(args) => send::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Dlq { command } => dlq::run(command),
        Command::Replay(args) => replay::run(args),
        Command::Genesys { command } => genesys::run(command),
        #[cfg(feature = "aws")]
        Command::Aws { command } => aws::run(command),
        Command::ClaimCheck { command } => claim_check::run(command),
        Command::TestPattern(args) => pattern::test_pattern(&args),
        Command::Transform(args) => pattern::transform(&args),
        Command::Match(args) => pattern::match_events(&args),
    }
}
