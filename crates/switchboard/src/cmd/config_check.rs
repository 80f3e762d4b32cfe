//! `switchboard config check FILE`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use switchboard_gateway::config::Config;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file; errors name the file, line and key.
    Check {
        /// The file.
        file: PathBuf,
    },
    /// Print the built-in (zero-config) configuration summary.
    Default,
}

pub fn run(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Check { file } => match Config::load(&file) {
            Ok(loaded) => {
                println!(
                    "{}: ok ({} sources, {} targets, {} rules)",
                    file.display(),
                    loaded.config.sources.len(),
                    loaded.config.targets.len(),
                    loaded.rules.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(2))
            }
        },
        ConfigCommand::Default => {
            let loaded = Config::builtin();
            for s in &loaded.config.sources {
                let s = s.get_ref();
                println!(
                    "source {} POST {} ({:?})",
                    s.name,
                    s.path.as_deref().unwrap_or("-"),
                    s.auth.as_ref().map(|a| a.scheme)
                );
            }
            for t in &loaded.config.targets {
                println!("target {} {:?}", t.get_ref().name, t.get_ref().kind);
            }
            for r in &loaded.rules {
                println!(
                    "rule {} pattern {} -> {:?}",
                    r.name,
                    r.pattern_json,
                    r.targets.iter().map(|t| &t.target).collect::<Vec<_>>()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
