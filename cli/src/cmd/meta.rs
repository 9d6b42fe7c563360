//! About imgmode itself: shell completions and manual pages, from the clap definitions.

use crate::args::Cli;
use anyhow::{Context, Result};
use clap::CommandFactory;
use std::path::Path;

pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "imgmode",
        &mut std::io::stdout(),
    );
    Ok(())
}

/// Write `imgmode.1` and a page per verb (`imgmode-VERB.1`, `imgmode-VERB-SUB.1`; hidden verbs
/// have none) into `dir`, which is made when missing.
pub fn man_pages(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing the manual pages into {}", dir.display()))?;
    crate::output::say(&format!("wrote the manual pages into {}", dir.display()));
    Ok(())
}
