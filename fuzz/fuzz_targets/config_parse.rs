//! Any text as a config file: loading never panics, and every refusal says where and why.
//!
//! The base directory does not exist, so `event_pattern_file` and `secret_files` entries with
//! relative paths fail to read instead of touching the machine's files.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use switchboard_gateway::config::{Config, ConfigError};

const FILE: &str = "fuzz.toml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml(text, FILE, PathBuf::from("/nonexistent")) {
        Ok(loaded) => {
            assert_eq!(loaded.origin.file, FILE);
            // Every compiled rule came from the file's [[rules]] (or the built-in catch-all).
            assert!(loaded.rules.len() <= loaded.config.rules.len().max(1));
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(!shown.is_empty());
            match &e {
                ConfigError::Parse { path, message } => {
                    assert_eq!(path, FILE);
                    assert!(!message.is_empty(), "empty parse message: {shown}");
                }
                ConfigError::Invalid {
                    file,
                    line,
                    key,
                    message,
                } => {
                    assert_eq!(file, FILE);
                    assert!(!key.is_empty(), "Invalid error names no key: {shown}");
                    assert!(!message.is_empty(), "Invalid error says nothing: {shown}");
                    let lines = text.bytes().filter(|b| *b == b'\n').count() + 1;
                    assert!(
                        *line <= lines,
                        "line {line} past the end ({lines}): {shown}"
                    );
                    assert!(shown.starts_with(&format!("{FILE}:{line}: {key}: ")));
                }
                ConfigError::Read { .. } => panic!("from_toml reported a read error: {shown}"),
                _ => {}
            }
        }
    }
});
