//! What every verb gets besides its own arguments: the global options and the ambient values.

use crate::ambient::Ambient;
use crate::args::GlobalArgs;
use crate::output::{self, OutputFormat};
use anyhow::Result;
use imgmode_image::Store;
use imgmode_support::Steps;
use serde::Serialize;

/// A verb's context.
pub struct Ctx<'a> {
    pub ambient: &'a Ambient,
    /// How results are printed (`--format`).
    pub format: OutputFormat,
    /// `--quiet`: no progress output.
    pub quiet: bool,
}

impl<'a> Ctx<'a> {
    pub fn new(global: &GlobalArgs, ambient: &'a Ambient) -> Self {
        Ctx {
            ambient,
            format: global.output_format(),
            quiet: global.quiet,
        }
    }

    /// Progress output (none with `--quiet`).
    pub fn steps(&self) -> Steps {
        Steps::new(self.quiet)
    }

    /// The local image store.
    pub fn store(&self) -> Store {
        self.ambient.store()
    }

    /// Print a result in the chosen format; `human` renders it for people.
    pub fn print<T: Serialize>(&self, value: &T, human: impl FnOnce(&T) -> String) -> Result<()> {
        output::print(self.format, value, human)
    }

    /// The node-update options: their steps (fetching, staging) said unless `--quiet`.
    pub fn update_opts(&self) -> imgmode_os::node::UpdateOpts {
        imgmode_os::node::UpdateOpts {
            progress: !self.quiet,
            ..Default::default()
        }
    }
}
