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
        OutputFormat::Human => out(&terminal_safe(&human(value))),
        OutputFormat::Json => out(&format!("{}\n", serde_json::to_string_pretty(value)?)),
        OutputFormat::Yaml => out(&yaml_serde::to_string(value)?),
    }
}

/// Write `text` to stdout. A reader that went away (`| head`, `| grep -q`) ends the output
/// quietly: the command did its work, and `print!` would panic on the broken pipe.
fn out(text: &str) -> Result<()> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    match o.write_all(text.as_bytes()).and_then(|()| o.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

pub use imgmode_support::validate::{terminal_safe, MAX_LINE};

/// Print a warning on stderr, made [`terminal_safe`].
pub fn warn(msg: &str) {
    eprintln!("warning: {}", terminal_safe(msg));
}

/// Print a line for people on stdout, made [`terminal_safe`].
pub fn say(msg: &str) {
    let _ = out(&format!("{}\n", terminal_safe(msg)));
}
