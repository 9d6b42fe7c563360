//! Everything the process reads from its surroundings: the command line, the environment, the
//! running executable's path and the kernel's facts (through `imgmode_support::host`). Read
//! once, at start, by [`Ambient::read`]; everything else in this crate gets them as values
//! from here.

use anyhow::{anyhow, Context, Result};
use imgmode_image::store::{Store, DEFAULT_CACHE_DIR, DEFAULT_STATE_DIR};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The process's surroundings, as read at start.
#[derive(Debug, Clone)]
pub struct Ambient {
    /// The command line, `argv[0]` first.
    pub args: Vec<OsString>,
    /// The local store's state directory: `$IMGMODE_STATE_DIR`, default `/var/lib/imgmode`.
    pub state_dir: PathBuf,
    /// The download cache: `$IMGMODE_CACHE_DIR`, default `/var/cache/imgmode`.
    pub cache_dir: PathBuf,
    /// `$RUST_LOG` when set (and valid UTF-8): the log filter.
    pub rust_log: Option<String>,
    /// `$RECERT_CONFIG`: recert's configuration file, used instead of its flags.
    pub recert_config: Option<PathBuf>,
    /// This executable, or why it could not be located.
    current_exe: Result<PathBuf, String>,
    /// The kernel runs in FIPS mode (`/proc/sys/crypto/fips_enabled` is `1`).
    pub fips: bool,
    /// The kernel's host name (`/proc/sys/kernel/hostname`), when it can be read.
    pub hostname: Option<String>,
    /// This machine's architecture as images name it (`amd64`, `arm64`).
    pub arch: String,
}

impl Ambient {
    /// Read the process's surroundings.
    pub fn read() -> Self {
        let dir = |var: &str, default: &str| {
            std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
        };
        Ambient {
            args: std::env::args_os().collect(),
            state_dir: dir("IMGMODE_STATE_DIR", DEFAULT_STATE_DIR),
            cache_dir: dir("IMGMODE_CACHE_DIR", DEFAULT_CACHE_DIR),
            rust_log: std::env::var("RUST_LOG").ok(),
            // set but empty is not set (as `RECERT_CONFIG= imgmode recert ...` means)
            recert_config: std::env::var_os("RECERT_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            current_exe: std::env::current_exe().map_err(|e| e.to_string()),
            fips: imgmode_support::host::fips_enabled(),
            hostname: imgmode_support::host::hostname().ok(),
            arch: imgmode_support::host::host_arch().to_string(),
        }
    }

    /// The local image store.
    pub fn store(&self) -> Store {
        Store::new(self.state_dir.clone())
    }

    /// This executable (what `base build` layers into the image, what a seed records).
    pub fn imgmode_binary(&self) -> Result<PathBuf> {
        self.current_exe
            .clone()
            .map_err(|e| anyhow!(e))
            .context("locating the imgmode binary")
    }

    /// Whether the process runs as ostree's `ostree-container` helper (installed as
    /// `/usr/libexec/libostree/ext/ostree-container`, ostree hands it its `ostree container ...`
    /// command line).
    pub fn is_ostree_container(&self) -> bool {
        self.args
            .first()
            .and_then(|a| Path::new(a).file_name())
            .is_some_and(|n| n == "ostree-container")
    }
}
