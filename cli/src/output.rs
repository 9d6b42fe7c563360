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
        OutputFormat::Human => print!("{}", human(value)),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(value)?),
        OutputFormat::Yaml => print!("{}", serde_yaml::to_string(value)?),
    }
    Ok(())
}

/// A message made safe for a terminal: control characters other than newline and tab are
/// escaped (`\u{1b}`), so a value cannot move the cursor or recolour the screen, and a line
/// longer than [`MAX_LINE`] characters is cut, saying how much was left out.
pub fn terminal_safe(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len().min(64 * 1024));
    for (i, line) in msg.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let n = line.chars().count();
        for c in line.chars().take(MAX_LINE) {
            if c.is_control() && c != '\t' {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        if n > MAX_LINE {
            out.push_str(&format!("… ({} more characters)", n - MAX_LINE));
        }
    }
    out
}

/// The longest line of a message printed whole.
pub const MAX_LINE: usize = 2000;

/// Print a warning on stderr, made [`terminal_safe`].
pub fn warn(msg: &str) {
    eprintln!("warning: {}", terminal_safe(msg));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_long_lines_cut() {
        assert_eq!(
            terminal_safe("a\u{1b}[31mb\r\nc\td"),
            "a\\u{1b}[31mb\\r\nc\td"
        );
        let long = "x".repeat(MAX_LINE + 5);
        let shown = terminal_safe(&long);
        assert!(shown.ends_with("… (5 more characters)"), "{shown}");
        assert_eq!(shown.chars().filter(|c| *c == 'x').count(), MAX_LINE);
    }
}
