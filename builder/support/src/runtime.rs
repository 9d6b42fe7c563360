//! The one tokio runtime of the process.
//!
//! imgmode's code is synchronous; the async pieces (ostree-ext's importer and proxy, the etcd
//! client, the test cluster's HTTPS endpoint) run on one multi-threaded runtime that
//! `imgmode`'s `main` starts with [`start`] before it dispatches a verb. Library code reaches it
//! through [`block_on`]; a test or a tool that never called [`start`] gets the same runtime,
//! started on first use.

use anyhow::{bail, Context, Result};
use std::sync::OnceLock;
use tokio::runtime::Runtime;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// Start the process's runtime (idempotent) and return it.
pub fn start() -> Result<&'static Runtime> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("imgmode-async")
        .build()
        .context("starting the async runtime")?;
    // A concurrent caller may have won the race; its runtime is the one kept.
    Ok(RUNTIME.get_or_init(|| rt))
}

/// Run `f` to completion on the process's runtime. Refused (not a panic) when called from a
/// task already running on a runtime, which would deadlock or panic inside tokio.
pub fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    if tokio::runtime::Handle::try_current().is_ok() {
        bail!("internal error: block_on called from async code; await the future instead");
    }
    Ok(start()?.block_on(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_runtime_serves_every_call() {
        let a = block_on(async { tokio::runtime::Handle::current().id() }).unwrap();
        let b = block_on(async { tokio::runtime::Handle::current().id() }).unwrap();
        assert_eq!(a, b);
        assert!(block_on(async { block_on(async {}) }).unwrap().is_err());
    }
}
