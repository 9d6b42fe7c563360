//! Helpers shared by the CLI integration tests.

use std::path::Path;
use std::process::{Command, Output};

/// Run the `imgmode` binary with its state and cache under `state`.
pub fn imgmode(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgmode"))
        .args(args)
        .env("IMGMODE_STATE_DIR", state.join("state"))
        .env("IMGMODE_CACHE_DIR", state.join("cache"))
        .env("RUST_LOG", "off")
        .output()
        .expect("running imgmode")
}

pub fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}
