//! The guides' `sh test` blocks (`docs/guide/`, see `testkit/src/guide.rs`), run on this host
//! with the `imgmode` under test first in `PATH`: each guide's blocks in order, in one scratch
//! directory, with the state and cache directories inside it. A block must exit 0, and the
//! `text` block after it must be in what it printed.

mod common;
use common::*;
use imgmode_testkit::guide;
use std::path::Path;

/// The guides that have blocks to run here, and what their blocks need of the machine.
const RUN: &[(&str, &[Need])] = &[
    (
        "image-based-install.md",
        &[Need::Tool("ssh-keygen"), Need::Tool("xorriso")],
    ),
    ("layered-images.md", &[]),
    ("recert.md", &[Need::Tool("openssl")]),
];

fn run_guide(name: &str) {
    let needs = RUN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, needs)| *needs)
        .expect("a guide of RUN");
    require!(all needs);
    let blocks: Vec<guide::Block> = guide::all(&guide::dir())
        .unwrap()
        .into_iter()
        .filter(|b| b.guide == name && b.run_tag() == Some("test"))
        .collect();
    assert!(!blocks.is_empty(), "{name} has no `sh test` block");
    let td = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_imgmode")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (i, b) in blocks.iter().enumerate() {
        let script = td.path().join(format!(".block-{i}.sh"));
        std::fs::write(&script, &b.text).unwrap();
        let out = std::process::Command::new("sh")
            .args(["-c", "exec 2>&1; set -eu; . \"$0\""])
            .arg(&script)
            .current_dir(td.path())
            .env("PATH", &path)
            .env("IMGMODE_STATE_DIR", td.path().join(".state"))
            .env("IMGMODE_CACHE_DIR", td.path().join(".cache"))
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: the block failed ({}):\n{}\n--- it printed ---\n{printed}",
            b.place(),
            out.status,
            b.text
        );
        if let Some(expect) = &b.expect {
            if let Some(line) = guide::missing_line(expect, &printed) {
                panic!(
                    "{}: the block did not print {line:?}\n--- it printed ---\n{printed}",
                    b.place()
                );
            }
        }
    }
}

#[test]
fn every_guide_with_blocks_to_run_is_run_here() {
    let mut with_tests: Vec<String> = guide::all(&guide::dir())
        .unwrap()
        .into_iter()
        .filter(|b| b.run_tag() == Some("test"))
        .map(|b| b.guide)
        .collect();
    with_tests.dedup();
    let listed: Vec<&str> = RUN.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        with_tests, listed,
        "RUN must list every guide with `sh test` blocks"
    );
}

/// The VM scenarios that run their guide blocks (`vmtest/src/scenarios/`, through
/// `imgmode internal guide-blocks`): a block marked for another would never run.
const VM_SCENARIOS: &[&str] = &["boot", "ibi"];

#[test]
fn every_vm_block_names_a_scenario_that_runs_it() {
    for b in guide::all(&guide::dir()).unwrap() {
        if let Some(s) = b.run_tag().and_then(|t| t.strip_prefix("vm=")) {
            assert!(
                VM_SCENARIOS.contains(&s),
                "{}: no scenario runs the guide blocks of vm={s} (those that do: {VM_SCENARIOS:?})",
                b.place()
            );
        }
    }
    // and each of those scenarios asks for its blocks
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vmtest/src/scenarios");
    for s in VM_SCENARIOS {
        let text = std::fs::read_to_string(src.join(format!("{s}.rs"))).unwrap();
        assert!(
            text.contains(&format!("guide_blocks(&a.imgmode, \"{s}\""))
                || text.contains(&format!("guide_blocks(imgmode, \"{s}\"")),
            "vmtest/src/scenarios/{s}.rs does not run its guide blocks"
        );
    }
}

#[test]
fn image_based_install_guide() {
    run_guide("image-based-install.md");
}

#[test]
fn layered_images_guide() {
    run_guide("layered-images.md");
}

#[test]
fn recert_guide() {
    run_guide("recert.md");
}
