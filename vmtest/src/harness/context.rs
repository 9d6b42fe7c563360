//! What one run of the scenarios shares: the images built for it ([`Artifacts`]) and the seed
//! it makes once ([`SeedBuild`]). [`crate::run`] creates one [`RunContext`] and passes it to
//! every scenario, so no scenario depends on another having run before it.

use crate::harness::artifacts::Artifacts;
use crate::harness::seed::{build_seed, SeedBuild};
use anyhow::Result;
use std::path::Path;
use tokio::sync::Mutex;

/// The run's shared state.
#[derive(Debug)]
pub struct RunContext {
    /// The images every scenario boots.
    pub artifacts: Artifacts,
    /// The seed made in this run, shared by every scenario that needs one (made once per run).
    seed: Mutex<Option<SeedBuild>>,
    /// A seed the run was given (made by a pipeline's build step, pulled by digest): the
    /// run's seed, which the `seed` scenario checks instead of making one.
    given: Option<SeedBuild>,
    /// Measure the benchmarks' baselines too (`cargo xtask vmtest --baselines`, which `cargo
    /// xtask bench ibi` runs): `ibi` boots its second host's installed disk again for the IBI
    /// benchmark's ratio. Off, a scenario proves its claims only.
    pub baselines: bool,
}

impl RunContext {
    /// With `given`, the run's seed is that one (pulled by digest), and none is made.
    pub fn new(artifacts: Artifacts, given: Option<SeedBuild>) -> Self {
        Self {
            artifacts,
            seed: Mutex::new(given.clone()),
            given,
            baselines: false,
        }
    }

    /// The seed of this run: the one made earlier in the run (by the `seed` scenario or
    /// another scenario), or a new one made in `dir`.
    pub async fn shared_seed(&self, dir: &Path) -> Result<SeedBuild> {
        let mut g = self.seed.lock().await;
        if let Some(s) = g.as_ref() {
            return Ok(s.clone());
        }
        let s = make_seed(&self.artifacts, dir).await?;
        *g = Some(s.clone());
        Ok(s)
    }

    /// A new seed made in `dir`, kept as the run's seed from now on (the `seed` scenario).
    /// The lock is held while it is made: a scenario of another lane asking for the seed
    /// meanwhile waits for this one rather than making its own into the same store name.
    /// A run given its seed makes none: the scenario checks the given one.
    pub async fn new_seed(&self, dir: &Path) -> Result<SeedBuild> {
        if let Some(s) = &self.given {
            eprintln!(
                "==> the seed {} was made by the build step and pulled by digest; checking it",
                s.digest
            );
            return Ok(s.clone());
        }
        let mut g = self.seed.lock().await;
        let s = make_seed(&self.artifacts, dir).await?;
        *g = Some(s.clone());
        Ok(s)
    }
}

/// [`build_seed`] into `dir`, its archive `dir/seed.oci-archive`, its steps on stderr.
async fn make_seed(a: &Artifacts, dir: &Path) -> Result<SeedBuild> {
    let archive = dir.join("seed.oci-archive");
    build_seed(a, dir, &archive, &|m| eprintln!("==> {m}")).await
}
