//! Placeholder until the pattern commands land (owned by the pattern engine work).
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct TestPatternArgs {}
#[derive(Debug, clap::Args)]
pub struct TransformArgs {}
#[derive(Debug, clap::Args)]
pub struct MatchArgs {}

pub fn test_pattern(_: &TestPatternArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet available")
}
pub fn transform(_: &TransformArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet available")
}
pub fn match_events(_: &MatchArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet available")
}
