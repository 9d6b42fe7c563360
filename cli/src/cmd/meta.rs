//! About imgmode itself: shell completions and manual pages, from the clap definitions.

use crate::args::Cli;
use anyhow::{Context, Result};
use clap::CommandFactory;
use std::path::{Path, PathBuf};

pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "imgmode",
        &mut std::io::stdout(),
    );
    Ok(())
}

/// The manual pages and the shell completions, by their path under an installation prefix
/// (`share/man/man1/imgmode-disk.1`, `share/bash-completion/completions/imgmode`, zsh's
/// `vendor-completions/_imgmode`, fish's `vendor_completions.d/imgmode.fish`): what
/// `install-extras` writes under its prefix and the base image under `/usr`.
pub fn shell_files() -> Result<Vec<(PathBuf, Vec<u8>)>> {
    let td = tempfile::tempdir()?;
    clap_mangen::generate_to(Cli::command(), td.path()).context("making the manual pages")?;
    let mut out = vec![];
    for e in std::fs::read_dir(td.path())? {
        let e = e?;
        out.push((
            Path::new("share/man/man1").join(e.file_name()),
            std::fs::read(e.path())?,
        ));
    }
    for (shell, path) in [
        (
            clap_complete::Shell::Bash,
            "share/bash-completion/completions/imgmode",
        ),
        (
            clap_complete::Shell::Zsh,
            "share/zsh/vendor-completions/_imgmode",
        ),
        (
            clap_complete::Shell::Fish,
            "share/fish/vendor_completions.d/imgmode.fish",
        ),
    ] {
        let mut text = vec![];
        clap_complete::generate(shell, &mut Cli::command(), "imgmode", &mut text);
        out.push((PathBuf::from(path), text));
    }
    out.sort();
    Ok(out)
}

/// Write [`shell_files`] under `prefix` (`cargo install` installs the binary only).
pub fn install_extras(prefix: &Path) -> Result<()> {
    let files = shell_files()?;
    for (rel, bytes) in &files {
        let path = prefix.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        imgmode_support::fs::write_atomic(&path, bytes, 0o644)?;
    }
    crate::output::say(&format!(
        "installed {} manual pages and the bash, zsh and fish completions under {}",
        files.len() - 3,
        prefix.display()
    ));
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
