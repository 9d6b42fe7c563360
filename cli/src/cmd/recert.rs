//! `imgmode recert`.

use crate::args::recert::RecertArgs;
use crate::cmd::ctx::Ctx;
use anyhow::Result;
use imgmode_recert::summary::Summary;
use imgmode_recert::RecertConfig;
use std::path::Path;

pub fn recert(a: RecertArgs, cx: &Ctx) -> Result<()> {
    let cfg = config(a, cx.ambient.recert_config.as_deref())?.check()?;
    let summary = imgmode_recert::run(&cfg)?;
    cx.print(&summary, human)
}

/// The configuration from flags or from `RECERT_CONFIG` (`file`), never both.
fn config(args: RecertArgs, file: Option<&Path>) -> Result<RecertConfig> {
    let from_flags = RecertConfig::from(args);
    match file {
        Some(path) => {
            // --dry-run only makes a run safer: it may go with a configuration file
            let dry_run = from_flags.dry_run;
            let others = RecertConfig {
                dry_run: false,
                ..from_flags
            };
            if others != RecertConfig::default() {
                anyhow::bail!(
                    "RECERT_CONFIG is set ({}) and configuration flags were given; use one or the other (--dry-run alone may go with RECERT_CONFIG)",
                    path.display()
                );
            }
            let mut c = imgmode_recert::config::load_file(path)?;
            c.dry_run |= dry_run;
            Ok(c)
        }
        None => Ok(from_flags),
    }
}

fn human(s: &Summary) -> String {
    let mut out = format!(
        "{}found {} certificates, {} private keys, {} public keys, {} JWTs\n\
         regenerated {} certificates, {} private keys, {} public keys, {} JWTs\n\
         timings: scan {} ms, key generation {} ms (waited {} ms), processing {} ms, commit {} ms\n",
        if s.dry_run { "dry run: nothing written\n" } else { "" },
        s.found.certificates,
        s.found.private_keys,
        s.found.public_keys,
        s.found.jwts,
        s.regenerated.certificates,
        s.regenerated.private_keys,
        s.regenerated.public_keys,
        s.regenerated.jwts,
        s.timings.scan_ms,
        s.timings.key_generation_ms,
        s.timings.key_generation_wait_ms,
        s.timings.processing_ms,
        s.timings.commit_ms,
    );
    if let Some(r) = &s.cluster_rename {
        out.push_str(&format!("renamed the cluster {} -> {}\n", r.from, r.to));
    }
    for w in &s.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}
