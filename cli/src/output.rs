//! How results are printed: for people, or as JSON or YAML (the global `--format`).

use anyhow::Result;
use clap::ValueEnum;
use serde::Serialize;

/// How data is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    #[default]
    Human,
    Json,
    Yaml,
}

/// Print `value` in `format`; `human` renders it for people.
pub fn print<T: Serialize>(
    format: OutputFormat,
    value: &T,
    human: impl FnOnce(&T) -> String,
) -> Result<()> {
    match format {
        OutputFormat::Human => print!("{}", terminal_safe(&human(value))),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(value)?),
        OutputFormat::Yaml => print!("{}", yaml_serde::to_string(value)?),
    }
    Ok(())
}

pub use imgmode_support::validate::{terminal_safe, MAX_LINE};

/// Print a warning on stderr, made [`terminal_safe`].
pub fn warn(msg: &str) {
    eprintln!("warning: {}", terminal_safe(msg));
}

/// Print a line for people on stdout, made [`terminal_safe`].
pub fn say(msg: &str) {
    println!("{}", terminal_safe(msg));
}
