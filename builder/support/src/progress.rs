//! Progress on stderr for long operations: a spinner with the current step on a terminal, one
//! line per step otherwise (CI logs), nothing with `--quiet`.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Step-by-step progress of one long operation.
pub struct Steps {
    bar: Option<ProgressBar>,
    plain: bool,
    start: Instant,
}

impl Steps {
    /// `quiet` hides everything; otherwise a spinner on a TTY and plain lines elsewhere.
    pub fn new(quiet: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        let bar = (!quiet && tty).then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .expect("valid template"),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Self {
            bar,
            plain: !quiet && !tty,
            start: Instant::now(),
        }
    }

    /// A reporter that prints nothing (tests, library callers).
    pub fn hidden() -> Self {
        Self {
            bar: None,
            plain: false,
            start: Instant::now(),
        }
    }

    /// Start a new step.
    pub fn step(&self, msg: &str) {
        tracing::info!("{msg}");
        if let Some(b) = &self.bar {
            b.println(format!("==> {msg}"));
            b.set_message(msg.to_string());
        } else if self.plain {
            eprintln!(
                "==> [{:>4}s] {}",
                self.start.elapsed().as_secs(),
                crate::validate::terminal_safe(msg)
            );
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Drop for Steps {
    fn drop(&mut self) {
        self.finish();
    }
}
